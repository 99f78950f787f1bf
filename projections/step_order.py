"""The order in which `status` and the HTTP API list an execution's step rows:
the order the definition lists its steps (each followed by the steps of its
switch cases or loop / for_each body, then the compensation steps).

Shared by `orchestrator status` (orchestrator/cli/queries.py) and the API's
reads (orchestrator/api/reads.py). Best effort: a definition that does not
parse gives no order, and rows it does not name keep the order they came in.
"""

from __future__ import annotations

from typing import Any, Iterable

import yaml

__all__ = ["STEPS_SQL", "definition_order", "in_definition_order"]

# The step rows of one execution before `in_definition_order`: time order, so
# rows the definition does not name (iterations' steps) come out as they ran.
STEPS_SQL = "SELECT * FROM step_executions WHERE execution_id = %s ORDER BY started_at NULLS LAST, step_name"


def definition_order(source: str) -> list[str]:
    """Step names in the order the definition's text (YAML or JSON) lists them."""
    try:
        spec = (yaml.safe_load(source) or {}).get("spec") or {}
        names = _listed(spec.get("steps"))
        names += _listed((spec.get("compensation") or {}).get("steps"))
    except (yaml.YAMLError, AttributeError, TypeError):
        return []
    return [n for n in names if isinstance(n, str)]


def _listed(steps: Any) -> list[Any]:
    """The names of `steps` (a YAML list), each followed by those of its blocks."""
    names: list[Any] = []
    for step in steps if isinstance(steps, list) else ():
        if not isinstance(step, dict):
            continue
        names.append(step.get("name"))
        config = step.get("config")
        if isinstance(config, dict):
            cases = config.get("cases") if isinstance(config.get("cases"), list) else []
            for block in (*(c.get("steps") for c in cases if isinstance(c, dict)), config.get("default"),
                          config.get("steps"), [config.get("step")]):
                names += _listed(block)
    return names


def in_definition_order(steps: Iterable[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Step rows sorted by `names`; a stable sort, so rows it does not name keep their order, last."""
    order = {name: i for i, name in enumerate(names)}
    return sorted(steps, key=lambda s: order.get(s["step_name"], len(order)))
