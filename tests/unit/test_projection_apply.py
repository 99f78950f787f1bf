"""The projection appliers (projections.apply): events -> rows, no services.

The rows must agree with the decider's own fold (`orchestrator.core.evolve`),
which is what `orchestrator replay` checks against Postgres.
"""

from __future__ import annotations

import typing
from datetime import datetime, timezone

import pytest

from orchestrator.core import events as ev
from orchestrator.core.events import RecordedEvent
from orchestrator.core.evolve import fold
from orchestrator.core.sensitive import redact
from projections.apply import (
    APPLIERS,
    DefinitionShape,
    ExecutionView,
    apply_event,
    event_payload,
    timestamp,
)
from projections.definitions import parse_shape
from tests.projection_histories import SECRET, T0, histories, pipeline_registered

SHAPE = parse_shape(pipeline_registered())


def shapes(name: str, version: str | None) -> DefinitionShape | None:
    return SHAPE if (name, version) == ("pipeline", "1") else None


def project(history: list[RecordedEvent], view: ExecutionView | None = None) -> ExecutionView:
    view = view or ExecutionView(history[0].execution_id)
    for offset, recorded in enumerate(history):
        apply_event(view, recorded, 0, offset, shapes)
    return view


def ms(dt: datetime | None) -> int | None:
    return None if dt is None else int(dt.timestamp() * 1000)


def test_every_event_type_has_an_applier():
    assert set(APPLIERS) == set(typing.get_args(ev.Event))


def test_timestamps_are_exact_utc_milliseconds():
    at = timestamp(1_700_000_000_123)
    assert at == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=timezone.utc)
    assert timestamp(None) is None


def test_the_definition_shape_lists_steps_and_types_in_order():
    assert SHAPE.steps == (("a", "service_call"), ("b", "validation"), ("c", "service_call"),
                           ("d", "service_call"))
    assert SHAPE.step_type("b") == "validation"
    assert SHAPE.step_type("zz") is None


@pytest.mark.parametrize("execution_id", list(histories()))
def test_rows_agree_with_the_decider_fold(execution_id):
    history = histories()[execution_id]
    state = fold(execution_id, history)
    view = project(history)
    if not state.started:
        assert view.execution is None
        return
    row = view.execution
    assert row is not None
    assert row.status == state.status
    assert row.workflow_name == state.workflow_name
    assert (row.workflow_version or "") == state.workflow_version
    assert row.error == state.error
    assert row.failed_step == state.failed_step
    assert row.output == redact(state.output)
    assert row.input == redact(state.input)
    assert ms(row.started_at) == state.started_at
    assert ms(row.finished_at) == state.finished_at
    assert row.last_sequence == state.sequence == history[-1].sequence
    assert ms(row.created_at) == history[0].recorded_at
    assert ms(row.updated_at) == history[-1].recorded_at
    for name, step in state.steps.items():
        projected = view.steps[name]
        assert projected.status == step.status, name
        assert projected.attempts == step.attempt, name
        assert projected.error == step.error, name
        assert projected.output == redact(step.output), name
        assert ms(projected.started_at) == step.started_at, name
        assert ms(projected.finished_at) == step.finished_at, name
    for name in set(view.steps) - set(state.steps):
        assert view.steps[name].status == "pending"  # not reached yet


def test_start_creates_a_pending_row_per_step_with_its_type():
    history = histories()["exec-running"]
    view = project(history[:1])
    assert {n: (s.status, s.step_type, s.attempts) for n, s in view.steps.items()} == {
        "a": ("pending", "service_call", 0),
        "b": ("pending", "validation", 0),
        "c": ("pending", "service_call", 0),
        "d": ("pending", "service_call", 0),
    }
    assert all(ms(s.updated_at) == history[0].recorded_at for s in view.steps.values())


def test_a_retry_shows_retrying_keeps_the_error_until_completion():
    history = histories()["exec-ok"]
    types = [type(r.event).__name__ for r in history]
    failed_at = types.index("StepAttemptFailed")
    view = project(history[: failed_at + 1])
    assert (view.steps["a"].status, view.steps["a"].error) == ("retrying", "HTTP 503")
    rescheduled = types.index("StepScheduled", failed_at)
    view = project(history[: rescheduled + 1])
    assert (view.steps["a"].status, view.steps["a"].attempts, view.steps["a"].error) == ("running", 2, "HTTP 503")
    assert ms(view.steps["a"].started_at) == history[1].recorded_at  # the first attempt's start
    view = project(history)
    assert (view.steps["a"].status, view.steps["a"].error) == ("completed", None)
    assert view.steps["a"].output == {"user_id": "u-1", "token": "***"}


def test_a_failure_that_continues_and_one_that_terminates():
    ok = project(histories()["exec-ok"])
    assert (ok.steps["b"].status, ok.steps["b"].error, ok.steps["b"].attempts) == ("failed", "HTTP 400", 1)
    assert ok.execution.status == "completed"
    failed = project(histories()["exec-fail"])
    assert (failed.steps["c"].status, failed.steps["c"].attempts) == ("failed", 3)
    assert failed.steps["d"].status == "pending"
    assert failed.execution.status == "failed"
    assert failed.execution.failed_step == "c"
    assert failed.execution.error.startswith("C broke")


