"""Properties of operators' actions over random control-flow definitions: pauses,
resumes, skips and retries mixed into random results and timers."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.events import (
    BranchChosen,
    ChildExecutionRequested,
    ExecutionResumed,
    ItemsResolved,
    IterationStarted,
    StepScheduled,
    StepWaiting,
)
from orchestrator.core.evolve import fold
from orchestrator.core.keys import leaf
from orchestrator.core.messages import (
    FireTimer,
    PauseExecution,
    ResumeExecution,
    RetryExecution,
    SkipStep,
    StartWorkflow,
    TaskFailed,
    TaskSucceeded,
)
from orchestrator.core.state import STEP_ACTIVE

from .scenario import Scenario
from .test_decide_properties_control_flow import INPUT, workflows

_STARTS = (StepScheduled, StepWaiting, BranchChosen, ItemsResolved, IterationStarted, ChildExecutionRequested)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(defn=workflows(), data=st.data())
def test_paused_executions_start_nothing_and_every_execution_still_ends(defn, data):
    s = Scenario(defn, execution_id="x")
    s.when(StartWorkflow("x", "random", "1", INPUT))
    retries = 0
    for _ in range(800):
        status = s.state.status
        if s.state.terminal and (status != "failed" or retries >= 2):
            break
        running = sorted((k, v.attempt) for k, v in s.state.steps.items() if v.status == "running"
                         and defn.steps_by_name[leaf(k)].type == "service_call")
        skippable = sorted(k for k, v in s.state.steps.items()
                           if v.status in STEP_ACTIVE and v.block is None and v.child_execution_id is None)
        choices = [("result", r) for r in running] + [("timer", t) for t in sorted(s.state.timers)]
        choices += [("skip", k) for k in skippable[:2]]
        choices += [("pause", None)] if status == "running" else []
        choices += [("resume", None)] * 3 if status == "paused" else []
        choices += [("retry", None)] if status == "failed" else []
        kind, what = data.draw(st.sampled_from(choices))
        before = len(s.history)
        if kind == "timer":
            s.at(max(s.now, s.state.timers[what])).when(FireTimer("x", what))
        elif kind == "skip":
            s.when(SkipStep("x", what, {"skipped": True}))
        elif kind == "pause":
            s.when(PauseExecution("x"))
        elif kind == "resume":
            s.when(ResumeExecution("x"))
        elif kind == "retry":
            retries += 1
            s.when(RetryExecution("x"))
        else:
            key, attempt = what
            outcome = data.draw(st.sampled_from(["ok", "done", "transient", "permanent"]))
            if outcome in ("ok", "done"):
                s.when(TaskSucceeded("x", key, attempt, {"done": outcome == "done"}, s.now, s.now))
            else:
                s.when(TaskFailed("x", key, attempt, "boom", outcome == "transient", None, s.now, s.now))
        decided = [r.event for r in s.history[before:]]
        if status == "paused" and not any(isinstance(e, ExecutionResumed) for e in decided):
            assert not [e for e in decided if isinstance(e, _STARTS)], f"started while paused: {decided}"
    assert s.state.terminal, "every execution ends, paused or retried on the way"
    assert not [k for k, v in s.state.steps.items() if v.status in STEP_ACTIVE]
    assert fold("x", s.history) == s.state
