"""Given/when/then over operators' actions: retry from the failed step, pause and
resume, skip a step with an output."""

from __future__ import annotations

from orchestrator.core.events import (
    ChildExecutionRequested,
    CommandRejected,
    CompensationStarted,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionRetried,
    ItemsResolved,
    StepAttemptFailed,
    StepCompleted,
    StepFailed,
    StepScheduled,
    StepSkipped,
    TimerFired,
    TimerScheduled,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
)
from orchestrator.core.evolve import fold
from orchestrator.core.messages import (
    CancelWorkflow,
    ChildExecutionEnded,
    DeliverEvent,
    FireTimer,
    PauseExecution,
    ResumeExecution,
    RetryExecution,
    SkipStep,
    StartWorkflow,
    TaskFailed,
    TaskSucceeded,
)
from orchestrator.core.outbox import outbox
from orchestrator.core.tasks import tasks_for

from .scenario import Scenario, definition

FOUR_STEPS = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: four, version: "1"}
spec:
  config: {retry_policy: {max_attempts: 2, initial_delay: 1s, backoff: fixed, jitter: false}}
  input:
    schema: {type: object, properties: {n: {type: integer}}}
  steps:
    - {name: one, type: service_call, config: {service: s, endpoint: /one}}
    - {name: two, type: service_call, config: {service: s, endpoint: /two}}
    - {name: three, type: service_call, config: {service: s, endpoint: /three}}
    - name: four
      type: service_call
      config: {service: s, endpoint: /four, payload: {n: "{{ input.n }}", from_three: "{{ steps.three.output }}"}}
"""


def four_steps() -> Scenario:
    s = Scenario(definition(FOUR_STEPS))
    s.when(StartWorkflow("exec-1", "four", "1", {"n": 1}))
    return s


def ok(s: Scenario, key: str, output=None, attempt: int = 1) -> list:
    return s.when(TaskSucceeded(s.state.execution_id, key, attempt, output, 0, 0))


def bad(s: Scenario, key: str, attempt: int = 1, transient: bool = False) -> list:
    error, code = ("HTTP 503", 503) if transient else ("HTTP 400", 400)
    return s.when(TaskFailed(s.state.execution_id, key, attempt, error, transient, code, 0, 0))


def failed_at_four() -> Scenario:
    s = four_steps()
    for i, name in enumerate(("one", "two", "three")):
        ok(s, name, {"from": name, "i": i})
    bad(s, "four")
    assert s.state.status == "failed" and s.state.failed_step == "four"
    return s


def scheduled(events: list) -> list[tuple[str, int]]:
    return [(e.step, e.attempt) for e in events if isinstance(e, StepScheduled)]


def rejected(events: list) -> str:
    [event] = events
    assert isinstance(event, CommandRejected)
    return event.reason


# -- retry -------------------------------------------------------------------------


def test_retry_reruns_the_failed_fourth_step_only_and_reuses_the_outputs_before_it():
    s = failed_at_four()
    before = s.state
    events = s.when(RetryExecution("exec-1", reason="service fixed", requested_by="api:ops"))
    assert events[0] == ExecutionRetried(("four",), None, "service fixed", "api:ops")
    assert scheduled(events) == [("four", 2)]  # attempts keep counting: a late result of attempt 1 stays stale
    [task] = tasks_for(s.state, s.definition, s.history[-len(events):])
    assert task.idempotency_key == "exec-1/four/rerun-1"  # not answered from the service's cache of the failure
    assert task.context["steps"]["three"]["output"] == {"from": "three", "i": 2}
    assert all(s.state.step(n) == before.step(n) for n in ("one", "two", "three"))
    assert ok(s, "four", {"done": True}, attempt=1) == []  # the failed attempt's late answer
    assert isinstance(ok(s, "four", {"done": True}, attempt=2)[-1], WorkflowCompleted)
    assert fold("exec-1", s.history) == s.state


def test_retry_with_new_input_validates_it_and_the_rerun_sees_it():
    s = failed_at_four()
    reason = rejected(s.when(RetryExecution("exec-1", {"n": "not a number"})))
    assert reason.startswith("the new input is invalid") and "n" in reason
    events = s.when(RetryExecution("exec-1", {"n": 7}))
    [task] = tasks_for(s.state, s.definition, s.history[-len(events):])
    assert task.context["input"] == {"n": 7} and s.state.input == {"n": 7}


def test_retried_step_gets_a_fresh_retry_budget():
    s = failed_at_four()
    s.when(RetryExecution("exec-1"))
    [failed] = [e for e in bad(s, "four", attempt=2, transient=True) if isinstance(e, StepAttemptFailed)]
    assert failed.will_retry  # attempt 2 is the rerun's first of max_attempts 2
    events = s.at(s.now + 1_000).when(FireTimer("exec-1", "retry:four:3"))
    assert scheduled(events) == [("four", 3)]
    assert isinstance(bad(s, "four", attempt=3, transient=True)[-1], WorkflowFailed)


def test_only_a_failed_execution_that_compensation_did_not_undo_can_be_retried():
    s = four_steps()
    assert "only a failed execution" in rejected(s.when(RetryExecution("exec-1")))
    fresh = Scenario(definition(FOUR_STEPS), "nothing")
    assert "no such execution" in rejected(fresh.when(RetryExecution("nothing")))
    refused = Scenario(definition(FOUR_STEPS), "bad-input")
    refused.when(StartWorkflow("bad-input", "four", "1", {"n": "x"}))
    assert "start was rejected" in rejected(refused.when(RetryExecution("bad-input")))

    undone = Scenario(definition(FOUR_STEPS.replace("  steps:\n", """  compensation:
    steps:
      - {name: undo_one, type: service_call, config: {service: s, endpoint: /undo}}
  steps:
""")))
    undone.when(StartWorkflow("exec-1", "four", "1", {}))
    ok(undone, "one")
    events = bad(undone, "two")
    assert isinstance(events[-2], CompensationStarted)
    ok(undone, "undo_one")
    assert undone.state.status == "failed"
    assert "compensation undid its completed steps (undo_one)" in rejected(undone.when(RetryExecution("exec-1")))


def test_a_failed_for_each_reruns_whole_and_its_old_iterations_are_dropped():
    s = Scenario(definition("""
apiVersion: workflow/v1
kind: Workflow
metadata: {name: fan, version: "1"}
spec:
  config: {retry_policy: {max_attempts: 1}}
  steps:
    - {name: prepare, type: service_call, config: {service: s, endpoint: /prep}}
    - name: each
      type: for_each
      config:
        items: "{{ [1, 2] }}"
        concurrency: 2
        step: {name: charge, type: service_call, config: {service: s, endpoint: /charge}}
"""))
    s.when(StartWorkflow("exec-1", "fan", "1", {}))
    ok(s, "prepare", "ready")
    ok(s, "each[0].charge", "charged")
    bad(s, "each[1].charge")
    assert s.state.status == "failed"
    events = s.when(RetryExecution("exec-1"))
    assert events[0] == ExecutionRetried(("each",), None, "retried", None)
    assert any(isinstance(e, ItemsResolved) for e in events)
    assert scheduled(events) == [("each[0].charge", 1), ("each[1].charge", 1)]
    assert s.state.step("prepare").output == "ready"
    assert fold("exec-1", s.history) == s.state


def test_a_failed_workflow_step_starts_a_new_child_on_retry():
    s = Scenario(definition("""
apiVersion: workflow/v1
kind: Workflow
metadata: {name: parent, version: "1"}
spec:
  steps:
    - {name: pay, type: workflow, config: {workflow: payment}}