def test_a_rejected_start_is_a_failed_execution_without_steps():
    view = project(histories()["exec-rejected"])
    row = view.execution
    assert row.status == "failed"
    assert row.error.startswith("rejected: ")
    assert row.finished_at == row.started_at == row.created_at
    assert view.steps == {}
    unknown = project(histories()["exec-unknown"]).execution
    assert unknown.workflow_version is None
    assert unknown.error == "rejected: unknown workflow 'pipeline'"


def test_cancel_records_the_reason_and_later_commands_are_history_only():
    history = histories()["exec-cancel"]
    view = project(history)
    assert (view.execution.status, view.execution.error) == ("cancelled", "changed my mind")
    types = [type(r.event).__name__ for r in history]
    # the signal nobody waits for is kept (SignalReceived, v2); the second cancel is rejected
    assert "SignalReceived" in types and types[-1] == "CommandRejected"
    assert types.index("WorkflowCancelled") < types.index("CommandRejected")


def test_skipped_step_keeps_its_reason_apart_from_errors():
    start = RecordedEvent("x", 1, T0, "command:StartWorkflow", ev.WorkflowStarted("pipeline", "1", {}))
    skip = RecordedEvent("x", 2, T0 + 5, "result:a#1", ev.StepSkipped("b", "condition is false"))
    view = project([start, skip])
    b = view.steps["b"]
    assert (b.status, b.status_reason, b.error, ms(b.finished_at)) == ("skipped", "condition is false", None, T0 + 5)


def test_sensitive_values_are_redacted_in_rows_and_history():
    history = histories()["exec-ok"]
    view = ExecutionView("exec-ok")
    applied = apply_event(view, history[0], 3, 42, shapes)
    assert view.execution.input == {"email": "a@example.com", "password": "***"}
    assert applied.history.payload["input"] == {"email": "a@example.com", "password": "***"}
    assert (applied.history.kafka_partition, applied.history.kafka_offset) == (3, 42)
    assert applied.history.event_type == "WorkflowStarted"
    assert "gAAAA" not in repr(applied.history)


def test_payload_is_the_events_fields():
    rejected = ev.WorkflowStartRejected("w", None, {"p": SECRET}, ("a: bad", "b: worse"))
    assert event_payload(rejected) == {"workflow_name": "w", "workflow_version": None, "input": {"p": "***"},
                                       "violations": ["a: bad", "b: worse"], "requested_by": None,
                                       "parent_execution_id": None, "parent_relation": None}


def test_reapplying_events_changes_nothing():
    history = histories()["exec-ok"]
    view = project(history)
    before = (repr(view.execution), {n: repr(s) for n, s in view.steps.items()})
    view.execution_changed = False
    view.steps_changed.clear()
    for recorded in history:
        applied = apply_event(view, recorded, 0, 0, shapes)
        assert (applied.changed, applied.problem) == (False, "duplicate")
    assert (repr(view.execution), {n: repr(s) for n, s in view.steps.items()}) == before
    assert not view.execution_changed and not view.steps_changed


def test_events_of_an_execution_never_started_are_history_only():
    view = ExecutionView("ghost")
    recorded = RecordedEvent("ghost", 1, T0, "command:CancelWorkflow",
                             ev.CommandRejected("CancelWorkflow", "no such execution"))
    applied = apply_event(view, recorded, 0, 7, shapes)
    assert (applied.changed, applied.problem) == (False, "not started")
    assert view.execution is None and applied.history.event_type == "CommandRejected"


def test_a_step_outside_the_start_shape_gets_its_type_from_the_definition():
    shape = DefinitionShape((("a", "service_call"),), (("undo", "service_call"),))
    start = RecordedEvent("x", 1, T0, "c", ev.WorkflowStarted("w", "1", {}))
    sched = RecordedEvent("x", 2, T0 + 1, "c", ev.StepScheduled("undo", 1, T0 + 60_000))
    view = ExecutionView("x")
    for r in (start, sched):
        apply_event(view, r, 0, r.sequence, lambda n, v: shape)
    assert (view.steps["undo"].step_type, view.steps["undo"].status) == ("service_call", "running")
    assert set(view.steps) == {"a", "undo"}


def test_only_the_steps_an_event_touches_get_its_time():
    history = histories()["exec-ok"]
    view = project(history)
    c_done = next(r for r in history if isinstance(r.event, ev.StepCompleted) and r.event.step == "c")
    assert ms(view.steps["c"].updated_at) == c_done.recorded_at
    a_done = next(r for r in history if isinstance(r.event, ev.StepCompleted) and r.event.step == "a")
    assert ms(view.steps["a"].updated_at) == a_done.recorded_at


def test_unknown_definition_leaves_steps_to_be_created_when_scheduled():
    start = RecordedEvent("x", 1, T0, "c", ev.WorkflowStarted("elsewhere", "9", {}))
    sched = RecordedEvent("x", 2, T0 + 1, "c", ev.StepScheduled("a", 1, T0 + 60_000))
    view = project([start, sched])
    assert set(view.steps) == {"a"}
    assert (view.steps["a"].step_type, view.steps["a"].status) == (None, "running")


