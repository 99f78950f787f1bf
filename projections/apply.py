"""Events -> projection rows: one small applier per event type, no I/O.

The projector loads the current rows of the executions in a batch into
`ExecutionView`s, folds the batch's events into them with `apply_event`, and
writes back the rows that changed (see `projections.batch`). The appliers
mirror the decider's `orchestrator.core.evolve` (the `orchestrator replay`
audit compares its fold against these rows) with additions the core state
does not need: one `pending` row per top-level step of the definition at
start, each step's type, the skip reason (`status_reason`), the step's phase
(a row first created while the execution is compensating is a compensation
step), what a wait_for_event step waited for (`waiting_for`, kept after the
wait ends), the last circuit breaker state an attempt reported (`breaker`),
and the composite step that runs a step inside a block (`parent_step`).

Steps inside blocks get their rows when first touched: a switch case's step
under its own name, a step of loop iteration / for_each item `i` under its
key (`pay_all[3].charge`). The core drops an iteration's step states when the
iteration ends; their rows stay.

Re-applying an event is harmless: an event whose sequence is not above the
execution's `last_sequence` changes no row, and its history row is inserted
with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from orchestrator.core.events import (
    BranchChosen,
    ChildExecutionRequested,
    CommandRejected,
    CompensationFinished,
    CompensationStarted,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionRetried,
    ItemsResolved,
    IterationFinished,
    IterationStarted,
    RecordedEvent,
    SignalReceived,
    StepAttemptFailed,
    StepCancelled,
    StepCompleted,
    StepFailed,
    StepScheduled,
    StepSkipped,
    StepWaiting,
    TimerFired,
    TimerScheduled,
    WaitSatisfied,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowStartRejected,
)
from orchestrator.core.sensitive import redact

from .control_flow import (
    branch_chosen,
    items_resolved,
    iteration_finished,
    iteration_started,
    step_cancelled,
    subworkflow_requested,
)
from .operator import execution_paused, execution_resumed, execution_retried
from .rows import (
    DefinitionShape,
    ExecutionRow,
    ExecutionView,
    HistoryRow,
    ShapeLookup,
    StepRow,
    event_payload,
    history_row,
    timestamp,
)

__all__ = [
    "APPLIERS",
    "DefinitionShape",
    "ExecutionRow",
    "ExecutionView",
    "HistoryRow",
    "ShapeLookup",
    "StepRow",
    "apply_event",
    "event_payload",
    "history_row",
    "timestamp",
    "waiting_for",
]

def _new_execution(view: ExecutionView, r: RecordedEvent, e: WorkflowStarted | WorkflowStartRejected
                   ) -> ExecutionRow:
    at = timestamp(r.recorded_at)
    assert at is not None
    previous = view.execution
    row = ExecutionRow(
        id=view.execution_id,
        workflow_name=e.workflow_name,
        workflow_version=e.workflow_version,
        status="running",
        input=redact(e.input),
        output=None,
        error=None,
        failed_step=None,
        requested_by=e.requested_by,
        created_at=previous.created_at if previous else at,
        started_at=at,
        finished_at=None,
        updated_at=at,
        last_sequence=previous.last_sequence if previous else 0,
        parent_execution_id=e.parent_execution_id,
        parent_relation=e.parent_relation,
    )
    view.execution = row
    return row


def workflow_started(view: ExecutionView, r: RecordedEvent, e: WorkflowStarted, shapes: ShapeLookup) -> None:
    _new_execution(view, r, e)
    shape = shapes(e.workflow_name, e.workflow_version)
    at = timestamp(r.recorded_at)
    assert at is not None
    for name, step_type in shape.steps if shape else ():
        if name not in view.steps:
            view.steps[name] = StepRow(view.execution_id, name, step_type)
            view.touched.add(name)


def workflow_start_rejected(view: ExecutionView, r: RecordedEvent, e: WorkflowStartRejected,
                            shapes: ShapeLookup) -> None:
    row = _new_execution(view, r, e)
    row.status = "failed"
    row.error = "rejected: " + "; ".join(e.violations)
    row.finished_at = row.started_at


def step_scheduled(view: ExecutionView, r: RecordedEvent, e: StepScheduled, shapes: ShapeLookup) -> None:
    step = view.step(e.step, shapes)
    step.status = "running"
    step.attempts = e.attempt
    if step.started_at is None:
        step.started_at = timestamp(r.recorded_at)
    # The last attempt's error stays visible until the step completes.


def step_attempt_failed(view: ExecutionView, r: RecordedEvent, e: StepAttemptFailed,
                        shapes: ShapeLookup) -> None:
    step = view.step(e.step, shapes)
    step.error = e.error
    if e.will_retry:
        step.status = "retrying"
    if e.breaker is not None:
        step.breaker = e.breaker


def step_completed(view: ExecutionView, r: RecordedEvent, e: StepCompleted, shapes: ShapeLookup) -> None:
    step = view.step(e.step, shapes)
    step.status = "completed"
    step.output = redact(e.output)
    step.error = None
    step.finished_at = timestamp(r.recorded_at)


def step_failed(view: ExecutionView, r: RecordedEvent, e: StepFailed, shapes: ShapeLookup) -> None:
    step = view.step(e.step, shapes)
    step.status = "failed"
    step.attempts = max(e.attempts, step.attempts)
    step.error = e.error
    step.finished_at = timestamp(r.recorded_at)


def step_skipped(view: ExecutionView, r: RecordedEvent, e: StepSkipped, shapes: ShapeLookup) -> None:
    step = view.step(e.step, shapes)
    step.status = "skipped"
    step.status_reason = e.reason
    step.output = redact(e.output)
    step.finished_at = timestamp(r.recorded_at)


def history_only(view: ExecutionView, r: RecordedEvent, e: Any, shapes: ShapeLookup) -> None:
    """Timers, rejected commands, signals (the state keeps them pending) and
    satisfied waits (StepCompleted follows): recorded in execution_events only."""


def waiting_for(event_type: str | None, signal: str | None) -> str | None:
    """What a waiting step waits for, as the `waiting_for` column shows it."""
    return f"signal:{signal}" if signal is not None else event_type


def step_waiting(view: ExecutionView, r: RecordedEvent, e: StepWaiting, shapes: ShapeLookup) -> None:
    """A wait for an event or a signal; or a delay step (neither), which wakes at `timeout_at`."""
    step = view.step(e.step, shapes)
    step.status = "waiting"
    step.attempts = 1
    step.started_at = timestamp(r.recorded_at)
    step.waiting_for = waiting_for(e.event_type, e.signal)
    step.wait_until = timestamp(e.timeout_at)


def compensation_started(view: ExecutionView, r: RecordedEvent, e: CompensationStarted,
                         shapes: ShapeLookup) -> None:
    row = _execution(view)
    row.status = "compensating"
    row.compensation_status = "running"
    row.compensation_trigger = e.trigger
    row.compensation_reason = e.error
    row.compensation_execution_id = None
    row.compensation_error = None


def child_execution_requested(view: ExecutionView, r: RecordedEvent, e: ChildExecutionRequested,
                              shapes: ShapeLookup) -> None:
    """A workflow step's child (it runs until the child ends), or the compensation workflow."""
    if e.step is not None:
        subworkflow_requested(view, r, e, shapes)
        return
    row = _execution(view)
    if e.relation == "compensation" and row.compensation_status is not None:
        row.compensation_execution_id = e.child_execution_id