"""))
    s.when(StartWorkflow("exec-1", "parent", "1", {}))
    s.when(ChildExecutionEnded("exec-1", "exec-1.pay", "subworkflow", "failed", None, "declined"))
    assert s.state.status == "failed"
    events = s.when(RetryExecution("exec-1"))
    [child] = [e for e in events if isinstance(e, ChildExecutionRequested)]
    assert child.child_execution_id == "exec-1.pay-rerun1"  # the failed child stays as it ended
    assert s.when(ChildExecutionEnded("exec-1", "exec-1.pay", "subworkflow", "failed", None, "late")) == []
    events = s.when(ChildExecutionEnded("exec-1", "exec-1.pay-rerun1", "subworkflow", "completed", {"ok": 1}))
    assert isinstance(events[-1], WorkflowCompleted)


# -- pause and resume ----------------------------------------------------------------


def test_a_paused_execution_starts_nothing_until_resumed_then_completes():
    s = four_steps()
    assert s.when(PauseExecution("exec-1", "incident", "ada")) == [ExecutionPaused("incident", "ada")]
    assert s.state.status == "paused"
    assert ok(s, "one", 1) == [StepCompleted("one", 1, 1)]  # the call in flight is recorded; two waits
    events = s.when(ResumeExecution("exec-1", "over", "ada"))
    assert events[0] == ExecutionResumed("over", "ada") and scheduled(events) == [("two", 1)]
    ok(s, "two")
    ok(s, "three")
    assert isinstance(ok(s, "four")[-1], WorkflowCompleted)
    assert fold("exec-1", s.history) == s.state


def test_a_retry_whose_backoff_ends_while_paused_waits_for_the_resume():
    s = four_steps()
    events = bad(s, "one", transient=True)
    timer = next(e for e in events if isinstance(e, TimerScheduled))
    s.when(PauseExecution("exec-1"))
    assert s.state.timers[timer.timer_id] == timer.fire_at  # the deadline is kept
    assert s.at(timer.fire_at).when(FireTimer("exec-1", timer.timer_id)) == [TimerFired(timer.timer_id)]
    assert scheduled(s.when(ResumeExecution("exec-1"))) == [("one", 2)]


def test_a_failure_while_paused_still_ends_the_execution_and_cancel_works():
    s = four_steps()
    s.when(PauseExecution("exec-1"))
    assert isinstance(bad(s, "one")[-1], WorkflowFailed)
    other = four_steps()
    other.when(PauseExecution("exec-1"))
    assert isinstance(other.when(CancelWorkflow("exec-1", "no longer needed"))[-1], WorkflowCancelled)


def test_pause_and_resume_apply_only_where_they_mean_something():
    s = four_steps()
    assert "only a paused execution can be resumed" in rejected(s.when(ResumeExecution("exec-1")))
    s.when(PauseExecution("exec-1"))
    assert "already paused" in rejected(s.when(PauseExecution("exec-1")))
    done = failed_at_four()
    assert "execution is failed" in rejected(done.when(PauseExecution("exec-1")))


# -- skip -----------------------------------------------------------------------------


def test_skip_a_pending_step_with_an_output_its_dependents_see():
    s = four_steps()
    s.when(PauseExecution("exec-1"))
    ok(s, "one")
    events = s.when(SkipStep("exec-1", "three", {"stub": True}, "service retired", "api:ops"))
    assert events == [StepSkipped("three", "skipped by api:ops: service retired", {"stub": True}, "api:ops")]
    events = s.when(ResumeExecution("exec-1"))
    assert scheduled(events) == [("two", 1), ("four", 1)]  # four needs only three, which is done
    tasks = tasks_for(s.state, s.definition, s.history[-len(events):])
    assert tasks[1].context["steps"]["three"]["output"] == {"stub": True}


def test_skip_a_running_call_ignores_its_late_result():
    s = four_steps()
    events = s.when(SkipStep("exec-1", "one", "given"))
    assert isinstance(events[0], StepSkipped) and scheduled(events) == [("two", 1)]
    assert "timeout:one:1" not in s.state.timers
    assert ok(s, "one", "late") == []
    assert s.state.step("one").output == "given"


def test_skip_a_waiting_step_closes_its_wait():
    s = Scenario(definition("""
apiVersion: workflow/v1
kind: Workflow
metadata: {name: w, version: "1"}
spec:
  steps:
    - {name: wait, type: wait_for_event, config: {event_type: paid, timeout: 1h}}
    - {name: after, type: service_call, config: {service: s, endpoint: /x}}
"""))
    s.when(StartWorkflow("exec-1", "w", "1", {}))
    before = s.state
    recorded_before = len(s.history)
    s.when(SkipStep("exec-1", "wait", {"paid": "by hand"}))
    out = outbox(before, s.state, s.definition, s.history[recorded_before:])
    assert any(o.topic == "waits" and o.message is None for o in out)
    assert "wait:wait" not in s.state.timers
    assert s.when(DeliverEvent("exec-1", "wait", "e1", "paid", {}, 0)) == []


def test_skip_is_refused_for_ended_unknown_or_running_composite_steps():
    s = four_steps()
    ok(s, "one")
    assert "step already completed" in rejected(s.when(SkipStep("exec-1", "one")))
    assert "no such step" in rejected(s.when(SkipStep("exec-1", "nope")))
    done = failed_at_four()
    assert "execution is failed" in rejected(done.when(SkipStep("exec-1", "four")))
    fan = Scenario(definition("""
apiVersion: workflow/v1
kind: Workflow
metadata: {name: fan, version: "1"}
spec:
  steps:
    - name: each
      type: for_each
      config:
        items: "{{ [1] }}"
        step: {name: charge, type: service_call, config: {service: s, endpoint: /charge}}
"""))
    fan.when(StartWorkflow("exec-1", "fan", "1", {}))
    assert "cancel it instead" in rejected(fan.when(SkipStep("exec-1", "each")))
    assert "iteration is not running" in rejected(fan.when(SkipStep("exec-1", "each[3].charge")))
    events = fan.when(SkipStep("exec-1", "each[0].charge", 5))
    assert isinstance(events[0], StepSkipped) and isinstance(events[-1], WorkflowCompleted)
    assert not any(isinstance(e, StepFailed) for e in (r.event for r in fan.history))
