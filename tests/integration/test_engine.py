"""End to end: decider, executor and projector running together (threads of this process)
against the real Kafka and PostgreSQL and the demo services.

One engine per module (the `engine` fixture: own topic prefix, Postgres schema, service
registry and secret key); each test starts executions with ids of its own. Every test ends
by checking `orchestrator replay ID` for its executions; the last one checks that the live
projection equals a rebuild from offset 0.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from orchestrator.core.definition import RetryPolicy
from orchestrator.core.messages import CancelWorkflow, TaskSucceeded
from orchestrator.core.retry import retry_delay_ms
from orchestrator.runtime.kafka import consumer_config, partition_for, read_partition_to_end

from .helpers import codec, send

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ONBOARDING = (ROOT / "examples" / "user-onboarding.yaml").read_text()

# Short delays keep the module fast; jitter is checked against its bounds.
RETRY_POLICY = {"max_attempts": 3, "backoff": "exponential", "initial_delay": "100ms", "multiplier": 2,
                "max_delay": "2s", "jitter": 0.25}

RETRY_WF = f"""
apiVersion: workflow/v1
kind: Workflow
metadata: {{name: e2e-retry, version: "1"}}
spec:
  config:
    timeout: 5s
    retry_policy: {json.dumps(RETRY_POLICY)}
  input:
    schema: {{type: object, properties: {{user_id: {{type: string}}}}, required: [user_id]}}
  steps:
    - name: notify
      type: service_call
      config:
        service: notification-service
        endpoint: /api/notifications/send
        method: POST
        payload: {{user_id: "{{{{ input.user_id }}}}", type: retry-test}}
"""

# A profile without user_id: the demo answers 400 (a permanent failure).
FAILING_WF = """
apiVersion: workflow/v1
kind: Workflow
metadata: {{name: e2e-{action}, version: "1"}}
spec:
  config:
    timeout: 5s
    retry_policy: {{max_attempts: 3, backoff: fixed, initial_delay: 100ms}}
  input:
    schema: {{type: object, properties: {{tag: {{type: string}}}}}}
  steps:
    - name: broken
      type: service_call
      config:
        service: profile-service
        endpoint: /api/profiles
        method: POST
        payload: {{profile_data: {{tag: "{{{{ input.tag }}}}"}}}}
      on_failure: {{action: {action}, message: "Profile creation failed"}}
    - name: after
      type: service_call
      config:
        service: notification-service
        endpoint: /api/notifications/send
        method: POST
        payload: {{broken_status: "{{{{ steps.broken.status }}}}", tag: "{{{{ input.tag }}}}"}}
"""

CANCEL_WF = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: e2e-cancel, version: "1"}
spec:
  config:
    timeout: 20s
    retry_policy: {max_attempts: 2, initial_delay: 100ms}
  input:
    schema: {type: object, properties: {user_id: {type: string}}}
  steps:
    - name: slow
      type: service_call
      config:
        service: profile-service
        endpoint: /api/profiles
        method: POST
        payload: {user_id: "{{ input.user_id }}"}
    - name: after
      type: service_call
      config:
        service: notification-service
        endpoint: /api/notifications/send
        method: POST
        payload: {user_id: "{{ input.user_id }}"}
"""

DEFINITIONS = (ONBOARDING, RETRY_WF, FAILING_WF.format(action="continue"), FAILING_WF.format(action="terminate"),
               CANCEL_WF)


@pytest.fixture(scope="module")
def e2e(engine):
    for source in DEFINITIONS:
        engine.register(source)
    yield engine
    engine.clear_faults()


@pytest.fixture(autouse=True)
def no_faults_left(e2e):
    yield
    e2e.clear_faults()


# -- helpers ----------------------------------------------------------------------------------


def kinds(events: list) -> list[str]:
    return [type(r.event).__name__ for r in events]


def of(events: list, kind: str, step: str | None = None) -> list:
    return [r for r in events if type(r.event).__name__ == kind
            and (step is None or getattr(r.event, "step", None) == step)]


def finish(engine, eid: str, timeout: float = 30.0) -> tuple[list, dict]:
    """The execution's events once it ended, and its projected row once the projector caught up."""
    events = engine.wait_ended(eid, timeout)
    row = engine.wait_projected(eid, events[-1].sequence)
    return events, row


def step_rows(engine, eid: str) -> dict[str, dict]:
    return {r["step_name"]: r for r in engine.rows(
        "SELECT * FROM step_executions WHERE execution_id = %s ORDER BY step_name", (eid,))}


