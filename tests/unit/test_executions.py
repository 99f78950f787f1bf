"""The decider's in-memory table: timers, undo of an aborted batch, partition moves."""

from __future__ import annotations

from types import MappingProxyType

from orchestrator.core.state import ExecutionState
from orchestrator.runtime.executions import Executions


def state(eid: str, status: str = "running", timers: dict[str, int] | None = None, seq: int = 1) -> ExecutionState:
    return ExecutionState(execution_id=eid, status=status, workflow_name="w", workflow_version="1",
                          timers=MappingProxyType(timers or {}), sequence=seq)


def test_due_timers_come_earliest_first_and_disarmed_ones_never():
    table = Executions()
    table.put(state("a", timers={"retry:x:2": 200}), 0)
    table.put(state("b", timers={"timeout:y:1": 100}), 1)
    table.put(state("a", timers={}, seq=2), 0)  # a's timer was disarmed by a later event
    assert table.next_fire_at() == 100
    assert table.pop_due(150) == [("b", "timeout:y:1")]
    assert table.pop_due(10_000) == []


def test_rollback_forgets_a_batch_and_rearms_its_timers():
    table = Executions()
    table.restore(state("a", timers={"t": 500}), 0)
    table.put(state("a", timers={}, seq=2), 0)
    table.put(state("new", timers={"u": 50}), 1)
    assert table.pop_due(1000) == [("new", "u")]
    table.rollback()
    assert table.get("new") is None
    assert table.get("a").sequence == 1
    assert table.pop_due(1000) == [("a", "t")]


def test_ended_executions_keep_only_their_identity():
    table = Executions()
    table.put(state("a", status="completed"), 0)
    kept = table.get("a")
    assert kept.status == "completed" and kept.workflow_name == "w" and kept.steps == {}


def test_revoked_partitions_take_their_executions_and_timers_along():
    table = Executions()
    table.restore(state("a", timers={"t": 1}), 0)
    table.restore(state("b", timers={"t": 1}), 1)
    table.drop_partitions({0})
    assert table.get("a") is None and len(table) == 1
    assert table.pop_due(10) == [("b", "t")]
