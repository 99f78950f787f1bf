"""Which open event waits an external event completes: the correlator's pure core.

`Correlation` holds the open waits (from the compacted waits topic), indexed
by event type, and a buffer of recent external events per partition of the
external-events topic. It never reads a clock: arrival times and `now` are
arguments. See docs/correlator.md for the semantics; in short:

- an event and a wait match when the event type is the one waited for, the
  wait's filter matches the data (`filter_matches`), and the event arrived at
  most `buffer_ms` before the wait opened (or after it opened);
- an arriving event goes to every open matching wait; an opening wait gets the
  earliest buffered matching event;
- a wait takes one event: once given one it waits for its tombstone (or a new
  `WaitOpened` at its key) and gets nothing else;
- each (event id, execution id) pair is delivered at most once.

Matching is indexed, so its cost follows the candidates, not the number of
open waits or buffered events: a wait is filed under its event type and the
value of one filter field (the first by name); an arriving event looks up,
per such field in use, the waits filed under its own value there, and an
opening wait looks up the buffered events of its type by that field's value
(an index built on first use per partition, type and field, kept up to date
afterwards). `filter_matches` still decides every candidate.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .matching import MISSING, filter_matches, index_key, value_at
from .messages import DeliverEvent, ExternalEvent, WaitOpened

__all__ = ["BufferedEvent", "Correlation", "wait_key"]


def wait_key(wait: WaitOpened) -> str:
    """The waits topic's key of a wait: `<execution_id>/<step>`."""
    return f"{wait.execution_id}/{wait.step}"


@dataclass(frozen=True)
class BufferedEvent:
    event: ExternalEvent
    partition: int
    arrived_at: int  # epoch ms (the Kafka message timestamp)
    seq: int  # arrival order in this process: breaks ties of arrived_at

    @property
    def order(self) -> tuple[int, int]:
        return (self.arrived_at, self.seq)


def _index_field(wait: WaitOpened) -> str | None:
    return min(wait.filter) if isinstance(wait.filter, dict) and wait.filter else None


