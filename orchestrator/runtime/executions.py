"""The decider's in-memory executions, their timers, and a batch undo log.

Everything here is derived from `wf.events`: it can be dropped and rebuilt
at any time, which is what a partition assignment does.
"""

from __future__ import annotations

import heapq
from ..core.state import ExecutionState

__all__ = ["Executions"]


def _kept(state: ExecutionState) -> ExecutionState:
    """What the decider holds of an execution: all of it while it runs, and of a
    failed one, which an operator may retry from its recorded steps. A completed
    or cancelled one only has to answer "does it exist, and is it over": its
    identity and status, without the bulk."""
    if not state.terminal or state.status == "failed":
        return state
    return ExecutionState(
        execution_id=state.execution_id,
        status=state.status,
        workflow_name=state.workflow_name,
        workflow_version=state.workflow_version,
        sequence=state.sequence,
    )


class Executions:
    def __init__(self) -> None:
        self._states: dict[str, ExecutionState] = {}
        self._partition: dict[str, int] = {}
        self._timers: list[tuple[int, str, str]] = []  # (fire_at, execution id, timer id)
        self._undo: dict[str, ExecutionState | None] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, execution_id: str) -> ExecutionState | None:
        return self._states.get(execution_id)

    def put(self, state: ExecutionState, partition: int) -> None:
        eid = state.execution_id
        previous = self._states.get(eid)
        self._undo.setdefault(eid, previous)
        self._states[eid] = _kept(state)
        self._partition[eid] = partition
        old_timers = previous.timers if previous is not None else {}
        for timer_id, fire_at in state.timers.items():
            if old_timers.get(timer_id) != fire_at:
                heapq.heappush(self._timers, (fire_at, eid, timer_id))

    def restore(self, state: ExecutionState, partition: int) -> None:
        """Install a state folded from history (no undo: it is the truth)."""
        self._states[state.execution_id] = _kept(state)
        self._partition[state.execution_id] = partition
        for timer_id, fire_at in state.timers.items():
            heapq.heappush(self._timers, (fire_at, state.execution_id, timer_id))

    def commit(self) -> None:
        self._undo.clear()

    def rollback(self) -> None:
        """Forget the changes of a batch whose transaction was aborted."""
        for eid, previous in self._undo.items():
            if previous is None:
                self._states.pop(eid, None)
                self._partition.pop(eid, None)
            else:
                self._states[eid] = previous
        self._undo.clear()
        self._rebuild_timers()

    def drop_partitions(self, partitions: set[int]) -> None:
        gone = [eid for eid, p in self._partition.items() if p in partitions]
        for eid in gone:
            del self._states[eid]
            del self._partition[eid]
        self._rebuild_timers()

    def next_fire_at(self) -> int | None:
        while self._timers:
            fire_at, eid, timer_id = self._timers[0]
            if self._is_armed(fire_at, eid, timer_id):
                return fire_at
            heapq.heappop(self._timers)
        return None

    def pop_due(self, now: int, limit: int = 1000) -> list[tuple[str, str]]:
        """Due (execution id, timer id) pairs, earliest first."""
        due: list[tuple[str, str]] = []
        while self._timers and self._timers[0][0] <= now and len(due) < limit:
            fire_at, eid, timer_id = heapq.heappop(self._timers)
            if self._is_armed(fire_at, eid, timer_id):
                due.append((eid, timer_id))
        return due

    def _is_armed(self, fire_at: int, eid: str, timer_id: str) -> bool:
        state = self._states.get(eid)
        return state is not None and state.timers.get(timer_id) == fire_at

    def _rebuild_timers(self) -> None:
        self._timers = [(at, eid, tid) for eid, s in self._states.items() for tid, at in s.timers.items()]
        heapq.heapify(self._timers)