@pytest.mark.parametrize("value", [
    None, 1, "x", [], {}, {"a": 1, "b": [1, 2, {"c": "d"}]}, ("t", "u"),
    {"password": "p"}, {"nested": {"apiKey": "k"}}, [{"$secret": "tok"}], {"a": {"$secret": "tok"}},
    {"accessToken": None}, {"list": [[{"client_secret": 3}]]},
])
def test_the_fast_redaction_equals_the_core_one(value):
    import json

    from orchestrator.core.sensitive import redact as core_redact
    from projections.apply import redact as fast_redact

    assert json.dumps(fast_redact(value)) == json.dumps(core_redact(value))


def test_payloads_equal_the_redacted_dataclass_fields():
    import dataclasses

    for history in histories().values():
        for recorded in history:
            assert event_payload(recorded.event) == redact(dataclasses.asdict(recorded.event))


def test_migrations_are_numbered_files_in_order():
    from projections.migrate import migrations

    found = migrations()
    assert [m.version for m in found] == sorted({m.version for m in found})
    assert found[0].version == 1
    assert "CREATE TABLE workflow_executions" in found[0].sql


def test_a_definition_the_loader_refuses_still_yields_its_steps():
    from orchestrator.core.messages import DefinitionRegistered

    source = "spec:\n  steps:\n    - {name: one, type: service_call}\n    - {name: two, type: teleport}\n"
    shape = parse_shape(DefinitionRegistered("broken", "1", source, "yaml", "d", T0))
    assert shape.steps == (("one", "service_call"), ("two", "teleport"))
    assert parse_shape(DefinitionRegistered("x", "1", ": not yaml : [", "yaml", "d", T0)).steps == ()


def test_the_definitions_cache_reparses_only_a_new_digest():
    from projections.definitions import Definitions

    registered = pipeline_registered()
    definitions = Definitions()
    assert definitions.shape("pipeline", "1") is None
    first = definitions.add(registered)
    assert definitions.add(registered) is first
    assert definitions.shape("pipeline", "1") is first
    assert definitions.shape("pipeline", None) is None


# -- event schema v2: links, waits, compensation, breakers -------------------------------------

COMP_SHAPE = DefinitionShape((("a", "service_call"), ("w", "wait_for_event"), ("s", "wait_for_event")),
                             (("undo_a", "service_call"),))


def comp_shapes(name: str, version: str | None) -> DefinitionShape | None:
    return COMP_SHAPE if name == "comp" else None


def recorded(eid: str, *events: object, at: int = T0) -> list[RecordedEvent]:
    return [RecordedEvent(eid, i, at + i * 10, "test", e) for i, e in enumerate(events, start=1)]  # type: ignore[arg-type]


def project_with(history: list[RecordedEvent], lookup=comp_shapes) -> ExecutionView:
    view = ExecutionView(history[0].execution_id)
    for offset, r in enumerate(history):
        apply_event(view, r, 0, offset, lookup)
    return view


def rows_of(view: ExecutionView) -> tuple[dict, list[dict]]:
    """The view as `orchestrator replay` reads it from Postgres (dict rows)."""
    import dataclasses

    execution = {c: getattr(view.execution, c) for c in view.execution.COLUMNS}
    steps = [{c: getattr(s, c) for c in s.COLUMNS} for s in view.steps.values()]
    assert all(dataclasses.is_dataclass(s) for s in view.steps.values())
    return execution, steps


def compensated_history(eid: str = "x") -> list[RecordedEvent]:
    """`a` completes, `w` waits, `s` fails for good: compensation runs `undo_a`, then the execution fails."""
    return recorded(
        eid,
        ev.WorkflowStarted("comp", "1", {"k": 1}, "alice"),
        ev.StepScheduled("a", 1, T0 + 60_000),
        ev.StepCompleted("a", 1, {"id": "a-1"}),
        ev.StepWaiting("w", "payment.received", None, {"order": "o-1"}, T0 + 3_600_000),
        ev.StepScheduled("s", 1, T0 + 60_000),
        ev.StepAttemptFailed("s", 1, "HTTP 503", True, True, 503, "open"),
        ev.TimerScheduled("retry:s:2", T0 + 5_000),
        ev.TimerFired("retry:s:2"),
        ev.StepScheduled("s", 2, T0 + 60_000),
        ev.StepAttemptFailed("s", 2, "HTTP 400", False, False, 400, None),
        ev.StepFailed("s", 2, "HTTP 400", "compensate"),
        ev.StepFailed("w", 1, "abandoned: the execution is compensating", "abandoned"),
        ev.CompensationStarted("failed", "step 's' failed: HTTP 400", "s", None),
        ev.StepScheduled("undo_a", 1, T0 + 60_000),
        ev.StepAttemptFailed("undo_a", 1, "HTTP 500", True, False, 500, "half_open"),
        ev.StepFailed("undo_a", 1, "HTTP 500", "continue"),
        ev.CompensationFinished("failed", "step 'undo_a': HTTP 500"),
        ev.WorkflowFailed("step 's' failed: HTTP 400; compensation failed: step 'undo_a': HTTP 500", "s"),
    )


