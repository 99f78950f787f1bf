"""Committable offsets when tasks finish out of order."""

from __future__ import annotations

from orchestrator.runtime.executor_offsets import OffsetTracker

TP = ("wf.tasks", 0)
TP1 = ("wf.tasks", 1)


def test_commits_only_the_contiguous_prefix() -> None:
    t = OffsetTracker()
    for offset in (10, 11, 12, 14):  # 13: a transaction marker, never delivered
        t.start(TP, offset)
    assert t.in_flight() == 4
    t.done(TP, 12)
    t.done(TP, 14)
    assert t.committable() == []  # 10 and 11 still run
    t.done(TP, 10)
    assert t.committable() == [("wf.tasks", 0, 11)]
    assert t.committable() == []  # nothing new
    t.done(TP, 11)
    assert t.committable() == [("wf.tasks", 0, 15)]
    assert t.in_flight() == 0
    assert t.committable(force=True) == [("wf.tasks", 0, 15)]


def test_partitions_are_independent_and_revocation_forgets() -> None:
    t = OffsetTracker()
    t.start(TP, 0)
    t.start(TP1, 5)
    t.done(TP1, 5)
    assert t.committable() == [("wf.tasks", 1, 6)]
    t.forget([TP])
    assert t.done(TP, 0) is False  # finished after revocation: not committed here
    assert t.committable([TP, TP1]) == []


def test_redelivery_from_an_earlier_offset_starts_over() -> None:
    t = OffsetTracker()
    t.start(TP, 7)
    t.start(TP, 8)
    t.done(TP, 7)
    t.start(TP, 7)  # e.g. reassigned after a rebalance
    assert t.in_flight(TP) == 1
    t.done(TP, 7)
    assert t.committable() == [("wf.tasks", 0, 8)]