def compensation_finished(view: ExecutionView, r: RecordedEvent, e: CompensationFinished,
                          shapes: ShapeLookup) -> None:
    row = _execution(view)
    if row.compensation_status is not None:
        row.compensation_status = e.outcome
        row.compensation_error = e.error


def workflow_completed(view: ExecutionView, r: RecordedEvent, e: WorkflowCompleted, shapes: ShapeLookup) -> None:
    row = _execution(view)
    row.status = "completed"
    row.output = redact(e.output)
    row.finished_at = timestamp(r.recorded_at)


def workflow_failed(view: ExecutionView, r: RecordedEvent, e: WorkflowFailed, shapes: ShapeLookup) -> None:
    row = _execution(view)
    row.status = "failed"
    row.error = e.error
    row.failed_step = e.step
    row.finished_at = timestamp(r.recorded_at)


def workflow_cancelled(view: ExecutionView, r: RecordedEvent, e: WorkflowCancelled, shapes: ShapeLookup) -> None:
    row = _execution(view)
    row.status = "cancelled"
    row.error = e.reason
    row.finished_at = timestamp(r.recorded_at)


def _execution(view: ExecutionView) -> ExecutionRow:
    assert view.execution is not None  # apply_event checks before calling
    return view.execution


Applier = Callable[[ExecutionView, RecordedEvent, Any, ShapeLookup], None]

APPLIERS: Mapping[type, Applier] = {
    WorkflowStarted: workflow_started,
    WorkflowStartRejected: workflow_start_rejected,
    StepScheduled: step_scheduled,
    StepCompleted: step_completed,
    StepAttemptFailed: step_attempt_failed,
    StepFailed: step_failed,
    StepSkipped: step_skipped,
    TimerScheduled: history_only,
    TimerFired: history_only,
    WorkflowCompleted: workflow_completed,
    WorkflowFailed: workflow_failed,
    WorkflowCancelled: workflow_cancelled,
    CommandRejected: history_only,
    StepWaiting: step_waiting,
    SignalReceived: history_only,
    WaitSatisfied: history_only,
    CompensationStarted: compensation_started,
    ChildExecutionRequested: child_execution_requested,
    CompensationFinished: compensation_finished,
    StepCancelled: step_cancelled,
    BranchChosen: branch_chosen,
    ItemsResolved: items_resolved,
    IterationStarted: iteration_started,
    IterationFinished: iteration_finished,
    ExecutionPaused: execution_paused,
    ExecutionResumed: execution_resumed,
    ExecutionRetried: execution_retried,
}

_STARTS = (WorkflowStarted, WorkflowStartRejected)


@dataclass(frozen=True)
class Applied:
    """What `apply_event` did: the history row and whether rows changed.

    `problem` is set (and no row changed) for an event that cannot apply:
    a duplicate, or an event of an execution that was never started.
    """

    history: HistoryRow
    changed: bool
    problem: str | None = None


def apply_event(view: ExecutionView, recorded: RecordedEvent, partition: int, offset: int,
                shapes: ShapeLookup) -> Applied:
    """Fold one recorded event into `view`; always returns its history row."""
    history = history_row(recorded, partition, offset)
    row = view.execution
    if row is not None and recorded.sequence <= row.last_sequence:
        return Applied(history, False, "duplicate")
    if row is None and not isinstance(recorded.event, _STARTS):
        return Applied(history, False, "not started")
    applier = APPLIERS[type(recorded.event)]
    view.touched.clear()
    applier(view, recorded, recorded.event, shapes)
    row = view.execution
    assert row is not None
    gap = recorded.sequence != row.last_sequence + 1
    row.last_sequence = recorded.sequence
    at = timestamp(recorded.recorded_at)
    assert at is not None
    row.updated_at = at
    view.execution_changed = True
    for name in view.touched:
        view.steps[name].updated_at = at
    view.steps_changed |= view.touched
    view.touched.clear()
    return Applied(history, True, "gap" if gap else None)
