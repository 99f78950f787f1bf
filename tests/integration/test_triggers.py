"""The triggers role on a real broker: definitions registered by hand, external events published
by hand, StartWorkflow commands read back from the commands topic (and, with a decider running,
the executions from the events topic); the scheduler driven by a fake clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from orchestrator.config import Settings
from orchestrator.core.messages import ExternalEvent, ScheduleFired, StartWorkflow
from orchestrator.runtime.decider import Decider
from orchestrator.runtime.kafka import (DeadLetters, consumer_config, partition_for, producer_config,
                                        read_compacted_topic, read_partition_to_end)
from orchestrator.runtime.triggers import Triggers

from .helpers import Running, codec, read_all, register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ORDERS = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: orders, version: "1"}
spec:
  input:
    schema: {type: object, properties: {order: {type: string}}, required: [order]}
  steps:
    - {name: pause, type: delay, config: {duration: 1h}}
  triggers:
    - name: on_paid
      event: order.paid
      filter: {tier: gold}
      input: {order: "{{ event.data.order_id }}"}
    - name: broken
      event: order.shipped
      input: {order: "{{ event.data.parcel.id }}"}
"""

NIGHTLY = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: report, version: "2"}
spec:
  steps:
    - {name: pause, type: delay, config: {duration: 1h}}
  triggers:
    - name: hourly
      schedule: "0 * * * *"
      timezone: Europe/Berlin
      catch_up: all
      max_catch_up: 3
      input: {at: "{{ schedule.nominal_time }}", ms: "{{ schedule.nominal_time_ms }}"}
