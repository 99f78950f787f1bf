"""Kafka for a short-lived command: fail fast, stay quiet, confirm every send.

Every client made here has short connection timeouts and librdkafka's own log
lines off (it would print each retry on stderr); `require_kafka` asks a
broker for metadata first so an unreachable cluster is one clear line within
seconds rather than a hang.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from ..codec import Codec, DecodeError
from ..config import Settings
from ..core.messages import DefinitionRegistered
from ..runtime.kafka import (admin_client, copartitioned_topics, producer_config, read_partition_to_end,
                             reader_config, watermark_offsets)
from .common import CliError, warn

__all__ = [
    "CONNECT_TIMEOUT_S",
    "ensure",
    "Published",
    "publish",
    "read_definitions",
    "read_key",
    "read_partitions",
    "reader",
    "require_kafka",
    "require_topics",
    "watermarks",
]

CONNECT_TIMEOUT_S = 5.0
DELIVERY_TIMEOUT_S = 15.0
READ_IDLE_TIMEOUT_S = 15.0

_FAST = {
    "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT_S * 1000),
    # librdkafka prints every failed connection attempt on stderr; the command
    # reports failures itself, in one line.
    "log_level": 0,
}


_admins: dict[str, AdminClient] = {}


def quiet_admin(settings: Settings) -> AdminClient:
    """One admin client per bootstrap for the whole command (each client that is
    torn down early may print a librdkafka line about unserved events)."""
    admin = _admins.get(settings.kafka_bootstrap)
    if admin is None:
        admin = _admins[settings.kafka_bootstrap] = admin_client(settings, **_FAST)
    return admin


def ensure(settings: Settings) -> dict[str, str]:
    """`ensure_topics` with fast failure and a one-line error on a layout mismatch."""
    from ..runtime.kafka import TopicMismatchError, ensure_topics

    require_kafka(settings)
    try:
        return ensure_topics(settings, admin=quiet_admin(settings), timeout=15)
    except TopicMismatchError as exc:
        raise CliError(str(exc)) from None


def _kafka_reason(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)


def _tcp_probe(bootstrap: str) -> str | None:
    """None when some bootstrap address accepts a TCP connection, else why not.

    A refused connection is known at once; librdkafka would retry until its timeout.
    """
    reasons = []
    for entry in bootstrap.split(","):
        address = entry.strip().rpartition("://")[2]
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            return None  # not ours to judge: let librdkafka report it
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
            return None
        except OSError as exc:
            reasons.append(exc.strerror or str(exc))
    return "; ".join(dict.fromkeys(reasons)) or None


def require_kafka(settings: Settings) -> dict[str, Any]:
    """Topic metadata (name -> TopicMetadata), or a CliError within a few seconds."""
    refused = _tcp_probe(settings.kafka_bootstrap)
    if refused:
        raise CliError(f"Kafka unreachable at {settings.kafka_bootstrap} (ORCH_KAFKA_BOOTSTRAP): {refused}")
    admin = quiet_admin(settings)
    try:
        return admin.list_topics(timeout=CONNECT_TIMEOUT_S).topics
    except KafkaException as exc:
        raise CliError(
            f"Kafka unreachable at {settings.kafka_bootstrap} (ORCH_KAFKA_BOOTSTRAP): {_kafka_reason(exc)}"
        ) from None


def require_topics(settings: Settings, *names: str) -> dict[str, Any]:
    """The cluster's topic metadata, after checking that each named topic exists
    (and that co-partitioned ones have ORCH_PARTITIONS partitions)."""
    topics = require_kafka(settings)
    counts: dict[str, int] = {}
    for name in names:
        meta = topics.get(name)
        if meta is None or meta.error is not None or not meta.partitions:
            raise CliError(f"Kafka topic {name} does not exist: run `orchestrator topics create` "
                           f"(check ORCH_TOPIC_PREFIX={settings.topics.prefix!r})")
        counts[name] = len(meta.partitions)
    keyed = copartitioned_topics(settings)
    for name, count in counts.items():
        if name in keyed and count != settings.partitions:
            raise CliError(f"Kafka topic {name} has {count} partitions but ORCH_PARTITIONS is "
                           f"{settings.partitions}: set ORCH_PARTITIONS to match the topics")
    return topics


# -- producing -----------------------------------------------------------------


class Published:
    """Where a record landed."""

    def __init__(self, topic: str, key: str, partition: int, offset: int) -> None:
        self.topic, self.key, self.partition, self.offset = topic, key, partition, offset

    def as_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "key": self.key, "partition": self.partition, "offset": self.offset}


def publish(settings: Settings, records: list[tuple[str, str, Any]], *, codec: Codec | None = None) -> list[Published]:
    """Encode and publish (topic, key, message) records; wait until Kafka has them all."""
    codec = codec or Codec.default()
    producer = Producer(producer_config(settings, role="cli", **{
        **_FAST,
        "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000),
        "linger.ms": 0,
    }))
    outcomes: dict[int, tuple[KafkaError | None, Message]] = {}

    def delivered(index: int) -> Any:
        return lambda err, msg: outcomes.__setitem__(index, (err, msg))

    for i, (topic, key, message) in enumerate(records):
        producer.produce(topic, codec.encode(message), key.encode("utf-8"), on_delivery=delivered(i))
    remaining = producer.flush(DELIVERY_TIMEOUT_S + 5)
    published: list[Published] = []
    for i, (topic, key, _) in enumerate(records):
        if i not in outcomes:
            raise CliError(f"Kafka did not confirm the record for {key!r} on {topic} within "
                           f"{DELIVERY_TIMEOUT_S:g}s ({remaining} still queued); it may or may not arrive")
        err, msg = outcomes[i]
        if err is not None:
            raise CliError(f"cannot publish {key!r} to {topic}: {err.str()}")
        published.append(Published(topic, key, msg.partition(), msg.offset()))
    return published


# -- reading -------------------------------------------------------------------


def reader(settings: Settings) -> Consumer:
    """A consumer that only assigns partitions: never joins a group, never commits."""
    return Consumer(reader_config(settings, "cli", **_FAST))


# A topic created a moment ago may not have elected its leaders yet.
LEADER_WAIT_S = 10.0


def watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """(low, high) of a partition; waits a little for a new topic's leader."""
    try:
        return watermark_offsets(consumer, TopicPartition(topic, partition), LEADER_WAIT_S)
    except KafkaException as exc:
        raise CliError(f"cannot read the offsets of {topic}[{partition}]: {_kafka_reason(exc)}") from None


