"""Property: random DAG definitions parse, validate, and follow the ordering rules.

The expected prerequisites are computed here straight from the language's
rules (written independently of `WorkflowDefinition.dependencies`):
`depends_on` wins (`[]` is a root); otherwise a step follows the step listed
before it; a run of consecutive `parallel: true` steps all follow the step
before the run; the step after a run joins the whole run.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.loading import parse_definition
from orchestrator.core.validation import check_definition

StepSpec = tuple[str, bool, "list[str] | None", "str | None"]  # name, parallel, depends_on, step it reads


# One flat draw per step (parallel?, kind of depends_on, bitmask of earlier
# steps): cheap for Hypothesis to generate and to shrink.
_STEP_DRAWS = st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 511)), min_size=1, max_size=9)


@st.composite
def dag_steps(draw: st.DrawFn) -> list[StepSpec]:
    steps: list[StepSpec] = []
    for i, (parallel, kind, mask) in enumerate(draw(_STEP_DRAWS)):
        depends_on = None if kind < 2 else [f"s{j}" for j in range(i) if kind == 3 and mask >> j & 1]
        steps.append((f"s{i}", parallel, depends_on, None))
    return steps


def expected_dependencies(steps: list[StepSpec]) -> dict[str, set[str]]:
    def run_start(i: int) -> int:  # first index of the parallel run ending at i
        while i > 0 and steps[i - 1][1]:
            i -= 1
        return i

    result: dict[str, set[str]] = {}
    for i, (name, parallel, depends_on, _) in enumerate(steps):
        if depends_on is not None:
            result[name] = set(depends_on)
        elif parallel:
            start = run_start(i)
            result[name] = {steps[start - 1][0]} if start > 0 else set()
        elif i == 0:
            result[name] = set()
        elif not steps[i - 1][1]:
            result[name] = {steps[i - 1][0]}
        else:
            result[name] = {s[0] for s in steps[run_start(i - 1) : i]}
    return result


def ancestors(deps: dict[str, set[str]], name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(deps[name])
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(deps[current])
    return seen


def definition(steps: list[StepSpec]) -> dict[str, Any]:
    def step(name: str, parallel: bool, depends_on: list[str] | None, reads: str | None) -> dict[str, Any]:
        payload = {"x": f"{{{{ steps.{reads}.output.id }}}}"} if reads else {"x": "{{ input.a }}"}
        data: dict[str, Any] = {
            "name": name,
            "type": "service_call",
            "config": {"service": "svc", "endpoint": f"/{name}", "payload": payload},
            "output": {"id": "{{ response.id }}"},
        }
        if parallel:
            data["parallel"] = True
        if depends_on is not None:
            data["depends_on"] = depends_on
        return data

    return {
        "apiVersion": "workflow/v1",
        "kind": "Workflow",
        "metadata": {"name": "generated", "version": "1"},
        "spec": {
            "input": {"schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
            "steps": [step(*s) for s in steps],
        },
    }


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(dag_steps())
def test_dependencies_follow_the_ordering_rules(steps: list[StepSpec]) -> None:
    defn = parse_definition(definition(steps), file="gen.yaml")
    got = {name: set(deps) for name, deps in defn.dependencies.items()}
    assert got == expected_dependencies(steps)
    assert list(defn.steps_by_name) == [s[0] for s in steps]
    assert check_definition(defn, file="gen.yaml", known_services={"svc"}) == []


@FAST
@given(dag_steps(), st.data())
def test_reading_a_step_is_fine_exactly_when_it_is_upstream(steps: list[StepSpec], data: st.DataObject) -> None:
    deps = expected_dependencies(steps)
    names = [s[0] for s in steps]
    reader = names[data.draw(st.integers(0, len(names) - 1))]
    others = [n for n in names if n != reader] or [reader]
    target = others[data.draw(st.integers(0, len(others) - 1))]
    steps = [(n, p, d, target if n == reader else None) for n, p, d, _ in steps]
    defn = parse_definition(definition(steps), file="gen.yaml")
    problems = check_definition(defn, file="gen.yaml")
    if target in ancestors(deps, reader):
        assert problems == []
    else:
        assert [(p.step, p.field) for p in problems] == [(reader, "config.payload.x")]