def test_the_parent_link_comes_from_the_start_or_the_rejected_start():
    child = project_with(recorded("p-compensation", ev.WorkflowStarted(
        "undo", "1", {}, "decider", parent_execution_id="p", parent_relation="compensation")))
    assert (child.execution.parent_execution_id, child.execution.parent_relation) == ("p", "compensation")
    rejected = project_with(recorded("q-compensation", ev.WorkflowStartRejected(
        "undo", None, {}, ("unknown workflow 'undo'",), None, "q", "compensation")))
    assert (rejected.execution.status, rejected.execution.parent_execution_id,
            rejected.execution.parent_relation) == ("failed", "q", "compensation")
    plain = project_with(recorded("r", ev.WorkflowStarted("comp", "1", {})))
    assert (plain.execution.parent_execution_id, plain.execution.compensation_status) == (None, None)


def test_a_waiting_step_shows_what_it_waits_for_and_keeps_it_after_the_wait():
    history = recorded(
        "x",
        ev.WorkflowStarted("comp", "1", {}),
        ev.StepWaiting("w", "payment.received", None, {"order": "o-1"}, T0 + 3_600_000),
        ev.StepWaiting("s", None, "approve", None, None),
        ev.SignalReceived("approve", {"by": "bob"}, "bob"),
        ev.WaitSatisfied("s", "signal", "approve", None, {"by": "bob"}),
        ev.StepCompleted("s", 1, {"by": "bob"}),
    )
    view = project_with(history[:3])
    w, s = view.steps["w"], view.steps["s"]
    assert (w.status, w.attempts, w.waiting_for, ms(w.started_at)) == ("waiting", 1, "payment.received",
                                                                       history[1].recorded_at)
    assert (s.status, s.waiting_for, s.phase) == ("waiting", "signal:approve", "main")
    view = project_with(history)
    s = view.steps["s"]
    assert (s.status, s.output, s.waiting_for, ms(s.finished_at)) == (
        "completed", {"by": "bob"}, "signal:approve", history[-1].recorded_at)
    state = fold("x", history)
    assert state.step("s").status == "completed" and state.step("w").status == "waiting"


def test_signals_and_satisfied_waits_are_history_only():
    history = recorded("x", ev.WorkflowStarted("comp", "1", {}),
                       ev.StepWaiting("s", None, "go", None, None))
    view = project_with(history)
    before = {n: repr(s) for n, s in view.steps.items()}
    for r in recorded("x", ev.SignalReceived("other", None, "bob"),
                      ev.WaitSatisfied("s", "signal", "go", None, None), at=T0 + 100):
        r = RecordedEvent("x", r.sequence + 2, r.recorded_at, r.cause, r.event)
        applied = apply_event(view, r, 0, r.sequence, comp_shapes)
        assert applied.changed and applied.problem is None
        assert applied.history.event_type == type(r.event).__name__
    assert {n: repr(s) for n, s in view.steps.items()} == before
    assert view.execution.last_sequence == 4 and view.execution.status == "running"


def test_compensation_status_trigger_outcome_and_compensation_steps():
    history = compensated_history()
    types = [type(r.event).__name__ for r in history]
    view = project_with(history[: types.index("CompensationStarted") + 1])
    row = view.execution
    assert (row.status, row.compensation_status, row.compensation_trigger, row.compensation_reason) == (
        "compensating", "running", "failed", "step 's' failed: HTTP 400")
    assert (row.error, row.compensation_error, row.compensation_execution_id) == (None, None, None)
    assert view.steps["w"].status == "failed" and view.steps["w"].error.startswith("abandoned")

    view = project_with(history)
    row = view.execution
    assert (row.status, row.failed_step, row.compensation_status, row.compensation_error) == (
        "failed", "s", "failed", "step 'undo_a': HTTP 500")
    assert row.compensation_trigger == "failed"
    undo = view.steps["undo_a"]
    assert (undo.phase, undo.step_type, undo.status, undo.breaker) == ("compensation", "service_call", "failed",
                                                                       "half_open")
    assert {n: s.phase for n, s in view.steps.items()} == {
        "a": "main", "w": "main", "s": "main", "undo_a": "compensation"}


def test_the_breaker_is_the_last_state_an_attempt_reported():
    history = compensated_history()
    types = [type(r.event).__name__ for r in history]
    first = types.index("StepAttemptFailed")
    assert project_with(history[: first + 1]).steps["s"].breaker == "open"
    # the second attempt reported no breaker state: the last reported one stays
    assert project_with(history[: types.index("StepFailed") + 1]).steps["s"].breaker == "open"
    assert project_with(history).steps["a"].breaker is None


def test_a_compensation_workflow_links_the_child_and_records_its_outcome():
    history = recorded(
        "p",
        ev.WorkflowStarted("comp", "1", {}),
        ev.StepScheduled("a", 1, T0 + 60_000),
        ev.StepCompleted("a", 1, None),
        ev.ChildExecutionRequested("ignored", "other", None, {}, "compensation"),  # not compensating: no link
        ev.CompensationStarted("cancelled", "changed my mind", None, "undo-all", "bob"),
        ev.ChildExecutionRequested("p-compensation", "undo-all", None, {"execution_id": "p"}, "compensation"),
    )
    view = project_with(history)
    row = view.execution
    assert (row.status, row.compensation_status, row.compensation_trigger, row.compensation_execution_id) == (
        "compensating", "running", "cancelled", "p-compensation")
    done = history + recorded("p", ev.CompensationFinished("completed"),
                              ev.WorkflowCancelled("changed my mind", "bob"), at=T0 + 1000)
    done = [RecordedEvent("p", i, r.recorded_at, r.cause, r.event) for i, r in enumerate(done, start=1)]
    view = project_with(done)
    row = view.execution
    assert (row.status, row.error, row.compensation_status, row.compensation_error,
            row.compensation_execution_id) == ("cancelled", "changed my mind", "completed", None, "p-compensation")


