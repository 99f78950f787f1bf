"""Workflow definitions for the projection: rows of `workflow_definitions` and
the step lists (`DefinitionShape`) that WorkflowStarted needs (and the steps
inside switch, loop and for_each blocks, with the composite that runs each).

Shapes are parsed once per (name, version, digest) and kept in memory. A
WorkflowStarted whose definition is neither cached nor in the table (the
definition's message sits in a partition the projector has not reached yet)
is resolved by reading the compacted `wf.definitions` topic directly
(`read_definitions_topic`), so pending step rows are never lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import structlog
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from orchestrator.config import Settings
from orchestrator.core.messages import DefinitionRegistered

from .apply import DefinitionShape, timestamp

__all__ = [
    "DefinitionKey",
    "DefinitionRecord",
    "Definitions",
    "TopicReader",
    "definition_key",
    "parse_shape",
    "read_definitions_topic",
]

log = structlog.get_logger("projections.definitions")

DefinitionKey = tuple[str, str]  # (name, version)


def definition_key(name: str, version: str) -> str:
    """The Kafka key of a definition: `name@version`."""
    return f"{name}@{version}"


@dataclass(frozen=True)
class DefinitionRecord:
    """A DefinitionRegistered with where it was read from."""

    registered: DefinitionRegistered
    partition: int
    offset: int

    @property
    def key(self) -> DefinitionKey:
        return (self.registered.name, self.registered.version)


TopicReader = Callable[[set[DefinitionKey]], list[DefinitionRecord]]

UPSERT_DEFINITION = """
INSERT INTO workflow_definitions AS d
    (name, version, digest, source, source_format, registered_at, registered_by,
     step_count, kafka_partition, kafka_offset)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (name, version) DO UPDATE SET
    digest = EXCLUDED.digest, source = EXCLUDED.source, source_format = EXCLUDED.source_format,
    registered_at = EXCLUDED.registered_at, registered_by = EXCLUDED.registered_by,
    step_count = EXCLUDED.step_count, kafka_partition = EXCLUDED.kafka_partition,
    kafka_offset = EXCLUDED.kafka_offset, projected_at = now()
WHERE d.kafka_offset <= EXCLUDED.kafka_offset
"""


def _raw_shape(source: str) -> DefinitionShape:
    """Best-effort shape of a definition the loader refuses (YAML or JSON text)."""
    doc = yaml.safe_load(source)
    spec = doc.get("spec", {}) if isinstance(doc, dict) else {}

    def listed(steps: Any) -> list[dict[str, Any]]:
        return [s for s in (steps if isinstance(steps, list) else []) if isinstance(s, dict) and s.get("name")]

    def pairs(steps: Any) -> tuple[tuple[str, str], ...]:
        return tuple((str(s.get("name")), str(s.get("type"))) for s in listed(steps))

    def blocks(step: dict[str, Any]) -> list[Any]:
        config = step.get("config")
        if not isinstance(config, dict):
            return []
        cases = config.get("cases") if isinstance(config.get("cases"), list) else []
        return [*(c.get("steps") for c in cases if isinstance(c, dict)), config.get("default"),
                config.get("steps"), [config.get("step")]]

    inner: list[tuple[str, str, str]] = []

    def walk(steps: Any) -> None:
        for step in listed(steps):
            for block in blocks(step):
                inner.extend((str(s.get("name")), str(s.get("type")), str(step["name"])) for s in listed(block))
                walk(block)

    walk(spec.get("steps"))
    compensation = spec.get("compensation") or {}
    return DefinitionShape(pairs(spec.get("steps")),
                           pairs(compensation.get("steps") if isinstance(compensation, dict) else None),
                           tuple(inner))


def parse_shape(registered: DefinitionRegistered) -> DefinitionShape:
    """The steps of a registered definition, parsed with the project's loader."""
    from orchestrator.core.loading import load_definition_source

    key = definition_key(registered.name, registered.version)
    try:
        definition = load_definition_source(registered.source, file=key)
    except Exception as exc:  # DefinitionError; an older definition a newer loader reads differently
        log.error("definition_unreadable", definition=key, error=str(exc))
        try:
            return _raw_shape(registered.source)
        except Exception:
            return DefinitionShape(())
    compensation = definition.spec.compensation
    steps = definition.steps_by_name
    return DefinitionShape(
        tuple((s.name, s.type) for s in definition.spec.steps),
        tuple((s.name, s.type) for s in compensation.steps) if compensation else (),
        tuple((name, steps[name].type, parent) for name, parent in definition.parents.items()),
    )