def read_key(settings: Settings, topic: str, partition: int, key: str,
             start: int = OFFSET_BEGINNING) -> Iterator[Message]:
    """The messages of `key` in one partition, from `start` to the end as of now."""
    wanted = key.encode("utf-8")
    return (msg for msg in read_partitions(settings, topic, [partition], start) if msg.key() == wanted)


def read_partitions(settings: Settings, topic: str, partitions: Iterable[int],
                    start: int = OFFSET_BEGINNING) -> Iterator[Message]:
    """Every message of the given partitions from `start` up to their ends as of now,
    partition by partition in offset order, with one consumer: one pass over the
    topic however many keys the caller wants."""
    consumer = reader(settings)
    partition = -1
    try:
        for partition in sorted(partitions):
            watermarks(consumer, topic, partition)
            yield from read_partition_to_end(consumer, topic, partition, start, idle_timeout=READ_IDLE_TIMEOUT_S)
    except TimeoutError as exc:
        raise CliError(str(exc)) from None
    except KafkaException as exc:
        raise CliError(f"cannot read {topic}[{partition}]: {_kafka_reason(exc)}") from None
    finally:
        consumer.close()


def read_definitions(settings: Settings, *, codec: Codec | None = None,
                     topics: dict[str, Any] | None = None) -> list[tuple[DefinitionRegistered, Message]]:
    """Every registered definition on the compacted topic (latest per key), in key order.

    A missing topic reads as empty. Undecodable records are reported and skipped.
    """
    codec = codec or Codec.default()
    topic = settings.topics.definitions
    topics = require_kafka(settings) if topics is None else topics
    meta = topics.get(topic)
    if meta is None or meta.error is not None:
        return []
    latest: dict[bytes, Message] = {}
    consumer = reader(settings)
    try:
        for partition in sorted(meta.partitions):
            watermarks(consumer, topic, partition)
            for msg in read_partition_to_end(consumer, topic, partition, idle_timeout=READ_IDLE_TIMEOUT_S):
                if msg.value() is None:
                    latest.pop(msg.key() or b"", None)
                else:
                    latest[msg.key() or b""] = msg
    except TimeoutError as exc:
        raise CliError(str(exc)) from None
    except KafkaException as exc:
        raise CliError(f"cannot read {topic}: {_kafka_reason(exc)}") from None
    finally:
        consumer.close()
    found: list[tuple[DefinitionRegistered, Message]] = []
    for key in sorted(latest):
        msg = latest[key]
        try:
            found.append((codec.decode(msg.value(), expect="definitions"), msg))
        except DecodeError as exc:
            warn(f"{topic}[{msg.partition()}]@{msg.offset()} ({key.decode('utf-8', 'replace')}): "
                 f"undecodable, skipped: {exc}")
    return found