V2_HISTORIES = {
    "compensated": compensated_history,
    "waits": lambda: recorded(
        "x", ev.WorkflowStarted("comp", "1", {}), ev.StepWaiting("w", "payment.received", None, {}, None),
        ev.StepWaiting("s", None, "go", None, T0 + 99), ev.TimerScheduled("execution-timeout", T0 + 999)),
    "child": lambda: recorded(
        "x-compensation", ev.WorkflowStarted("undo", "1", {}, None, "x", "compensation"),
        ev.StepScheduled("u", 1, T0 + 60_000)),
}


@pytest.mark.parametrize("name", list(V2_HISTORIES))
def test_v2_rows_agree_with_the_decider_fold_as_replay_checks_it(name):
    from orchestrator.cli.audit import Fold, HistoryEntry, compare

    history = V2_HISTORIES[name]()
    view = project_with(history)
    replay = Fold(history[0].execution_id)
    for offset, r in enumerate(history):
        replay.add(HistoryEntry(0, offset, r))
    assert replay.problems == []
    assert compare(replay.state, rows_of(view), replay.phases) == []
    state = replay.state
    row = view.execution
    assert (row.status, row.parent_execution_id, row.parent_relation) == (
        state.status, state.parent_execution_id, state.parent_relation)
    for step_name, step in state.steps.items():
        assert (view.steps[step_name].status, view.steps[step_name].attempts) == (step.status, step.attempt)
        assert ms(view.steps[step_name].started_at) == step.started_at


def test_replay_notices_each_new_column_that_differs():
    from orchestrator.cli.audit import Fold, HistoryEntry, compare

    history = compensated_history()
    view = project_with(history)
    replay = Fold("x")
    for offset, r in enumerate(history):
        replay.add(HistoryEntry(0, offset, r))
    execution, steps = rows_of(view)
    tampered = {**execution, "compensation_status": "completed", "compensation_error": None,
                "parent_execution_id": "someone"}
    steps = [{**s, "phase": "main"} if s["step_name"] == "undo_a" else s for s in steps]
    found = {d["what"]: (d["kafka"], d["projection"]) for d in compare(replay.state, (tampered, steps), replay.phases)}
    assert found == {
        "execution.compensation_status": ("failed", "completed"),
        "execution.compensation_error": ("step 'undo_a': HTTP 500", None),
        "execution.parent_execution_id": (None, "someone"),
        "step undo_a.phase": ("compensation", "main"),
    }
    waiting = project_with(V2_HISTORIES["waits"]())
    execution, steps = rows_of(waiting)
    steps = [{**s, "waiting_for": "something.else"} if s["step_name"] == "w" else s for s in steps]
    replay = Fold("x")
    for offset, r in enumerate(V2_HISTORIES["waits"]()):
        replay.add(HistoryEntry(0, offset, r))
    assert [d["what"] for d in compare(replay.state, (execution, steps), replay.phases)] == ["step w.waiting_for"]


def test_replay_records_the_state_and_the_changed_steps_after_each_event():
    from orchestrator.cli.audit import Fold, HistoryEntry

    history = compensated_history()
    replay = Fold("x")
    for offset, r in enumerate(history):
        replay.add(HistoryEntry(0, offset, r))
    assert len(replay.states) == len(history)
    by_type = {s["event_type"]: s for s in replay.states}
    assert by_type["StepWaiting"]["changed"] == ["w"]
    assert by_type["StepWaiting"]["steps"]["w"] == {"status": "waiting", "attempts": 1,
                                                    "waiting_for": "payment.received"}
    assert by_type["CompensationStarted"]["status"] == "compensating"
    assert by_type["CompensationStarted"]["changed"] == []
    assert by_type["CompensationFinished"]["compensation"] == "failed"
    assert replay.states[-1]["status"] == "failed"
    assert replay.phases == {"a": "main", "w": "main", "s": "main", "undo_a": "compensation"}


def test_the_execution_document_shows_links_compensation_and_waits():
    from orchestrator.cli.render import execution_panel, from_rows, from_state

    history = compensated_history()
    view = project_with(history[: 4])  # `w` waiting
    doc = from_rows(*rows_of(view))
    assert doc["parent_execution_id"] is None and doc["compensation"] is None
    assert next(s for s in doc["steps"] if s["name"] == "w")["waiting_for"] == "payment.received"
    view = project_with(history)
    doc = from_rows(*rows_of(view))
    assert doc["compensation"] == {"status": "failed", "trigger": "failed", "reason": "step 's' failed: HTTP 400",
                                   "error": "step 'undo_a': HTTP 500", "execution_id": None}
    assert from_state(fold("x", history))["compensation"] == doc["compensation"]
    assert {s["name"]: s["phase"] for s in doc["steps"]}["undo_a"] == "compensation"
    from rich.console import Console

    console = Console(width=200, record=True)
    doc["children"] = [{"execution_id": "x-compensation", "relation": "compensation", "status": "failed"}]
    console.print(execution_panel(doc))
    text = console.export_text()
    assert "compensation" in text and "step 'undo_a': HTTP 500" in text and "x-compensation" in text


