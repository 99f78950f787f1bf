"""The correlator role: external events in, `DeliverEvent` commands out.

Every instance reads all of the compacted waits topic (assigned, never
committed) to know every open wait, and consumes its share of the
external-events topic as the `<prefix>correlator` group. Per loop: apply the
new waits, then the new events, through the pure `Correlation`; produce the
deliveries to the commands topic (on the partition that owns the execution)
and commit the events' offsets in one Kafka transaction. On assignment the
buffer of each new partition is rebuilt from the events of the last
`event_buffer_ms` before its committed offset. See docs/correlator.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, TypeVar

import structlog
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from ..codec import Codec, DecodeError
from ..config import Settings
from ..core.correlation import Correlation, wait_key
from ..core.messages import DeliverEvent, ExternalEvent, WaitOpened
from . import metrics
from .kafka import (DeadLetters, abort_transaction, close_group_consumer, consumer_config, partition_for,
                    producer_config, reader_config)

__all__ = ["Correlator", "run_correlator"]

log = structlog.get_logger("correlator")
T = TypeVar("T")

MAX_BATCH = 500
_TRANSIENT = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
              KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
              KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR}
CATCH_UP_S = 30.0  # reading the waits topic (or a partition's buffer) to its end


class Correlator:
    def __init__(self, settings: Settings, *, codec: Codec | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.codec = codec or Codec.default()
        self.clock = clock
        self.correlation = Correlation(settings.event_buffer_ms)
        self.consumer = Consumer(consumer_config(
            settings, settings.group_id("correlator"), role="correlator",
            # one topic: no co-partitioning needed, so keep the buffers of partitions that stay
            **{"partition.assignment.strategy": "cooperative-sticky"}, **metrics.consumer_lag_config("correlator")))
        self.producer = Producer(producer_config(
            settings, transactional_id=f"{settings.topics.prefix}correlator-{settings.instance}",
            **{"transaction.timeout.ms": 10_000}))
        self.waits = Consumer(reader_config(settings, "correlator-waits"))
        self.reader = Consumer(reader_config(settings, "correlator-restore"))
        self.dead_letters = DeadLetters(self.producer, settings)
        self.owned: set[int] = set()  # our partitions of the external-events topic
        self._waits_partitions: list[int] = []
        self._pending: list[DeliverEvent] = []  # decided outside a transaction (on assignment)
        self.batches = 0
        self.events = 0
        self.delivered = 0
        self._sample = metrics.Sampler()
        metrics.expose("correlator")

    # -- set-up ----------------------------------------------------------------------

    def start(self) -> None:
        self.producer.init_transactions()
        meta = self.waits.list_topics(self.topics.waits, timeout=10).topics[self.topics.waits]
        if meta.error is not None:
            raise KafkaException(meta.error)
        self._waits_partitions = sorted(meta.partitions)
        self._read_waits_to_end()
        self.consumer.subscribe([self.topics.external_events], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("correlator_started", instance=self.settings.instance, open_waits=self.correlation.open_waits,
                 buffer_ms=self.settings.event_buffer_ms)

    def _read_waits_to_end(self) -> None:
        """Assign every waits partition from its beginning and apply it up to its end, as
        partition EOF tells (at start and after an abort: nothing is buffered then, so
        nothing is delivered)."""
        topic = self.topics.waits
        self.waits.assign([TopicPartition(topic, p, 0) for p in self._waits_partitions])
        done: set[int] = set()
        deadline = time.monotonic() + CATCH_UP_S
        while len(done) < len(self._waits_partitions):
            msgs = self.waits.consume(MAX_BATCH, 0.2)
            done.update(m.partition() for m in msgs if m.error() is not None
                        and m.error().code() == KafkaError._PARTITION_EOF)  # at the (stable) end
            self._pending += self._apply_waits(msgs)
            if time.monotonic() > deadline:
                log.warning("waits_not_caught_up", seconds=CATCH_UP_S, open_waits=self.correlation.open_waits)
                return

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        started = time.monotonic()
        owned = sorted({tp.partition for tp in partitions})
        if not owned:  # a cooperative rebalance that moved nothing here
            return
        self.owned.update(owned)
        restored = self._restore(owned)
        deliveries = self.correlation.restored(owned)
        self._pending += deliveries
        log.info("partitions_assigned", partitions=owned, events=restored, buffered=self.correlation.buffered,
                 open_waits=self.correlation.open_waits, deliveries=len(deliveries),
                 seconds=round(time.monotonic() - started, 3))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        if not gone:
            return
        self.owned -= gone
        dropped = self.correlation.drop_partitions(gone)
        log.info("partitions_revoked", partitions=sorted(gone), events=dropped)

    def _restore(self, partitions: list[int]) -> int:
        """Buffer (without delivering) the events of the last `event_buffer_ms` up to the
        committed offset of each partition: the group processed them already."""
        topic = self.topics.external_events
        now = int(self.clock() * 1000)
        since = now - self.settings.event_buffer_ms
        committed = _retrying(lambda: self.consumer.committed(
            [TopicPartition(topic, p) for p in partitions], timeout=10))
        starts = _retrying(lambda: self.reader.offsets_for_times(
            [TopicPartition(topic, p, max(since, 0)) for p in partitions], timeout=10))
        start_of = {tp.partition: tp.offset for tp in starts}
        count = 0
        for tp in committed:
            start, end = start_of.get(tp.partition, -1), tp.offset
            if start < 0 or end <= start:  # nothing in the window, or nothing processed yet
                continue
            for msg in self._read_range(topic, tp.partition, start, end):
                event = self._decode_event(msg)
                if isinstance(event, ExternalEvent):
                    self.correlation.event_arrived(event, tp.partition, _arrived_at(msg, now), deliver=False)
                    count += 1
        return count

    def _read_range(self, topic: str, partition: int, start: int, end: int) -> Iterator[Message]:
        """The committed messages of one partition with offsets in [start, end)."""
        tp = TopicPartition(topic, partition)
        self.reader.assign([TopicPartition(topic, partition, start)])
        try:
            deadline = time.monotonic() + CATCH_UP_S
            while True:
                msgs = self.reader.consume(1000, 0.2)
                for msg in msgs:
                    if msg.error() is not None:
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            return
                        raise KafkaException(msg.error())
                    if msg.offset() >= end:
                        return
                    yield msg
                    if msg.offset() >= end - 1:
                        return
                if msgs:
                    deadline = time.monotonic() + CATCH_UP_S
                elif self.reader.position([tp])[0].offset >= end:  # only transaction markers were left
                    return
                elif time.monotonic() > deadline:
                    raise TimeoutError(f"no progress restoring {topic}[{partition}] up to offset {end}")
        finally:
            self.reader.unassign()

    # -- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.start()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.close()

    def step(self) -> int:
        """One loop: returns how many deliveries it made."""
        first = self.consumer.poll(0.1)  # may run the rebalance callbacks
        msgs = [first] if first is not None else []
        if msgs:
            msgs += self.consumer.consume(MAX_BATCH - 1, 0)
        waits = [m for m in self.waits.consume(MAX_BATCH, 0)
                 if m.error() is None or m.error().code() != KafkaError._PARTITION_EOF]
        self.correlation.expire(int(self.clock() * 1000))
        if self._sample.due():  # `buffered` counts every buffer: not on every loop
            metrics.CORRELATOR_WAITS.set(self.correlation.open_waits)
            metrics.CORRELATOR_BUFFERED.set(self.correlation.buffered)
        if not msgs and not waits and not self._pending:
            return 0
        return self._transact(msgs, waits)

    def _transact(self, msgs: list[Message], waits: list[Message]) -> int:
        first_offsets: dict[int, int] = {}
        next_offsets: dict[int, int] = {}
        deliveries: list[DeliverEvent] = []
        self.producer.begin_transaction()
        try:
            deliveries += self._apply_waits(waits)
            deliveries += self._pending
            for msg in msgs:
                if msg.error():
                    log.warning("consume_error", error=str(msg.error()))
                    continue
                first_offsets.setdefault(msg.partition(), msg.offset())
                next_offsets[msg.partition()] = msg.offset() + 1
                deliveries += self._handle_event(msg)
            for delivery in deliveries:
                self._produce(delivery)
            if next_offsets:
                self.producer.send_offsets_to_transaction(
                    [TopicPartition(self.topics.external_events, p, o) for p, o in next_offsets.items()],
                    self.consumer.consumer_group_metadata())
            self.producer.commit_transaction()
        except KafkaException as exc:
            self._recover(exc, first_offsets)
            return 0
        self._pending = []
        self.batches += 1
        consumed = sum(1 for msg in msgs if not msg.error())
        self.events += consumed
        self.delivered += len(deliveries)
        metrics.CORRELATOR_EVENTS.inc(consumed)
        metrics.CORRELATOR_DELIVERIES.inc(len(deliveries))
        for d in deliveries:
            log.info("event_delivered", execution_id=d.execution_id, step=d.step, event_id=d.event_id,
                     event_type=d.event_type)
        return len(deliveries)

    def _recover(self, exc: KafkaException, first_offsets: dict[int, int]) -> None:
        """An aborted transaction: start over from what Kafka has (the waits from their
        beginning, the buffers up to the committed offsets, the events of the batch again)."""
        abort_transaction(self.producer, exc, log)
        self.correlation = Correlation(self.settings.event_buffer_ms)
        self._pending = []
        self._read_waits_to_end()
        owned = sorted(self.owned)
        self._restore(owned)
        self._pending += self.correlation.restored(owned)
        for partition, offset in first_offsets.items():
            self.consumer.seek(TopicPartition(self.topics.external_events, partition, offset))

    def _apply_waits(self, msgs: list[Message]) -> list[DeliverEvent]:
        out: list[DeliverEvent] = []
        for msg in msgs:
            if msg.error() is not None:
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("waits_consume_error", error=str(msg.error()))
                continue
            key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
            if msg.value() is None:
                if key is not None:
                    self.correlation.close_wait(key)
                continue
            try:
                wait = self.codec.decode(msg.value(), expect="waits")
            except DecodeError as exc:
                log.error("wait_undecodable", partition=msg.partition(), offset=msg.offset(), key=key,
                          reason=str(exc))
                continue
            if not isinstance(wait, WaitOpened):
                log.error("wait_unknown", partition=msg.partition(), offset=msg.offset(), type=type(wait).__name__)
                continue
            if key != wait_key(wait):
                log.warning("wait_key_mismatch", key=key, expected=wait_key(wait), offset=msg.offset())
            out += self.correlation.open_wait(wait)
        return out

    def _decode_event(self, msg: Message) -> ExternalEvent | str:
        """The event, or why it cannot be used."""
        try:
            event = self.codec.decode(msg.value(), expect="external-events")
        except DecodeError as exc:
            return f"correlator cannot decode the external event: {exc}"
        if not isinstance(event, ExternalEvent):
            return f"expected an ExternalEvent, got {type(event).__name__}"
        if not event.event_id:
            return "event_id is empty"
        if not event.event_type:
            return "event_type is empty"
        return event

    def _handle_event(self, msg: Message) -> list[DeliverEvent]:
        event = self._decode_event(msg)
        if isinstance(event, str):
            kind = "undecodable" if event.startswith("correlator cannot decode") else "invalid"
            self.dead_letters.send(msg, event, "correlator", kind=kind)
            return []
        arrived_at = _arrived_at(msg, int(self.clock() * 1000))
        log.debug("event_buffered", event_id=event.event_id, event_type=event.event_type,
                  partition=msg.partition(), offset=msg.offset(), arrived_at=arrived_at)
        return self.correlation.event_arrived(event, msg.partition(), arrived_at)

    def _produce(self, delivery: DeliverEvent) -> None:
        eid = delivery.execution_id
        kwargs: dict[str, Any] = {"key": eid.encode("utf-8"), "value": self.codec.encode(delivery),
                                  "partition": partition_for(eid, self.settings.partitions)}
        try:
            self.producer.produce(self.topics.commands, **kwargs)
        except BufferError:
            self.producer.poll(1.0)
            self.producer.produce(self.topics.commands, **kwargs)
        self.producer.poll(0)

    def close(self) -> None:
        log.info("correlator_stopped", batches=self.batches, events=self.events, delivered=self.delivered)
        for closing in (lambda: close_group_consumer(self.consumer, "correlator"), self.waits.close, self.reader.close, lambda: self.producer.flush(5)):
            try:
                closing()
            except Exception:  # shutting down: report, keep closing the rest
                log.exception("close_failed")


def _retrying(call: Callable[[], T], seconds: float = 15.0) -> T:
    """`call()`, again while it fails with a retriable error (e.g. fresh topics whose
    partition leaders are not known yet)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            transient = error.retriable() or error.code() in _TRANSIENT
            if not transient or time.monotonic() > deadline:
                raise
            log.info("kafka_retry", error=str(error))
            time.sleep(0.2)


def _arrived_at(msg: Message, default: int) -> int:
    kind, ts = msg.timestamp()
    return ts if kind != TIMESTAMP_NOT_AVAILABLE and ts >= 0 else default


def run_correlator(settings: Settings, stop: threading.Event) -> None:
    Correlator(settings).run(stop)
