"""Which offsets an at-least-once consumer may commit when work finishes out of order.

Per partition, offsets are started in the order Kafka delivers them and
completed in any order; the committable position is one past the highest
offset below which everything has completed. Gaps in the offsets
(transaction markers, compaction) are harmless: only started offsets count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["OffsetTracker"]

TP = tuple[str, int]  # (topic, partition)


@dataclass
class _Partition:
    started: deque[int] = field(default_factory=deque)  # increasing, not yet below the watermark
    done: set[int] = field(default_factory=set)
    position: int | None = None  # next offset to commit (last contiguous done + 1)
    committed: int | None = None  # last position handed out for commit


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}

    def start(self, tp: TP, offset: int) -> None:
        part = self._parts.setdefault(tp, _Partition())
        if (part.started and offset <= part.started[-1]) or (part.position is not None and offset < part.position):
            # Redelivered from an earlier position (a seek or a reassignment): start over.
            part = self._parts[tp] = _Partition()
        part.started.append(offset)

    def done(self, tp: TP, offset: int) -> bool:
        """Mark `offset` complete; False when its partition is no longer tracked (revoked)."""
        part = self._parts.get(tp)
        if part is None:
            return False
        part.done.add(offset)
        while part.started and part.started[0] in part.done:
            head = part.started.popleft()
            part.done.discard(head)
            part.position = head + 1
        return True

    def in_flight(self, tp: TP | None = None) -> int:
        if tp is not None:
            part = self._parts.get(tp)
            return len(part.started) - len(part.done) if part else 0
        return sum(len(p.started) - len(p.done) for p in self._parts.values())

    def committable(self, tps: list[TP] | None = None, *, force: bool = False) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) to commit: positions that moved since the last call
        (all known positions with `force`, e.g. for a final synchronous commit)."""
        out = []
        for tp in list(self._parts) if tps is None else tps:
            part = self._parts.get(tp)
            if part is not None and part.position is not None and (force or part.position != part.committed):
                part.committed = part.position
                out.append((tp[0], tp[1], part.position))
        return out

    def forget(self, tps: list[TP]) -> None:
        """Stop tracking (partitions revoked or lost): their unfinished work runs again elsewhere."""
        for tp in tps:
            self._parts.pop(tp, None)

