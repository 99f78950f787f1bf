"""Properties over random DAGs and random outcomes of every attempt."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.definition import WorkflowDefinition
from orchestrator.core.events import StepScheduled
from orchestrator.core.evolve import fold
from orchestrator.core.messages import FireTimer, StartWorkflow, TaskFailed, TaskSucceeded
from orchestrator.core.state import STEP_DONE

from .scenario import Scenario


@st.composite
def workflows(draw: st.DrawFn) -> WorkflowDefinition:
    count = draw(st.integers(1, 7))
    steps = []
    for i in range(count):
        step = {
            "name": f"s{i}",
            "type": "service_call",
            "config": {"service": "svc"},
            "on_failure": {
                "action": draw(st.sampled_from(["terminate", "continue", "retry"])),
                "max_attempts": draw(st.integers(1, 3)),
            },
        }
        shape = draw(st.sampled_from(["implicit", "explicit", "parallel"]))
        if shape == "explicit" and i:
            step["depends_on"] = draw(st.lists(st.sampled_from([f"s{j}" for j in range(i)]), unique=True))
        elif shape == "parallel":
            step["parallel"] = True
        steps.append(step)
    return WorkflowDefinition.model_validate({
        "apiVersion": "workflow/v1", "kind": "Workflow",
        "metadata": {"name": "random", "version": "1"},
        "spec": {"config": {"timeout": "30s", "retry_policy": {"initial_delay": "1s", "jitter": 0.5}},
                 "steps": steps},
    })


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(defn=workflows(), data=st.data())
def test_every_execution_ends_dependencies_hold_and_the_log_folds_to_the_state(defn, data):
    s = Scenario(defn, execution_id="x")
    s.when(StartWorkflow("x", "random", "1", {}))
    for _ in range(200):
        if s.state.terminal:
            break
        running = sorted((n, st_.attempt) for n, st_ in s.state.steps.items() if st_.status == "running")
        choices = [("result", r) for r in running] + [("timer", t) for t in sorted(s.state.timers)]
        kind, what = data.draw(st.sampled_from(choices))
        if kind == "timer":
            s.at(max(s.now, s.state.timers[what])).when(FireTimer("x", what))
            continue
        name, attempt = what
        outcome = data.draw(st.sampled_from(["ok", "transient", "permanent"]))
        if outcome == "ok":
            s.when(TaskSucceeded("x", name, attempt, {"n": attempt}, s.now, s.now))
        else:
            s.when(TaskFailed("x", name, attempt, outcome, outcome == "transient", None, s.now, s.now))
        s.now += 10
    assert s.state.terminal, "every execution ends"

    for i, recorded in enumerate(s.history):
        if isinstance(recorded.event, StepScheduled):
            before = fold("x", s.history[:i])
            deps = defn.dependencies[recorded.event.step]
            assert all(before.step(d).status in STEP_DONE for d in deps), "ran before its dependencies"
    assert fold("x", s.history) == s.state
    assert [r.sequence for r in s.history] == list(range(1, len(s.history) + 1))


@settings(max_examples=50, deadline=None)
@given(defn=workflows(), seed=st.integers(0, 2**16))
def test_the_same_inputs_reproduce_the_same_events(defn, seed):
    def run() -> list:
        s = Scenario(defn, execution_id=f"x{seed}")
        s.when(StartWorkflow(f"x{seed}", "random", "1", {}))
        for name in list(defn.steps_by_name):
            if s.state.step(name).status == "running":
                s.when(TaskFailed(f"x{seed}", name, 1, "boom", True, 503, s.now, s.now))
        return s.history

    assert run() == run()
