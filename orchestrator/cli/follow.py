"""`status ID --follow`: an execution's changes, polled from the projection.

Each poll reads the execution's row (its `last_sequence` only, unless it
moved) and turns what changed since the last poll into lines: the time since
the execution started, the step (or "(execution)"), its status, the attempt
when > 1, and the error, the skip reason or what a waiting step waits for
(a delay: `until <time>`), a switch's branch, a workflow step's child. Steps
of loop iterations and for_each items are lines of their own, by key
(`pay_all[3].charge`).
Times are the ones the decider recorded for the change (the rows'
`updated_at`, `started_at`, `finished_at`), so the first poll of an execution
that is under way reads as its history so far.

`observe`, `check` and `format_change` are pure (tests/unit/test_cli_offline.py);
`follow_projection` is the polling loop around them.

Unlike `start --wait` (watch.py, which folds the events on Kafka from the
offset of its own start command), this reads the projection, so it follows
any execution by id, and its `--json` document is the one `status --json`
prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from ..core.keys import leaf
from .common import iso, short
from .pg import query
from .queries import load_projection
from .render import from_rows

__all__ = ["ENDED", "Until", "Change", "FollowResult", "parse_until", "parse_since", "observe", "check",
           "format_change", "change_parts", "subject_width", "describe_until", "follow_projection"]

ENDED = ("completed", "failed", "cancelled")
SETTLED = ("completed", "failed", "skipped", "cancelled")  # a step in one of these will not wait (any more)
EXECUTION = "(execution)"
POLL_S = 0.25
DETAIL_LIMIT = 240


@dataclass(frozen=True)
class Until:
    """When following stops: the execution ended, or a step (any, or `step`) waits."""

    kind: str  # "ended" | "waiting"
    step: str | None = None

    def __str__(self) -> str:
        return self.kind if self.step is None else f"{self.kind}:{self.step}"


def parse_until(text: str) -> Until:
    """`ended`, `waiting` or `waiting:STEP` (ValueError otherwise)."""
    kind, sep, step = text.strip().partition(":")
    if kind == "ended" and not sep:
        return Until("ended")
    if kind == "waiting":
        if sep and not step.strip():
            raise ValueError("`waiting:` needs a step name (or use `waiting` for any step)")
        return Until("waiting", step.strip() or None)
    raise ValueError(f"{text!r} is not one of ended, waiting, waiting:STEP")


def parse_since(text: str) -> float:
    """An ISO 8601 time (UTC when it names no offset) as epoch seconds (ValueError otherwise)."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def describe_until(until: Until) -> str:
    if until.kind == "ended":
        return "its end"
    return f"step {until.step} waiting" if until.step else "a waiting step"


@dataclass(frozen=True)
class Change:
    """One line: `subject` (a step, or "(execution)") reached `status` at `at` (epoch s)."""

    at: float
    offset_s: float  # since the execution started
    subject: str
    status: str
    attempt: int | None = None  # shown when > 1
    detail: str = ""


def _epoch(text: str | None) -> float | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _execution_detail(doc: Mapping[str, Any]) -> str:
    if doc.get("error"):
        return doc["error"]
    if doc["status"] == "compensating":
        c = doc.get("compensation") or {}
        why = {"failed": "because it failed", "cancelled": "because it was cancelled"}.get(c.get("trigger") or "")
        return ": ".join(x for x in (why, c.get("reason")) if x)
    return ""


def _step_detail(step: Mapping[str, Any]) -> str:
    status = step["status"]
    if status == "waiting":
        if step.get("waiting_for"):
            detail = f"for {step['waiting_for']}"
        else:  # a delay
            detail = f"until {step['wait_until']}" if step.get("wait_until") else ""
    elif status in ("retrying", "failed", "cancelled"):
        detail = step.get("error") or ""
    elif status == "skipped":
        detail = step.get("status_reason") or ""
    elif status == "running" and step.get("branch") is not None:
        detail = f"branch {step['branch']}"
    elif status == "running" and step.get("child_execution_id"):
        detail = f"child {step['child_execution_id']}"
    else:
        detail = ""
    if step.get("breaker") in ("open", "half_open") and status in ("running", "retrying", "failed"):
        detail = f"{detail} (breaker {step['breaker']})" if detail else f"breaker {step['breaker']}"
    return detail


def observe(doc: Mapping[str, Any], step_updated: Mapping[str, str | None],
            seen: Mapping[Any, Any]) -> tuple[list[Change], dict[Any, Any]]:
    """What changed in the execution document `doc` since `seen` (what the last
    call returned; {} at first): the changes, oldest first, and the new `seen`.

    A step changes when its status or attempt does (pending steps are left
    out); the execution when its status does. `step_updated`: each step row's
    `updated_at` (ISO), the time of its last change; without it a step's
    finished_at or started_at stands in.
    """
    seen = dict(seen)
    started = _epoch(doc.get("started_at"))
    found: list[tuple[float, int, Change]] = []

    def add(rank: int, at: float | None, subject: str, status: str, attempt: int | None, detail: str) -> None:
        at = at if at is not None else (started if started is not None else time.time())
        offset = max(0.0, at - started) if started is not None else 0.0
        found.append((at, rank, Change(at, offset, subject, status, attempt if (attempt or 0) > 1 else None,
                                       short(detail, DETAIL_LIMIT) if detail else "")))

    status = doc["status"]
    if seen.get(("execution",)) != status:
        seen[("execution",)] = status
        if status in ENDED:
            at, rank = _epoch(doc.get("finished_at")) or _epoch(doc.get("updated_at")), len(doc["steps"])
        elif status == "running":
            at, rank = started, -1
        else:  # compensating: the moment it was seen so (the row has no time of its own for it)
            at, rank = _epoch(doc.get("updated_at")), -1
        add(rank, at, EXECUTION, status, None, _execution_detail(doc))
    for index, step in enumerate(doc["steps"]):
        if step["status"] == "pending":
            continue
        key = (step["status"], step["attempts"])
        if seen.get(("step", step["name"])) == key:
            continue
        seen[("step", step["name"])] = key
        at = _epoch(step_updated.get(step["name"])) or _epoch(step.get("finished_at")) or _epoch(step.get("started_at"))
        add(index, at, step["name"], step["status"], step["attempts"], _step_detail(step))
    found.sort(key=lambda item: (item[0], item[1]))
    return [change for _, _, change in found], seen


