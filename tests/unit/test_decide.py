"""The decider's rules, as given events / when input / then events."""

from __future__ import annotations

from orchestrator.core.events import (
    CommandRejected,
    SignalReceived,
    StepAttemptFailed,
    StepCompleted,
    StepFailed,
    StepScheduled,
    TimerFired,
    TimerScheduled,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowStartRejected,
)
from orchestrator.core.messages import (
    CancelWorkflow,
    FireTimer,
    SignalWorkflow,
    StartWorkflow,
    TaskFailed,
    TaskSucceeded,
)

from .scenario import Scenario, definition

T0 = 1_000_000
MIN = 60_000

PIPELINE = definition("""
    apiVersion: workflow/v1
    kind: Workflow
    metadata: {name: pipeline, version: "1"}
    spec:
      config:
        timeout: 1m
        retry_policy: {max_attempts: 3, backoff: fixed, initial_delay: 2s, jitter: 0}
      input:
        schema:
          type: object
          properties:
            email: {type: string, format: email}
            password: {type: string, minLength: 8}
          required: [email]
      steps:
        - name: a
          type: service_call
          config: {service: s, endpoint: /a}
        - name: b
          type: service_call
          parallel: true
          config: {service: s, endpoint: /b}
          on_failure: {action: continue}
        - name: c
          type: service_call
          parallel: true
          config: {service: s, endpoint: /c}
          on_failure: {action: terminate, message: "C broke"}
        - name: d
          type: service_call
          config: {service: s, endpoint: /d}
      output:
        schema:
          type: object
          properties:
            user_id: {type: string}
            status: {type: string}
""")

START = StartWorkflow("exec-1", "pipeline", "1", {"email": "a@example.com"})


def ok(step: str, attempt: int = 1, output: object = None) -> TaskSucceeded:
    return TaskSucceeded("exec-1", step, attempt, output, T0, T0)


def failed(step: str, attempt: int = 1, status: int | None = 503, transient: bool = True) -> TaskFailed:
    return TaskFailed("exec-1", step, attempt, f"HTTP {status}", transient, status, T0, T0)


def started() -> Scenario:
    s = Scenario(PIPELINE)
    s.when(START)
    return s


def test_start_records_the_input_and_schedules_the_first_step():
    assert Scenario(PIPELINE).when(START) == [
        WorkflowStarted("pipeline", "1", {"email": "a@example.com"}),
        StepScheduled("a", 1, T0 + MIN),
    ]


def test_invalid_input_is_rejected_with_every_violation_listed():
    bad = StartWorkflow("exec-1", "pipeline", "1", {"email": "not-an-email", "password": "short"})
    [event] = Scenario(PIPELINE).when(bad)
    assert isinstance(event, WorkflowStartRejected)
    assert len(event.violations) == 2
    assert any(v.startswith("email:") for v in event.violations)
    assert all("short" not in v for v in event.violations), "a secret's value must not be quoted"
    assert event.input["password"] == "***"


def test_start_of_an_unknown_workflow_is_rejected():
    s = Scenario(PIPELINE)
    from orchestrator.core.decide import decide

    [recorded] = decide(s.state, StartWorkflow("exec-1", "nope", None, {}), None, T0)
    assert recorded.event == WorkflowStartRejected("nope", None, {}, ("unknown workflow 'nope'",))


def test_a_repeated_start_changes_nothing():
    s = started()
    assert s.when(START) == []


def test_parallel_run_follows_the_step_before_it_and_the_next_step_joins_it():
    s = started()
    assert s.when(ok("a")) == [StepCompleted("a", 1, None), StepScheduled("b", 1, T0 + MIN),
                               StepScheduled("c", 1, T0 + MIN)]
    assert s.when(ok("b")) == [StepCompleted("b", 1, None)]
    assert s.when(ok("c")) == [StepCompleted("c", 1, None), StepScheduled("d", 1, T0 + MIN)]


def test_transient_failure_waits_on_a_durable_timer_then_runs_the_next_attempt():
    s = started()
    assert s.when(failed("a")) == [
        StepAttemptFailed("a", 1, "HTTP 503", True, True, 503),
        TimerScheduled("retry:a:2", T0 + 2000),
    ]
    assert s.state.step("a").status == "retrying"
    assert s.at(T0 + 2000).when(FireTimer("exec-1", "retry:a:2")) == [
        TimerFired("retry:a:2"),
        StepScheduled("a", 2, T0 + 2000 + MIN),
    ]


def test_permanent_failure_is_not_retried_and_terminate_fails_the_execution():
    s = started()
    s.when(ok("a"))
    assert s.when(failed("c", status=400, transient=False)) == [
        StepAttemptFailed("c", 1, "HTTP 400", False, False, 400),
        StepFailed("c", 1, "HTTP 400", "terminate"),
        StepFailed("b", 1, "abandoned: the execution failed", "abandoned"),  # b was still running
        WorkflowFailed("C broke: HTTP 400", "c"),
    ]
    assert s.state.status == "failed"
    assert s.when(ok("b")) == []  # its late result changes nothing


def test_continue_lets_dependents_proceed():
    s = started()
    s.when(ok("a"))
    s.when(ok("c"))
    assert s.when(failed("b", status=404, transient=False)) == [
        StepAttemptFailed("b", 1, "HTTP 404", False, False, 404),
        StepFailed("b", 1, "HTTP 404", "continue"),
        StepScheduled("d", 1, T0 + MIN),
    ]


