"""The triggers role: external events and cron schedules in, `StartWorkflow` commands out.

It keeps the registered definitions (`wf.definitions`, read from the start and
then followed) and their active triggers (`core/triggers.py`: the latest
version of each workflow).

- **Events.** Instances consume `wf.external-events` as the group
  `<prefix>triggers`. Per batch: read the definitions to their end (a
  definition applied before an event was published sees that event), then
  produce each matching trigger's StartWorkflow to `wf.commands` (key =
  execution id `<workflow>-<trigger>-<event id>`), the dead letters, and the
  events' offsets in one Kafka transaction (`<prefix>triggers-<instance>`).
  A re-delivered event produces the same execution id, which the decider
  ignores: one execution per event and trigger.
- **Schedules.** The `Scheduler` (`scheduler.py`) fires schedule triggers.
  It holds the transactional id `<prefix>scheduler`, the same for every
  instance, so the instance that starts last fences the one before: a fenced
  scheduler stops scheduling (its events go on), and a transaction of a
  zombie can never commit. At start it reads the compacted `wf.schedules`
  (key `<workflow>/<trigger>`, `ScheduleFired`) for each trigger's last fired
  nominal time; then, about once a second and at each nominal time, it sends
  the StartWorkflow commands and their ScheduleFired records in one
  transaction. Time comes from `clock`, so tests can drive it. See
  docs/triggers.md.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import structlog
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from ..codec import Codec, DecodeError
from ..config import Settings
from ..core.definition import WorkflowDefinition
from ..core.loading import DefinitionError, load_definition_source
from ..core.messages import DefinitionRegistered, ExternalEvent, StartWorkflow
from ..core.triggers import TriggerIndex
from . import metrics
from .kafka import (DeadLetters, abort_transaction, close_group_consumer, consumer_config, partition_for,
                    producer_config, reader_config)
from .scheduler import Scheduler, produce

__all__ = ["Definitions", "Triggers", "run_triggers"]

log = structlog.get_logger("triggers")

MAX_BATCH = 500
TICK_S = 1.0  # the scheduler looks at its schedules at least this often
POLL_S = 0.2  # the longest wait for events: how promptly a stop is seen
CATCH_UP_S = 10.0  # reading the definitions to their end


class Definitions:
    """The registered definitions (name@version -> parsed), followed on the compacted topic."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.topic = settings.topics.definitions
        self.codec = codec
        self.consumer = Consumer(reader_config(settings, "triggers-definitions"))
        self._parsed: dict[str, tuple[str, WorkflowDefinition]] = {}  # key -> (digest, definition)
        self.index = TriggerIndex()

    def start(self) -> None:
        meta = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        self.consumer.assign([TopicPartition(self.topic, p, 0) for p in sorted(meta.partitions)])
        self.refresh(until_caught_up=True)

    def refresh(self, *, until_caught_up: bool = False) -> bool:
        """Apply new definitions (with `until_caught_up`: up to the topic's end); True when
        one changed (the trigger index is rebuilt then)."""
        changed = False
        deadline = time.monotonic() + CATCH_UP_S
        wait = 0.0  # no waiting while there is something to read, or when at the end already
        while True:
            msgs = self.consumer.consume(MAX_BATCH, wait)
            for msg in msgs:
                if msg.error() is None:
                    changed |= self._apply(msg)
            if not until_caught_up or (not msgs and self._caught_up()):
                break
            if time.monotonic() > deadline:
                log.warning("definitions_not_caught_up", seconds=CATCH_UP_S)
                break
            wait = 0.0 if msgs else 0.05
        if changed:
            self.index = TriggerIndex.of(d for _, d in self._parsed.values())
            log.info("triggers_loaded", definitions=len(self._parsed),
                     events=[f"{a.workflow}/{a.name}" for a in self.index.events],
                     schedules=[a.key for a in self.index.schedules])
        return changed

    def _caught_up(self) -> bool:
        for tp in self.consumer.assignment():
            _, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            position = self.consumer.position([tp])[0].offset
            if high > 0 and (position < 0 or position < high):
                return False
        return True

    def _apply(self, msg: Message) -> bool:
        key = (msg.key() or b"").decode("utf-8", "replace")
        if msg.value() is None:
            return self._parsed.pop(key, None) is not None
        try:
            registered = self.codec.decode(msg.value(), expect="definitions")
        except DecodeError as exc:
            log.error("definition_undecodable", key=key, offset=msg.offset(), reason=str(exc))
            return False
        if not isinstance(registered, DefinitionRegistered):
            return False
        key = f"{registered.name}@{registered.version}"
        held = self._parsed.get(key)
        if held is not None and held[0] == registered.digest:
            return False
        try:
            parsed = load_definition_source(registered.source, file=key)
        except DefinitionError as exc:
            log.error("definition_unreadable", definition=key, problems=[str(p) for p in exc.problems])
            return False
        self._parsed[key] = (registered.digest, parsed)
        return True

    def close(self) -> None:
        self.consumer.close()