class Correlation:
    """Open waits and buffered events; every method returns the deliveries it decides."""

    def __init__(self, buffer_ms: int) -> None:
        if buffer_ms < 0:
            raise ValueError(f"buffer_ms must not be negative, got {buffer_ms}")
        self.buffer_ms = buffer_ms
        self._waits: dict[str, WaitOpened] = {}
        # event type -> index field (None: empty filter) -> index key -> wait key -> wait
        self._wait_index: dict[str, dict[str | None, dict[Any, dict[str, WaitOpened]]]] = {}
        # (partition, event type, field) -> index key -> seq -> event; built on first use
        self._event_index: dict[tuple[int, str, str], dict[Any, dict[int, BufferedEvent]]] = {}
        self._indexed_fields: dict[tuple[int, str], set[str]] = {}
        self._satisfied: set[str] = set()  # keys of waits already given an event
        # partition -> event type -> seq -> event (dicts keep arrival order)
        self._buffer: dict[int, dict[str, dict[int, BufferedEvent]]] = {}
        self._expiry: list[tuple[int, int, int, str]] = []  # (expires_at, seq, partition, type)
        self._delivered: dict[str, set[str]] = {}  # event id -> execution ids it went to
        self._copies: dict[str, int] = {}  # event id -> buffered events with that id
        self._seq = 0

    # -- what it holds ---------------------------------------------------------

    @property
    def open_waits(self) -> int:
        return len(self._waits)

    @property
    def buffered(self) -> int:
        return sum(len(events) for types in self._buffer.values() for events in types.values())

    def buffered_in(self, partition: int) -> int:
        return sum(len(events) for events in self._buffer.get(partition, {}).values())

    def wait(self, key: str) -> WaitOpened | None:
        return self._waits.get(key)

    # -- waits -------------------------------------------------------------------

    def open_wait(self, wait: WaitOpened) -> list[DeliverEvent]:
        """A wait opened (or was re-read): it gets the earliest buffered matching event.
        The same `WaitOpened` seen again changes nothing."""
        key = wait_key(wait)
        if self._waits.get(key) == wait:
            return []
        self.close_wait(key)
        self._waits[key] = wait
        field = _index_field(wait)
        value = index_key(wait.filter[field]) if field is not None else None
        self._wait_index.setdefault(wait.event_type, {}).setdefault(field, {}).setdefault(value, {})[key] = wait
        best = self._earliest_for(wait, self._buffer)
        if best is None:
            return []
        self._satisfied.add(key)
        return [self._deliver(wait, best.event)]

    def close_wait(self, key: str) -> None:
        """A tombstone: the wait is gone (completed, timed out, cancelled)."""
        wait = self._waits.pop(key, None)
        self._satisfied.discard(key)
        if wait is None:
            return
        field = _index_field(wait)
        value = index_key(wait.filter[field]) if field is not None else None
        by_field = self._wait_index[wait.event_type]
        bucket = by_field[field][value]
        del bucket[key]
        if not bucket:
            del by_field[field][value]
            if not by_field[field]:
                del by_field[field]
                if not by_field:
                    del self._wait_index[wait.event_type]

    # -- events ------------------------------------------------------------------

    def event_arrived(self, event: ExternalEvent, partition: int, arrived_at: int, *,
                      deliver: bool = True) -> list[DeliverEvent]:
        """Buffer the event; unless `deliver` is false (a restore), deliver it to every
        open matching wait that has no event yet (one wait per execution)."""
        self._seq += 1
        buffered = BufferedEvent(event, partition, arrived_at, self._seq)
        self._buffer.setdefault(partition, {}).setdefault(event.event_type, {})[buffered.seq] = buffered
        for field in self._indexed_fields.get((partition, event.event_type), ()):
            self._file_event(buffered, field)
        self._copies[event.event_id] = self._copies.get(event.event_id, 0) + 1
        heapq.heappush(self._expiry, (arrived_at + self.buffer_ms, buffered.seq, partition, event.event_type))
        if not deliver:
            return []
        out: list[DeliverEvent] = []
        for key, wait in sorted(self._candidate_waits(event).items(), key=lambda kv: (kv[1].opened_at, kv[0])):
            if key in self._satisfied or not self._matches(wait, buffered):
                continue
            if wait.execution_id in self._delivered.get(event.event_id, ()):
                continue
            self._satisfied.add(key)
            out.append(self._deliver(wait, event))
        return out

    def restored(self, partitions: Iterable[int]) -> list[DeliverEvent]:
        """After the buffers of `partitions` were rebuilt: every open wait without an event
        gets the earliest matching event of those partitions. Such a delivery may repeat one
        made before a restart (the decider ignores it), so the wait stays ready for the next
        live event."""
        restored = {p: self._buffer[p] for p in set(partitions) if p in self._buffer}
        if not restored:
            return []
        out: list[DeliverEvent] = []
        for key, wait in sorted(self._waits.items(), key=lambda kv: (kv[1].opened_at, kv[0])):
            if key in self._satisfied:
                continue
            best = self._earliest_for(wait, restored)
            if best is not None:
                out.append(self._deliver(wait, best.event))
        return out

    def expire(self, now: int) -> int:
        """Forget events buffered `buffer_ms` or longer ago; how many were forgotten."""
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, seq, partition, event_type = heapq.heappop(self._expiry)
            same_type = self._buffer.get(partition, {}).get(event_type)
            if same_type is None or seq not in same_type:
                continue  # its partition was dropped
            self._forget(same_type.pop(seq))
            dropped += 1
            if not same_type:
                del self._buffer[partition][event_type]
        return dropped

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Partitions revoked: forget their buffered events; how many were forgotten."""
        dropped = 0
        for p in set(partitions):
            for same_type in self._buffer.pop(p, {}).values():
                for buffered in same_type.values():
                    self._forget(buffered)
                    dropped += 1
            for key in [k for k in self._indexed_fields if k[0] == p]:
                del self._indexed_fields[key]
            for key in [k for k in self._event_index if k[0] == p]:
                del self._event_index[key]
        return dropped

    # -- inside --------------------------------------------------------------------

    def _candidate_waits(self, event: ExternalEvent) -> dict[str, WaitOpened]:
        out: dict[str, WaitOpened] = {}
        for field, by_value in self._wait_index.get(event.event_type, {}).items():
            if field is None:
                out.update(by_value.get(None, {}))
                continue
            value = value_at(event.data, field)
            if value is not MISSING:
                out.update(by_value.get(index_key(value), {}))
        return out

    def _candidate_events(self, partition: int, wait: WaitOpened) -> Iterable[BufferedEvent]:
        same_type = self._buffer.get(partition, {}).get(wait.event_type, {})
        field = _index_field(wait)
        if field is None or not same_type:
            return same_type.values()
        if field not in self._indexed_fields.setdefault((partition, wait.event_type), set()):
            self._indexed_fields[(partition, wait.event_type)].add(field)
            for buffered in same_type.values():
                self._file_event(buffered, field)
        index = self._event_index.get((partition, wait.event_type, field), {})
        return index.get(index_key(wait.filter[field]), {}).values()

    def _file_event(self, buffered: BufferedEvent, field: str) -> None:
        value = value_at(buffered.event.data, field)
        if value is not MISSING:
            index = self._event_index.setdefault((buffered.partition, buffered.event.event_type, field), {})
            index.setdefault(index_key(value), {})[buffered.seq] = buffered

    def _unfile_event(self, buffered: BufferedEvent) -> None:
        for field in self._indexed_fields.get((buffered.partition, buffered.event.event_type), ()):
            value = value_at(buffered.event.data, field)
            index = self._event_index.get((buffered.partition, buffered.event.event_type, field))
            if value is MISSING or index is None:
                continue
            bucket = index.get(index_key(value), {})
            bucket.pop(buffered.seq, None)
            if not bucket:
                index.pop(index_key(value), None)

    def _matches(self, wait: WaitOpened, buffered: BufferedEvent) -> bool:
        return (buffered.event.event_type == wait.event_type
                and buffered.arrived_at + self.buffer_ms > wait.opened_at
                and filter_matches(wait.filter, buffered.event.data))

    def _earliest_for(self, wait: WaitOpened,
                      buffer: dict[int, dict[str, dict[int, BufferedEvent]]]) -> BufferedEvent | None:
        best: BufferedEvent | None = None
        for partition in buffer:
            for buffered in self._candidate_events(partition, wait):
                if best is not None and buffered.order >= best.order:
                    continue
                if wait.execution_id in self._delivered.get(buffered.event.event_id, ()):
                    continue
                if self._matches(wait, buffered):
                    best = buffered
        return best

    def _deliver(self, wait: WaitOpened, event: ExternalEvent) -> DeliverEvent:
        self._delivered.setdefault(event.event_id, set()).add(wait.execution_id)
        return DeliverEvent(execution_id=wait.execution_id, step=wait.step, event_id=event.event_id,
                            event_type=event.event_type, data=event.data, occurred_at=event.occurred_at,
                            source=event.source)

    def _forget(self, buffered: BufferedEvent) -> None:
        self._unfile_event(buffered)
        eid = buffered.event.event_id
        left = self._copies.get(eid, 0) - 1
        if left > 0:
            self._copies[eid] = left
        else:  # no copy left to offer: nothing can deliver it again, so forget where it went
            self._copies.pop(eid, None)
            self._delivered.pop(eid, None)
