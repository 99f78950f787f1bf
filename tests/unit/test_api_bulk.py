"""operations.bulk: pacing, per-item outcomes and waiting for decisions, on a fake clock
(the Kafka send and the projection lookup are plain functions here; tests/integration/test_api.py
runs the whole thing against Kafka, the decider and the projection)."""

from __future__ import annotations

import uuid

import pytest

from orchestrator.core.messages import CancelWorkflow
from orchestrator.operations.bulk import BulkReport, Pacer, await_decisions, send_paced
from orchestrator.operations.commands import idempotent_execution_id, operator_command, outcome_of
from orchestrator.operations.sending import Sent


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_pacer_spaces_sends_evenly_and_never_bursts_to_catch_up() -> None:
    clock = Clock()
    pacer = Pacer(4, clock=clock, sleep=clock.sleep)
    times = []
    for i in range(5):
        pacer.wait()
        times.append(clock.now)
        if i == 2:
            clock.now += 1.0  # a slow send: the next one still waits a full interval after it
    assert times == [100.0, 100.25, 100.5, 101.5, 101.75]
    with pytest.raises(ValueError, match="rate_per_second"):
        Pacer(0)


def test_sending_paces_and_records_a_failed_send_per_item() -> None:
    clock = Clock()
    offsets = iter(range(10, 20))

    def send_one(command):
        if command.execution_id == "e2":
            raise RuntimeError("Kafka did not confirm")
        return Sent("wf.commands", command.execution_id, 1, next(offsets))

    commands = [operator_command("cancel", f"e{i}", requested_by="api:ops") for i in range(4)]
    sent = send_paced(commands, send_one, Pacer(2, clock=clock, sleep=clock.sleep), clock)
    assert [(s.execution_id, s.offset, s.error) for s in sent] == [
        ("e0", 10, None), ("e1", 11, None), ("e2", None, "Kafka did not confirm"), ("e3", 12, None)]
    assert [s.sent_at for s in sent] == [100.0, 100.5, 101.0, 101.5]


def test_decisions_are_awaited_until_each_item_times_out() -> None:
    clock = Clock()
    commands = [operator_command("pause", f"e{i}", requested_by="api:ops") for i in range(4)]
    offsets = iter(range(4))
    sent = send_paced(commands, lambda c: Sent("t", c.execution_id, 0, next(offsets)),
                      Pacer(1000, clock=clock, sleep=clock.sleep), clock)
    sent[3].error = "refused"
    decided = {"e0": {"event_type": "ExecutionPaused", "payload": {}},
               "e1": {"event_type": "CommandRejected", "payload": {"reason": "execution already completed"}}}
    asked: list[list[str]] = []

    def decision(items):
        asked.append([s.execution_id for s in items])
        return {j: decided.get(s.execution_id) if clock.now >= 101 else None for j, s in enumerate(items)}

    items = await_decisions(sent, decision, timeout_s=3, poll_interval_s=0.5, clock=clock, sleep=clock.sleep)
    assert [i.as_json() for i in items] == [
        {"execution_id": "e0", "outcome": "accepted", "reason": None},
        {"execution_id": "e1", "outcome": "rejected", "reason": "execution already completed"},
        {"execution_id": "e2", "outcome": "pending", "reason": None},
        {"execution_id": "e3", "outcome": "failed_to_send", "reason": "refused"},
    ]
    assert asked[0] == ["e0", "e1", "e2"] and asked[-1] == ["e2"]  # decided items are not asked again
    assert sent[2].sent_at + 3 <= clock.now < sent[2].sent_at + 3.5  # e2 was given its 3 s, no more


def test_a_report_has_a_sample_or_results() -> None:
    dry = BulkReport("cancel", 7, True, sample=["a", "b"])
    assert dry.as_json() == {"action": "cancel", "dry_run": True, "matched": 7, "sample": ["a", "b"]}
    assert BulkReport("retry", 0, False).as_json() == {"action": "retry", "dry_run": False, "matched": 0,
                                                       "results": []}


def test_commands_and_outcomes() -> None:
    assert operator_command("cancel", "e", requested_by="api:ops") == CancelWorkflow("e", "cancelled", "api:ops")
    assert operator_command("retry", "e", reason="again", requested_by="bob").reason == "again"
    with pytest.raises(ValueError, match="unknown action"):
        operator_command("delete", "e", requested_by=None)
    assert outcome_of(None) == ("pending", None)
    assert outcome_of({"event_type": "WorkflowStarted", "payload": {}}) == ("accepted", None)
    assert outcome_of({"event_type": "WorkflowStartRejected",
                       "payload": {"violations": ["email: required", "age: not an integer"]}}) == (
        "rejected", "email: required; age: not an integer")


def test_an_idempotency_key_names_one_execution_per_workflow() -> None:
    first = idempotent_execution_id("orders", "req-1")
    assert first == idempotent_execution_id("orders", "req-1")
    assert first != idempotent_execution_id("orders", "req-2") != idempotent_execution_id("refunds", "req-1")
    assert uuid.UUID(first).version == 5