# -- event schema v3: control flow -------------------------------------------------------------

FLOW_SOURCE = """\
apiVersion: workflow/v1
kind: Workflow
metadata: {name: flow, version: "1"}
spec:
  config: {retry_policy: {max_attempts: 1}}
  steps:
    - name: route
      type: switch
      config:
        cases:
          - name: big
            when: "{{ input.amount > 100 }}"
            steps:
              - {name: review, type: service_call, config: {service: svc, endpoint: /review}}
        default:
          - {name: auto, type: service_call, config: {service: svc, endpoint: /auto}}
    - name: pay_all
      type: for_each
      config:
        items: "{{ input.orders }}"
        concurrency: 2
        on_item_failure: collect
        tolerated_failures: 1
        steps:
          - {name: charge, type: service_call, config: {service: svc, endpoint: /charge, payload: {id: "{{ item }}"}}}
          - name: receipt
            type: workflow
            config: {workflow: receipt, input: {order: "{{ item }}"}}
    - name: poll
      type: loop
      config:
        max_iterations: 3
        until: "{{ steps.check.output.done }}"
        steps:
          - {name: check, type: service_call, config: {service: svc, endpoint: /check}}
          - {name: pause, type: delay, config: {duration: 10s}}
    - {name: slow, type: service_call, config: {service: svc, endpoint: /slow}, cancel_on_signal: stop}
"""


def flow_registered():
    from orchestrator.core.messages import DefinitionRegistered

    return DefinitionRegistered("flow", "1", FLOW_SOURCE, "yaml", "digest", T0)


FLOW_SHAPE = parse_shape(flow_registered())


def flow_shapes(name: str, version: str | None) -> DefinitionShape | None:
    return FLOW_SHAPE if name == "flow" else None


def flow_history() -> list[RecordedEvent]:
    """The decider's own events: switch case `big`; three items, item 1 failing (tolerated),
    each item's receipt a child execution; two loop iterations with a delay each; `slow`
    withdrawn by its cancel_on_signal."""
    from orchestrator.core.loading import load_definition_source
    from orchestrator.core.messages import (
        ChildExecutionEnded,
        FireTimer,
        SignalWorkflow,
        StartWorkflow,
        TaskFailed,
        TaskSucceeded,
    )

    from .scenario import Scenario

    s = Scenario(load_definition_source(FLOW_SOURCE, file="flow.yaml"), "f-1", now=T0)

    def ok(key: str, output=None) -> None:
        s.at(s.now + 100).when(TaskSucceeded("f-1", key, s.state.step(key).attempt, output, 0, 0))

    def child_done(key: str, output) -> None:
        child = s.state.step(key).child_execution_id
        s.at(s.now + 100).when(ChildExecutionEnded("f-1", child, "subworkflow", "completed", output))

    s.when(StartWorkflow("f-1", "flow", "1", {"amount": 500, "orders": ["o1", "o2", "o3"]}))
    ok("review", {"ok": True})
    ok("pay_all[0].charge", "c0")
    s.at(s.now + 100).when(TaskFailed("f-1", "pay_all[1].charge", 1, "HTTP 400", False, 400, 0, 0))
    child_done("pay_all[0].receipt", {"r": 0})
    ok("pay_all[2].charge", "c2")
    child_done("pay_all[2].receipt", {"r": 2})
    ok("poll[0].check", {"done": False})
    s.at(s.now + 10_000).when(FireTimer("f-1", "wait:poll[0].pause"))
    ok("poll[1].check", {"done": True})
    s.at(s.now + 10_000).when(FireTimer("f-1", "wait:poll[1].pause"))
    s.at(s.now + 100).when(SignalWorkflow("f-1", "stop", None, "ops"))
    return s.history


def audit(history: list[RecordedEvent], view: ExecutionView | None = None) -> list[dict]:
    """`orchestrator replay`'s differences between the core's fold of `history` and the rows."""
    from orchestrator.cli.audit import Fold, HistoryEntry, compare

    replay = Fold(history[0].execution_id, keep_states=False)
    for offset, r in enumerate(history):
        replay.add(HistoryEntry(0, offset, r))
    assert replay.problems == []
    return compare(replay.state, rows_of(view or project_with(history, flow_shapes)), replay.phases)


def test_the_shape_knows_the_steps_inside_blocks_and_their_composites():
    assert FLOW_SHAPE.steps == (("route", "switch"), ("pay_all", "for_each"), ("poll", "loop"),
                                ("slow", "service_call"))
    assert {name: (t, parent) for name, t, parent in FLOW_SHAPE.inner} == {
        "review": ("service_call", "route"), "auto": ("service_call", "route"),
        "charge": ("service_call", "pay_all"), "receipt": ("workflow", "pay_all"),
        "check": ("service_call", "poll"), "pause": ("delay", "poll")}
    assert FLOW_SHAPE.step_type("pay_all[3].receipt") == "workflow"
    from projections.definitions import _raw_shape

    assert _raw_shape(FLOW_SOURCE) == FLOW_SHAPE  # the loader-free reading agrees