def test_the_last_allowed_attempt_failing_ends_the_step():
    s = started()
    for attempt in (1, 2):
        s.when(failed("a", attempt))
        s.when(FireTimer("exec-1", f"retry:a:{attempt + 1}"))
    events = s.when(failed("a", 3))
    assert events[0] == StepAttemptFailed("a", 3, "HTTP 503", True, False, 503)
    assert events[1] == StepFailed("a", 3, "HTTP 503", "terminate")
    assert isinstance(events[2], WorkflowFailed)


def test_stale_and_duplicate_results_change_nothing():
    s = started()
    s.when(failed("a"))
    assert s.when(ok("a", attempt=1)) == [], "a result of an attempt already failed"
    s.when(FireTimer("exec-1", "retry:a:2"))
    assert s.when(ok("a", attempt=1)) == [], "an older attempt"
    assert s.when(ok("a", attempt=2))[0] == StepCompleted("a", 2, None)
    assert s.when(ok("a", attempt=2)) == [], "the same result again"
    assert s.when(FireTimer("exec-1", "retry:a:2")) == [], "a timer that has fired"


def test_an_attempt_that_outlives_its_timeout_fails_as_transient():
    s = started()
    assert "timeout:a:1" in s.state.timers
    events = s.at(T0 + MIN).when(FireTimer("exec-1", "timeout:a:1"))
    assert events[:2] == [TimerFired("timeout:a:1"),
                          StepAttemptFailed("a", 1, "attempt timed out after 1m", True, True, None)]
    assert s.when(ok("a", attempt=1)) == [], "the late result of the timed-out attempt"


def test_a_completed_attempt_disarms_its_timeout():
    s = started()
    s.when(ok("a"))
    assert "timeout:a:1" not in s.state.timers
    assert s.when(FireTimer("exec-1", "timeout:a:1")) == []


def test_output_takes_each_schema_property_from_the_latest_completed_step_that_has_it():
    s = started()
    s.when(ok("a", output={"user_id": "u1", "status": "pending"}))
    s.when(ok("b", output={"status": "ignored-older"}))
    s.when(ok("c"))
    assert s.when(ok("d", output={"status": "active", "extra": 1}))[-1] == WorkflowCompleted(
        {"user_id": "u1", "status": "active"})


def test_output_that_breaks_its_schema_fails_the_execution():
    s = started()
    s.when(ok("a", output={"user_id": 42}))
    s.when(ok("b"))
    s.when(ok("c"))
    last = s.when(ok("d"))[-1]
    assert isinstance(last, WorkflowFailed) and "user_id" in last.error


def test_cancel_ends_the_execution_and_late_results_are_ignored():
    s = started()
    assert s.when(CancelWorkflow("exec-1", "no longer needed", "alice")) == [
        StepFailed("a", 1, "abandoned: the execution was cancelled", "abandoned"),
        WorkflowCancelled("no longer needed", "alice")]
    assert s.state.timers == {}
    assert s.when(ok("a")) == []
    assert s.when(CancelWorkflow("exec-1")) == [
        CommandRejected("CancelWorkflow", "execution already cancelled", None)]


def test_a_signal_nobody_waits_for_yet_is_kept_and_one_to_an_ended_execution_rejected():
    s = started()
    assert s.when(SignalWorkflow("exec-1", "approve", {"ok": True})) == [SignalReceived("approve", {"ok": True})]
    assert s.state.pending_signals == (("approve", {"ok": True}),)
    s.when(CancelWorkflow("exec-1"))
    [event] = s.when(SignalWorkflow("exec-1", "approve"))
    assert event == CommandRejected("SignalWorkflow", "signal 'approve': execution already cancelled", None)


MAPPED = definition("""
    apiVersion: workflow/v1
    kind: Workflow
    metadata: {name: mapped, version: "2"}
    spec:
      config: {timeout: 10s, execution_timeout: 1h}
      steps:
        - name: create
          type: service_call
          config: {service: s}
        - name: notify
          type: service_call
          condition: "{{ input.notify }}"
          config: {service: s}
      output:
        mapping:
          id: "{{ steps.create.output.id }}"
          notified: "{{ steps.notify.completed }}"
""")


def test_false_condition_skips_the_step_and_output_mapping_keeps_types():
    s = Scenario(MAPPED)
    events = s.when(StartWorkflow("exec-1", "mapped", "2", {"notify": False}))
    assert events[1] == TimerScheduled("execution-timeout", T0 + 3_600_000)
    events = s.when(ok("create", output={"id": 7}))
    assert [type(e).__name__ for e in events] == ["StepCompleted", "StepSkipped", "WorkflowCompleted"]
    assert events[-1] == WorkflowCompleted({"id": 7, "notified": False})


def test_execution_timeout_fails_the_whole_execution():
    s = Scenario(MAPPED)
    s.when(StartWorkflow("exec-1", "mapped", "2", {"notify": True}))
    events = s.at(T0 + 3_600_000).when(FireTimer("exec-1", "execution-timeout"))
    assert events == [TimerFired("execution-timeout"),
                      StepFailed("create", 1, "abandoned: the execution failed", "abandoned"),
                      WorkflowFailed("execution timed out after 1h")]


def test_every_event_type_has_an_applier_in_the_core_and_the_projection():
    import typing

    from orchestrator.core.events import Event
    from orchestrator.core.evolve import APPLIERS
    from projections.apply import APPLIERS as PROJECTION_APPLIERS

    event_types = set(typing.get_args(Event))
    assert set(APPLIERS) == event_types
    assert set(PROJECTION_APPLIERS) == event_types
