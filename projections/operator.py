"""Projection appliers for operators' actions: pause, resume, retry (and skip's output).

A retried execution's reset steps go back to `pending` with their attempts
kept, as in the core; the rows of a reset loop's or for_each's iterations are
deleted (`ExecutionView.dropped`), since the core dropped those states too.
"""

from __future__ import annotations

from orchestrator.core.events import ExecutionPaused, ExecutionResumed, ExecutionRetried, RecordedEvent
from orchestrator.core.sensitive import redact

from .rows import ExecutionView, ShapeLookup, StepRow

__all__ = ["execution_paused", "execution_resumed", "execution_retried"]


def execution_paused(view: ExecutionView, r: RecordedEvent, e: ExecutionPaused, shapes: ShapeLookup) -> None:
    assert view.execution is not None
    view.execution.status = "paused"


def execution_resumed(view: ExecutionView, r: RecordedEvent, e: ExecutionResumed, shapes: ShapeLookup) -> None:
    assert view.execution is not None
    view.execution.status = "running"


def execution_retried(view: ExecutionView, r: RecordedEvent, e: ExecutionRetried, shapes: ShapeLookup) -> None:
    row = view.execution
    assert row is not None
    row.status = "running"
    row.error = row.failed_step = row.output = row.finished_at = None
    row.compensation_status = row.compensation_trigger = row.compensation_reason = None
    row.compensation_execution_id = row.compensation_error = None
    if e.input is not None:
        row.input = redact(e.input)
    inner = tuple(f"{name}[" for name in e.steps)
    for key in [k for k in view.steps if k.startswith(inner)]:
        del view.steps[key]
        view.steps_changed.discard(key)
        view.dropped.add(key)
    for name in e.steps:
        old = view.step(name, shapes)
        view.steps[name] = StepRow(view.execution_id, name, old.step_type, attempts=old.attempts, phase=old.phase,
                                   parent_step=old.parent_step)
