"""orchestrator.runtime.kafka against the real broker (scripts/stack-up)."""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

from orchestrator.config import Settings, Topics
from orchestrator.runtime.kafka import (
    DeadLetters,
    TopicMismatchError,
    admin_client,
    consumer_config,
    ensure_topics,
    partition_for,
    producer_config,
    read_compacted_topic,
    read_partition_to_end,
    topic_configs,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_settings(kafka_bootstrap: str) -> Iterator[Settings]:
    """Settings with a unique prefix and no topics yet; whatever gets created is deleted."""
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topics=Topics(f"test-{uuid.uuid4().hex[:10]}."),
                        partitions=3, instance=uuid.uuid4().hex[:6])
    yield settings
    admin = admin_client(settings)
    existing = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topics.prefix)]
    if existing:
        for future in admin.delete_topics(existing, operation_timeout=10).values():
            try:
                future.result()
            except Exception:  # best effort clean-up
                pass


def _describe(settings: Settings, topic: str) -> dict[str, str]:
    admin = admin_client(settings)  # must outlive the future
    [future] = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return {k: v.value for k, v in future.result().items()}


def _consume_all(settings: Settings, topic: str, expected: int, **conf) -> list:
    consumer = Consumer(consumer_config(settings, f"test-{uuid.uuid4().hex[:6]}", **conf))
    consumer.subscribe([topic])
    got = []
    try:
        for _ in range(200):
            for m in consumer.consume(100, 0.1):
                if m.error() is None:
                    got.append(m)
            if len(got) >= expected:
                break
    finally:
        consumer.close()
    return got


# -- ensure_topics --------------------------------------------------------------------


def test_ensure_topics_creates_every_topic_with_its_configs(fresh_settings):
    s = fresh_settings
    outcome = ensure_topics(s)
    assert outcome == {name: "created" for name in topic_configs(s)}
    topics = admin_client(s).list_topics(timeout=10).topics
    for name in (s.topics.commands, s.topics.results, s.topics.tasks, s.topics.events, s.topics.definitions,
                 s.topics.external_events, s.topics.dlq):
        assert len(topics[name].partitions) == s.partitions, name
        assert all(len(p.replicas) == 1 for p in topics[name].partitions.values())
    events = _describe(s, s.topics.events)
    assert events["retention.ms"] == "-1" and events["retention.bytes"] == "-1"
    assert _describe(s, s.topics.definitions)["cleanup.policy"] == "compact"
    assert _describe(s, s.topics.commands)["cleanup.policy"] == "delete"
    # idempotent
    assert ensure_topics(s) == {name: "exists" for name in topic_configs(s)}


def test_ensure_topics_refuses_a_copartitioning_mismatch(fresh_settings):
    s = fresh_settings
    admin = admin_client(s)
    [future] = admin.create_topics([NewTopic(s.topics.results, num_partitions=5, replication_factor=1)]).values()
    future.result()
    with pytest.raises(TopicMismatchError, match=rf"{s.topics.results} has 5 partitions but ORCH_PARTITIONS is 3"):
        ensure_topics(s)


def test_ensure_topics_refuses_a_finite_event_retention(fresh_settings):
    s = fresh_settings
    admin = admin_client(s)
    [future] = admin.create_topics([NewTopic(s.topics.events, num_partitions=3, replication_factor=1,
                                             config={"retention.ms": "604800000"})]).values()
    future.result()
    with pytest.raises(TopicMismatchError, match="retention.ms=604800000"):
        ensure_topics(s)


# -- partitioning ---------------------------------------------------------------------


def test_producer_partitions_keys_like_partition_for(kafka_settings):
    """librdkafka's murmur2_random (what the producer config sets) == our Java-compatible partition_for."""
    s = kafka_settings
    admin = admin_client(s)
    wide = f"{s.topics.prefix}wide"
    [future] = admin.create_topics([NewTopic(wide, num_partitions=13, replication_factor=1)]).values()
    future.result()
    rng = random.Random(7)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(300)]
    keys += ["".join(rng.choices(string.printable, k=rng.randint(1, 40))) for _ in range(150)]
    keys += ["exécution-é", "Zoë/🎉", "a", "ab", "abc", "abcd", "user-registration@1.0.0"]
    landed: dict[tuple[str, str], int] = {}

    def delivered(err, msg):
        assert err is None, err
        landed[(msg.topic(), msg.key().decode())] = msg.partition()

    producer = Producer(producer_config(s, role="test"))
    for topic in (s.topics.commands, wide):
        for key in keys:
            producer.produce(topic, key=key.encode(), value=b"x", on_delivery=delivered)
    assert producer.flush(30) == 0
    try:
        for key in keys:
            assert landed[(s.topics.commands, key)] == partition_for(key, s.partitions), key
            assert landed[(wide, key)] == partition_for(key, 13), key
    finally:
        for f in admin.delete_topics([wide], operation_timeout=10).values():
            f.result()


