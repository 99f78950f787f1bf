"""Messages between the roles: commands in, tasks out, results back.

Commands are imperative (`wf.commands`, published by clients), tasks are what
the decider asks executors to do (`wf.tasks`), results are what executors
report (`wf.results`). All are keyed by execution id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

__all__ = [
    "StartWorkflow",
    "CancelWorkflow",
    "SignalWorkflow",
    "FireTimer",
    "TaskSucceeded",
    "TaskFailed",
    "ExecuteStep",
    "Command",
    "TaskResult",
    "Input",
    "DefinitionRegistered",
    "ExternalEvent",
    "DeliverEvent",
    "ChildExecutionEnded",
    "WaitOpened",
    "CancelStep",
    "ScheduleFired",
    "RetryExecution",
    "PauseExecution",
    "ResumeExecution",
    "SkipStep",
]


@dataclass(frozen=True)
class StartWorkflow:
    execution_id: str
    workflow_name: str
    workflow_version: str | None  # None: the latest registered version
    input: Any
    requested_by: str | None = None
    parent_execution_id: str | None = None  # the execution that started this one
    parent_relation: str | None = None  # why: "compensation"


@dataclass(frozen=True)
class CancelWorkflow:
    execution_id: str
    reason: str = "cancelled"
    requested_by: str | None = None


@dataclass(frozen=True)
class SignalWorkflow:
    execution_id: str
    name: str
    data: Any = None
    requested_by: str | None = None


@dataclass(frozen=True)
class CancelStep:
    """Withdraw one active or pending step (`name`, or `loop[2].inner` inside a block)."""

    execution_id: str
    step: str
    reason: str = "cancelled"
    requested_by: str | None = None


@dataclass(frozen=True)
class RetryExecution:
    """Rerun a failed execution from its failed step(s); completed steps keep their
    outputs. `input`, when given, replaces the recorded input (already sealed)."""

    execution_id: str
    input: Any = None  # None: keep the recorded input
    reason: str = "retried"
    requested_by: str | None = None


@dataclass(frozen=True)
class PauseExecution:
    """Hold a running execution: nothing new starts until it is resumed."""

    execution_id: str
    reason: str = "paused"
    requested_by: str | None = None


@dataclass(frozen=True)
class ResumeExecution:
    execution_id: str
    reason: str = "resumed"
    requested_by: str | None = None


@dataclass(frozen=True)
class SkipStep:
    """End a step that has not finished as skipped, giving it the output its dependents see."""

    execution_id: str
    step: str
    output: Any = None
    reason: str = "skipped"
    requested_by: str | None = None


@dataclass(frozen=True)
class FireTimer:
    """Internal: the decider's clock says a timer is due. Never on Kafka."""

    execution_id: str
    timer_id: str


@dataclass(frozen=True)
class TaskSucceeded:
    execution_id: str
    step: str
    attempt: int
    output: Any
    started_at: int  # epoch ms, executor clock
    finished_at: int


@dataclass(frozen=True)
class TaskFailed:
    execution_id: str
    step: str
    attempt: int
    error: str
    transient: bool  # connection errors, timeouts, 408, 429, 5xx
    status_code: int | None
    started_at: int
    finished_at: int
    breaker: str | None = None  # the service's circuit breaker after the attempt: closed | open | half_open


@dataclass(frozen=True)
class DeliverEvent:
    """The correlator found `step` of this execution waiting for this external event."""

    execution_id: str
    step: str
    event_id: str
    event_type: str
    data: Any
    occurred_at: int
    source: str | None = None


@dataclass(frozen=True)
class ChildExecutionEnded:
    """An execution this one started has ended (`wf.results`, keyed by the parent)."""

    execution_id: str  # the parent
    child_execution_id: str
    relation: str
    status: str  # completed | failed | cancelled
    output: Any = None
    error: str | None = None


OperatorCommand = Union[RetryExecution, PauseExecution, ResumeExecution, SkipStep]
Command = Union[StartWorkflow, CancelWorkflow, SignalWorkflow, DeliverEvent, CancelStep, RetryExecution,
                PauseExecution, ResumeExecution, SkipStep]
TaskResult = Union[TaskSucceeded, TaskFailed, ChildExecutionEnded]
Input = Union[StartWorkflow, CancelWorkflow, SignalWorkflow, DeliverEvent, CancelStep, RetryExecution,
              PauseExecution, ResumeExecution, SkipStep, FireTimer,
              TaskSucceeded, TaskFailed, ChildExecutionEnded]


@dataclass(frozen=True)
class ExecuteStep:
    """A task: perform one attempt of one step.

    `step` is the step's definition as a JSON object (name, type, config,
    output mapping...): the executor renders its templates against `context`
    (`{"input": ..., "steps": {name: {"output", "status", "completed",
    "error", "attempts"}}, "execution": {"id", "workflow", "version"}}`), so
    secrets and `hash()` are resolved only there.
    """

    execution_id: str
    workflow_name: str
    workflow_version: str
    step_name: str
    step_type: str
    attempt: int
    idempotency_key: str  # "<execution_id>/<step>", stable across attempts
    step: Any
    context: Any
    deadline_at: int  # epoch ms
    timeout_ms: int


@dataclass(frozen=True)
class DefinitionRegistered:
    """A workflow definition version on the compacted `wf.definitions` topic."""

    name: str
    version: str
    source: str  # the definition as the author wrote it (YAML or JSON text)
    source_format: str  # yaml | json
    digest: str  # sha256 of the canonical JSON of the parsed definition
    registered_at: int  # epoch ms
    registered_by: str | None = None


@dataclass(frozen=True)
class ExternalEvent:
    """A business event from an external system (`wf.external-events`)."""

    event_id: str
    event_type: str
    data: Any
    occurred_at: int  # epoch ms
    source: str | None = None


@dataclass(frozen=True)
class WaitOpened:
    """An open event wait on the compacted `wf.waits` topic (key `<execution_id>/<step>`;
    a null value closes it). The decider writes it; the correlator reads it."""

    execution_id: str
    step: str
    event_type: str
    filter: Any
    opened_at: int
    timeout_at: int | None = None


@dataclass(frozen=True)
class ScheduleFired:
    """A schedule trigger fired for one nominal time (compacted `wf.schedules`, key
    `<workflow>/<trigger>`): the scheduler's progress, written in the transaction
    that sends the StartWorkflow, so each nominal time starts one execution."""

    workflow_name: str
    trigger: str
    nominal_time: int  # epoch ms: the time the schedule named, not when it ran
    execution_id: str
    fired_at: int
