"""The projection's rows as the appliers see them, and how an event becomes a
history row. Plain values, no I/O (written by `projections.batch`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from orchestrator.core.events import RecordedEvent
from orchestrator.core.keys import leaf, parent_step
from orchestrator.core.sensitive import redact

__all__ = ["DefinitionShape", "ExecutionRow", "ExecutionView", "HistoryRow", "ShapeLookup", "StepRow",
           "event_payload", "history_row", "parent_step", "timestamp"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def timestamp(epoch_ms: int | None) -> datetime | None:
    """Epoch milliseconds -> aware UTC datetime, exactly (no float rounding)."""
    return None if epoch_ms is None else _EPOCH + timedelta(milliseconds=epoch_ms)


@dataclass(frozen=True)
class DefinitionShape:
    """What the projection needs of a definition: its steps, their types, and
    which composite step runs each step inside a block."""

    steps: tuple[tuple[str, str], ...]  # (name, type) of spec.steps, in order
    compensation: tuple[tuple[str, str], ...] = ()  # spec.compensation.steps
    # (name, type, composite) of the steps inside switch cases and loop and for_each bodies
    inner: tuple[tuple[str, str, str], ...] = ()
    _types: dict[str, str] = field(init=False, repr=False, compare=False)
    _parents: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        types = {name: step_type for name, step_type, _ in self.inner}
        types.update((*self.steps, *self.compensation))
        object.__setattr__(self, "_types", types)
        object.__setattr__(self, "_parents", {name: parent for name, _, parent in self.inner})

    def step_type(self, key: str) -> str | None:
        """The type of the step recorded under `key` (`pay_all[3].charge`: step `charge`)."""
        return self._types.get(leaf(key))

    def is_compensation(self, key: str) -> bool:
        name = leaf(key)
        return any(step_name == name for step_name, _ in self.compensation)

    def parent_step(self, key: str) -> str | None:
        return parent_step(key, self._parents)


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
    parent_step: str | None = None  # the composite whose block runs this step (see `parent_step`)
    child_execution_id: str | None = None  # a workflow step's child execution
    branch: str | None = None  # a switch: the chosen case
    items_total: int | None = None  # a for_each: how many items
    iterations_started: int | None = None  # a loop or for_each: iterations (items) started,
    iterations_completed: int | None = None  # ... ended completed,
    iterations_failed: int | None = None  # ... ended failed
    wait_until: datetime | None = None  # a waiting step: when its timer fires (a delay wakes)

    COLUMNS = (
        "execution_id", "step_name", "step_type", "status", "attempts", "output", "error",
        "status_reason", "started_at", "finished_at", "updated_at", "phase", "waiting_for", "breaker",
        "parent_step", "child_execution_id", "branch", "items_total", "iterations_started",
        "iterations_completed", "iterations_failed", "wait_until",
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
    dropped: set[str] = field(default_factory=set)  # step rows to delete (a retried composite's iterations)

    def step(self, name: str, shapes: ShapeLookup) -> StepRow:
        """The step's row, created `pending` when the execution has none yet (a
        compensation step, a step inside a block, or a definition that could not
        be found). Its type, phase and parent come from the definition (a key
        like `pay_all[3].charge` is step `charge` of it); without one, a row
        created while the execution is compensating is in the compensation
        phase, and an iteration's step still gets its loop or for_each as parent."""
        row = self.steps.get(name)
        if row is None:
            shape = self._shape(shapes)
            if shape is not None and shape.compensation:  # the definition says
                compensating = shape.is_compensation(name)
            else:
                compensating = self.execution is not None and self.execution.status == "compensating"
            row = StepRow(self.execution_id, name, shape.step_type(name) if shape else None,
                          phase="compensation" if compensating else "main",
                          parent_step=shape.parent_step(name) if shape else parent_step(name, {}))
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