# -- dead letters ---------------------------------------------------------------------


def _original(s: Settings):
    producer = Producer(producer_config(s, role="test"))
    producer.produce(s.topics.tasks, key=b"exec-1", value=b"\xc3\x01garbage", headers=[("trace", b"t-1")])
    producer.flush(10)
    [msg] = _consume_all(s, s.topics.tasks, 1)
    return msg


def test_dead_letters_with_a_plain_producer(kafka_settings):
    s = kafka_settings
    original = _original(s)
    DeadLetters(Producer(producer_config(s, role="test")), s).send(
        original, "not Avro single-object encoding", "executor", wait=True)
    [dead] = _consume_all(s, s.topics.dlq, 1)
    assert dead.key() == b"exec-1" and dead.value() == b"\xc3\x01garbage"
    assert dead.partition() == partition_for("exec-1", s.partitions)
    assert DeadLetters.headers_of(dead) == {
        "dlq.reason": "not Avro single-object encoding", "dlq.topic": s.topics.tasks,
        "dlq.partition": str(original.partition()), "dlq.offset": str(original.offset()), "dlq.role": "executor",
    }
    assert ("trace", b"t-1") in dead.headers()


def test_dead_letters_in_a_transaction(kafka_settings):
    s = kafka_settings
    original = _original(s)
    producer = Producer(producer_config(s, transactional_id=f"test-dlq-{s.instance}"))
    producer.init_transactions(30)
    dead_letters = DeadLetters(producer, s)
    producer.begin_transaction()
    dead_letters.send(original, "aborted one", "decider")
    producer.abort_transaction(30)
    producer.begin_transaction()
    dead_letters.send(original, "committed one", "decider")
    producer.commit_transaction(30)
    got = _consume_all(s, s.topics.dlq, 1)  # read_committed: the aborted one is invisible
    assert [DeadLetters.headers_of(m)["dlq.reason"] for m in got] == ["committed one"]
    assert dead_letters.failures == 0


# -- replay helpers -------------------------------------------------------------------


def test_read_partition_to_end_stops_at_the_last_stable_offset(kafka_settings):
    s = kafka_settings
    topic = s.topics.events
    producer = Producer(producer_config(s, transactional_id=f"test-read-{s.instance}"))
    producer.init_transactions(30)
    for batch in range(3):
        producer.begin_transaction()
        for i in range(4):
            producer.produce(topic, key=b"k", value=f"{batch}-{i}".encode(), partition=1)
        producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"open", partition=1)  # not committed: never read
    producer.flush(10)
    try:
        values = [m.value().decode() for m in read_partition_to_end(s, topic, 1)]
        assert values == [f"{b}-{i}" for b in range(3) for i in range(4)]
        # from an offset, with a caller's consumer (no EOF events, stops on position)
        consumer = Consumer(consumer_config(s, f"test-{s.instance}"))
        offsets = [m.offset() for m in read_partition_to_end(consumer, topic, 1, start=5)]
        assert offsets == [5, 6, 7, 8, 10, 11, 12, 13]  # 4, 9 and 14 are commit markers
        assert consumer.assignment() == []
        consumer.close()
        assert list(read_partition_to_end(s, topic, 0)) == []  # empty partition
    finally:
        producer.abort_transaction(30)


def test_read_compacted_topic_returns_latest_value_per_key(kafka_settings):
    s = kafka_settings
    producer = Producer(producer_config(s, role="test"))
    for key, value in [("a@1", b"1"), ("b@1", b"x"), ("a@1", b"2"), ("c@1", b"c"), ("b@1", None)]:
        producer.produce(s.topics.definitions, key=key.encode(), value=value)
    producer.flush(10)
    assert read_compacted_topic(s, s.topics.definitions) == {"a@1": b"2", "c@1": b"c"}
    assert read_compacted_topic(s, s.topics.definitions, decode=bytes.decode) == {"a@1": "2", "c@1": "c"}

