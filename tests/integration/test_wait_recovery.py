"""Waits survive the death of every role: all four roles (real processes) are SIGKILLed
while executions of the seed's registration wait; the verification event is published
while nothing runs, and one wait's timeout passes during the outage. After the restart
the event completes its execution, the overdue timeout fires at once, and a timeout still
ahead fires on time (never early)."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer

from orchestrator.core.messages import ExternalEvent, StartWorkflow
from orchestrator.runtime.kafka import producer_config

from .helpers import codec, register
from .test_crash_recovery import stack  # noqa: F401 - the fixture
from .test_long_running import CLEANUP, SEED, variant

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

ROLES = ("decider", "executor", "projector", "correlator")


def _start(stack, version: str) -> str:
    eid = f"wait-{uuid.uuid4().hex[:10]}"
    n = uuid.uuid4().hex[:8]
    start = StartWorkflow(eid, "user-registration-workflow", version,
                          {"username": f"u_{n}", "email": f"u.{n}@example.com", "password": "s3cret-passw0rd"}, "test")
    producer = Producer(producer_config(stack.settings))
    producer.produce(stack.settings.topics.commands, codec.encode(start), eid.encode())
    assert producer.flush(10) == 0
    stack.execution_ids.append(eid)
    return eid


def _kinds(events: list) -> list[str]:
    return [type(r.event).__name__ for r in events]


def test_every_role_killed_during_a_wait_and_restarted(stack):  # noqa: F811
    register(stack.settings, SEED)
    register(stack.settings, CLEANUP)
    register(stack.settings, variant("overdue", wait_timeout="6s", fast_retries=True))
    register(stack.settings, variant("ahead", wait_timeout="25s", fast_retries=True))
    for role in ROLES:
        stack.start(role)
    verified, overdue, ahead = _start(stack, "1.2.0"), _start(stack, "overdue"), _start(stack, "ahead")

    def all_waiting() -> dict | None:
        events = stack.events()
        waits = {eid: next((r.event for r in events.get(eid, []) if type(r.event).__name__ == "StepWaiting"), None)
                 for eid in (verified, overdue, ahead)}
        return waits if all(waits.values()) else None
    try:
        waits = stack.wait(all_waiting, 60, "the executions did not all reach the wait")
    except AssertionError:
        events = stack.events()
        raise AssertionError(f"not all waiting: { {eid: _kinds(events.get(eid, [])) for eid in stack.execution_ids} }"
                             f"\n--- executor\n{stack.log_tail('executor')}") from None

    stack.kill(*ROLES)
    user_id = waits[verified].filter["user_id"]
    producer = Producer(producer_config(stack.settings))
    event = ExternalEvent("evt-while-down", "user.email_verified", {"user_id": user_id}, int(time.time() * 1000))
    producer.produce(stack.settings.topics.external_events, codec.encode(event), event.event_id.encode())
    assert producer.flush(10) == 0
    while time.time() * 1000 < waits[overdue].timeout_at + 500:  # let the short wait's deadline pass
        time.sleep(0.2)
    restarted_at = int(time.time() * 1000)
    for role in ROLES:
        stack.start(role)


    def ended(eid: str):
        def check():
            history = stack.events().get(eid, [])
            return history if history and _kinds(history)[-1] in ("WorkflowCompleted", "WorkflowFailed") else None
        return stack.wait(check, 90, f"{eid} did not end")

    events = ended(verified)
    assert _kinds(events)[-1] == "WorkflowCompleted", _kinds(events)
    assert [r.event.event_id for r in events if type(r.event).__name__ == "WaitSatisfied"] == ["evt-while-down"]

    events = ended(overdue)
    fired = next(r for r in events if type(r.event).__name__ == "TimerFired")
    assert fired.recorded_at >= restarted_at  # it could not fire while the decider was down
    assert "CompensationStarted" in _kinds(events)

    events = ended(ahead)
    fired = next(r for r in events if type(r.event).__name__ == "TimerFired")
    assert fired.recorded_at >= waits[ahead].timeout_at  # on time, not early
    assert fired.recorded_at - waits[ahead].timeout_at < 10_000
