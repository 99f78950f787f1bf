"""Long-running workflows on the real engine: the seed's user registration waits for
`user.email_verified`, times out into its compensation workflow, compensates with its
steps, is cancelled, waits for signals. Every role runs (decider, executor, projector,
correlator) against real Kafka and PostgreSQL and the demo services."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.core.messages import ExternalEvent

from .helpers import TERMINAL_EVENTS, codec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEED = (EXAMPLES / "user-registration-workflow.yaml").read_text("utf-8")
CLEANUP = (EXAMPLES / "user-cleanup-workflow.yaml").read_text("utf-8")


def variant(version: str, *, wait_timeout: str | None = None, fast_retries: bool = False) -> str:
    """The seed under another version, with a shorter wait or quicker retries."""
    doc = yaml.safe_load(SEED)
    doc["metadata"]["version"] = version
    if fast_retries:
        doc["spec"]["config"]["retry_policy"].update(initial_delay="100ms", max_delay="500ms")
    if wait_timeout:
        wait = next(s for s in doc["spec"]["steps"] if s["name"] == "wait_for_verification")
        wait["config"]["timeout"] = wait_timeout
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture(scope="module")
def registration(engine):
    engine.register(SEED)
    engine.register(CLEANUP)
    engine.register(variant("1.2.0-fast", fast_retries=True))
    engine.register(variant("1.2.0-short-wait", wait_timeout="2s", fast_retries=True))
    return engine


@pytest.fixture(autouse=True)
def no_faults(registration):
    registration.clear_faults()
    yield
    registration.clear_faults()


def new_user() -> dict[str, Any]:
    n = uuid.uuid4().hex[:8]
    return {"username": f"user_{n}", "email": f"user.{n}@example.com", "password": "s3cret-passw0rd",
            "profile_data": {"first_name": "Ada"}}


def names(events: list) -> list[str]:
    return [type(r.event).__name__ for r in events]


def step_events(events: list, step: str) -> list:
    return [r for r in events if getattr(r.event, "step", None) == step]


def wait_until_waiting(engine, eid: str) -> str:
    """The created user id, once the execution waits for verification."""
    def waiting() -> str | None:
        events = engine.events(eid)
        if any(type(r.event).__name__ in TERMINAL_EVENTS for r in events):
            raise AssertionError(f"{eid} ended before waiting: {names(events)}")
        opened = [r.event for r in events if type(r.event).__name__ == "StepWaiting"]
        return opened[0].filter["user_id"] if opened else None
    return engine.wait(waiting, 30, message=f"{eid} never waited for verification")


def publish(engine, event_type: str, data: Any, event_id: str | None = None) -> str:
    from confluent_kafka import Producer

    from orchestrator.runtime.kafka import producer_config

    event_id = event_id or f"evt-{uuid.uuid4().hex[:8]}"
    producer = Producer(producer_config(engine.settings))
    producer.produce(engine.settings.topics.external_events,
                     codec.encode(ExternalEvent(event_id, event_type, data, 0, "test")), event_id.encode())
    assert producer.flush(10) == 0
    return event_id


def test_the_seed_as_written_completes_on_its_verification_event_only(registration):
    engine = registration
    eid = engine.start("user-registration-workflow", new_user(), version="1.2.0")
    user_id = wait_until_waiting(engine, eid)
    publish(engine, "user.email_verified", {"user_id": "somebody-else"})
    publish(engine, "user.signed_in", {"user_id": user_id})
    # wrong user and wrong type: still waiting a moment later
    status = engine.wait(lambda: engine.rows("SELECT status FROM step_executions WHERE execution_id = %s "
                                             "AND step_name = 'wait_for_verification'", (eid,)), 15)
    assert status[0]["status"] == "waiting"
    assert "WaitSatisfied" not in names(engine.events(eid))
    event_id = publish(engine, "user.email_verified", {"user_id": user_id, "verified_at": "2026-11-27T10:00:00Z"})
    events = engine.wait_ended(eid, 60)
    assert names(events)[-1] == "WorkflowCompleted", names(events)
    [satisfied] = [r.event for r in events if type(r.event).__name__ == "WaitSatisfied"]
    assert satisfied.event_id == event_id and satisfied.data["user_id"] == user_id
    output = events[-1].event.output
    assert output["user_id"] == user_id and output["status"] == "active" and output["activation_date"]
    # the two parallel steps overlap in time
    row = engine.wait_projected(eid, events[-1].sequence)
    assert row["status"] == "completed"
    steps = {r["step_name"]: r for r in engine.rows(
        "SELECT * FROM step_executions WHERE execution_id = %s", (eid,))}
    profile, email = steps["create_user_profile"], steps["send_welcome_email"]
    assert profile["started_at"] < email["finished_at"] and email["started_at"] < profile["finished_at"]
    assert steps["wait_for_verification"]["output"]["user_id"] == user_id
    engine.assert_replay_consistent(eid)


def test_with_the_notification_service_failing_the_welcome_email_fails_and_the_workflow_completes(registration):
    engine = registration
    engine.fault(path_prefix="/notification-service/api/emails", method="POST", status=503, times=-1)
    eid = engine.start("user-registration-workflow", new_user(), version="1.2.0-fast")
    user_id = wait_until_waiting(engine, eid)
    engine.clear_faults()
    publish(engine, "user.email_verified", {"user_id": user_id})
    events = engine.wait_ended(eid, 60)
    assert names(events)[-1] == "WorkflowCompleted"
    failed = [r.event for r in step_events(events, "send_welcome_email") if type(r.event).__name__ == "StepFailed"]
    assert failed and failed[0].action == "continue" and failed[0].attempts == 3


def test_a_verification_event_published_just_before_the_wait_opens_still_completes_it(registration):
    engine = registration
    engine.fault(path_prefix="/notification-service/api/emails", method="POST", delay_ms=2500, times=1)
    eid = engine.start("user-registration-workflow", new_user(), version="1.2.0")

    def created() -> str | None:
        done = [r.event for r in step_events(engine.events(eid), "create_user_account")
                if type(r.event).__name__ == "StepCompleted"]
        return done[0].output["user_id"] if done else None
    user_id = engine.wait(created, 30)
    assert "StepWaiting" not in names(engine.events(eid))  # the welcome e-mail is still being sent
    publish(engine, "user.email_verified", {"user_id": user_id})
    events = engine.wait_ended(eid, 60)
    assert names(events)[-1] == "WorkflowCompleted", names(events)
    assert names(events).index("StepWaiting") < names(events).index("WaitSatisfied")


def test_a_wait_timeout_starts_the_cleanup_workflow_and_links_both_executions(registration):
    engine = registration
    eid = engine.start("user-registration-workflow", new_user(), version="1.2.0-short-wait")
    user_id = wait_until_waiting(engine, eid)
    events = engine.wait_ended(eid, 60)
    assert names(events)[-3:] == ["ChildExecutionRequested", "CompensationFinished", "WorkflowFailed"], names(events)
    child_id = f"{eid}-compensation"
    child_events = engine.wait_ended(child_id, 10)
    started = child_events[0].event
    assert type(started).__name__ == "WorkflowStarted" and started.workflow_name == "user-cleanup-workflow"
    assert started.parent_execution_id == eid and started.parent_relation == "compensation"
    context = started.input
    assert context["execution_id"] == eid and context["failed_step"] == "wait_for_verification"
    assert context["steps"]["create_user_account"]["output"]["user_id"] == user_id
    assert names(child_events)[-1] == "WorkflowCompleted"
    assert events[-2].event.outcome == "completed"
    # the user and the profile were deleted by the cleanup workflow
    deleted = engine.requests(method="DELETE", execution_id=child_id)
    assert {r["path"] for r in deleted} >= {f"/user-service/api/users/{user_id}",
                                            f"/profile-service/api/profiles/user/{user_id}"}
    parent = engine.wait_projected(eid, events[-1].sequence)
    child = engine.wait_projected(child_id, child_events[-1].sequence)
    assert parent["status"] == "failed" and parent["compensation_execution_id"] == child_id
    assert parent["compensation_status"] == "completed"
    assert child["parent_execution_id"] == eid and child["parent_relation"] == "compensation"
    engine.assert_replay_consistent(eid)
    engine.assert_replay_consistent(child_id)


@pytest.mark.parametrize("profile_created", [True, False], ids=["profile-created", "profile-failed"])
def test_a_failure_after_retries_runs_the_compensation_steps_in_order(registration, profile_created):
    engine = registration
    if profile_created:
        engine.fault(path_prefix="/user-service/api/users/", method="PUT", status=503, times=-1)
    else:
        engine.fault(path_prefix="/profile-service/api/profiles", method="POST", status=400, times=1)
    eid = engine.start("user-registration-workflow", new_user(), version="1.2.0-fast")
    if profile_created:
        user_id = wait_until_waiting(engine, eid)
        publish(engine, "user.email_verified", {"user_id": user_id})
    events = engine.wait_ended(eid, 60)
    assert names(events)[-1] == "WorkflowFailed", names(events)
    failing = "activate_user_account" if profile_created else "create_user_profile"
    assert events[-1].event.step == failing
    if profile_created:
        attempts = [r.event for r in step_events(events, failing) if type(r.event).__name__ == "StepAttemptFailed"]
        assert len(attempts) == 3
    started_at = names(events).index("CompensationStarted")
    compensation = [(type(r.event).__name__, r.event.step) for r in events[started_at:]
                    if type(r.event).__name__ in ("StepScheduled", "StepSkipped")]
    if profile_created:
        assert compensation == [("StepScheduled", "cleanup_user_account"), ("StepScheduled", "cleanup_user_profile")]
    else:
        assert compensation == [("StepScheduled", "cleanup_user_account"), ("StepSkipped", "cleanup_user_profile")]
    assert events[-2].event.outcome == "completed"
    row = engine.wait_projected(eid, events[-1].sequence)
    assert row["compensation_status"] == "completed"
    phases = {r["step_name"]: r["phase"] for r in engine.rows(
        "SELECT step_name, phase FROM step_executions WHERE execution_id = %s", (eid,))}
    assert phases["cleanup_user_account"] == "compensation" and phases["create_user_account"] == "main"


def test_a_compensation_step_that_fails_for_good_fails_the_execution_visibly(registration):
    engine = registration
    engine.fault(path_prefix="/profile-service/api/profiles", method="POST", status=400, times=1)
    engine.fault(path_prefix="/user-service/api/users/", method="DELETE", status=500, times=-1)
    eid = engine.start("user-registration-workflow", new_user(), version="1.2.0-fast")
    events = engine.wait_ended(eid, 60)
    assert names(events)[-2:] == ["CompensationFinished", "WorkflowFailed"]
    finished, failed = events[-2].event, events[-1].event
    assert finished.outcome == "failed" and "cleanup_user_account" in finished.error
    assert "compensation failed" in failed.error
    row = engine.wait_projected(eid, events[-1].sequence)
    assert row["status"] == "failed" and row["compensation_status"] == "failed"
    assert "cleanup_user_account" in row["compensation_error"]


def test_cancel_while_waiting_compensates_and_ends_cancelled(registration):
    engine = registration
    eid = engine.start("user-registration-workflow", new_user(), version="1.2.0")
    user_id = wait_until_waiting(engine, eid)
    result = engine.cli("cancel", eid, "--reason", "signed up twice")
    assert result.exit_code == 0, result.output
    events = engine.wait_ended(eid, 60)
    assert names(events)[-1] == "WorkflowCancelled", names(events)
    abandoned = [r.event for r in step_events(events, "wait_for_verification") if type(r.event).__name__ == "StepFailed"]
    assert abandoned[0].action == "abandoned"
    paths = {r["path"] for r in engine.requests(method="DELETE", execution_id=eid)}
    assert f"/user-service/api/users/{user_id}" in paths
    # a late verification changes nothing
    publish(engine, "user.email_verified", {"user_id": user_id})
    row = engine.wait_projected(eid, events[-1].sequence)
    assert row["status"] == "cancelled"
    assert engine.events(eid)[-1].sequence == events[-1].sequence


APPROVAL = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: approval, version: "1"}
spec:
  steps:
    - name: approved
      type: wait_for_event
      config: {signal: approve, timeout: 1m}
    - name: record
      type: service_call
      config:
        service: notification-service
        endpoint: /api/notifications/send
        payload: {approved_by: "{{ steps.approved.output.by }}"}
"""


def test_a_signal_from_the_command_line_completes_a_signal_wait(registration):
    engine = registration
    engine.register(APPROVAL)
    eid = engine.start("approval", {})
    engine.wait(lambda: "StepWaiting" in names(engine.events(eid)), 30)
    result = engine.cli("signal", eid, "approve", "--data", '{"by": "bob"}')
    assert result.exit_code == 0, result.output
    events = engine.wait_ended(eid, 30)
    assert names(events)[-1] == "WorkflowCompleted"
    [request] = engine.requests(execution_id=eid, path_prefix="/notification-service")
    assert request["body"]["approved_by"] == "bob"