def new_user() -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    return {"username": f"user_{tag}", "email": f"{tag}@example.com", "password": "secure_password123",
            "profile_data": {"first_name": "Ann", "tag": tag}}


# -- 1. sequential and parallel calls ---------------------------------------------------------------


def test_user_onboarding_runs_sequential_and_parallel_calls_to_completion(e2e):
    eid = e2e.start("user-onboarding", new_user())
    events, row = finish(e2e, eid, timeout=45)

    assert kinds(events)[-1] == "WorkflowCompleted", kinds(events)
    steps = ["validate_input", "create_user_account", "create_user_profile", "send_welcome_email",
             "activate_user_account", "send_activation_notification"]
    assert {r.event.step for r in of(events, "StepCompleted")} == set(steps)
    output = events[-1].event.output
    assert output["user_id"].startswith("usr_") and output["status"] == "active" and output["activation_date"]

    # The two parallel steps were scheduled by one decision, right after create_user_account
    # completed, and activate_user_account only after both completed.
    [profile_scheduled] = of(events, "StepScheduled", "create_user_profile")
    [email_scheduled] = of(events, "StepScheduled", "send_welcome_email")
    [account_done] = of(events, "StepCompleted", "create_user_account")
    [activate_scheduled] = of(events, "StepScheduled", "activate_user_account")
    assert profile_scheduled.cause == email_scheduled.cause == account_done.cause
    assert account_done.sequence < min(profile_scheduled.sequence, email_scheduled.sequence)
    parallel_done = [r for name in ("create_user_profile", "send_welcome_email")
                     for r in of(events, "StepCompleted", name)]
    assert max(r.sequence for r in parallel_done) < activate_scheduled.sequence

    # What the services saw: one request per step, with the step's Idempotency-Key.
    seen = {name: e2e.requests(idempotency_key=f"{eid}/{name}") for name in steps[1:]}
    for name in steps[1:]:
        assert len(seen[name]) == 1, (name, seen[name])
    at = {name: seen[name][0]["at"] for name in steps[1:]}
    assert at["create_user_account"] < at["create_user_profile"] < at["activate_user_account"]
    assert at["create_user_account"] < at["send_welcome_email"] < at["activate_user_account"]
    # ...and they overlapped: both calls were made before either result was recorded.
    assert max(at["create_user_profile"], at["send_welcome_email"]) * 1000 <= min(
        r.recorded_at for r in parallel_done), "the parallel calls ran one after the other"
    validations = e2e.requests(execution_id=eid, path_prefix="/user-service/api/validate")
    assert sorted(r["body"]["rule"] for r in validations) == ["unique_email", "unique_username"]
    assert max(r["at"] for r in validations) < at["create_user_account"]

    # The projection (the test's schema).
    assert row["status"] == "completed" and row["workflow_name"] == "user-onboarding"
    assert row["output"] == output and row["input"]["password"] == "***"
    assert row["started_at"] is not None and row["finished_at"] is not None
    rows = step_rows(e2e, eid)
    assert set(rows) == set(steps)
    assert {(r["status"], r["attempts"]) for r in rows.values()} == {("completed", 1)}
    projected = e2e.rows("SELECT * FROM execution_events WHERE execution_id = %s ORDER BY sequence", (eid,))
    assert [(r["sequence"], r["event_type"]) for r in projected] == [(r.sequence, t) for r, t in
                                                                     zip(events, kinds(events))]
    assert {r["kafka_partition"] for r in projected} == {partition_for(eid, e2e.settings.partitions)}

    # `orchestrator history ID --json`: the same events, read from Kafka.
    result = e2e.cli("history", eid, "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["sequence"], d["event_type"]) for d in lines] == [(r.sequence, t) for r, t in
                                                                 zip(events, kinds(events))]
    assert all(d["execution_id"] == eid and d["error"] is None for d in lines)
    assert [d["offset"] for d in lines] == [r["kafka_offset"] for r in projected]

    e2e.assert_replay_consistent(eid)


# -- 2. transient failures: retried with backoff, one Idempotency-Key -------------------------------


