"""The projector: `wf.definitions` + `wf.events` -> PostgreSQL, exactly once.

Kafka offsets are never committed to Kafka. Each polled batch (up to
`batch_size` messages or `batch_timeout_s`) is written in one Postgres
transaction together with the next offset of every topic-partition it
touched (`projection_offsets`); on assignment the consumer is positioned at
the stored offsets (the beginning when none is stored). A crash anywhere
loses nothing and applies nothing twice.

Fencing: the writer remembers where it left each partition's stored offset
and checks it under a row lock before writing. If another instance (after a
rebalance) or a rebuild moved it, the batch is dropped and the partitions are
re-positioned at the stored offsets.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterable

import psycopg
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from orchestrator.config import Settings
from orchestrator.runtime import metrics

from .batch import PROJECTION, BatchResult, Message, OffsetsMoved, ProjectionWriter, Tombstone
from .db import connect
from .definitions import Definitions, read_definitions_topic
from .migrate import migrate

__all__ = ["GROUP_ID", "ROLE", "ProjectionStream", "Projector", "run_projector"]

log = structlog.get_logger("projections.projector")

GROUP_ID = "orchestrator-projector"
ROLE = "projector"

TopicPartitionKey = tuple[str, int]


class ProjectionStream:
    """Kafka messages -> decoded batches -> `ProjectionWriter`, keeping each
    partition's expected stored offset. Shared by the projector and rebuild."""

    def __init__(self, consumer: Consumer, writer: ProjectionWriter, settings: Settings, *,
                 dead_letters: Any = None, producer: Producer | None = None):
        from orchestrator.codec import Codec

        self.consumer = consumer
        self.writer = writer
        self.settings = settings
        self.codec = Codec.default()
        self.dead_letters = dead_letters
        self.producer = producer
        self.expected: dict[TopicPartitionKey, int] = {}  # stored offset as last seen/written
        self.eof: dict[TopicPartitionKey, int] = {}  # partitions read to their end (EOF offset)
        self.topics = settings.topics

    # -- positions -------------------------------------------------------------

    def position_from_store(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Set each TopicPartition's offset to the stored one (the beginning if none)."""
        stored = self.writer.stored_offsets((tp.topic, tp.partition) for tp in partitions)
        for tp in partitions:
            key = (tp.topic, tp.partition)
            offset = stored.get(key)
            tp.offset = OFFSET_BEGINNING if offset is None else offset
            self.expected[key] = offset or 0
            self.eof.pop(key, None)
        self.writer.invalidate()
        return partitions

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        self.writer.invalidate()
        for tp in partitions:
            self.expected.pop((tp.topic, tp.partition), None)
            self.eof.pop((tp.topic, tp.partition), None)

    def resync(self) -> bool:
        """Re-position partitions whose stored offset moved under us (a reset
        or rebuild, another instance); True if any did. Partitions with new
        messages notice by themselves; this catches the quiet ones."""
        keys = list(self.expected)
        if not keys:
            return False
        stored = self.writer.stored_offsets(keys)
        moved = {k: stored.get(k, 0) for k in keys if stored.get(k, 0) != self.expected.get(k)}
        if moved:
            log.info("offsets_moved", partitions={f"{t}[{p}]": o for (t, p), o in moved.items()})
            self._seek(moved, moved)
        return bool(moved)

    def _seek(self, stored: dict[TopicPartitionKey, int], keys: Iterable[TopicPartitionKey]) -> None:
        self.writer.invalidate()
        for key in keys:
            offset = stored.get(key, 0)
            self.expected[key] = offset
            self.eof.pop(key, None)
            try:
                self.consumer.seek(TopicPartition(key[0], key[1], offset))
            except KafkaException as exc:  # revoked meanwhile: the next owner positions itself
                log.info("seek_skipped", topic=key[0], partition=key[1], reason=str(exc))

    # -- one batch -------------------------------------------------------------

    def process(self, msgs: list[Any]) -> BatchResult | None:
        """Decode and write one consumed batch; None when nothing was written."""
        messages: list[Message] = []
        next_offsets: dict[TopicPartitionKey, int] = {}
        dead: list[tuple[Any, str]] = []
        for msg in msgs:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self.eof[(msg.topic(), msg.partition())] = msg.offset()
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer_error", error=str(error))
                continue
            key = (msg.topic(), msg.partition())
            self.eof.pop(key, None)
            next_offsets[key] = msg.offset() + 1
            decoded = self._decode(msg)
            if isinstance(decoded, str):
                dead.append((msg, decoded))
            else:
                messages.append(decoded)
        if not next_offsets:
            return None
        try:
            result = self.writer.write(messages, next_offsets, self.expected,
                                       (lambda: self._dead_letter(dead)) if dead else None)
        except OffsetsMoved as moved:
            log.info("offsets_moved", detail=str(moved))
            self._seek(moved.stored, next_offsets)
            return None
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
                psycopg.errors.LockNotAvailable) as exc:
            log.warning("batch_retried", error=str(exc))
            self._rewind(list(next_offsets))
            return None
        except Exception as exc:
            executions = sorted({m.value.execution_id for m in messages if hasattr(m.value, "execution_id")})
            log.error("batch_failed", error=str(exc), partitions={f"{t}[{p}]": o for (t, p), o in next_offsets.items()},
                      execution_ids=executions[:20], executions=len(executions))
            self._rewind(list(next_offsets))
            raise
        self.expected.update(next_offsets)
        return result

    def _rewind(self, keys: list[TopicPartitionKey]) -> None:
        """After a failed write: back to the stored offsets, if the store answers."""
        try:
            if self.writer.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.writer.conn.rollback()
            stored = self.writer.stored_offsets(keys)
        except Exception:  # the caller restarts the whole projector
            return
        self._seek(stored, keys)

    def _decode(self, msg: Any) -> Message | str:
        topic = msg.topic()
        value = msg.value()
        try:
            if topic == self.topics.definitions:
                if value is None:
                    key = (msg.key() or b"").decode("utf-8")
                    return Message(topic, msg.partition(), msg.offset(), Tombstone(key))
                decoded = self.codec.decode(value, expect="definitions")
            elif topic == self.topics.events:
                decoded = self.codec.decode(value, expect="events")
            else:
                return f"unexpected topic {topic}"
        except ValueError as exc:  # DecodeError, bad UTF-8 key
            return f"undecodable: {exc}"
        return Message(topic, msg.partition(), msg.offset(), decoded)

    def _dead_letter(self, dead: list[tuple[Any, str]]) -> None:
        failures = self.dead_letters.failures if self.dead_letters is not None else 0
        for msg, reason in dead:
            if self.dead_letters is None:  # a rebuild: the live projector dead-lettered it already
                log.error("message_skipped_undecodable", topic=msg.topic(), partition=msg.partition(),
                          offset=msg.offset(), key=_text(msg.key()), reason=reason)
            else:
                self.dead_letters.send(msg, reason, ROLE, kind="undecodable")
        if self.dead_letters is not None and self.producer is not None:
            remaining = self.producer.flush(30)
            if remaining or self.dead_letters.failures != failures:
                raise RuntimeError("dead letters not delivered; not advancing past them")

    def caught_up(self) -> bool:
        """Every tracked partition has been read to its end (and written)."""
        return bool(self.expected) and all(key in self.eof for key in self.expected)


