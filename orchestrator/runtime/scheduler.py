"""The scheduler: fires the schedule triggers of the registered definitions.

One scheduler per topic prefix: its transactional id is `<prefix>scheduler`,
the same for every instance of the `triggers` role, so the instance that
starts last fences the one before (`init_transactions` aborts the old one's
open transaction; the old one's next transaction fails, and it stops firing
schedules). Fencing makes it safe, not highly available: when the instance
that fires the schedules stops, none does until one (re)starts.

Progress is the compacted `wf.schedules` topic (key `<workflow>/<trigger>`,
`ScheduleFired`): the last nominal time each trigger fired, written in the
transaction that sends the StartWorkflow commands. At start the scheduler
reads it; a trigger it has no record of is new and fires nothing in the
past. What is due at a tick, and what a downtime's catch-up policy fires,
is `core/schedule.py`; the starts are `core/triggers.py`.
"""

from __future__ import annotations

from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from ..codec import Codec, DecodeError
from ..config import Settings
from ..core.messages import ScheduleFired, StartWorkflow
from ..core.schedule import ScheduleError, due
from ..core.triggers import ActiveTrigger, TriggerError, TriggerIndex, start_for_schedule
from . import metrics
from .kafka import DeadLetters, abort_transaction, partition_for, producer_config, read_compacted_topic

__all__ = ["Scheduler", "produce", "scheduler_transactional_id"]

log = structlog.get_logger("scheduler")

_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


def scheduler_transactional_id(settings: Settings) -> str:
    return f"{settings.topics.prefix}scheduler"


def produce(producer: Producer, topic: str, key: str, value: bytes, partition: int | None = None) -> None:
    kwargs: dict[str, Any] = {"key": key.encode("utf-8"), "value": value}
    if partition is not None:
        kwargs["partition"] = partition
    try:
        producer.produce(topic, **kwargs)
    except BufferError:
        producer.poll(1.0)
        producer.produce(topic, **kwargs)
    producer.poll(0)


def _is_fenced(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and error.code() in _FENCED


class Scheduler:
    """Fires the schedule triggers; one per topic prefix (transactional id `<prefix>scheduler`)."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.codec = codec
        self.producer = Producer(producer_config(
            settings, transactional_id=scheduler_transactional_id(settings), **{"transaction.timeout.ms": 10_000}))
        self.dead_letters = DeadLetters(self.producer, settings)
        self.since: dict[str, int] = {}  # trigger key -> every nominal time at or before it is handled
        self.fenced = False
        self.next_at: int | None = None  # the earliest upcoming nominal time (epoch ms)
        self.fired = 0
        self._bad: set[tuple[str, str]] = set()  # (key, problem) already reported

    def start(self) -> None:
        """Fence any previous scheduler (its open transaction is aborted), then read the
        progress it committed."""
        self.producer.init_transactions()
        progress = read_compacted_topic(self.settings, self.topics.schedules, decode=self._decode)
        for key, fired in progress.items():
            if isinstance(fired, ScheduleFired):
                self.since[key] = fired.nominal_time
        log.info("scheduler_started", transactional_id=scheduler_transactional_id(self.settings),
                 progress={k: v for k, v in sorted(self.since.items())})

    def _decode(self, value: bytes) -> ScheduleFired | None:
        try:
            fired = self.codec.decode(value, expect="schedules")
        except DecodeError as exc:
            log.error("schedule_progress_undecodable", reason=str(exc))
            return None
        return fired if isinstance(fired, ScheduleFired) else None

    def tick(self, index: TriggerIndex, now: int) -> int:
        """Fire what is due at `now` (epoch ms) in one transaction; how many nominal times fired.
        The progress moves on only when the transaction commits."""
        if self.fenced:
            return 0
        plans: list[tuple[ActiveTrigger, int, StartWorkflow | TriggerError]] = []
        moved: dict[str, int] = {}
        upcoming: list[int] = []
        for active in index.schedules:
            t = active.trigger
            since = self.since.get(active.key)
            try:
                decided = due(t.schedule or "", t.timezone, since, now, t.catch_up, t.max_catch_up)
            except ScheduleError as exc:
                self._report(active.key, str(exc))
                continue
            if decided.next_at is not None:
                upcoming.append(decided.next_at)
            moved[active.key] = max(since or now, now)
            if decided.skipped_from is not None:
                log.warning("schedule_missed", workflow=active.workflow, trigger=active.name, catch_up=t.catch_up,
                            skipped_from=decided.skipped_from, since=since, fired=len(decided.fire))
            plans += [(active, nominal, start_for_schedule(active, nominal)) for nominal in decided.fire]
        self.next_at = min(upcoming, default=None)
        if plans and not self._transact(plans, now):
            return 0
        self.since.update(moved)
        self.fired += len(plans)
        for active, nominal, started in plans:
            if isinstance(started, StartWorkflow):
                metrics.child(metrics.TRIGGER_STARTS, (active.workflow, "schedule")).inc()
                log.info("schedule_fired", workflow=active.workflow, trigger=active.name, nominal_time=nominal,
                         execution_id=started.execution_id)
        return len(plans)

    def _transact(self, plans: list[tuple[ActiveTrigger, int, StartWorkflow | TriggerError]], now: int) -> bool:
        try:
            self.producer.begin_transaction()
            for active, nominal, started in plans:
                eid, reason = "", started.reason if isinstance(started, TriggerError) else None
                kind = "trigger_error"
                if isinstance(started, StartWorkflow):
                    try:
                        command = self.codec.encode(started)
                    except ValueError as exc:  # an input the command's schema cannot carry
                        reason = (f"workflow '{active.workflow}' version '{active.version}' trigger "
                                  f"'{active.name}': cannot encode the StartWorkflow: {exc}")
                        kind = "unencodable"
                    else:
                        eid = started.execution_id
                        produce(self.producer, self.topics.commands, eid, command,
                                partition_for(eid, self.settings.partitions))
                value = self.codec.encode(ScheduleFired(active.workflow, active.name, nominal, eid, now))
                if reason is not None:  # the nominal time is handled: recorded, and dead-lettered
                    self.dead_letters.send_raw(active.key, value, reason, "triggers", topic=self.topics.schedules,
                                               kind=kind)
                produce(self.producer, self.topics.schedules, active.key, value)
            self.producer.commit_transaction()
            return True
        except KafkaException as exc:
            if _is_fenced(exc):
                self.fenced = True
                metrics.SCHEDULER_FENCED.set(1)
                log.critical("scheduler_fenced", reason="another instance holds the transactional id "
                             f"{self.topics.prefix}scheduler and fires the schedules now", error=str(exc.args[0]))
                return False
            abort_transaction(self.producer, exc, log)
            return False

    def _report(self, key: str, problem: str) -> None:
        if (key, problem) not in self._bad:
            self._bad.add((key, problem))
            log.error("schedule_invalid", trigger=key, reason=problem)

    def close(self) -> None:
        self.producer.flush(5)
