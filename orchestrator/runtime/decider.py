"""The decider role: inputs in, events and tasks out, in one Kafka transaction.

Per batch: consume commands and results (plus due timers), run the pure
core, produce the events to `wf.events` and what follows from them
(`core.outbox`: tasks, child starts, news for a parent, open waits), and
commit the input offsets with `send_offsets_to_transaction`. The in-memory
state is rebuilt from `wf.events` whenever partitions are assigned.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any, Callable

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from ..codec import Codec, DecodeError
from ..config import Settings
from ..core.decide import handle
from ..core.evolve import evolve, initial_state
from ..core.messages import FireTimer, Input, StartWorkflow
from ..core.sensitive import seal_values
from ..core.outbox import outbox
from .catalog import Catalog
from .executions import Executions
from .metrics import DeciderMetrics, consumer_lag_config
from .kafka import (DeadLetters, abort_transaction, close_group_consumer, consumer_config, partition_for,
                    producer_config, read_partition_to_end)
from .secrets import Sealer

__all__ = ["Decider", "run_decider"]

log = structlog.get_logger("decider")

MAX_BATCH = 500


class Decider:
    def __init__(self, settings: Settings, *, codec: Codec | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.codec = codec or Codec.default()
        self.clock = clock
        self.sealer = Sealer.from_settings(settings)
        self.catalog = Catalog()
        self.executions = Executions()
        self.consumer = Consumer(consumer_config(
            settings, settings.group_id("decider"), **{"partition.assignment.strategy": "range"},
            **consumer_lag_config("decider")))
        # A crashed decider's open transaction holds back every read_committed
        # reader of its partitions until it times out: keep that short.
        self.producer = Producer(producer_config(
            settings, transactional_id=f"{settings.topics.prefix}decider-{settings.instance}",
            **{"transaction.timeout.ms": 10_000}))
        self.definitions = Consumer(consumer_config(settings, settings.group_id(f"decider-definitions-{settings.instance}")))
        self.dead_letters = DeadLetters(self.producer, settings)
        self._outbox_topics = {"tasks": self.topics.tasks, "commands": self.topics.commands,
                               "results": self.topics.results, "waits": self.topics.waits}
        self.metrics = DeciderMetrics()
        self.batches = 0
        self.inputs = 0
        self._definitions_fresh = False  # read to the end during the current batch

    # -- set-up -------------------------------------------------------------

    def start(self) -> None:
        self.producer.init_transactions()
        meta = self.definitions.list_topics(self.topics.definitions, timeout=10)
        parts = meta.topics[self.topics.definitions].partitions
        self.definitions.assign([TopicPartition(self.topics.definitions, p, 0) for p in parts])
        self.refresh_definitions(until_caught_up=True)
        self.consumer.subscribe([self.topics.commands, self.topics.results],
                                on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("decider_started", instance=self.settings.instance, definitions=len(self.catalog))

    def refresh_definitions(self, *, until_caught_up: bool = False) -> None:
        """Read new definitions; with `until_caught_up`, up to the topic's end."""
        deadline = time.monotonic() + 10
        while True:
            msgs = self.definitions.consume(500, 0.2 if until_caught_up else 0)
            for msg in msgs:
                if msg.error() or msg.value() is None:
                    continue
                try:
                    self.catalog.add(self.codec.decode(msg.value(), expect="definitions"))
                except DecodeError as exc:
                    log.error("definition_undecodable", offset=msg.offset(), reason=str(exc))
            if not until_caught_up or (not msgs and self._definitions_caught_up()) or time.monotonic() > deadline:
                return

    def _definitions_caught_up(self) -> bool:
        for tp in self.definitions.assignment():
            _, high = self.definitions.get_watermark_offsets(tp, timeout=5, cached=False)
            position = self.definitions.position([tp])[0].offset
            if high > 0 and (position < 0 or position < high):
                return False
        return True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = sorted({tp.partition for tp in partitions})
        started = time.monotonic()
        restored = 0
        for p in owned:
            began = time.monotonic()
            states: dict[str, Any] = {}
            for msg in read_partition_to_end(self.settings, self.topics.events, p):
                try:
                    recorded = self.codec.decode(msg.value(), expect="events")
                except DecodeError as exc:
                    log.error("event_undecodable", partition=p, offset=msg.offset(), reason=str(exc))
                    continue
                state = states.get(recorded.execution_id) or initial_state(recorded.execution_id)
                if recorded.sequence <= state.sequence:
                    continue  # cannot happen with transactions; never fold twice
                states[recorded.execution_id] = evolve(state, recorded)
                restored += 1
            for state in states.values():
                self.executions.restore(state, p)
            self.metrics.restored(p, states.values(), time.monotonic() - began)
        log.info("partitions_assigned", partitions=owned, events=restored,
                 executions=len(self.executions), seconds=round(time.monotonic() - started, 3))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.executions.drop_partitions({tp.partition for tp in partitions})
        self.metrics.revoked({tp.partition for tp in partitions})
        log.info("partitions_revoked", partitions=sorted({tp.partition for tp in partitions}))

    # -- the loop -----------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.start()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.close()

    def step(self) -> int:
        """One batch: returns how many inputs it handled."""
        next_fire = self.executions.next_fire_at()
        wait = 0.1 if next_fire is None else max(0.0, min(0.1, next_fire / 1000 - self.clock()))
        first = self.consumer.poll(wait)
        msgs = [first] if first is not None else []
        if msgs:
            msgs += self.consumer.consume(MAX_BATCH - 1, 0)
        now = int(self.clock() * 1000)
        due = self.executions.pop_due(now)
        if not msgs and not due:
            return 0
        self._transact(msgs, due, now)
        return len(msgs) + len(due)

    def _transact(self, msgs: list[Message], due: list[tuple[str, str]], now: int) -> None:
        first_offsets: dict[tuple[str, int], int] = {}
        next_offsets: dict[tuple[str, int], int] = {}
        self._definitions_fresh = False
        began = time.monotonic()
        self.producer.begin_transaction()
        try:
            for msg in msgs:
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consume_error", error=str(msg.error()))
                    continue
                tp = (msg.topic(), msg.partition())
                first_offsets.setdefault(tp, msg.offset())
                next_offsets[tp] = msg.offset() + 1
                self._handle_message(msg, now)
            for eid, timer_id in due:
                self._handle(FireTimer(eid, timer_id), f"timer:{timer_id}", now,
                             partition_for(eid, self.settings.partitions))
            if next_offsets:
                self.producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
                    self.consumer.consumer_group_metadata())
            self.producer.commit_transaction()
        except KafkaException as exc:
            self._recover(exc, first_offsets)
            return
        self.executions.commit()
        self.metrics.committed(len(msgs) + len(due), time.monotonic() - began)
        self.batches += 1
        self.inputs += len(msgs) + len(due)

    def _recover(self, exc: KafkaException, first_offsets: dict[tuple[str, int], int]) -> None:
        abort_transaction(self.producer, exc, log)
        self.executions.rollback()
        self.metrics.aborted()
        for (topic, partition), offset in first_offsets.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))

    def _handle_message(self, msg: Message, now: int) -> None:
        kind = "commands" if msg.topic() == self.topics.commands else "results"
        try:
            command = self.codec.decode(msg.value(), expect=kind)
        except DecodeError as exc:
            self.dead_letters.send(msg, str(exc), "decider", kind="undecodable")
            return
        problem = self._misaddressed(msg, command)
        if problem:
            self.dead_letters.send(msg, problem, "decider", kind="misaddressed")
            return
        try:
            self._handle(command, f"{kind}:{msg.partition()}:{msg.offset()}", now, msg.partition())
        except Exception as exc:  # a poison input must not stop every other execution
            log.exception("input_failed", execution_id=command.execution_id, input=type(command).__name__)
            self.dead_letters.send(msg, f"decider could not apply it: {type(exc).__name__}: {exc}", "decider",
                                   kind="failed")

    def _misaddressed(self, msg: Message, command: Input) -> str | None:
        eid = command.execution_id
        if not eid:
            return "execution_id is empty"
        key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
        if key != eid:
            return f"message key {key!r} does not match execution_id {eid!r}"
        owner = partition_for(eid, self.settings.partitions)
        if owner != msg.partition():
            return f"execution {eid!r} belongs to partition {owner}"
        return None

    def _handle(self, command: Input, cause: str, now: int, partition: int) -> None:
        eid = command.execution_id
        state = self.executions.get(eid) or initial_state(eid)
        if isinstance(command, StartWorkflow):
            definition = self.catalog.get(command.workflow_name, command.workflow_version)
            if definition is None and not state.started and not self._definitions_fresh:
                # Applied a moment ago? Read the definitions to their end, once per batch:
                # that covers every start of the batch, and a batch of starts naming an
                # unknown workflow must not wait 0.2 s each (the transaction would time out).
                self.refresh_definitions(until_caught_up=True)
                self._definitions_fresh = True
                definition = self.catalog.get(command.workflow_name, command.workflow_version)
            if definition is not None:
                sealed = seal_values(command.input, definition.spec.input.schema_, self.sealer.seal)
                command = replace(command, input=sealed)
        else:
            definition = self.catalog.get(state.workflow_name, state.workflow_version) if state.started else None
        new_state, recorded = handle(state, command, definition, now, cause=cause, unseal=self.sealer.unseal)
        if not recorded:
            return
        key = eid.encode()
        for r in recorded:
            self.producer.produce(self.topics.events, self.codec.encode(r), key)
        for out in outbox(state, new_state, definition, recorded):
            value = self.codec.encode(out.message) if out.message is not None else None
            self.producer.produce(self._outbox_topics[out.topic], value, out.key.encode())
        self.producer.poll(0)
        self.executions.put(new_state, partition)
        self.metrics.decided(state, new_state, recorded, partition)  # counted once the batch commits

    def close(self) -> None:
        log.info("decider_stopped", batches=self.batches, inputs=self.inputs,
                 inputs_per_batch=round(self.inputs / max(self.batches, 1), 1))
        for closing in (lambda: close_group_consumer(self.consumer, "decider"), self.definitions.close, lambda: self.producer.flush(5)):
            try:
                closing()
            except Exception:  # shutting down: report, keep closing the rest
                log.exception("close_failed")


def run_decider(settings: Settings, stop: threading.Event) -> None:
    Decider(settings).run(stop)