def _text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", "replace")


class Projector:
    """Consumes `wf.definitions` and `wf.events` as group `orchestrator-projector`."""

    def __init__(self, settings: Settings, schema: str | None = None, *, group_id: str | None = None,
                 batch_size: int = 500, batch_timeout_s: float = 0.05, dead_letters: bool = True,
                 projection: str = PROJECTION, resync_interval_s: float = 5.0,
                 synchronous_commit: bool = False):
        self.settings = settings
        self.schema = schema
        self.group_id = group_id or settings.group_id("projector")
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.projection = projection
        self._with_dlq = dead_letters
        self.conn: psycopg.Connection | None = None
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.stream: ProjectionStream | None = None
        self._cooperative = False
        self.events_projected = 0
        self.resync_interval_s = resync_interval_s
        self.synchronous_commit = synchronous_commit
        self._last_resync = time.monotonic()
        metrics.expose(ROLE)

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> Projector:
        from orchestrator.runtime.kafka import consumer_config

        settings = self.settings
        self.conn = connect(settings.database_url, self.schema, create_schema=True, autocommit=True)
        migrate(self.conn, self.schema)
        if not self.synchronous_commit:
            # Safe here: a commit lost in a server crash loses its rows and its
            # offsets together, and the projector simply projects them again.
            self.conn.execute("SET synchronous_commit = off")
        self.conn.autocommit = False
        definitions = Definitions(lambda keys: read_definitions_topic(settings, keys))
        writer = ProjectionWriter(self.conn, settings.topics, definitions, self.projection)
        conf = consumer_config(settings, self.group_id, role=ROLE, **{
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            **metrics.consumer_lag_config(ROLE),
        })
        self._cooperative = "cooperative" in str(conf.get("partition.assignment.strategy", ""))
        self.consumer = Consumer(conf)
        dead_letters = None
        if self._with_dlq:
            from orchestrator.runtime.kafka import DeadLetters, producer_config

            self.producer = Producer(producer_config(settings, role=ROLE))
            dead_letters = DeadLetters(self.producer, settings)
        self.stream = ProjectionStream(self.consumer, writer, settings,
                                       dead_letters=dead_letters, producer=self.producer)
        self.consumer.subscribe([settings.topics.definitions, settings.topics.events],
                                on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("projector_started", group_id=self.group_id, schema=self.schema,
                 topics=[settings.topics.definitions, settings.topics.events])
        return self

    def close(self) -> None:
        """Leave the group and disconnect. Nothing to commit: offsets live in Postgres."""
        if self.consumer is not None:
            try:
                self.consumer.close()
            except Exception as exc:  # already closed, broker gone
                log.warning("consumer_close_failed", error=str(exc))
            self.consumer = None
        if self.producer is not None:
            self.producer.flush(10)
            self.producer = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> Projector:
        return self.open() if self.consumer is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- rebalance callbacks ------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self.stream is not None
        self.stream.position_from_store(partitions)
        log.info("partitions_assigned", partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions])
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self.stream is not None
        self.stream.forget(partitions)
        log.info("partitions_revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    # -- work ------------------------------------------------------------------------

    def poll_once(self) -> BatchResult | None:
        """Consume one batch and project it; None when nothing was written."""
        if self.consumer is None:
            self.open()
        assert self.consumer is not None and self.stream is not None
        msgs = self.consumer.consume(self.batch_size, self.batch_timeout_s)
        if not msgs:
            if time.monotonic() - self._last_resync >= self.resync_interval_s:
                self._last_resync = time.monotonic()
                self.stream.resync()
            return None
        began = time.monotonic()
        result = self.stream.process(msgs)
        if result is not None:
            self.events_projected += result.events
            metrics.PROJECTOR_BATCH.observe(time.monotonic() - began)
            metrics.PROJECTOR_EVENTS.inc(result.events)
        return result

    def caught_up(self) -> bool:
        return self.stream is not None and self.stream.caught_up()

    def run_until_caught_up(self, timeout_s: float = 60.0) -> None:
        """Project until every assigned partition is read to its end (tests, tools)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll_once()
            if self.caught_up() and not (self.stream and self.stream.resync()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"projector not caught up after {timeout_s}s")

    def run(self, stop_event: threading.Event) -> None:
        """Project until `stop_event` is set; stops between batches."""
        if self.consumer is None:
            self.open()
        last_report, last_count = time.monotonic(), self.events_projected
        while not stop_event.is_set():
            self.poll_once()
            now = time.monotonic()
            if now - last_report >= 30:
                done = self.events_projected - last_count
                if done:
                    log.info("projector_progress", events=done, events_per_s=round(done / (now - last_report)))
                last_report, last_count = now, self.events_projected


def run_projector(settings: Settings, stop_event: threading.Event, schema: str | None = None, *,
                  max_backoff_s: float = 30.0) -> None:
    """The `orchestrator run projector` loop: restart on failure with backoff,
    return when `stop_event` is set (the current batch finishes first)."""
    backoff = 1.0
    while not stop_event.is_set():
        projector = Projector(settings, schema)
        try:
            projector.open()
            backoff = 1.0
            projector.run(stop_event)
        except Exception as exc:
            log.exception("projector_failed", error=str(exc), retry_in_s=backoff)
            stop_event.wait(backoff)
            backoff = min(backoff * 2, max_backoff_s)
        finally:
            projector.close()
    log.info("projector_stopped")
