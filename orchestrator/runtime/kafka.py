"""Kafka plumbing every role shares: client configs, topics, dead letters, replay.

Keyed topics share one partition count and the Java-compatible murmur2
partitioner, so partition p of commands, results, tasks and events holds the
same executions (`partition_for` says which). Consumers read committed data
only and never auto-commit: offsets go with a transaction (decider), a
Postgres transaction (projector) or an explicit commit after the work
(executor).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from ..config import Settings
from .dlq import DeadLetters
from .partitioner import murmur2, partition_for

__all__ = [
    "DeadLetters",
    "KafkaUnavailable",
    "TopicMismatchError",
    "abort_transaction",
    "admin_client",
    "check_kafka",
    "consumer_config",
    "copartitioned_topics",
    "creation_tuning",
    "ensure_topics",
    "murmur2",
    "partition_for",
    "producer_config",
    "read_compacted_topic",
    "read_partition_to_end",
    "reader_config",
    "topic_configs",
]

log = structlog.get_logger("kafka")
T = TypeVar("T")


class KafkaUnavailable(RuntimeError):
    """No broker answered a metadata request in time."""


class TopicMismatchError(RuntimeError):
    """An existing topic does not have the layout the orchestrator relies on."""


# -- client configs ------------------------------------------------------------


def _client_id(settings: Settings, name: str) -> str:
    suffix = f"-{settings.instance}"
    name = name if name.startswith("orchestrator") else f"orchestrator-{name}"
    return name if name.endswith(suffix) else name + suffix


def producer_config(
    settings: Settings, *, role: str | None = None, transactional_id: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """Idempotent, low-latency, Java-compatible keyed partitioning.

    `client.id` is `orchestrator-<role>-<instance>` (or the transactional id).
    Overrides use librdkafka names: `producer_config(s, **{"linger.ms": 5})`.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": _client_id(settings, role or transactional_id or "producer"),
        "partitioner": "murmur2_random",  # Java's murmur2 for keys, random for null keys
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "socket.nagle.disable": True,
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
    conf.update(overrides)
    return conf


def consumer_config(settings: Settings, group_id: str, *, role: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Committed reads, manual offsets, from the beginning, low fetch latency.

    The `range` assignor gives one member the same partition numbers of every
    co-partitioned topic it subscribes to (what the decider needs); roles that
    subscribe to one topic may override it (e.g. `cooperative-sticky`).
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "client.id": _client_id(settings, role or group_id),
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 5,
        "partition.assignment.strategy": "range",
        "session.timeout.ms": 10000,  # a dead member's partitions move within ~10 s
        "heartbeat.interval.ms": 1000,
        "socket.nagle.disable": True,
    }
    conf.update(overrides)
    return conf


def reader_config(settings: Settings, role: str = "reader", **overrides: Any) -> dict[str, Any]:
    """For a consumer that only `assign`s (replays): never joins its group, never commits."""
    group = f"orchestrator-{role}-{settings.instance}"
    return consumer_config(settings, group, **{"enable.partition.eof": True, **overrides})


def abort_transaction(producer: Producer, exc: KafkaException, logger: Any) -> None:
    """Abort the open transaction after `exc`; re-raise when the producer cannot go on
    (a fatal error, or fenced by a newer instance of the same slot)."""
    error = exc.args[0]
    if getattr(error, "fatal", lambda: False)():
        logger.critical("transaction_fatal", error=str(error))
        raise exc
    logger.warning("transaction_aborted", error=str(error))
    try:
        producer.abort_transaction()
    except KafkaException as abort_failed:  # e.g. fenced after a transaction timeout
        logger.critical("transaction_fatal", error=str(abort_failed.args[0]))
        raise


def admin_client(settings: Settings, **overrides: Any) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap,
                        "client.id": _client_id(settings, "admin"), **overrides})


def check_kafka(settings: Settings, timeout: float = 5.0) -> None:
    """Raise `KafkaUnavailable` unless a broker answers a metadata request within `timeout`."""
    admin = admin_client(settings, **{"log_level": 0})  # a probe: no connection-refused spam
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(f"no Kafka broker at {settings.kafka_bootstrap} answered within {timeout:g}s: {exc}") from None