class Definitions:
    """(name, version) -> DefinitionShape, cached; backed by the table and the topic."""

    def __init__(self, topic_reader: TopicReader | None = None, *, topic_wait_s: float = 10.0):
        self._shapes: dict[DefinitionKey, tuple[str, DefinitionShape]] = {}  # key -> (digest, shape)
        self._topic_reader = topic_reader
        self._topic_wait_s = topic_wait_s
        # Looked for once and found nowhere: never wait for them again (a deleted
        # definition would otherwise cost every later batch the full wait).
        self._not_found: set[DefinitionKey] = set()

    def shape(self, name: str, version: str | None) -> DefinitionShape | None:
        """The cached shape (the `ShapeLookup` the appliers use)."""
        if version is None:
            return None
        cached = self._shapes.get((name, version))
        return cached[1] if cached else None

    def add(self, registered: DefinitionRegistered) -> DefinitionShape:
        key = (registered.name, registered.version)
        cached = self._shapes.get(key)
        if cached and cached[0] == registered.digest:
            return cached[1]
        shape = parse_shape(registered)
        self._shapes[key] = (registered.digest, shape)
        self._not_found.discard(key)
        return shape

    def forget(self, key: DefinitionKey) -> None:
        self._shapes.pop(key, None)

    def row(self, record: DefinitionRecord) -> tuple[Any, ...]:
        """Parameters of UPSERT_DEFINITION for a record (parses and caches its shape)."""
        r = record.registered
        shape = self.add(r)
        return (r.name, r.version, r.digest, r.source, r.source_format, timestamp(r.registered_at),
                r.registered_by, len(shape.steps), record.partition, record.offset)

    def ensure(self, cur: Any, keys: Iterable[DefinitionKey]) -> list[DefinitionRecord]:
        """Make the shapes of `keys` available: memory, then the table, then the topic.

        Returns the records read from the topic (the caller upserts them in its
        transaction). Keys found nowhere are logged and left out: their
        executions get step rows only as steps are scheduled.
        """
        missing = {k for k in keys if k not in self._shapes and k not in self._not_found}
        if not missing:
            return []
        names = [k[0] for k in missing]
        versions = [k[1] for k in missing]
        cur.execute(
            """
            SELECT d.name, d.version, d.digest, d.source, d.source_format,
                   (extract(epoch FROM d.registered_at) * 1000)::bigint, d.registered_by
            FROM workflow_definitions d
            JOIN unnest(%s::text[], %s::text[]) AS k(name, version) USING (name, version)
            """,
            (names, versions),
        )
        for name, version, digest, source, source_format, registered_at, registered_by in cur.fetchall():
            self.add(DefinitionRegistered(name, version, source, source_format, digest, registered_at, registered_by))
            missing.discard((name, version))
        if not missing or self._topic_reader is None:
            self._report(missing)
            self._not_found |= missing
            return []
        found: dict[DefinitionKey, DefinitionRecord] = {}
        deadline = time.monotonic() + self._topic_wait_s
        while True:
            for record in self._topic_reader(set(missing)):
                if record.key in missing:
                    found[record.key] = record
            if missing <= found.keys() or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        for record in found.values():
            self.add(record.registered)
        self._report(missing - found.keys())
        self._not_found |= missing - found.keys()
        return list(found.values())

    @staticmethod
    def _report(missing: set[DefinitionKey]) -> None:
        for name, version in sorted(missing):
            log.error("definition_not_found", definition=definition_key(name, version),
                      consequence="pending step rows not created at start")


def read_definitions_topic(settings: Settings, keys: set[DefinitionKey] | None = None,
                           *, timeout_s: float = 30.0) -> list[DefinitionRecord]:
    """The latest DefinitionRegistered per key on the definitions topic (all
    keys, or only `keys`), read from the beginning to the high watermarks."""
    from orchestrator.codec import Codec
    from orchestrator.runtime.kafka import reader_config, watermark_offsets

    codec = Codec.default()
    consumer = Consumer(reader_config(settings, "projector-definitions"))
    topic = settings.topics.definitions
    latest: dict[DefinitionKey, DefinitionRecord] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        partitions = sorted(metadata.topics[topic].partitions) if topic in metadata.topics else []
        targets: dict[int, int] = {}
        for p in partitions:
            low, high = watermark_offsets(consumer, TopicPartition(topic, p), timeout_s)
            if high > low:
                targets[p] = high
        if not targets:
            return []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in targets])
        deadline = time.monotonic() + timeout_s
        while targets and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if msg.offset() >= targets.get(msg.partition(), 0):
                            targets.pop(msg.partition(), None)
                        continue
                    raise RuntimeError(f"reading {topic}: {error}")
                if msg.offset() + 1 >= targets.get(msg.partition(), 0):
                    targets.pop(msg.partition(), None)
                value = msg.value()
                if value is None:  # tombstone: the definition was removed
                    key = (msg.key() or b"").decode("utf-8", "replace")
                    name, _, version = key.rpartition("@")
                    latest.pop((name, version), None)
                    continue
                try:
                    registered = codec.decode(value, expect="definitions")
                except ValueError:
                    continue  # the projector's own pass sends it to the DLQ
                record = DefinitionRecord(registered, msg.partition(), msg.offset())
                if keys is None or record.key in keys:
                    latest[record.key] = record
    finally:
        consumer.close()
    return list(latest.values())
