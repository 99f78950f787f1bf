"""Pending timers of an execution from its projected history (orchestrator/api/reads_timers.py).

Histories are built from the real event classes and stored the way the
projector stores them (`event_payload`), so the timer ids and payload fields
are the ones the decider writes (`orchestrator.core.evolve`'s formats)."""

from __future__ import annotations

from datetime import datetime, timezone

from orchestrator.api.reads_timers import pending_timers
from orchestrator.core.decide import EXECUTION_TIMEOUT_TIMER
from orchestrator.core.events import (
    StepAttemptFailed,
    StepCompleted,
    StepFailed,
    StepScheduled,
    StepWaiting,
    TimerFired,
    TimerScheduled,
    WaitSatisfied,
)
from orchestrator.core.evolve import attempt_timer_id, retry_timer_id, wait_timer_id
from projections.rows import event_payload


def history(*events):
    return [{"event_type": type(e).__name__, "payload": event_payload(e)} for e in events]


def step(name, status, attempts=1):
    return {"step_name": name, "status": status, "attempts": attempts}


def at(ms):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def ids(timers):
    return [t["timer_id"] for t in timers]


def test_a_running_attempt_has_its_timeout_and_the_execution_its_limit():
    events = history(TimerScheduled(EXECUTION_TIMEOUT_TIMER, 900_000), StepScheduled("charge", 1, 30_000))
    timers = pending_timers(events, [step("charge", "running")], "running")
    assert timers == [
        {"timer_id": attempt_timer_id("charge", 1), "kind": "timeout", "step": "charge", "fire_at": at(30_000)},
        {"timer_id": EXECUTION_TIMEOUT_TIMER, "kind": "execution_timeout", "step": None, "fire_at": at(900_000)},
    ]


def test_a_retrying_step_waits_for_its_retry_timer_not_for_the_failed_attempts_timeout():
    events = history(StepScheduled("charge", 1, 30_000),
                     StepAttemptFailed("charge", 1, "HTTP 503", True, True, 503),
                     TimerScheduled(retry_timer_id("charge", 2), 5_000))
    timers = pending_timers(events, [step("charge", "retrying", attempts=1)], "running")
    assert timers == [{"timer_id": "retry:charge:2", "kind": "retry", "step": "charge", "fire_at": at(5_000)}]


def test_a_fired_retry_starts_the_next_attempt_with_its_own_timeout():
    events = history(StepScheduled("charge", 1, 30_000),
                     StepAttemptFailed("charge", 1, "HTTP 503", True, True, 503),
                     TimerScheduled(retry_timer_id("charge", 2), 5_000), TimerFired(retry_timer_id("charge", 2)),
                     StepScheduled("charge", 2, 65_000))
    assert ids(pending_timers(events, [step("charge", "running", attempts=2)], "running")) == ["timeout:charge:2"]


def test_a_waiting_step_has_its_wait_timeout_until_the_wait_ends():
    waiting = history(StepWaiting("verify", "user.verified", None, {"user": 1}, 86_400_000))
    timers = pending_timers(waiting, [step("verify", "waiting")], "running")
    assert timers == [{"timer_id": wait_timer_id("verify"), "kind": "wait", "step": "verify",
                       "fire_at": at(86_400_000)}]
    ended = waiting + history(WaitSatisfied("verify", "event", "user.verified", "ev-1", {"user": 1}),
                              StepCompleted("verify", 1, {"user": 1}))
    assert pending_timers(ended, [step("verify", "completed")], "running") == []


def test_a_wait_without_a_timeout_arms_nothing():
    events = history(StepWaiting("approve", None, "approve", None, None))
    assert pending_timers(events, [step("approve", "waiting")], "running") == []


def test_ended_steps_and_stale_attempts_leave_no_timers():
    events = history(StepScheduled("a", 1, 10_000), StepCompleted("a", 1, {}),
                     StepScheduled("b", 1, 20_000), StepFailed("b", 1, "bad request", "terminate"),
                     StepScheduled("c", 1, 30_000))
    steps = [step("a", "completed"), step("b", "failed"), step("c", "running", attempts=2)]
    assert pending_timers(events, steps, "running") == []  # c runs attempt 2; this history stops at its first


def test_an_ended_execution_has_no_timers_and_a_compensating_one_no_execution_timeout():
    events = history(TimerScheduled(EXECUTION_TIMEOUT_TIMER, 900_000), StepScheduled("undo", 1, 30_000))
    assert pending_timers(events, [step("undo", "running")], "failed") == []
    assert ids(pending_timers(events, [step("undo", "running")], "compensating")) == ["timeout:undo:1"]


def test_a_paused_execution_keeps_its_pending_timers():
    events = history(TimerScheduled(EXECUTION_TIMEOUT_TIMER, 900_000),
                     StepWaiting("nap", None, None, None, 60_000))
    assert ids(pending_timers(events, [step("nap", "waiting")], "paused")) == ["wait:nap", "execution-timeout"]


def test_steps_inside_iterations_and_timer_ids_this_reader_does_not_know():
    key = "pay_all[3].charge"
    events = history(StepScheduled(key, 1, 30_000), TimerScheduled("something:new", 1_000))
    timers = pending_timers(events, [step(key, "running")], "running")
    assert timers == [{"timer_id": f"timeout:{key}:1", "kind": "timeout", "step": key, "fire_at": at(30_000)}]


def test_a_timer_armed_again_after_it_fired_counts_from_its_latest_arming():
    retry = retry_timer_id("charge", 2)
    events = history(TimerScheduled(retry, 5_000), TimerFired(retry), TimerScheduled(retry, 99_000))
    timers = pending_timers(events, [step("charge", "retrying", attempts=1)], "running")
    assert [(t["timer_id"], t["fire_at"]) for t in timers] == [(retry, at(99_000))]