class Triggers:
    """The role: event triggers from `wf.external-events`, schedules through a `Scheduler`
    (`schedules=False`: events only). `clock` (seconds) drives the schedules."""

    def __init__(self, settings: Settings, *, codec: Codec | None = None,
                 clock: Callable[[], float] = time.time, schedules: bool = True) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.codec = codec or Codec.default()
        self.clock = clock
        self.definitions = Definitions(settings, self.codec)
        self.consumer = Consumer(consumer_config(
            settings, settings.group_id("triggers"), role="triggers",
            **{"partition.assignment.strategy": "cooperative-sticky"}, **metrics.consumer_lag_config("triggers")))
        self.producer = Producer(producer_config(
            settings, transactional_id=f"{settings.topics.prefix}triggers-{settings.instance}",
            **{"transaction.timeout.ms": 10_000}))
        self.dead_letters = DeadLetters(self.producer, settings)
        self.scheduler = Scheduler(settings, self.codec) if schedules else None
        self._next_tick = 0.0
        metrics.expose("triggers")
        self.events = 0
        self.started = 0

    @property
    def index(self) -> TriggerIndex:
        return self.definitions.index

    def start(self) -> None:
        self.producer.init_transactions()
        self.definitions.start()
        if self.scheduler is not None:
            self.scheduler.start()
        self.consumer.subscribe([self.topics.external_events])
        log.info("triggers_started", instance=self.settings.instance, scheduler=self.scheduler is not None,
                 event_triggers=len(self.index.events), schedule_triggers=len(self.index.schedules))

    def run(self, stop: threading.Event) -> None:
        self.start()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.close()

    def step(self) -> None:
        """One loop: the events that arrived (waiting up to the next tick), then the schedules
        when a tick is due."""
        now = self.clock()
        wait = POLL_S if self.scheduler is None else max(0.0, min(POLL_S, self._next_tick - now))
        first = self.consumer.poll(wait)
        if first is not None:
            self.handle_events([first, *self.consumer.consume(MAX_BATCH - 1, 0)])
        now = self.clock()
        if self.scheduler is not None and now >= self._next_tick:
            self.definitions.refresh()
            self.scheduler.tick(self.index, int(now * 1000))
            self._next_tick = now + TICK_S
            if self.scheduler.next_at is not None:
                self._next_tick = min(self._next_tick, self.scheduler.next_at / 1000)

    # -- events -----------------------------------------------------------------------

    def handle_events(self, msgs: list[Message]) -> int:
        """Start what the events trigger, with their offsets, in one transaction; how many
        StartWorkflow commands it sent (0 after an abort: the batch is read again)."""
        self.definitions.refresh(until_caught_up=True)
        first_offsets: dict[int, int] = {}
        next_offsets: dict[int, int] = {}
        starts: list[StartWorkflow] = []
        try:
            self.producer.begin_transaction()
            for msg in msgs:
                if msg.error():
                    log.warning("consume_error", error=str(msg.error()))
                    continue
                first_offsets.setdefault(msg.partition(), msg.offset())
                next_offsets[msg.partition()] = msg.offset() + 1
                starts += self._handle(msg)
            if next_offsets:
                self.producer.send_offsets_to_transaction(
                    [TopicPartition(self.topics.external_events, p, o) for p, o in next_offsets.items()],
                    self.consumer.consumer_group_metadata())
            self.producer.commit_transaction()
        except KafkaException as exc:
            abort_transaction(self.producer, exc, log)
            for partition, offset in first_offsets.items():
                self.consumer.seek(TopicPartition(self.topics.external_events, partition, offset))
            return 0
        consumed = sum(1 for msg in msgs if not msg.error())
        self.events += consumed
        self.started += len(starts)
        metrics.TRIGGER_EVENTS.inc(consumed)
        for s in starts:
            metrics.child(metrics.TRIGGER_STARTS, (s.workflow_name, "event")).inc()
            log.info("trigger_fired", workflow=s.workflow_name, version=s.workflow_version,
                     trigger=(s.requested_by or "").removeprefix("trigger:"), execution_id=s.execution_id)
        return len(starts)

    def _handle(self, msg: Message) -> list[StartWorkflow]:
        try:
            event = self.codec.decode(msg.value(), expect="external-events")
        except DecodeError as exc:
            self.dead_letters.send(msg, f"triggers cannot decode the external event: {exc}", "triggers",
                                   kind="undecodable")
            return []
        if not isinstance(event, ExternalEvent):
            self.dead_letters.send(msg, f"expected an ExternalEvent, got {type(event).__name__}", "triggers",
                                   kind="invalid")
            return []
        outcome = self.index.for_event(event)
        if outcome.matched and not event.event_id:
            self.dead_letters.send(msg, "event_id is empty: a trigger needs it to start one execution per event",
                                   "triggers", kind="invalid")
            return []
        for error in outcome.errors:
            self.dead_letters.send(msg, error.reason, "triggers", kind="trigger_error")
        sent: list[StartWorkflow] = []
        for start in outcome.starts:
            eid = start.execution_id
            try:
                value = self.codec.encode(start)
            except ValueError as exc:  # an input the command's schema cannot carry
                self.dead_letters.send(msg, f"workflow '{start.workflow_name}' {start.requested_by}: "
                                            f"cannot encode the StartWorkflow: {exc}", "triggers", kind="unencodable")
                continue
            produce(self.producer, self.topics.commands, eid, value, partition_for(eid, self.settings.partitions))
            sent.append(start)
        return sent

    def close(self) -> None:
        log.info("triggers_stopped", events=self.events, started=self.started,
                 scheduled=self.scheduler.fired if self.scheduler else 0)
        closings: list[Callable[[], Any]] = [lambda: close_group_consumer(self.consumer, "triggers"),
                                             self.definitions.close,
                                             lambda: self.producer.flush(5)]
        if self.scheduler is not None:
            closings.append(self.scheduler.close)
        for closing in closings:
            try:
                closing()
            except Exception:  # shutting down: report, keep closing the rest
                log.exception("close_failed")


def run_triggers(settings: Settings, stop: threading.Event) -> None:
    Triggers(settings).run(stop)
