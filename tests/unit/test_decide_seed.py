"""The seed's user-registration workflow through the pure core: waits for an
event, its timeout and compensation workflow, compensation steps, cancel."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.events import (
    ChildExecutionRequested,
    CompensationFinished,
    CompensationStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
    StepSkipped,
    StepWaiting,
    TimerFired,
    WaitSatisfied,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
)
from orchestrator.core.loading import load_definition_source
from orchestrator.core.messages import (
    CancelWorkflow,
    ChildExecutionEnded,
    DeliverEvent,
    FireTimer,
    StartWorkflow,
    TaskFailed,
    TaskSucceeded,
)
from orchestrator.core.outbox import outbox

from .scenario import Scenario

SEED = Path(__file__).resolve().parents[2] / "examples" / "user-registration-workflow.yaml"
REGISTRATION = load_definition_source(SEED.read_text("utf-8"), file=str(SEED))
T0 = 1_000_000
DAY = 86_400_000
INPUT = {"username": "john", "email": "john@example.com", "password": "correct horse"}


def ok(step: str, output=None, attempt: int = 1) -> TaskSucceeded:
    return TaskSucceeded("exec-1", step, attempt, output if output is not None else {}, T0, T0)


def failed(step: str, attempt: int = 1, status: int = 503) -> TaskFailed:
    return TaskFailed("exec-1", step, attempt, f"HTTP {status}", status >= 500, status, T0, T0)


def verified(user_id: str = "u-1", event_id: str = "evt-1") -> DeliverEvent:
    return DeliverEvent("exec-1", "wait_for_verification", event_id, "user.email_verified",
                        {"user_id": user_id}, T0, "mailer")


def registered(profile: bool = True) -> Scenario:
    """Started; account created; profile (optionally) and welcome e-mail done: waiting."""
    s = Scenario(REGISTRATION)
    s.when(StartWorkflow("exec-1", REGISTRATION.name, REGISTRATION.version, INPUT))
    s.when(ok("validate_input", {"valid": True}))
    s.when(ok("create_user_account", {"user_id": "u-1"}))
    if profile:
        s.when(ok("create_user_profile", {"id": "p-1"}))
    s.when(ok("send_welcome_email", {"sent": True}))
    return s


def statuses(s: Scenario) -> dict[str, str]:
    return {name: step.status for name, step in s.state.steps.items()}


def test_the_wait_opens_with_its_filter_resolved_and_a_timeout():
    s = Scenario(REGISTRATION)
    s.when(StartWorkflow("exec-1", REGISTRATION.name, REGISTRATION.version, INPUT))
    s.when(ok("validate_input"))
    events = s.when(ok("create_user_account", {"user_id": "u-1"}))
    # profile and e-mail in parallel
    assert [e.step for e in events if isinstance(e, StepScheduled)] == ["create_user_profile", "send_welcome_email"]
    before = s.state
    events = s.when(ok("send_welcome_email"))
    assert events[-1] == StepWaiting("wait_for_verification", "user.email_verified", None, {"user_id": "u-1"},
                                     T0 + DAY)
    assert s.state.timers["wait:wait_for_verification"] == T0 + DAY
    [opened] = outbox(before, s.state, REGISTRATION, s.history[-2:])
    assert opened.topic == "waits" and opened.key == "exec-1/wait_for_verification"
    assert opened.message.filter == {"user_id": "u-1"} and opened.message.timeout_at == T0 + DAY


def test_the_matching_event_completes_the_wait_and_the_workflow():
    s = registered()
    assert statuses(s)["wait_for_verification"] == "waiting"
    events = s.when(verified())
    assert events[:3] == [
        WaitSatisfied("wait_for_verification", "event", "user.email_verified", "evt-1", {"user_id": "u-1"}, T0,
                      "mailer"),
        StepCompleted("wait_for_verification", 1, {"user_id": "u-1"}),
        StepScheduled("activate_user_account", 1, T0 + 30 * 60_000),
    ]
    assert "wait:wait_for_verification" not in s.state.timers
    s.when(ok("activate_user_account", {"id": "u-1", "status": "active", "activation_date": "2026-11-27T10:00:00Z"}))
    done = s.when(ok("send_activation_notification", {"delivered": True}))[-1]
    assert done == WorkflowCompleted({"user_id": "u-1", "status": "active",
                                      "activation_date": "2026-11-27T10:00:00Z"})


def test_an_event_for_another_user_or_a_repeat_changes_nothing():
    s = registered()
    assert s.when(verified(user_id="u-2")) == []
    assert s.when(DeliverEvent("exec-1", "wait_for_verification", "e", "user.other", {"user_id": "u-1"}, T0)) == []
    assert s.when(verified()) != []
    assert s.when(verified()) == []  # the same event again
    assert s.when(verified(event_id="evt-2")) == []  # the step no longer waits


def test_a_failed_welcome_email_continues_to_the_wait():
    s = Scenario(REGISTRATION)
    s.when(StartWorkflow("exec-1", REGISTRATION.name, REGISTRATION.version, INPUT))
    s.when(ok("validate_input"))
    s.when(ok("create_user_account", {"user_id": "u-1"}))
    events = s.when(failed("send_welcome_email", status=400))
    assert StepFailed("send_welcome_email", 1, "HTTP 400", "continue") in events
    assert isinstance(events[-1], StepWaiting)


def test_wait_timeout_compensates_with_the_named_workflow():
    s = registered()
    before = s.state
    events = s.at(T0 + DAY).when(FireTimer("exec-1", "wait:wait_for_verification"))
    error = "no event 'user.email_verified' within 1d"
    assert events[:3] == [
        TimerFired("wait:wait_for_verification"),
        StepFailed("wait_for_verification", 1, error, "compensate"),
        CompensationStarted("failed", f"step 'wait_for_verification' failed: {error}", "wait_for_verification",
                            "user-cleanup-workflow"),
    ]
    child = events[3]
    assert isinstance(child, ChildExecutionRequested)
    assert child.child_execution_id == "exec-1-compensation" and child.workflow_name == "user-cleanup-workflow"
    assert child.input["execution_id"] == "exec-1" and child.input["failed_step"] == "wait_for_verification"
    assert child.input["steps"]["create_user_account"]["output"] == {"user_id": "u-1"}
    assert child.input["steps"]["create_user_profile"]["completed"] is True
    assert s.state.status == "compensating"
    sent = outbox(before, s.state, REGISTRATION, s.history[-len(events):])
    assert {(o.topic, o.key) for o in sent} == {("waits", "exec-1/wait_for_verification"),
                                                ("commands", "exec-1-compensation")}
    start = next(o.message for o in sent if o.topic == "commands")
    assert start.parent_execution_id == "exec-1" and start.parent_relation == "compensation"
    # the child ends: the parent ends failed, compensation recorded as completed
    events = s.when(ChildExecutionEnded("exec-1", "exec-1-compensation", "compensation", "completed", {}))
    assert events == [CompensationFinished("completed"),
                      WorkflowFailed(f"step 'wait_for_verification' failed: {error}", "wait_for_verification")]


def test_a_failed_compensation_workflow_is_recorded_in_the_failure():
    s = registered()
    s.at(T0 + DAY).when(FireTimer("exec-1", "wait:wait_for_verification"))
    assert s.when(ChildExecutionEnded("exec-1", "someone-else", "compensation", "completed")) == []
    events = s.when(ChildExecutionEnded("exec-1", "exec-1-compensation", "compensation", "failed", None, "boom"))
    assert events[0].outcome == "failed" and "boom" in events[0].error
    assert isinstance(events[1], WorkflowFailed) and "compensation failed" in events[1].error


@pytest.mark.parametrize("profile", [True, False])
def test_activation_failing_runs_compensation_steps_in_order(profile):
    s = registered(profile=profile)
    if not profile:
        s.when(failed("create_user_profile", status=400))  # terminate: fails at once
        assert s.state.status == "compensating"
    else:
        s.when(verified())
        for attempt in (1, 2):
            s.when(failed("activate_user_account", attempt))
            s.when(FireTimer("exec-1", f"retry:activate_user_account:{attempt + 1}"))
        events = s.when(failed("activate_user_account", 3))
        assert [type(e).__name__ for e in events] == [
            "StepAttemptFailed", "StepFailed", "CompensationStarted", "StepScheduled"]
    assert s.history[-1].event == StepScheduled("cleanup_user_account", 1, s.now + 30 * 60_000)
    events = s.when(ok("cleanup_user_account"))
    if profile:
        assert events == [StepCompleted("cleanup_user_account", 1, {}),
                          StepScheduled("cleanup_user_profile", 1, s.now + 30 * 60_000)]
        events = s.when(ok("cleanup_user_profile"))
        assert events[1:] == [CompensationFinished("completed"), WorkflowFailed(
            "step 'activate_user_account' failed: HTTP 503", "activate_user_account")]
    else:
        assert isinstance(events[1], StepSkipped) and events[1].step == "cleanup_user_profile"
        assert events[2] == CompensationFinished("completed")
        assert isinstance(events[3], WorkflowFailed)
    assert s.state.status == "failed"


def test_compensation_waits_for_calls_in_flight_and_a_failing_step_fails_it_visibly():
    s = Scenario(REGISTRATION)
    s.when(StartWorkflow("exec-1", REGISTRATION.name, REGISTRATION.version, INPUT))
    s.when(ok("validate_input"))
    s.when(ok("create_user_account", {"user_id": "u-1"}))
    # cancel while profile and e-mail are in flight: nothing compensates until they report
    events = s.when(CancelWorkflow("exec-1", "user gave up", "ops"))
    assert events == [CompensationStarted("cancelled", "user gave up", None, None, "ops")]
    assert s.when(ok("create_user_profile", {"id": "p-1"})) == [StepCompleted("create_user_profile", 1, {"id": "p-1"})]
    events = s.when(failed("send_welcome_email", status=503))
    assert events[0].will_retry is False  # no retries of main steps while compensating
    assert events[1] == StepFailed("send_welcome_email", 1, "HTTP 503", "abandoned")
    assert events[2].step == "cleanup_user_account"
    s.when(failed("cleanup_user_account", status=500))  # retried under the policy
    assert s.state.step("cleanup_user_account").status == "retrying"
    s.when(FireTimer("exec-1", "retry:cleanup_user_account:2"))
    s.when(failed("cleanup_user_account", 2, status=500))
    s.when(FireTimer("exec-1", "retry:cleanup_user_account:3"))
    events = s.when(failed("cleanup_user_account", 3, status=500))
    assert StepFailed("cleanup_user_account", 3, "HTTP 500", "continue") in events
    assert events[-1].step == "cleanup_user_profile"  # the next one still runs
    events = s.when(ok("cleanup_user_profile"))
    assert events[1] == CompensationFinished("failed", "step 'cleanup_user_account': HTTP 500")
    assert events[2] == WorkflowFailed("user gave up; compensation failed: step 'cleanup_user_account': HTTP 500")
    assert s.state.status == "failed"


def test_cancel_while_waiting_compensates_and_ends_cancelled():
    s = registered()
    before = s.state
    events = s.when(CancelWorkflow("exec-1", "duplicate sign-up"))
    assert events[:2] == [
        StepFailed("wait_for_verification", 1, "abandoned: the execution is compensating", "abandoned"),
        CompensationStarted("cancelled", "duplicate sign-up", None, None),
    ]
    sent = outbox(before, s.state, REGISTRATION, s.history[-len(events):])
    assert ("waits", "exec-1/wait_for_verification", None) in [(o.topic, o.key, o.message) for o in sent]
    assert s.when(verified()) == []  # too late
    s.when(ok("cleanup_user_account"))
    events = s.when(ok("cleanup_user_profile"))
    assert events[-1] == WorkflowCancelled("duplicate sign-up")


def test_cancel_before_anything_completed_ends_cancelled_without_compensation():
    s = Scenario(REGISTRATION)
    s.when(StartWorkflow("exec-1", REGISTRATION.name, REGISTRATION.version, INPUT))
    events = s.when(CancelWorkflow("exec-1"))
    assert [type(e).__name__ for e in events] == ["StepFailed", "WorkflowCancelled"]
    assert s.when(ok("validate_input")) == []


def test_an_optional_input_field_left_out_reads_as_null_in_templates():
    from orchestrator.core.tasks import tasks_for

    s = Scenario(REGISTRATION)
    s.when(StartWorkflow("exec-1", REGISTRATION.name, REGISTRATION.version, INPUT))  # no profile_data
    s.when(ok("validate_input"))
    events = s.when(ok("create_user_account", {"user_id": "u-1"}))
    tasks = tasks_for(s.state, REGISTRATION, s.history[-len(events):])
    assert tasks[0].context["input"]["profile_data"] is None
    assert "profile_data" not in s.state.input  # what was recorded is what the caller sent
