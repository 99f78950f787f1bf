"""The correlator on a real broker: waits written by hand to the waits topic, external events
published by hand, `DeliverEvent` commands read back from the commands topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from orchestrator.config import Settings
from orchestrator.core.messages import DeliverEvent, ExternalEvent, WaitOpened
from orchestrator.runtime.correlator import Correlator
from orchestrator.runtime.kafka import DeadLetters, consumer_config, partition_for, producer_config, read_partition_to_end

from .helpers import Running, codec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


# -- helpers ------------------------------------------------------------------------------


def produce(settings: Settings, topic: str, key: str | None, value: bytes | None,
            headers: list[tuple[str, bytes]] | None = None) -> tuple[int, int]:
    """Publish raw bytes; (partition, offset) where they landed."""
    landed: list[Any] = []
    producer = Producer(producer_config(settings, role="test"))
    producer.produce(topic, key=None if key is None else key.encode(), value=value, headers=headers,
                     on_delivery=lambda err, msg: landed.append((err, msg)))
    assert producer.flush(10) == 0
    [(err, msg)] = landed
    assert err is None, err
    return msg.partition(), msg.offset()


def open_wait(settings: Settings, eid: str, step: str, user_id: str, event_type: str = "user.verified") -> None:
    wait = WaitOpened(eid, step, event_type, {"user_id": user_id}, int(time.time() * 1000), None)
    produce(settings, settings.topics.waits, f"{eid}/{step}", codec.encode(wait))


def publish(settings: Settings, user_id: str, event_type: str = "user.verified") -> str:
    event_id = f"ev-{uuid.uuid4().hex[:8]}"
    event = ExternalEvent(event_id, event_type, {"user_id": user_id}, int(time.time() * 1000), "test")
    produce(settings, settings.topics.external_events, event_id, codec.encode(event))
    return event_id


def deliveries(settings: Settings) -> list[tuple[int, str, DeliverEvent]]:
    """Every DeliverEvent on the commands topic: (partition, key, command)."""
    found = []
    for p in range(settings.partitions):
        for msg in read_partition_to_end(settings, settings.topics.commands, p, idle_timeout=10):
            command = codec.decode(msg.value(), expect="commands")
            if isinstance(command, DeliverEvent):
                found.append((p, msg.key().decode(), command))
    return found


def delivered_to(settings: Settings, eid: str) -> list[DeliverEvent]:
    return [d for _, _, d in deliveries(settings) if d.execution_id == eid]


def committed(settings: Settings, partition: int) -> int:
    consumer = Consumer(consumer_config(settings, settings.group_id("correlator")))
    try:
        [tp] = consumer.committed([TopicPartition(settings.topics.external_events, partition)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def correlator_running(settings: Settings, correlator: Correlator | None = None) -> Running:
    return Running("correlator", correlator or Correlator(settings))


@pytest.fixture
def correlators(kafka_settings: Settings) -> Iterator[list[Running]]:
    """Start correlators with `correlators.append(Running(settings))`; all are stopped after."""
    started: list[Running] = []
    try:
        yield started
    finally:
        for running in started:
            running.halt.set()
        for running in started:
            running.thread.join(30)


# -- tests --------------------------------------------------------------------------------


def test_a_matching_event_is_delivered_once_on_the_executions_partition_and_others_are_not(
        kafka_settings, correlators):
    s = kafka_settings
    correlators.append(running := correlator_running(s))
    open_wait(s, "exec-1", "await_verification", "u-1")
    open_wait(s, "exec-2", "await_verification", "u-2")

    matching = publish(s, "u-1")
    other_user = publish(s, "u-2")
    publish(s, "u-1", event_type="user.deleted")

    # exec-2's delivery shows the correlator handled the other user's event too.
    running.wait(lambda: delivered_to(s, "exec-2"), message="exec-2 got nothing")
    running.wait(lambda: running.role.events >= 3, message="not every event was handled")
    found = [(p, key, d) for p, key, d in deliveries(s) if d.execution_id == "exec-1"]
    assert len(found) == 1, found
    [(partition, key, delivery)] = found
    assert (partition, key) == (partition_for("exec-1", s.partitions), "exec-1")
    assert delivery == DeliverEvent("exec-1", "await_verification", matching, "user.verified",
                                    {"user_id": "u-1"}, delivery.occurred_at, "test")
    [other] = delivered_to(s, "exec-2")
    assert other.event_id == other_user


def test_an_event_published_before_its_wait_opens_is_delivered_when_it_opens(kafka_settings, correlators):
    s = kafka_settings
    correlators.append(running := correlator_running(s))
    early = publish(s, "u-3")
    running.wait(lambda: running.role.correlation.buffered >= 1, message="the event was not buffered")
    assert deliveries(s) == []

    open_wait(s, "exec-3", "await_verification", "u-3")
    [delivery] = running.wait(lambda: delivered_to(s, "exec-3"), message="the buffered event was not delivered")
    assert delivery.event_id == early


def test_a_restarted_correlator_rebuilds_its_buffer_for_waits_opened_while_it_was_down(
        kafka_settings, correlators):
    s = kafka_settings
    correlators.append(first := correlator_running(s))
    before = publish(s, "u-4")
    partition = partition_for(before, s.partitions)
    first.wait(lambda: committed(s, partition) > 0, message="the event's offset was not committed")
    first.stop()

    open_wait(s, "exec-4", "await_verification", "u-4")  # while no correlator runs
    correlators.append(second := correlator_running(s))
    [delivery] = second.wait(lambda: delivered_to(s, "exec-4"), message="the restored event was not delivered")
    assert delivery.event_id == before
    # A live event after the restart still goes to another wait as usual.
    open_wait(s, "exec-5", "await_verification", "u-5")
    live = publish(s, "u-5")
    [delivery] = second.wait(lambda: delivered_to(s, "exec-5"), message="the live event was not delivered")
    assert delivery.event_id == live


def test_bad_external_events_go_to_the_dead_letters_and_their_offsets_are_committed(kafka_settings, correlators):
    s = kafka_settings
    topic = s.topics.external_events
    correlators.append(running := correlator_running(s))
    garbage = b"\x00\xffnot avro\n"
    garbage_at = produce(s, topic, "bad-1", garbage, [("trace", b"t-garbage")])
    untyped = codec.encode(ExternalEvent("bad-2", "", {"user_id": "u-6"}, 0, None))
    untyped_at = produce(s, topic, "bad-2", untyped)

    def letters() -> list[Any]:
        return [m for p in range(s.partitions)
                for m in read_partition_to_end(s, s.topics.dlq, p, idle_timeout=10)]

    found = running.wait(lambda: len(letters()) >= 2 and letters(), message="no dead letters")
    by_value = {m.value(): m for m in found}
    assert len(found) == 2
    headers = DeadLetters.headers_of(by_value[garbage])
    assert "not Avro single-object encoding" in headers["dlq.reason"]
    assert (headers["dlq.topic"], headers["dlq.role"]) == (topic, "correlator")
    assert (headers["dlq.partition"], headers["dlq.offset"]) == tuple(map(str, garbage_at))
    assert ("trace", b"t-garbage") in (by_value[garbage].headers() or [])
    assert by_value[garbage].key() == b"bad-1"
    assert "event_type is empty" in DeadLetters.headers_of(by_value[untyped])["dlq.reason"]
    for partition, offset in (garbage_at, untyped_at):
        running.wait(lambda: committed(s, partition) > offset, message="the bad event's offset was not committed")
    # The correlator keeps serving.
    open_wait(s, "exec-6", "await_verification", "u-6")
    publish(s, "u-6")
    running.wait(lambda: delivered_to(s, "exec-6"), message="the valid event was not delivered")


class FailingCommit:
    """The correlator's producer, whose first commit of a transaction with a delivery fails
    (a retriable error: the transaction is aborted)."""

    def __init__(self, producer: Producer, commands: str) -> None:
        self.producer, self.commands = producer, commands
        self.delivering = False
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.producer, name)

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self.delivering = self.delivering or topic == self.commands
        self.producer.produce(topic, *args, **kwargs)

    def commit_transaction(self, *args: Any) -> None:
        if self.delivering and not self.failed:
            self.failed += 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "injected commit failure"))
        self.delivering = False
        self.producer.commit_transaction(*args)


def test_an_aborted_transaction_is_redone_from_kafka_and_delivers_exactly_once(kafka_settings, correlators):
    s = kafka_settings
    correlator = Correlator(s)
    correlator.producer = correlator.dead_letters.producer = FailingCommit(correlator.producer, s.topics.commands)
    correlators.append(running := correlator_running(s, correlator))
    open_wait(s, "exec-7", "await_verification", "u-7")
    open_wait(s, "exec-8", "await_verification", "u-8")
    seven = publish(s, "u-7")
    running.wait(lambda: correlator.producer.failed, message="no delivery was attempted")
    eight = publish(s, "u-8")  # behind the aborted batch
    running.wait(lambda: delivered_to(s, "exec-8"), message="the correlator did not go on")
    assert [d.event_id for d in delivered_to(s, "exec-7")] == [seven]
    assert [d.event_id for d in delivered_to(s, "exec-8")] == [eight]
    assert correlator.delivered == 2
