"""Rebuild the projection from offset 0: `orchestrator projections rebuild`.

Truncates the projection tables and this projection's stored offsets (one
transaction), then reads `wf.definitions` and then `wf.events` from the
beginning up to the high watermarks taken at the start, through the same
writer as the live projector. The result equals the live projection row for
row (`projections.snapshot`). A live projector may keep running: the offset
fencing makes it notice the reset, re-position itself and share the work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import structlog
from confluent_kafka import Consumer, TopicPartition

from orchestrator.config import Settings

from .batch import PROJECTION, ProjectionWriter
from .db import connect
from .definitions import Definitions, read_definitions_topic
from .migrate import migrate
from .projector import ProjectionStream

__all__ = ["PROJECTION_TABLES", "RebuildResult", "rebuild", "reset"]

log = structlog.get_logger("projections.rebuild")

PROJECTION_TABLES = ("workflow_definitions", "workflow_executions", "step_executions", "execution_events")

Progress = Callable[[int, int], None]  # (messages done, total)


@dataclass(frozen=True)
class RebuildResult:
    messages: int  # offsets covered (events + definitions)
    events: int  # event messages applied
    definitions: int
    seconds: float


def reset(conn, projection: str = PROJECTION) -> None:  # type: ignore[no-untyped-def]
    """Empty the projection tables and forget the stored offsets (one transaction).

    Locks `projection_offsets` first: every projector transaction starts
    there, so a running projector waits instead of deadlocking with TRUNCATE.
    """
    with conn.transaction():
        conn.execute("LOCK TABLE projection_offsets IN SHARE ROW EXCLUSIVE MODE")
        conn.execute("TRUNCATE " + ", ".join(PROJECTION_TABLES))
        conn.execute("DELETE FROM projection_offsets WHERE projection = %s", (projection,))


def rebuild(settings: Settings, progress: Progress | None = None, schema: str | None = None, *,
            timeout_s: float = 600.0, batch_size: int = 1000, projection: str = PROJECTION) -> RebuildResult:
    """Drop the projected rows and project both topics again from the beginning."""
    from orchestrator.runtime.kafka import reader_config

    started = time.monotonic()
    conn = connect(settings.database_url, schema, create_schema=True, autocommit=True)
    consumer: Consumer | None = None
    try:
        migrate(conn, schema)
        conn.autocommit = False
        reset(conn, projection)
        consumer = Consumer(reader_config(settings, "projector-rebuild", **{"enable.auto.offset.store": False}))
        definitions = Definitions(lambda keys: read_definitions_topic(settings, keys))
        writer = ProjectionWriter(conn, settings.topics, definitions, projection)
        stream = ProjectionStream(consumer, writer, settings)  # no DLQ: the live projector did that

        ranges: dict[tuple[str, int], tuple[int, int]] = {}
        for topic in (settings.topics.definitions, settings.topics.events):
            meta = consumer.list_topics(topic, timeout=30)
            for p in sorted(meta.topics[topic].partitions) if topic in meta.topics else []:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                ranges[(topic, p)] = (low, high)
        total = sum(high - low for low, high in ranges.values())

        def done_count() -> int:
            done = 0
            for key, (low, high) in ranges.items():
                position = max(stream.expected.get(key, 0), stream.eof.get(key, 0))
                done += min(max(position - low, 0), high - low)
            return done

        events = defs = 0
        if progress:
            progress(0, total)
        deadline = time.monotonic() + timeout_s
        for topic in (settings.topics.definitions, settings.topics.events):
            pending = {key for key, (low, high) in ranges.items() if key[0] == topic and high > low}
            if not pending:
                continue
            tps = stream.position_from_store([TopicPartition(t, p) for t, p in sorted(pending)])
            consumer.assign(tps)
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rebuild: {sorted(pending)} not read to their end after {timeout_s}s")
                result = stream.process(consumer.consume(batch_size, 0.1))
                if result is not None:
                    events += result.events
                    defs += result.definitions
                    if progress:
                        progress(done_count(), total)
                for key in list(pending):
                    high = ranges[key][1]
                    if stream.expected.get(key, 0) >= high or stream.eof.get(key, -1) >= high:
                        pending.discard(key)
            consumer.unassign()
        if progress:
            progress(total, total)
        elapsed = time.monotonic() - started
        log.info("projection_rebuilt", messages=total, events=events, definitions=defs, seconds=round(elapsed, 2))
        return RebuildResult(total, events, defs, elapsed)
    finally:
        if consumer is not None:
            consumer.close()
        conn.close()
