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
    assert [type(r.event).__name__ for r in history].count("CommandRejected") == 2


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
                                       "violations": ["a: bad", "b: worse"], "requested_by": None}


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
