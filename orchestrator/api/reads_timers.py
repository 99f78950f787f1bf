"""An execution's pending durable timers, from its projected history. Pure.

The projection keeps no timer table; the decider's state does
(`orchestrator.core.evolve`). Timers are armed by three events: TimerScheduled
(`retry:<step>:<n>`, `execution-timeout`), StepScheduled (its `deadline_at`
arms `timeout:<step>:<attempt>`) and StepWaiting (a `timeout_at` arms
`wait:<step>`); TimerFired disarms one. Rather than mirror every rule by which
the core drops timers, a timer counts as pending only while it can still
matter, judged from the projected rows: a retry while its step is retrying
towards that attempt, an attempt's timeout while that attempt runs, a wait's
timeout while the step waits, the execution's timeout until the execution
ends or starts compensating (the core drops it there).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

__all__ = ["ARMING_EVENTS", "TERMINAL_STATUSES", "pending_timers"]

EXECUTION_TIMEOUT = "execution-timeout"  # orchestrator.core.evolve.EXECUTION_TIMEOUT_TIMER
ARMING_EVENTS = ("TimerScheduled", "TimerFired", "StepScheduled", "StepWaiting")
TERMINAL_STATUSES = ("completed", "failed", "cancelled")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def pending_timers(events: Iterable[Mapping[str, Any]], steps: Iterable[Mapping[str, Any]],
                   execution_status: str) -> list[dict[str, Any]]:
    """[{timer_id, kind, step, fire_at}] soonest first.

    `events`: the execution's history rows ({event_type, payload}) in sequence
    order (others than ARMING_EVENTS are ignored); `steps`: its step rows
    ({step_name, status, attempts}).
    """
    if execution_status in TERMINAL_STATUSES:
        return []
    armed: dict[str, int] = {}  # timer id -> fire_at (epoch ms); a later arming of the same id replaces it
    for event in events:
        kind, p = event["event_type"], event["payload"]
        if kind == "TimerScheduled":
            armed[p["timer_id"]] = p["fire_at"]
        elif kind == "TimerFired":
            armed.pop(p["timer_id"], None)
        elif kind == "StepScheduled":
            armed[f"timeout:{p['step']}:{p['attempt']}"] = p["deadline_at"]
        elif kind == "StepWaiting" and p.get("timeout_at") is not None:
            armed[f"wait:{p['step']}"] = p["timeout_at"]
    by_name = {s["step_name"]: s for s in steps}
    pending = []
    for timer_id, fire_at in armed.items():
        kind, step = _kind(timer_id)
        if kind is not None and _relevant(kind, step, timer_id, by_name, execution_status):
            pending.append({"timer_id": timer_id, "kind": kind, "step": step,
                            "fire_at": _EPOCH + timedelta(milliseconds=fire_at)})
    pending.sort(key=lambda t: (t["fire_at"], t["timer_id"]))
    return pending


def _kind(timer_id: str) -> tuple[str | None, str | None]:
    """(kind, step key) of a timer id; (None, None) for an id this reader does not know."""
    if timer_id == EXECUTION_TIMEOUT:
        return "execution_timeout", None
    kind, _, rest = timer_id.partition(":")
    if kind == "wait" and rest:
        return kind, rest
    if kind in ("retry", "timeout"):
        step, _, attempt = rest.rpartition(":")
        if step and attempt.isdigit():
            return kind, step
    return None, None


def _relevant(kind: str, step: str | None, timer_id: str, steps: Mapping[str, Mapping[str, Any]],
              execution_status: str) -> bool:
    if kind == "execution_timeout":
        return execution_status != "compensating"
    row = steps.get(step or "")
    if row is None:
        return False
    attempt = int(timer_id.rpartition(":")[2]) if kind in ("retry", "timeout") else None
    if kind == "retry":  # fires to start `attempt` after attempt - 1 failed
        return row["status"] == "retrying" and row["attempts"] == attempt - 1
    if kind == "timeout":
        return row["status"] == "running" and row["attempts"] == attempt
    return row["status"] == "waiting"  # wait: a wait's timeout, or when a delay step wakes
