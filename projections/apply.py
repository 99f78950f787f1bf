"""Events -> projection rows: one small applier per event type, no I/O.

The projector loads the current rows of the executions in a batch into
`ExecutionView`s, folds the batch's events into them with `apply_event`, and
writes back the rows that changed (see `projections.batch`). The appliers
mirror the decider's `orchestrator.core.evolve` (the `orchestrator replay`
audit compares its fold against these rows) with additions the core state
does not need: one `pending` row per step of the definition at start, each
step's type, the skip reason (`status_reason`), the step's phase (a row first
created while the execution is compensating is a compensation step), what a
wait_for_event step waited for (`waiting_for`, kept after the wait ends) and
the last circuit breaker state an attempt reported (`breaker`).

Re-applying an event is harmless: an event whose sequence is not above the
execution's `last_sequence` changes no row, and its history row is inserted
with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from orchestrator.core.events import (
    ChildExecutionRequested,
    CommandRejected,
    CompensationFinished,
    CompensationStarted,
    RecordedEvent,
    SignalReceived,
    StepAttemptFailed,
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

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def timestamp(epoch_ms: int | None) -> datetime | None:
    """Epoch milliseconds -> aware UTC datetime, exactly (no float rounding)."""
    return None if epoch_ms is None else _EPOCH + timedelta(milliseconds=epoch_ms)


@dataclass(frozen=True)
class DefinitionShape:
    """What the projection needs of a definition: its steps and their types."""

    steps: tuple[tuple[str, str], ...]  # (name, type) of spec.steps, in order
    compensation: tuple[tuple[str, str], ...] = ()  # spec.compensation.steps

    def step_type(self, name: str) -> str | None:
        for step_name, step_type in (*self.steps, *self.compensation):
            if step_name == name:
                return step_type
        return None


ShapeLookup = Callable[[str, "str | None"], "DefinitionShape | None"]


@dataclass
class ExecutionRow:
    """One `workflow_executions` row (without the `projected_at` bookkeeping)."""

    id: str
    workflow_name: str
    workflow_version: str | None
    status: str
    input: Any
    output: Any
    error: str | None
    failed_step: str | None
    requested_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    last_sequence: int
    parent_execution_id: str | None = None  # the execution that started this one
    parent_relation: str | None = None  # why: "compensation"
    compensation_execution_id: str | None = None  # the compensation workflow's execution
    compensation_status: str | None = None  # None | running | completed | failed
    compensation_error: str | None = None  # why compensation failed
    compensation_trigger: str | None = None  # failed | cancelled: how the execution ends afterwards
    compensation_reason: str | None = None  # why the execution is ending (CompensationStarted.error)

    COLUMNS = (
        "id", "workflow_name", "workflow_version", "status", "input", "output", "error",
        "failed_step", "requested_by", "created_at", "started_at", "finished_at",
        "updated_at", "last_sequence", "parent_execution_id", "parent_relation",
        "compensation_execution_id", "compensation_status", "compensation_error",
        "compensation_trigger", "compensation_reason",
    )


@dataclass
class StepRow:
    """One `step_executions` row (without `projected_at`)."""

    execution_id: str
    step_name: str
    step_type: str | None
    status: str = "pending"
    attempts: int = 0
    output: Any = None
    error: str | None = None
    status_reason: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime = _EPOCH
    phase: str = "main"  # main | compensation
    waiting_for: str | None = None  # a wait_for_event step: the event type or "signal:<name>"
    breaker: str | None = None  # the last circuit breaker state an attempt reported

    COLUMNS = (
        "execution_id", "step_name", "step_type", "status", "attempts", "output", "error",
        "status_reason", "started_at", "finished_at", "updated_at", "phase", "waiting_for", "breaker",
    )


@dataclass(frozen=True)
class HistoryRow:
    """One `execution_events` row."""

    execution_id: str
    sequence: int
    event_type: str
    recorded_at: datetime
    cause: str
    payload: dict[str, Any]
    kafka_partition: int
    kafka_offset: int

    COLUMNS = (
        "execution_id", "sequence", "event_type", "recorded_at", "cause", "payload",
        "kafka_partition", "kafka_offset",
    )


@dataclass
class ExecutionView:
    """The rows of one execution as loaded from Postgres, changed in place."""

    execution_id: str
    execution: ExecutionRow | None = None
    steps: dict[str, StepRow] = field(default_factory=dict)
    execution_changed: bool = False
    steps_changed: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)  # steps changed by the current event

    def step(self, name: str, shapes: ShapeLookup) -> StepRow:
        """The step's row, created `pending` when the execution has none yet
        (a compensation step, or a definition that could not be found); one
        created while the execution is compensating is in the compensation phase."""
        row = self.steps.get(name)
        if row is None:
            shape = self._shape(shapes)
            compensating = self.execution is not None and self.execution.status == "compensating"
            row = StepRow(self.execution_id, name, shape.step_type(name) if shape else None,
                          phase="compensation" if compensating else "main")
            self.steps[name] = row
        self.touched.add(name)
        return row

    def _shape(self, shapes: ShapeLookup) -> DefinitionShape | None:
        if self.execution is None:
            return None
        return shapes(self.execution.workflow_name, self.execution.workflow_version)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def event_payload(event: Any) -> dict[str, Any]:
    """The event's fields as JSON-ready values, sensitive values redacted.

    Equal to `redact(dataclasses.asdict(event))` (event field names are never
    secret-like), but only the structured values are walked.
    """
    names = _FIELD_NAMES.get(type(event))
    if names is None:
        names = _FIELD_NAMES[type(event)] = tuple(f.name for f in dataclasses.fields(event))
    payload = {}
    for name in names:
        value = getattr(event, name)
        if isinstance(value, (dict, list, tuple)):
            value = redact(value)
            value = list(value) if isinstance(value, tuple) else value
        payload[name] = value
    return payload


def history_row(recorded: RecordedEvent, partition: int, offset: int) -> HistoryRow:
    return HistoryRow(
        execution_id=recorded.execution_id,
        sequence=recorded.sequence,
        event_type=type(recorded.event).__name__,
        recorded_at=timestamp(recorded.recorded_at),  # type: ignore[arg-type]
        cause=recorded.cause,
        payload=event_payload(recorded.event),
        kafka_partition=partition,
        kafka_offset=offset,
    )


# --- appliers: (view, recorded, event, shapes) -> None, changing the view ---


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
    step.finished_at = timestamp(r.recorded_at)


def history_only(view: ExecutionView, r: RecordedEvent, e: Any, shapes: ShapeLookup) -> None:
    """Timers, rejected commands, signals (the state keeps them pending) and
    satisfied waits (StepCompleted follows): recorded in execution_events only."""


def waiting_for(event_type: str | None, signal: str | None) -> str | None:
    """What a waiting step waits for, as the `waiting_for` column shows it."""
    return f"signal:{signal}" if signal is not None else event_type


def step_waiting(view: ExecutionView, r: RecordedEvent, e: StepWaiting, shapes: ShapeLookup) -> None:
    step = view.step(e.step, shapes)
    step.status = "waiting"
    step.attempts = 1
    step.started_at = timestamp(r.recorded_at)
    step.waiting_for = waiting_for(e.event_type, e.signal)


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
