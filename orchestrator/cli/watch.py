"""`start --wait`: follow one execution on `wf.events`, the truth.

The events partition of the execution is read from the high watermark taken
before the start command was published (an explicit `--id` first folds what
that execution already recorded), keeping only the execution's key, and every
event is folded with the core's `evolve`. A rich live view shows the steps
while it runs (only on a terminal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from ..codec import Codec, DecodeError
from ..config import Settings
from ..core.events import CommandRejected, RecordedEvent
from ..core.evolve import evolve, initial_state
from ..core.state import ExecutionState
from .common import CliError, warn
from .kafka_io import read_key, reader

__all__ = ["Follow", "WaitOutcome", "fold_existing", "follow"]


@dataclass
class WaitOutcome:
    state: ExecutionState
    timed_out: bool = False
    rejected: str | None = None  # the decider refused our command (CommandRejected)


class Follow:
    """Folds one execution's events as they arrive."""

    def __init__(self, settings: Settings, execution_id: str, partition: int, *, codec: Codec | None = None):
        self.settings = settings
        self.execution_id = execution_id
        self.partition = partition
        self.codec = codec or Codec.default()
        self.state = initial_state(execution_id)
        self.key = execution_id.encode("utf-8")

    def apply(self, value: bytes, offset: int) -> RecordedEvent | None:
        try:
            recorded = self.codec.decode(value, expect="events")
        except DecodeError as exc:
            warn(f"{self.settings.topics.events}[{self.partition}]@{offset}: undecodable event skipped: {exc}")
            return None
        if recorded.execution_id != self.execution_id or recorded.sequence <= self.state.sequence:
            return None
        if recorded.sequence != self.state.sequence + 1:
            self.backfill(before=recorded.sequence)
        self.state = evolve(self.state, recorded)
        return recorded

    def backfill(self, before: int) -> None:
        """Fold the execution's earlier events (we started watching mid-history)."""
        for msg in read_key(self.settings, self.settings.topics.events, self.partition, self.execution_id):
            try:
                recorded = self.codec.decode(msg.value(), expect="events")
            except DecodeError:
                continue  # reported when it was met live, or irrelevant to the gap
            if self.state.sequence < recorded.sequence < before:
                self.state = evolve(self.state, recorded)
        if self.state.sequence != before - 1:
            raise CliError(f"execution {self.execution_id}: events {self.state.sequence + 1}..{before - 1} "
                           f"are missing from {self.settings.topics.events}[{self.partition}]")


def fold_existing(follow: Follow) -> None:
    """Fold what the execution has recorded so far (an explicit, maybe reused, id)."""
    for msg in read_key(follow.settings, follow.settings.topics.events, follow.partition, follow.execution_id):
        follow.apply(msg.value(), msg.offset())


def follow(follow: Follow, start_offset: int, *, deadline: float | None, command_cause: str | None,
           on_change: Callable[[ExecutionState], None], tick: Callable[[], None] | None = None) -> WaitOutcome:
    """Read events from `start_offset` until the execution ends or `deadline` (monotonic) passes."""
    if follow.state.terminal:
        return WaitOutcome(follow.state)
    topic = follow.settings.topics.events
    consumer = reader(follow.settings)
    try:
        consumer.assign([TopicPartition(topic, follow.partition, start_offset)])
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                return WaitOutcome(follow.state, timed_out=True)
            wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
            changed = False
            for msg in consumer.consume(500, wait):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if err.fatal() or not err.retriable():
                        raise CliError(f"cannot read {topic}[{follow.partition}]: {err.str()}")
                    continue
                if msg.key() != follow.key:
                    continue
                recorded = follow.apply(msg.value(), msg.offset())
                if recorded is None:
                    continue
                changed = True
                event = recorded.event
                if (isinstance(event, CommandRejected) and event.command == "StartWorkflow"
                        and (command_cause is None or recorded.cause == command_cause)):
                    on_change(follow.state)
                    return WaitOutcome(follow.state, rejected=event.reason)
            if changed:
                on_change(follow.state)
            elif tick is not None:
                tick()
            if follow.state.terminal:
                return WaitOutcome(follow.state)
    except KafkaException as exc:
        raise CliError(f"cannot read {topic}[{follow.partition}]: {exc.args[0].str()}") from None
    finally:
        consumer.close()


def decider_cause(partition: int, offset: int) -> str:
    """The `cause` the decider records for events caused by the command at that offset."""
    return f"commands:{partition}:{offset}"