def test_a_503_twice_then_200_completes_after_three_attempts_with_backoff(e2e):
    path = "/notification-service/api/notifications/send"
    e2e.fault(path_prefix=path, method="POST", status=503, times=2)
    eid = e2e.start("e2e-retry", {"user_id": f"u-{uuid.uuid4().hex[:8]}"})
    events, row = finish(e2e, eid)

    assert kinds(events)[-1] == "WorkflowCompleted", kinds(events)
    [completed] = of(events, "StepCompleted", "notify")
    assert completed.event.attempt == 3
    failures = of(events, "StepAttemptFailed", "notify")
    assert [(f.event.attempt, f.event.status_code, f.event.transient, f.event.will_retry) for f in failures] == [
        (1, 503, True, True), (2, 503, True, True)]
    assert [s.event.attempt for s in of(events, "StepScheduled", "notify")] == [1, 2, 3]

    # The waits follow the policy: exponential from 100ms, +/- 25% jitter, deterministic per attempt.
    policy = RetryPolicy.model_validate(RETRY_POLICY)
    timers = of(events, "TimerScheduled")
    assert [t.event.timer_id for t in timers] == ["retry:notify:2", "retry:notify:3"]
    requests = e2e.requests(idempotency_key=f"{eid}/notify", path_prefix=path)
    assert len(requests) == 3, requests
    for n, (failure, timer) in enumerate(zip(failures, timers), start=1):
        base = 100 * 2 ** (n - 1)
        delay = timer.event.fire_at - failure.recorded_at
        assert timer.sequence == failure.sequence + 1
        assert delay == retry_delay_ms(policy, n, f"{eid}/notify")
        assert base * 0.75 <= delay <= base * 1.25, (n, delay)
        [next_scheduled] = [s for s in of(events, "StepScheduled", "notify") if s.event.attempt == n + 1]
        assert next_scheduled.recorded_at >= timer.event.fire_at
        # Measured at the service: the next request came after the wait, and not much later.
        gap_ms = (requests[n]["at"] - requests[n - 1]["at"]) * 1000
        assert delay <= gap_ms <= delay + 2000, (n, delay, gap_ms)
        assert requests[n]["at"] * 1000 >= timer.event.fire_at - 5  # same host clock (ms rounding)

    assert {r["headers"]["idempotency-key"] for r in requests} == {f"{eid}/notify"}
    assert row["status"] == "completed"
    assert (step_rows(e2e, eid)["notify"]["status"], step_rows(e2e, eid)["notify"]["attempts"]) == ("completed", 3)
    e2e.assert_replay_consistent(eid)


# -- 3. + 4. permanent failures; on_failure continue / terminate ------------------------------------


def test_a_400_is_not_retried_and_terminate_fails_the_execution_with_its_message(e2e):
    tag = uuid.uuid4().hex[:10]
    eid = e2e.start("e2e-terminate", {"tag": tag})
    events, row = finish(e2e, eid)

    assert kinds(events)[-1] == "WorkflowFailed", kinds(events)
    requests = e2e.requests(idempotency_key=f"{eid}/broken")
    assert len(requests) == 1 and requests[0]["path"] == "/profile-service/api/profiles", requests
    [attempt] = of(events, "StepAttemptFailed", "broken")
    assert (attempt.event.attempt, attempt.event.status_code, attempt.event.transient,
            attempt.event.will_retry) == (1, 400, False, False)
    assert not of(events, "TimerScheduled")
    [failed] = of(events, "StepFailed", "broken")
    assert (failed.event.attempts, failed.event.action) == (1, "terminate")
    assert [s.event.attempt for s in of(events, "StepScheduled", "broken")] == [1]
    assert not of(events, "StepScheduled", "after"), "a terminated execution runs nothing more"
    assert not e2e.requests(idempotency_key=f"{eid}/after")
    error = events[-1].event.error
    assert error.startswith("Profile creation failed") and events[-1].event.step == "broken"

    assert row["status"] == "failed" and row["error"] == error and row["failed_step"] == "broken"
    broken = step_rows(e2e, eid)["broken"]
    assert (broken["status"], broken["attempts"]) == ("failed", 1) and "400" in broken["error"]
    assert "after" not in step_rows(e2e, eid) or step_rows(e2e, eid)["after"]["status"] == "pending"
    e2e.assert_replay_consistent(eid)


def test_on_failure_continue_lets_the_dependents_run_and_the_execution_complete(e2e):
    tag = uuid.uuid4().hex[:10]
    eid = e2e.start("e2e-continue", {"tag": tag})
    events, row = finish(e2e, eid)

    assert kinds(events)[-1] == "WorkflowCompleted", kinds(events)
    [failed] = of(events, "StepFailed", "broken")
    assert (failed.event.attempts, failed.event.action) == (1, "continue")
    assert len(e2e.requests(idempotency_key=f"{eid}/broken")) == 1
    [after] = e2e.requests(idempotency_key=f"{eid}/after")
    assert after["body"] == {"broken_status": "failed", "tag": tag}  # it saw the failed step
    assert of(events, "StepCompleted", "after")

    assert row["status"] == "completed" and row["error"] is None
    rows = step_rows(e2e, eid)
    assert (rows["broken"]["status"], rows["broken"]["attempts"]) == ("failed", 1)
    assert (rows["after"]["status"], rows["after"]["attempts"]) == ("completed", 1)
    e2e.assert_replay_consistent(eid)


