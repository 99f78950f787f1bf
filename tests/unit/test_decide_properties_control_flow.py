"""Properties over random definitions with switches, loops, for_each, delays and
joins, driven by random results, timers and step cancels."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.decide import decide
from orchestrator.core.definition import WorkflowDefinition
from orchestrator.core.events import StepScheduled
from orchestrator.core.evolve import evolve, fold, initial_state
from orchestrator.core.keys import leaf
from orchestrator.core.messages import CancelStep, FireTimer, StartWorkflow, TaskFailed, TaskSucceeded
from orchestrator.core.state import STEP_ACTIVE

from .scenario import Scenario


class _Names:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, kind: str) -> str:
        self.n += 1
        return f"{kind}{self.n}"


def _call(name: str) -> dict[str, Any]:
    return {"name": name, "type": "service_call", "config": {"service": "svc"}}


@st.composite
def _block(draw: st.DrawFn, names: _Names, depth: int) -> list[dict[str, Any]]:
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        kinds = ["call", "call", "delay"] + (["switch", "loop", "for_each"] if depth < 2 else [])
        kind = draw(st.sampled_from(kinds))
        name = names(kind)
        if kind == "call":
            step = _call(name)
        elif kind == "delay":
            step = {"name": name, "type": "delay", "config": {"duration": "1s"}}
        elif kind == "switch":
            step = {"name": name, "type": "switch", "config": {
                "cases": [{"when": f"{{{{ input.flags[{i}] }}}}", "steps": draw(_block(names, depth + 1))}
                          for i in range(draw(st.integers(1, 2)))],
                "default": draw(st.sampled_from([[], [_call(names("d"))]]))}}
        elif kind == "loop":
            body = draw(_block(names, depth + 1))
            step = {"name": name, "type": "loop", "config": {"max_iterations": draw(st.integers(1, 3)),
                                                             "steps": body}}
            last_call = next((s["name"] for s in reversed(body) if s["type"] == "service_call"), None)
            if last_call and draw(st.booleans()):
                step["config"]["until"] = f"{{{{ steps.{last_call}.output.done }}}}"
        else:
            body = draw(_block(names, depth + 1))
            policy = draw(st.sampled_from(["fail_fast", "collect"]))
            step = {"name": name, "type": "for_each", "config": {
                "items": f"{{{{ input.items[:{draw(st.integers(0, 5))}] }}}}",
                "concurrency": draw(st.integers(1, 3)), "on_item_failure": policy,
                "tolerated_failures": draw(st.integers(0, 2)) if policy == "collect" else 0,
                **({"step": body[0]} if len(body) == 1 else {"steps": body})}}
        if draw(st.booleans()):
            step["parallel"] = True
        step["on_failure"] = {"action": draw(st.sampled_from(["terminate", "continue"]))}
        steps.append(step)
    if depth == 0:
        steps.append({**_call("last"), "join": draw(st.sampled_from(["all", "all_completed", "any"]))})
    return steps


@st.composite
def workflows(draw: st.DrawFn) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({
        "apiVersion": "workflow/v1", "kind": "Workflow", "metadata": {"name": "random", "version": "1"},
        "spec": {"config": {"timeout": "30s", "retry_policy": {"max_attempts": 2, "initial_delay": "1s"}},
                 "steps": draw(_block(_Names(), 0))},
    })


INPUT = {"flags": [True, False], "items": list(range(5))}


def _in_flight_per_for_each(s: Scenario) -> dict[str, set[int]]:
    items: dict[str, set[int]] = {}
    for key, step in s.state.steps.items():
        if step.block is not None and step.block.kind == "for_each":
            items[key] = set(step.block.active)
    return items


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(defn=workflows(), data=st.data())
def test_every_execution_ends_within_its_bounds_and_folds_to_its_state(defn, data):
    s = Scenario(defn, execution_id="x")
    s.when(StartWorkflow("x", "random", "1", INPUT))
    for _ in range(600):
        if s.state.terminal:
            break
        running = sorted((k, v.attempt) for k, v in s.state.steps.items() if v.status == "running"
                         and defn.steps_by_name[leaf(k)].type == "service_call")
        active = sorted(k for k, v in s.state.steps.items() if v.status in STEP_ACTIVE)
        choices = [("result", r) for r in running] + [("timer", t) for t in sorted(s.state.timers)]
        choices += [("cancel", k) for k in active[:2]]
        kind, what = data.draw(st.sampled_from(choices))
        if kind == "timer":
            s.at(max(s.now, s.state.timers[what])).when(FireTimer("x", what))
        elif kind == "cancel":
            s.when(CancelStep("x", what, "test"))
        else:
            key, attempt = what
            outcome = data.draw(st.sampled_from(["ok", "ok", "done", "transient", "permanent"]))
            if outcome in ("ok", "done"):
                s.when(TaskSucceeded("x", key, attempt, {"done": outcome == "done"}, s.now, s.now))
            else:
                s.when(TaskFailed("x", key, attempt, "boom", outcome == "transient", None, s.now, s.now))
        for key, indexes in _in_flight_per_for_each(s).items():
            config = defn.steps_by_name[leaf(key)].config
            assert len(indexes) <= config.concurrency
        for r in s.history:
            if isinstance(r.event, StepScheduled):
                assert leaf(r.event.step) in defn.steps_by_name
    assert s.state.terminal, "every execution ends: loops, items and waits are bounded"
    assert not [k for k, v in s.state.steps.items() if v.status in STEP_ACTIVE]
    assert fold("x", s.history) == s.state


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(defn=workflows(), seed=st.integers(0, 2**16))
def test_the_same_inputs_reproduce_the_same_events(defn, seed):
    import random

    rng = random.Random(seed)
    s = Scenario(defn, execution_id="x")
    inputs = [(s.now, StartWorkflow("x", "random", "1", INPUT))]
    s.when(inputs[0][1])
    for _ in range(200):
        if s.state.terminal:
            break
        running = sorted((k, v.attempt) for k, v in s.state.steps.items() if v.status == "running"
                         and defn.steps_by_name[leaf(k)].type == "service_call")
        if running and rng.random() < 0.8:
            key, attempt = rng.choice(running)
            command: Any = TaskSucceeded("x", key, attempt, {"done": rng.random() < 0.5}, s.now, s.now)
        elif s.state.timers:
            timer = min(s.state.timers, key=lambda t: (s.state.timers[t], t))
            s.at(max(s.now, s.state.timers[timer]))
            command = FireTimer("x", timer)
        else:
            break
        inputs.append((s.now, command))
        s.when(command)
    state, replayed = initial_state("x"), []
    for now, command in inputs:
        for r in decide(state, command, defn, now):
            state = evolve(state, r)
            replayed.append(r)
    assert replayed == s.history