@pytest.mark.parametrize("key, parents, expected", [
    ("route", {"review": "route"}, None),
    ("review", {"review": "route"}, "route"),  # a switch case's step: its own name
    ("pay_all[3].charge", {"charge": "pay_all"}, "pay_all"),
    ("pay_all[3].charge", {}, "pay_all"),  # no definition: still the iteration's composite
    ("outer[1].inner[0].leaf", {"leaf": "inner", "inner": "outer"}, "outer[1].inner"),
    ("outer[1].inner[0].leaf", {}, "outer[1].inner"),
    ("retry[2].refund", {"refund": "route", "route": "retry"}, "retry[2].route"),  # a switch inside a loop
    ("retry[2].route", {"refund": "route", "route": "retry"}, "retry"),
])
def test_the_parent_step_of_a_key(key, parents, expected):
    from orchestrator.core.keys import parent_step

    assert parent_step(key, parents) == expected


def test_control_flow_rows_agree_with_the_decider_fold_after_every_event():
    history = flow_history()
    view = ExecutionView("f-1")
    for offset, r in enumerate(history):
        apply_event(view, r, 0, offset, flow_shapes)
        assert audit(history[: offset + 1], view) == [], f"after {offset + 1}: {type(r.event).__name__}"


def test_control_flow_rows():
    history = flow_history()
    view = project_with(history, flow_shapes)
    steps = view.steps
    # only the top-level steps get pending rows at start; a block's steps get theirs when they run
    assert set(project_with(history[:1], flow_shapes).steps) == {"route", "pay_all", "poll", "slow"}
    assert (steps["route"].branch, steps["route"].status, steps["route"].items_total) == ("big", "completed", None)
    assert (steps["review"].parent_step, steps["review"].step_type) == ("route", "service_call")
    assert "auto" not in steps  # the case not chosen never ran
    pay = steps["pay_all"]
    assert (pay.items_total, pay.iterations_started, pay.iterations_completed, pay.iterations_failed) == (3, 3, 2, 1)
    assert pay.status == "completed" and pay.output[1] is None
    charge = steps["pay_all[1].charge"]
    assert (charge.status, charge.error, charge.parent_step, charge.phase, charge.step_type) == (
        "failed", "HTTP 400", "pay_all", "main", "service_call")
    receipt = steps["pay_all[0].receipt"]
    assert (receipt.status, receipt.child_execution_id, receipt.output, receipt.attempts) == (
        "completed", "f-1.pay_all.0.receipt", {"r": 0}, 1)
    assert "pay_all[1].receipt" not in steps  # its item failed first: it never started
    poll = steps["poll"]
    assert (poll.iterations_started, poll.iterations_completed, poll.iterations_failed, poll.items_total) == (
        2, 2, 0, None)
    pause = steps["poll[1].pause"]
    assert (pause.parent_step, pause.step_type, pause.waiting_for, pause.status) == ("poll", "delay", None, "completed")
    wake = next(r.event.timeout_at for r in history if isinstance(r.event, ev.StepWaiting)
                and r.event.step == "poll[1].pause")
    assert ms(pause.wait_until) == wake
    slow = steps["slow"]
    cancelled_at = next(r.recorded_at for r in history if isinstance(r.event, ev.StepCancelled)
                        and r.event.step == "slow")
    assert (slow.status, slow.error, ms(slow.finished_at)) == ("cancelled", "signal 'stop'", cancelled_at)
    assert view.execution.status == "completed"
    # the rows of ended iterations stay after the core dropped their states
    state = fold("f-1", history)
    assert "pay_all[0].charge" not in state.steps and steps["pay_all[0].charge"].status == "completed"


def test_control_flow_events_by_hand_without_a_definition():
    history = recorded(
        "h",
        ev.WorkflowStarted("elsewhere", "1", {}),
        ev.ItemsResolved("each", [1, 2]),
        ev.IterationStarted("each", 0),
        ev.StepScheduled("each[0].call", 1, T0 + 60_000),
        ev.IterationStarted("each", 1),
        ev.ChildExecutionRequested("h.each.1.sub", "child", None, {}, "subworkflow", "each[1].sub"),
        ev.StepCancelled("each[0].call", "not needed", "ops"),
        ev.IterationFinished("each", 0, "cancelled", None, "not needed"),
        ev.StepFailed("each[1].sub", 1, "sub-workflow failed", "terminate"),
        ev.IterationFinished("each", 1, "failed", None, "step 'sub' failed"),
        ev.IterationStarted("again", 0),
        ev.BranchChosen("pick", "default"),
    )
    view = project_with(history, lambda name, version: None)
    each = view.steps["each"]
    assert (each.status, each.attempts, each.items_total, each.iterations_started, each.iterations_completed,
            each.iterations_failed) == ("running", 1, 2, 2, 0, 1)  # a cancelled item is neither
    call = view.steps["each[0].call"]
    assert (call.status, call.error, call.parent_step, call.step_type) == ("cancelled", "not needed", "each", None)
    sub = view.steps["each[1].sub"]
    assert (sub.child_execution_id, sub.status, sub.parent_step) == ("h.each.1.sub", "failed", "each")
    again = view.steps["again"]
    assert (again.status, again.iterations_started, again.iterations_completed, again.items_total) == (
        "running", 1, 0, None)
    assert (view.steps["pick"].branch, view.steps["pick"].status) == ("default", "running")
    assert view.execution.compensation_execution_id is None  # a workflow step's child is not compensation
    assert audit(history, view) == []