def check(doc: Mapping[str, Any], until: Until) -> tuple[bool, str | None]:
    """(reached, problem): whether `until` holds for `doc`, else why it never will (or None)."""
    status = doc["status"]
    if until.kind == "ended":
        return status in ENDED, None
    steps = doc["steps"]
    if any(s["status"] == "waiting" and (until.step is None or s["name"] == until.step) for s in steps):
        return True, None
    if until.step is not None:
        step = next((s for s in steps if s["name"] == until.step), None)
        if step is not None and step["status"] in SETTLED:
            return False, (f"execution {doc['execution_id']}: step {until.step} is {step['status']}; "
                           "it will not wait (any more)")
    if status in ENDED:
        what = until.step or "any step"
        return False, f"execution {doc['execution_id']} ended {status} before {what} waited"
    return False, None


def elapsed_text(seconds: float) -> str:
    """`+12.3s`, `+2m03s`, `+1h02m`, `+3d04h`."""
    if seconds < 60:
        return f"+{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"+{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"+{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"+{days}d{hours:02d}h"


def subject_width(doc: Mapping[str, Any]) -> int:
    return max([len(EXECUTION), *(len(s["name"]) for s in doc["steps"])])


def change_parts(change: Change, width: int) -> list[tuple[str, str]]:
    """The line as (text, part) pieces; part is "time", "subject", "status" or "detail"
    (for styling), and the pieces joined are `format_change`."""
    parts = [(f"{elapsed_text(change.offset_s):>8}  ", "time"), (f"{change.subject:<{width}}  ", "subject"),
             (change.status, "status")]
    rest = (f" (attempt {change.attempt})" if change.attempt else "") + (f" {change.detail}" if change.detail else "")
    if rest:
        parts.append((rest, "detail"))
    return parts


def format_change(change: Change, width: int) -> str:
    """`   +5.7s  create_user_account  running (attempt 2)`."""
    return "".join(text for text, _ in change_parts(change, width))


# -- the polling loop -------------------------------------------------------------------------


@dataclass
class FollowResult:
    doc: dict[str, Any] | None  # None: the execution never showed up in the projection
    reached: bool = False
    timed_out: bool = False
    problem: str | None = None  # why `until` can never hold


def _unknown_step(doc: Mapping[str, Any], orders: Mapping[Any, list[str]],
                  until: Until) -> str | None:
    names = orders.get((doc["workflow_name"], doc["workflow_version"])) or [s["name"] for s in doc["steps"]]
    if until.step is None or not names or until.step in names or leaf(until.step) in names:
        return None  # `pay_all[3].approve`: step approve of an iteration
    workflow = doc["workflow_name"] + (f"@{doc['workflow_version']}" if doc["workflow_version"] else "")
    return f"workflow {workflow} has no step {until.step} (its steps: {', '.join(names)})"


def follow_projection(conn: Any, execution_id: str, until: Until, *, deadline: float | None,
                      emit: Callable[[Change, int], None], since: float | None = None,
                      on_slow: Callable[[], None] | None = None, slow_after_s: float = 5.0,
                      poll_s: float = POLL_S, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> FollowResult:
    """Poll the projection for `execution_id`, `emit` each change (changes recorded
    before `since`, epoch s, are left out) until `until` holds, can no longer
    hold, or `deadline` (on `clock`) passes. `on_slow` is called once when the
    execution has not shown up after `slow_after_s`."""
    began = clock()
    seen: dict[Any, Any] = {}
    orders: dict[Any, list[str]] = {}
    doc: dict[str, Any] | None = None
    last_sequence: int | None = None
    slow_reported = False
    while True:
        head = query(conn, "SELECT last_sequence, started_at FROM workflow_executions WHERE id = %s",
                     (execution_id,))
        moved = bool(head) and head[0]["started_at"] is not None and head[0]["last_sequence"] != last_sequence
        found = load_projection(conn, execution_id, orders=orders) if moved else None
        if found is not None and found[0]["started_at"] is not None:
            row, steps = found
            first = doc is None
            doc = from_rows(row, steps)
            last_sequence = doc["sequence"]
            if first:
                problem = _unknown_step(doc, orders, until)
                if problem:
                    return FollowResult(doc, problem=problem)
            changes, seen = observe(doc, {s["step_name"]: iso(s.get("updated_at")) for s in steps}, seen)
            width = subject_width(doc)
            for change in changes:
                if since is None or change.at >= since:
                    emit(change, width)
            reached, problem = check(doc, until)
            if reached or problem:
                return FollowResult(doc, reached=reached, problem=problem)
        if doc is None and not slow_reported and on_slow is not None and clock() - began >= slow_after_s:
            slow_reported = True
            on_slow()
        now = clock()
        if deadline is not None and now >= deadline:
            return FollowResult(doc, timed_out=True)
        sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - now)))