# -- 5. cancel while a call is slow ------------------------------------------------------------------


def _committed(settings, group: str, topic: str, partition: int) -> int:
    consumer = Consumer(consumer_config(settings, group))
    try:
        [tp] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def test_cancelling_during_a_slow_call_ends_cancelled_and_the_late_result_changes_nothing(e2e):
    settings = e2e.settings
    path = "/profile-service/api/profiles"
    delay_ms = 2000
    e2e.fault(path_prefix=path, method="POST", status=None, delay_ms=delay_ms, times=1)  # slow, then 201
    eid = e2e.start("e2e-cancel", {"user_id": f"u-{uuid.uuid4().hex[:8]}"})
    [call] = e2e.wait(lambda: e2e.requests(idempotency_key=f"{eid}/slow"), 20, "the slow call was not made")
    send(settings, settings.topics.commands, CancelWorkflow(eid, "test cancels", "test"))
    events, row = finish(e2e, eid)
    assert kinds(events) == ["WorkflowStarted", "StepScheduled", "StepFailed", "WorkflowCancelled"], kinds(events)
    assert events[-2].event.action == "abandoned"  # the slow call, still in flight, no longer counts
    assert events[-1].event.reason == "test cancels"
    assert events[-1].recorded_at < call["at"] * 1000 + delay_ms, "cancelled only after the call had returned"
    assert row["status"] == "cancelled"
    steps_then = step_rows(e2e, eid)

    # The call finishes later; its result reaches the decider, which records nothing.
    partition = partition_for(eid, settings.partitions)

    def late_result() -> list[int]:  # [its offset] (a list: offset 0 is falsy)
        for msg in read_partition_to_end(settings, settings.topics.results, partition):
            result = codec.decode(msg.value()) if msg.key() == eid.encode() else None
            if isinstance(result, TaskSucceeded) and result.step == "slow":
                return [msg.offset()]
        return []

    [offset] = e2e.wait(late_result, 15, "no late result")
    e2e.wait(lambda: _committed(settings, settings.group_id("decider"), settings.topics.results, partition) > offset,
             15, "the decider did not consume the late result")
    assert kinds(e2e.events(eid)) == kinds(events), "the late result changed the history"
    assert not e2e.requests(idempotency_key=f"{eid}/after")
    time.sleep(0.5)  # give a (wrong) projection update a chance to show
    assert e2e.rows("SELECT status, last_sequence FROM workflow_executions WHERE id = %s", (eid,)) == [
        {"status": "cancelled", "last_sequence": events[-1].sequence}]
    assert step_rows(e2e, eid) == steps_then
    e2e.assert_replay_consistent(eid)


# -- 6. the projection equals a rebuild from offset 0 ----------------------------------------------


def test_the_projection_equals_a_rebuild_from_offset_0(e2e, database_url):
    import psycopg
    from psycopg import sql

    from projections import snapshot
    from projections.rebuild import rebuild

    if not e2e.execution_ids:  # run alone: make something to project
        e2e.start("user-onboarding", new_user())
    for eid in e2e.execution_ids:
        finish(e2e, eid, timeout=45)
    e2e.wait(lambda: len(e2e.rows("SELECT name FROM workflow_definitions")) == len(DEFINITIONS), 15,
             "definitions not projected")

    with e2e.connect() as conn:
        live = snapshot(conn, e2e.schema)
        live_offsets = snapshot(conn, e2e.schema, include_offsets=True)["projection_offsets"]
    assert {r["id"] for r in live["workflow_executions"]} == set(e2e.execution_ids)

    other = f"test_{uuid.uuid4().hex[:12]}"
    try:
        result = rebuild(e2e.settings, schema=other, timeout_s=60)
        assert result.events == len(live["execution_events"]) and result.definitions == len(DEFINITIONS)
        with e2e.connect() as conn:
            assert snapshot(conn, other) == live
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other)))

    # Rebuilding the live schema itself, with the projector running, gives the same rows.
    rebuild(e2e.settings, schema=e2e.schema, timeout_s=60)
    with e2e.connect() as conn:
        again = snapshot(conn, e2e.schema, include_offsets=True)
    offsets = again.pop("projection_offsets")
    assert again == live
    assert offsets == live_offsets
    for eid in e2e.execution_ids:
        e2e.assert_replay_consistent(eid)
