"""Appliers of the control-flow events (event schema v3): steps withdrawn
(StepCancelled), switch, loop and for_each steps (BranchChosen, ItemsResolved,
IterationStarted, IterationFinished) and workflow steps (ChildExecutionRequested
with a step). Like `projections.apply`, they mirror `orchestrator.core.evolve`:
a composite step is `running` with one attempt from the event that starts its
block (the core's `Block`), and its row counts iterations where the core keeps
their outputs.
"""

from __future__ import annotations

from orchestrator.core.events import (
    BranchChosen,
    ChildExecutionRequested,
    ItemsResolved,
    IterationFinished,
    IterationStarted,
    RecordedEvent,
    StepCancelled,
)

from .rows import ExecutionView, ShapeLookup, StepRow, timestamp

__all__ = ["branch_chosen", "items_resolved", "iteration_finished", "iteration_started", "step_cancelled",
           "subworkflow_requested"]


def step_cancelled(view: ExecutionView, r: RecordedEvent, e: StepCancelled, shapes: ShapeLookup) -> None:
    step = view.step(e.step, shapes)
    step.status = "cancelled"
    step.error = e.reason
    step.finished_at = timestamp(r.recorded_at)


def _composite_started(view: ExecutionView, r: RecordedEvent, key: str, shapes: ShapeLookup) -> StepRow:
    """A switch, loop or for_each begins: running, one attempt (the core's `Block`)."""
    step = view.step(key, shapes)
    step.status = "running"
    step.attempts = 1
    step.started_at = timestamp(r.recorded_at)
    return step


def branch_chosen(view: ExecutionView, r: RecordedEvent, e: BranchChosen, shapes: ShapeLookup) -> None:
    _composite_started(view, r, e.step, shapes).branch = e.case


def items_resolved(view: ExecutionView, r: RecordedEvent, e: ItemsResolved, shapes: ShapeLookup) -> None:
    step = _composite_started(view, r, e.step, shapes)
    step.items_total = len(e.items) if isinstance(e.items, (list, tuple)) else None
    step.iterations_started = step.iterations_completed = step.iterations_failed = 0


def iteration_started(view: ExecutionView, r: RecordedEvent, e: IterationStarted, shapes: ShapeLookup) -> None:
    step = view.step(e.step, shapes)
    if step.iterations_started is None:  # a loop's first iteration starts the loop
        step = _composite_started(view, r, e.step, shapes)
        step.iterations_completed = step.iterations_failed = 0
    step.iterations_started = max(step.iterations_started or 0, e.index + 1)


def iteration_finished(view: ExecutionView, r: RecordedEvent, e: IterationFinished, shapes: ShapeLookup) -> None:
    """Counted by outcome (cancelled iterations in neither count); the rows of
    the iteration's steps stay as they are."""
    step = view.step(e.step, shapes)
    if e.outcome == "completed":
        step.iterations_completed = (step.iterations_completed or 0) + 1
    elif e.outcome == "failed":
        step.iterations_failed = (step.iterations_failed or 0) + 1


def subworkflow_requested(view: ExecutionView, r: RecordedEvent, e: ChildExecutionRequested,
                          shapes: ShapeLookup) -> None:
    """A workflow step started its child execution; it runs until the child ends."""
    assert e.step is not None
    step = view.step(e.step, shapes)
    step.status = "running"
    step.attempts = 1
    step.started_at = timestamp(r.recorded_at)
    step.child_execution_id = e.child_execution_id