"""


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def publish(settings: Settings, event: ExternalEvent | bytes, key: str) -> None:
    producer = Producer(producer_config(settings, role="test"))
    value = event if isinstance(event, bytes) else codec.encode(event)
    producer.produce(settings.topics.external_events, value, key.encode())
    assert producer.flush(10) == 0


def commands(settings: Settings) -> list[tuple[str, int, Any]]:
    """Every command on the commands topic: (key, partition, command)."""
    return [(m.key().decode(), p, codec.decode(m.value(), expect="commands"))
            for p in range(settings.partitions)
            for m in read_partition_to_end(settings, settings.topics.commands, p, idle_timeout=10)]


def starts(settings: Settings) -> list[StartWorkflow]:
    return [c for _, _, c in commands(settings) if isinstance(c, StartWorkflow)]


def dead_letters(settings: Settings) -> list[Any]:
    return [m for p in range(settings.partitions)
            for m in read_partition_to_end(settings, settings.topics.dlq, p, idle_timeout=10)]


def progress(settings: Settings) -> dict[str, ScheduleFired]:
    return read_compacted_topic(settings, settings.topics.schedules,
                                decode=lambda v: codec.decode(v, expect="schedules"), idle_timeout=10)


def consumed_to_end(settings: Settings, group: str, topic: str) -> bool:
    """Whether `group` committed offsets past the last message of every partition of `topic`
    (a transactional topic ends with a commit marker, so its high watermark is not the mark)."""
    consumer = Consumer(consumer_config(settings, settings.group_id(group)))
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(settings.partitions)], timeout=10)
    finally:
        consumer.close()
    for tp in committed:
        last = -1
        for msg in read_partition_to_end(settings, topic, tp.partition, idle_timeout=10):
            last = msg.offset()
        if last >= 0 and tp.offset <= last:
            return False
    return True


@pytest.fixture
def roles() -> Iterator[list[Running]]:
    started: list[Running] = []
    try:
        yield started
    finally:
        for running in started:
            running.halt.set()
        for running in started:
            running.thread.join(30)


# -- events ---------------------------------------------------------------------------------


def test_the_same_event_twice_starts_one_execution_and_a_filter_that_does_not_match_starts_none(
        kafka_settings, roles):
    s = kafka_settings
    register(s, ORDERS)
    roles.append(decider := Running("decider", Decider(s)))
    roles.append(triggers := Running("triggers", Triggers(s, schedules=False)))

    paid = ExternalEvent("ev-1", "order.paid", {"order_id": "o-1", "tier": "gold"}, 1_000, "shop")
    publish(s, paid, "ev-1")
    publish(s, paid, "ev-1")  # re-delivered
    publish(s, ExternalEvent("ev-2", "order.paid", {"order_id": "o-2", "tier": "silver"}, 1_000, "shop"), "ev-2")
    publish(s, ExternalEvent("ev-3", "order.refunded", {"order_id": "o-3", "tier": "gold"}, 1_000, "shop"), "ev-3")

    triggers.wait(lambda: consumed_to_end(s, "triggers", s.topics.external_events), message="events not handled")
    eid = "orders-on_paid-ev-1"
    sent = starts(s)
    assert sent == [StartWorkflow(eid, "orders", "1", {"order": "o-1"}, "trigger:on_paid")] * 2
    assert {(key, p) for key, p, _ in commands(s)} == {(eid, partition_for(eid, s.partitions))}

    decider.wait(lambda: consumed_to_end(s, "decider", s.topics.commands), message="commands not decided")
    events = [type(r.event).__name__ for r in read_all(s, s.topics.events, eid)]
    assert events.count("WorkflowStarted") == 1 and "CommandRejected" not in events, events
    [started] = [r.event for r in read_all(s, s.topics.events, eid) if type(r.event).__name__ == "WorkflowStarted"]
    assert (started.workflow_name, started.workflow_version, started.input) == ("orders", "1", {"order": "o-1"})
    assert read_all(s, s.topics.events, "orders-on_paid-ev-2") == []


def test_undecodable_events_and_inputs_that_cannot_render_go_to_the_dead_letters(kafka_settings, roles):
    s = kafka_settings
    register(s, ORDERS)
    roles.append(triggers := Running("triggers", Triggers(s, schedules=False)))
    publish(s, b"\x00\xffnot avro", "bad-1")
    publish(s, ExternalEvent("ev-9", "order.shipped", {"order_id": "o-9"}, 1_000, None), "ev-9")

    letters = triggers.wait(lambda: len(found := dead_letters(s)) >= 2 and found, message="no dead letters")
    reasons = {m.key(): DeadLetters.headers_of(m) for m in letters}
    assert reasons[b"bad-1"]["dlq.role"] == "triggers"
    assert "cannot decode the external event" in reasons[b"bad-1"]["dlq.reason"]
    assert reasons[b"ev-9"]["dlq.reason"].startswith(
        "workflow 'orders' version '1' trigger 'broken': cannot start an execution: input.order: ")
    triggers.wait(lambda: consumed_to_end(s, "triggers", s.topics.external_events), message="offsets not committed")
    assert starts(s) == []


class FailingCommit:
    """A producer whose first commit of a transaction that sends a command fails (retriable)."""

    def __init__(self, producer: Producer, commands: str) -> None:
        self.producer, self.commands = producer, commands
        self.sending = False
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.producer, name)

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self.sending = self.sending or topic == self.commands
        self.producer.produce(topic, *args, **kwargs)

    def commit_transaction(self, *args: Any) -> None:
        if self.sending and not self.failed:
            self.failed += 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "injected commit failure"))
        self.sending = False
        self.producer.commit_transaction(*args)


def test_an_aborted_transaction_is_redone_and_sends_each_start_once(kafka_settings, roles):
    s = kafka_settings
    register(s, ORDERS)
    role = Triggers(s, schedules=False)
    role.producer = role.dead_letters.producer = FailingCommit(role.producer, s.topics.commands)
    roles.append(triggers := Running("triggers", role))
    publish(s, ExternalEvent("ev-5", "order.paid", {"order_id": "o-5", "tier": "gold"}, 1_000, None), "ev-5")
    triggers.wait(lambda: role.producer.failed, message="no start was attempted")
    triggers.wait(lambda: consumed_to_end(s, "triggers", s.topics.external_events), message="the event was not redone")
    assert [c.execution_id for c in starts(s)] == ["orders-on_paid-ev-5"]
    assert role.started == 1


# -- schedules ------------------------------------------------------------------------------


class Clock:
    def __init__(self, at: int) -> None:
        self.ms = at

    def __call__(self) -> float:
        return self.ms / 1000


def scheduled(settings: Settings) -> list[str]:
    return [c.execution_id for c in starts(settings)]


def test_a_schedule_fires_each_nominal_time_once_and_catches_up_after_a_restart(kafka_settings, cli_env):
    s = kafka_settings
    register(s, NIGHTLY)
    clock = Clock(ms("2026-03-29T00:00:30+01:00"))
    first = Triggers(s, clock=clock)
    first.start()
    try:
        first.step()  # first seen at 00:00:30: nothing in the past fires
        assert first.scheduler.fired == 0 and first.scheduler.next_at == ms("2026-03-29T01:00:00+01:00")
        clock.ms = ms("2026-03-29T01:00:02+01:00")
        first.step()
        assert first.scheduler.fired == 1
        assert first.scheduler.tick(first.index, clock.ms) == 0  # the same time again: nothing
    finally:
        first.close()
    assert scheduled(s) == ["report-hourly-20260329T000000Z"]
    [start] = starts(s)
    assert start == StartWorkflow("report-hourly-20260329T000000Z", "report", "2",
                                  {"at": "2026-03-29T01:00:00+01:00", "ms": ms("2026-03-29T01:00:00+01:00")},
                                  "trigger:hourly")
    assert progress(s)["report/hourly"] == ScheduleFired("report", "hourly", ms("2026-03-29T01:00:00+01:00"),
                                                         "report-hourly-20260329T000000Z", clock.ms)

    # Down from 01:00:02 to 07:00:10 CEST, across the spring-forward change (02:00 -> 03:00):
    # missed 03:00, 04:00, 05:00 and 06:00 (02:00 does not exist); 07:00 is on time.
    clock.ms = ms("2026-03-29T07:00:10+02:00")
    second = Triggers(s, clock=clock)
    second.start()
    try:
        assert second.scheduler.since == {"report/hourly": ms("2026-03-29T01:00:00+01:00")}
        assert second.scheduler.tick(second.index, clock.ms) == 4  # all, at most 3 missed: 04-06, then 07
    finally:
        second.close()
    assert sorted(scheduled(s)) == ["report-hourly-20260329T000000Z", "report-hourly-20260329T020000Z",
                            "report-hourly-20260329T030000Z", "report-hourly-20260329T040000Z",
                            "report-hourly-20260329T050000Z"]
    assert progress(s)["report/hourly"].nominal_time == ms("2026-03-29T07:00:00+02:00")

    # `orchestrator triggers list` shows the trigger, its next time and the last one fired.
    from click.testing import CliRunner

    from orchestrator.cli import cli

    result = CliRunner().invoke(cli, ["triggers", "list", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["triggers"]
    assert {k: row[k] for k in ("workflow", "version", "trigger", "kind", "schedule", "timezone", "catch_up",
                                "max_catch_up")} == {
        "workflow": "report", "version": "2", "trigger": "hourly", "kind": "schedule", "schedule": "0 * * * *",
        "timezone": "Europe/Berlin", "catch_up": "all", "max_catch_up": 3}
    assert row["last_fired"]["execution_id"] == "report-hourly-20260329T050000Z"
    assert row["next_fire_time"].endswith(":00:00+01:00") or row["next_fire_time"].endswith(":00:00+02:00")
    text = CliRunner().invoke(cli, ["triggers", "list"], catch_exceptions=False)
    assert "report" in text.stdout and "0 * * * *" in text.stdout and "all (max 3)" in text.stdout


def test_a_second_scheduler_fences_the_first_which_stops_firing(kafka_settings):
    s = kafka_settings
    register(s, NIGHTLY)
    clock = Clock(ms("2026-06-01T10:30:00+02:00"))
    first, second = Triggers(s, clock=clock), None
    first.start()
    try:
        first.scheduler.tick(first.index, clock.ms)
        second = Triggers(s, clock=clock)
        second.start()  # takes the transactional id over
        at = ms("2026-06-01T11:00:01+02:00")
        assert first.scheduler.tick(first.index, at) == 0 and first.scheduler.fenced
        assert first.scheduler.tick(first.index, at + 3_600_000) == 0  # stays quiet
        second.scheduler.tick(second.index, clock.ms)  # first seen by the second: from now
        assert second.scheduler.tick(second.index, at) == 1
    finally:
        first.close()
        if second is not None:
            second.close()
    assert scheduled(s) == ["report-hourly-20260601T090000Z"]


def test_a_schedule_input_that_cannot_render_is_dead_lettered_and_its_time_counts_as_handled(kafka_settings):
    s = kafka_settings
    register(s, NIGHTLY.replace('ms: "{{ schedule.nominal_time_ms }}"', 'ms: "{{ schedule.nope }}"'))
    clock = Clock(ms("2026-06-01T10:30:00+02:00"))
    role = Triggers(s, clock=clock)
    role.start()
    try:
        role.scheduler.tick(role.index, clock.ms)
        assert role.scheduler.tick(role.index, ms("2026-06-01T11:00:01+02:00")) == 1
    finally:
        role.close()
    assert starts(s) == []
    [letter] = dead_letters(s)
    headers = DeadLetters.headers_of(letter)
    assert letter.key() == b"report/hourly" and headers["dlq.topic"] == s.topics.schedules
    assert headers["dlq.reason"].startswith("workflow 'report' version '2' trigger 'hourly': cannot start an "
                                            "execution: input.ms: ")
    assert progress(s)["report/hourly"] == ScheduleFired("report", "hourly", ms("2026-06-01T11:00:00+02:00"), "",
                                                         ms("2026-06-01T11:00:01+02:00"))