def test_reapplying_control_flow_events_counts_nothing_twice():
    history = flow_history()
    view = project_with(history, flow_shapes)
    before = {n: repr(s) for n, s in view.steps.items()}
    for offset, r in enumerate(history):
        assert apply_event(view, r, 0, offset, flow_shapes).problem == "duplicate"
    assert {n: repr(s) for n, s in view.steps.items()} == before


def test_replay_compares_the_control_flow_columns_and_live_iterations_only():
    history = flow_history()
    types = [type(r.event).__name__ for r in history]
    # while item 0 runs, its steps are compared; once it ended, not any more
    started = types.index("StepScheduled", types.index("ItemsResolved"))
    running = history[: started + 1]
    execution, steps = rows_of(project_with(running, flow_shapes))
    tampered = [{**s, "status": "failed"} if s["step_name"] == "pay_all[0].charge" else s for s in steps]
    assert [d["what"] for d in audit_rows(running, execution, tampered)] == ["step pay_all[0].charge.status"]
    execution, steps = rows_of(project_with(history, flow_shapes))
    tampered = [{**s, "status": "failed"} if s["step_name"] == "pay_all[0].charge" else s for s in steps]
    assert audit_rows(history, execution, tampered) == []

    changes = {"route": {"branch": "default"}, "pay_all": {"iterations_failed": 0, "items_total": 4},
               "poll": {"iterations_started": 5}}
    tampered = [{**s, **changes.get(s["step_name"], {})} for s in steps]
    found = {d["what"]: (d["kafka"], d["projection"]) for d in audit_rows(history, execution, tampered)}
    assert found == {"step route.branch": ("big", "default"), "step pay_all.items_total": (3, 4),
                     "step pay_all.iterations_failed": (1, 0), "step poll.iterations_started": (2, 5)}

    # a workflow step's child and a delay's wake time, while the state has them
    at = types.index("ChildExecutionRequested")
    execution, steps = rows_of(project_with(history[: at + 1], flow_shapes))
    tampered = [{**s, "child_execution_id": "other"} if s["step_name"] == "pay_all[0].receipt" else s for s in steps]
    assert [d["what"] for d in audit_rows(history[: at + 1], execution, tampered)] == [
        "step pay_all[0].receipt.child_execution_id"]
    at = types.index("StepWaiting")
    execution, steps = rows_of(project_with(history[: at + 1], flow_shapes))
    tampered = [{**s, "wait_until": None} if s["step_name"] == "poll[0].pause" else s for s in steps]
    assert [d["what"] for d in audit_rows(history[: at + 1], execution, tampered)] == ["step poll[0].pause.wait_until"]


def audit_rows(history: list[RecordedEvent], execution: dict, steps: list[dict]) -> list[dict]:
    from orchestrator.cli.audit import Fold, HistoryEntry, compare

    replay = Fold(history[0].execution_id, keep_states=False)
    for offset, r in enumerate(history):
        replay.add(HistoryEntry(0, offset, r))
    return compare(replay.state, (execution, steps), replay.phases)


def test_the_execution_document_nests_inner_steps_and_shows_progress():
    from rich.console import Console

    from orchestrator.cli.render import execution_panel, from_rows, from_state

    history = flow_history()
    types = [type(r.event).__name__ for r in history]
    at = types.index("StepWaiting")  # item 1 failed, the loop's first delay sleeps
    doc = from_rows(*rows_of(project_with(history[: at + 1], flow_shapes)))
    by_name = {s["name"]: s for s in doc["steps"]}
    assert by_name["pay_all[2].receipt"]["parent_step"] == "pay_all"
    assert by_name["poll[0].pause"]["wait_until"] is not None
    state_doc = from_state(fold("f-1", history[: at + 1]))
    assert {s["name"]: s["wait_until"] for s in state_doc["steps"]}["poll[0].pause"] == by_name["poll[0].pause"][
        "wait_until"]
    console = Console(width=160, record=True)
    console.print(execution_panel(doc))
    text = console.export_text()
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "branch big" in lines["route"]
    assert "3/3 items, 1 failed" in lines["pay_all"]
    assert "iteration 1" in lines["poll"]
    assert f"until {by_name['poll[0].pause']['wait_until']}" in lines["poll[0].pause"]
    assert "child f-1.pay_all.2.receipt" in lines["pay_all[2].receipt"]
    assert "  pay_all[2].receipt" in text and "\n  review" in text  # indented under their composite
    assert text.index("pay_all[0].charge") > text.index("pay_all ") and text.index("poll[0].check") > text.index(
        "poll ")
