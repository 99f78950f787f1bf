"""One action over every execution a filter matches: cancel, retry, pause or resume.

A dry run counts the matching executions and shows a sample of their ids. A
real run sends one command per matching execution (at most `max_items`,
newest first), paced to at most `rate_per_second` so a large batch does not
flood the deciders, then waits up to `decision_timeout_s` after each send for
the decider's decision on it, read from the projection: the first event
caused by that command (`reads.decision_for`). Each item ends
`accepted`, `rejected` (with the decider's reason), `pending` (no decision in
time: the command is on Kafka and will still be decided) or
`failed_to_send` (Kafka refused it or did not confirm it).

Time (`clock`, `sleep`) is injected so pacing and waiting are testable
without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from .commands import operator_command, outcome_of
from .sending import Send

__all__ = ["BULK_ACTIONS", "BulkItem", "BulkReport", "Pacer", "await_decisions", "bulk_action", "send_paced"]

BULK_ACTIONS = ("cancel", "retry", "pause", "resume")

Connect = Callable[[], AbstractContextManager[Any]]  # a projection connection (dict rows, its schema)
Decision = Callable[[str, int, int], "dict[str, Any] | None"]  # (execution id, partition, offset) -> first event


@dataclass(frozen=True)
class BulkItem:
    execution_id: str
    outcome: str  # accepted | rejected | pending | failed_to_send
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"execution_id": self.execution_id, "outcome": self.outcome, "reason": self.reason}


@dataclass(frozen=True)
class BulkReport:
    action: str
    matched: int  # how many executions the filter matches (more than acted on when over max_items)
    dry_run: bool
    sample: list[str] = field(default_factory=list)  # dry run: the first matching ids
    results: list[BulkItem] = field(default_factory=list)  # real run: one per execution acted on

    def as_json(self) -> dict[str, Any]:
        if self.dry_run:
            return {"action": self.action, "dry_run": True, "matched": self.matched, "sample": self.sample}
        return {"action": self.action, "dry_run": False, "matched": self.matched,
                "results": [item.as_json() for item in self.results]}

    def counts(self) -> dict[str, int]:
        """How many items ended with each outcome."""
        found: dict[str, int] = {}
        for item in self.results:
            found[item.outcome] = found.get(item.outcome, 0) + 1
        return found


class Pacer:
    """At most `rate` sends per second, evenly spaced; a slow send does not earn a burst later."""

    def __init__(self, rate_per_second: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not rate_per_second > 0:
            raise ValueError("rate_per_second: must be greater than 0")
        self.interval = 1.0 / rate_per_second
        self.clock, self.sleep = clock, sleep
        self.next_at: float | None = None

    def wait(self) -> None:
        """Block until the next send may go."""
        now = self.clock()
        if self.next_at is not None and self.next_at > now:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = now + self.interval


@dataclass
class _Sent:
    execution_id: str
    partition: int | None = None
    offset: int | None = None
    sent_at: float = 0.0
    error: str | None = None


def send_paced(commands: Sequence[Any], send_one: Callable[[Any], Any], pacer: Pacer,
               clock: Callable[[], float]) -> list[_Sent]:
    """Send each command in turn (pacer permitting); a failed send is recorded, not raised."""
    out = []
    for command in commands:
        pacer.wait()
        try:
            sent = send_one(command)
        except Exception as exc:  # Kafka refused or did not confirm: report it per item, go on
            out.append(_Sent(command.execution_id, error=str(exc) or type(exc).__name__, sent_at=clock()))
            continue
        out.append(_Sent(command.execution_id, sent.partition, sent.offset, clock()))
    return out


def await_decisions(sent: Sequence[_Sent], decision: Callable[[Sequence[_Sent]], dict[int, Any]], *,
                    timeout_s: float, poll_interval_s: float, clock: Callable[[], float],
                    sleep: Callable[[float], None]) -> list[BulkItem]:
    """Poll until every sent command has a decision or its time (sent_at + timeout_s) is up.
    `decision(items)` returns {index in `items`: first event or None} for the items asked about."""
    found: dict[int, Any] = {}
    waiting = [i for i, s in enumerate(sent) if s.error is None]
    while waiting:
        answers = decision([sent[i] for i in waiting])
        for j, event in answers.items():
            if event is not None:
                found[waiting[j]] = event
        now = clock()
        waiting = [i for i in waiting if i not in found and now < sent[i].sent_at + timeout_s]
        if waiting:
            sleep(poll_interval_s)
    items = []
    for i, s in enumerate(sent):
        if s.error is not None:
            items.append(BulkItem(s.execution_id, "failed_to_send", s.error))
        else:
            outcome, reason = outcome_of(found.get(i))
            items.append(BulkItem(s.execution_id, outcome, reason))
    return items


def bulk_action(action: str, f: Any, *, connect: Connect, send: Send, settings: Settings,
                requested_by: str | None, reason: str | None = None, dry_run: bool = False,
                rate_per_second: float = 20.0, max_items: int = 1000, sample_size: int = 20,
                decision_timeout_s: float = 10.0, poll_interval_s: float = 0.25, max_sending_s: float | None = None,
                clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                ) -> BulkReport:
    """Apply `action` (cancel | retry | pause | resume) to the executions `f` (an ExecutionFilter)
    matches. Raises ValueError naming the parameter for a bad action, rate or limit, for an
    empty filter on a real run (it would act on every execution), or when sending at that rate
    would take longer than `max_sending_s` (a server's bound on one request)."""
    from ..api import reads

    if action not in BULK_ACTIONS:
        raise ValueError(f"action: unknown action {action!r} (one of {', '.join(BULK_ACTIONS)})")
    if max_items < 1:
        raise ValueError("max_items: must be at least 1")
    pacer = Pacer(rate_per_second, clock=clock, sleep=sleep)
    if not dry_run and _is_empty(f):
        raise ValueError("filter: give at least one criterion; an empty filter matches every execution")
    with connect() as conn:
        matched = reads.count_matching(conn, f)
        ids = reads.matching_ids(conn, f, max_items=sample_size if dry_run else max_items)
    if dry_run:
        return BulkReport(action, matched, True, sample=list(ids))
    if max_sending_s is not None and (len(ids) - 1) / rate_per_second > max_sending_s:
        raise ValueError(f"rate_per_second: sending {len(ids)} commands at {rate_per_second:g}/s would take "
                         f"{(len(ids) - 1) / rate_per_second:.0f}s, more than {max_sending_s:g}s: raise the rate "
                         "or lower max_items")

    commands = [operator_command(action, eid, reason=reason, requested_by=requested_by) for eid in ids]

    def send_one(command: Any) -> Any:
        [sent] = send([(settings.topics.commands, command.execution_id, command)])
        return sent

    sent = send_paced(commands, send_one, pacer, clock)

    def decisions(items: Sequence[_Sent]) -> dict[int, Any]:
        with connect() as conn:
            return {j: reads.decision_for(conn, s.execution_id, s.partition, s.offset)
                    for j, s in enumerate(items)}

    results = await_decisions(sent, decisions, timeout_s=decision_timeout_s, poll_interval_s=poll_interval_s,
                              clock=clock, sleep=sleep)
    return BulkReport(action, matched, False, results=results)


def _is_empty(f: Any) -> bool:
    return not any((f.workflow, f.version, f.statuses, f.created_after, f.created_before,
                    f.input_contains, f.output_contains))
