"""What a task carries of the template scope: only what its step's templates read.

A task used to carry the whole scope: every step's output and the whole
input, so a for_each over 1,000 items sent the list in each of its 1,000
tasks. The executor renders only the step's own templates, so the roots and
first-level keys those templates name are enough: `input.email` keeps
`input.email`, `steps.create_user.output.id` keeps the step `create_user`,
`item` keeps the item. A path that stops early (`input`, `steps[name]`)
keeps its whole root.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .definition import Step, ValidationConfig
from .templates import TemplateError, referenced_paths

__all__ = ["context_for"]

_ALWAYS = ("execution",)  # small, and read by headers and logs
Needs = dict[str, frozenset[str] | None]  # root -> first-level keys read, or None for all of it


def context_for(step: Step, step_json: Any, scope: dict[str, Any]) -> dict[str, Any]:
    needs = _needs(step.name, _Frozen(step_json), isinstance(step.config, ValidationConfig) and step.config)
    if needs is None:
        return scope
    context: dict[str, Any] = {root: scope[root] for root in _ALWAYS if root in scope}
    for root, keys in needs.items():
        if root not in scope:
            continue
        value = scope[root]
        if keys is None or not isinstance(value, dict):
            context[root] = value
        else:
            context[root] = {k: value[k] for k in keys if k in value}
    return context


class _Frozen:
    """A step's JSON as a cache key: steps_json values are built once per definition."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Frozen) and other.value is self.value


@lru_cache(maxsize=4096)
def _needs(name: str, step_json: _Frozen, validation: Any) -> Needs | None:
    try:
        paths = referenced_paths(step_json.value)
    except TemplateError:
        return None  # cannot tell: send everything, as before
    needs: Needs = {}
    for path in paths:
        root, rest = path[0], path[1:]
        if not rest or needs.get(root, frozenset()) is None:
            needs[root] = None
        else:
            needs[root] = needs.get(root, frozenset()) | {rest[0]}
    if validation:
        fields = frozenset(rule.field.split(".", 1)[0] for rule in validation.validation_rules)
        if needs.get("input", frozenset()) is not None:
            needs["input"] = needs.get("input", frozenset()) | fields
    return needs