# -- topics --------------------------------------------------------------------


def copartitioned_topics(settings: Settings) -> tuple[str, ...]:
    """Topics keyed by execution id: they must all have `settings.partitions` partitions."""
    t = settings.topics
    return (t.commands, t.results, t.tasks, t.events)


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the orchestrator uses, with the configs it must have."""
    t = settings.topics
    return {
        t.commands: {},
        t.results: {},
        t.tasks: {},
        t.events: {"retention.ms": "-1", "retention.bytes": "-1"},  # the truth: never deleted
        t.definitions: {"cleanup.policy": "compact"},
        t.external_events: {},
        t.waits: {"cleanup.policy": "compact"},
        t.schedules: {"cleanup.policy": "compact"},  # each schedule trigger's last fired nominal time
        t.dlq: {},
    }


def creation_tuning(settings: Settings) -> dict[str, dict[str, str]]:
    """Configs set when the orchestrator creates a topic, but not required of one that
    exists (operators may tune them)."""
    # wf.waits holds open waits only: compact closed ones within the hour, so a
    # correlator's restore reads little more than what is open.
    hour = "3600000"
    return {settings.topics.waits: {"segment.ms": hour, "delete.retention.ms": hour,
                                    "min.cleanable.dirty.ratio": "0.1"}}


def ensure_topics(settings: Settings, *, admin: AdminClient | None = None, timeout: float = 30.0) -> dict[str, str]:
    """Create missing topics (`settings.partitions` partitions, replication 1) and check
    existing ones. Returns topic -> "created" | "exists". Raises `TopicMismatchError`
    when an existing co-partitioned topic has another partition count or a required
    config differs (it never alters existing topics)."""
    admin = admin or admin_client(settings)
    wanted = topic_configs(settings)
    existing = admin.list_topics(timeout=timeout).topics
    outcome = {name: "exists" for name in wanted if name in existing}
    tuning = creation_tuning(settings)
    missing = [NewTopic(name, num_partitions=settings.partitions, replication_factor=1,
                        config={**config, **tuning.get(name, {})})
               for name, config in wanted.items() if name not in existing]
    if missing:
        futures = admin.create_topics(missing, operation_timeout=timeout, request_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result()
                outcome[name] = "created"
                log.info("topic_created", topic=name, partitions=settings.partitions)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # a concurrent creator won
                    raise TopicMismatchError(f"cannot create topic {name}: {exc.args[0].str()}") from None
                outcome[name] = "exists"
    _check_partitions(settings, admin, list(wanted), timeout)
    _check_configs(admin, {n: c for n, c in wanted.items() if c and outcome[n] == "exists"}, timeout)
    return outcome


def _check_partitions(settings: Settings, admin: AdminClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:  # fresh topics may take a moment to show up in metadata
        topics = admin.list_topics(timeout=timeout).topics
        if all(n in topics and topics[n].partitions for n in names) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for name in names:
        if name not in topics:
            raise TopicMismatchError(f"topic {name} does not show up in the cluster metadata")
        count = len(topics[name].partitions)
        if count == settings.partitions:
            continue
        if name in copartitioned_topics(settings):
            raise TopicMismatchError(
                f"topic {name} has {count} partitions but ORCH_PARTITIONS is {settings.partitions}: "
                f"{', '.join(copartitioned_topics(settings))} must all have the same partition count "
                "(co-partitioning by execution id); set ORCH_PARTITIONS to match or recreate the topics"
            )
        log.warning("topic_partition_count_differs", topic=name, partitions=count, expected=settings.partitions)


def _check_configs(admin: AdminClient, wanted: dict[str, dict[str, str]], timeout: float) -> None:
    if not wanted:
        return
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in wanted]
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        actual = future.result()
        for key, value in wanted[resource.name].items():
            have = actual[key].value if key in actual else None
            ok = value in (have or "").split(",") if key == "cleanup.policy" else have == value
            if not ok:
                raise TopicMismatchError(
                    f"topic {resource.name} has {key}={have}, the orchestrator needs {key}={value}")


# -- reading -------------------------------------------------------------------


GROUP_CLOSE_TIMEOUT_S = 15.0


def close_group_consumer(consumer: Consumer, name: str, timeout: float = GROUP_CLOSE_TIMEOUT_S) -> None:
    """Leave the group and close, but never hang the role's shutdown: librdkafka can wait
    for ever in a cooperative rebalance callback when an assignment arrives while the
    consumer closes (librdkafka#4884). After `timeout` the close is left to finish on its
    own thread; the broker drops the member when its session times out."""
    import threading

    done = threading.Event()

    def close() -> None:
        try:
            consumer.close()
        except Exception as exc:  # shutting down: report it, do not raise from here
            log.warning("consumer_close_failed", consumer=name, error=str(exc))
        finally:
            done.set()

    threading.Thread(target=close, name=f"close-{name}", daemon=True).start()
    if not done.wait(timeout):
        log.warning("consumer_close_timed_out", consumer=name, seconds=timeout)


_LEADERLESS = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION,
})


def watermark_offsets(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """(low, high) of a partition. A topic created a moment ago may not have its
    leader yet: retriable errors are retried until `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=max(deadline - time.monotonic(), 0.5), cached=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            leaderless = isinstance(err, KafkaError) and (err.code() in _LEADERLESS or err.retriable())
            if not leaderless or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_partition_to_end(
    source: Settings | Consumer,
    topic: str,
    partition: int,
    start: int = OFFSET_BEGINNING,
    *,
    idle_timeout: float = 30.0,
    batch: int = 1000,
) -> Iterator[Message]:
    """Yield the committed messages of one partition from `start` up to its end as of
    the call (the last stable offset for read_committed readers).

    `source` is either settings (a private reader consumer is created and closed)
    or a consumer that is not subscribed to anything: it is assigned that
    partition and unassigned afterwards.
    Raises `TimeoutError` if no progress is made for `idle_timeout` seconds.
    """
    own = isinstance(source, Settings)
    consumer = Consumer(reader_config(source)) if own else source
    try:
        tp = TopicPartition(topic, partition)
        low, high = watermark_offsets(consumer, tp, idle_timeout)
        begin = low if start == OFFSET_BEGINNING else high if start == OFFSET_END else max(start, low)
        if begin >= high:
            return
        consumer.assign([TopicPartition(topic, partition, begin)])
        deadline = time.monotonic() + idle_timeout
        while True:
            msgs = consumer.consume(batch, 0.2)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if msg.topic() == topic and msg.partition() == partition and msg.offset() >= high:
                            return
                        continue
                    raise KafkaException(err)
                if msg.topic() != topic or msg.partition() != partition:
                    continue
                yield msg
                if msg.offset() >= high - 1:
                    return
            if msgs:
                deadline = time.monotonic() + idle_timeout
                continue
            if consumer.position([tp])[0].offset >= high:  # only transaction markers were left
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no progress reading {topic}[{partition}] towards offset {high} "
                                   f"for {idle_timeout:g}s")
    finally:
        if own:
            consumer.close()
        else:
            consumer.unassign()


def read_compacted_topic(
    settings: Settings, topic: str, *, decode: Callable[[bytes], T] | None = None, idle_timeout: float = 30.0
) -> dict[str, T]:
    """The latest value per key of a (compacted) topic, read to its end; a null
    value (tombstone) removes its key. Values are bytes unless `decode` is given."""
    consumer = Consumer(reader_config(settings))
    latest: dict[str, Any] = {}
    try:
        meta = consumer.list_topics(topic, timeout=idle_timeout).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        for partition in sorted(meta.partitions):
            for msg in read_partition_to_end(consumer, topic, partition, idle_timeout=idle_timeout):
                key = (msg.key() or b"").decode("utf-8")
                if msg.value() is None:
                    latest.pop(key, None)
                else:
                    latest[key] = msg.value()
    finally:
        consumer.close()
    if decode is None:
        return latest
    return {key: decode(value) for key, value in latest.items()}
