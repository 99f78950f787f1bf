"""Events: the facts appended to `wf.events`, named in the past tense.

Every event of one execution is wrapped in a `RecordedEvent` carrying the
execution id, a gap-free sequence number starting at 1, the decision time and
the cause (what input led to it). JSON payloads (input, output) are plain
Python values; sensitive input values are already sealed
(`{"$secret": "<token>"}`) before they reach an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

__all__ = [
    "WorkflowStarted",
    "WorkflowStartRejected",
    "StepScheduled",
    "StepCompleted",
    "StepAttemptFailed",
    "StepFailed",
    "StepSkipped",
    "ExecutionPaused",
    "ExecutionResumed",
    "ExecutionRetried",
    "TimerScheduled",
    "TimerFired",
    "WorkflowCompleted",
    "WorkflowFailed",
    "WorkflowCancelled",
    "CommandRejected",
    "StepWaiting",
    "SignalReceived",
    "WaitSatisfied",
    "CompensationStarted",
    "CompensationFinished",
    "ChildExecutionRequested",
    "StepCancelled",
    "BranchChosen",
    "ItemsResolved",
    "IterationStarted",
    "IterationFinished",
    "Event",
    "RecordedEvent",
]


@dataclass(frozen=True)
class WorkflowStarted:
    workflow_name: str
    workflow_version: str
    input: Any
    requested_by: str | None = None
    parent_execution_id: str | None = None  # set for an execution another one started
    parent_relation: str | None = None  # why: "compensation"


@dataclass(frozen=True)
class WorkflowStartRejected:
    """A start that never ran: unknown workflow or invalid input."""

    workflow_name: str
    workflow_version: str | None
    input: Any  # redacted: sensitive fields replaced by "***"
    violations: tuple[str, ...]
    requested_by: str | None = None
    parent_execution_id: str | None = None
    parent_relation: str | None = None


@dataclass(frozen=True)
class StepScheduled:
    """A task for this attempt of the step was sent to the executors."""

    step: str
    attempt: int
    deadline_at: int  # epoch ms after which the attempt counts as timed out


@dataclass(frozen=True)
class StepCompleted:
    step: str
    attempt: int
    output: Any


@dataclass(frozen=True)
class StepAttemptFailed:
    """One attempt failed; `will_retry` says whether another one follows."""

    step: str
    attempt: int
    error: str
    transient: bool
    will_retry: bool
    status_code: int | None = None
    breaker: str | None = None  # the service's circuit breaker after the attempt: closed | open | half_open


@dataclass(frozen=True)
class StepFailed:
    """The step failed for good; `action` is the on_failure action applied."""

    step: str
    attempts: int
    error: str
    action: str  # terminate | continue | compensate | abandoned (the execution was already ending)


@dataclass(frozen=True)
class StepSkipped:
    """The step will not run (its condition or join), or an operator skipped it
    (`requested_by`) with the `output` its dependents see."""

    step: str
    reason: str
    output: Any = None
    requested_by: str | None = None


@dataclass(frozen=True)
class TimerScheduled:
    """A durable timer. Ids: `timeout:<step>:<attempt>`, `retry:<step>:<attempt>`
    (fires to start that attempt), `execution-timeout`; `wait:<step>` is armed
    by StepWaiting itself."""

    timer_id: str
    fire_at: int  # epoch ms


@dataclass(frozen=True)
class TimerFired:
    timer_id: str


@dataclass(frozen=True)
class WorkflowCompleted:
    output: Any


@dataclass(frozen=True)
class WorkflowFailed:
    error: str
    step: str | None = None


@dataclass(frozen=True)
class WorkflowCancelled:
    reason: str
    requested_by: str | None = None


@dataclass(frozen=True)
class CommandRejected:
    """A command that could not apply to this execution, kept for the audit."""

    command: str
    reason: str
    requested_by: str | None = None


@dataclass(frozen=True)
class StepWaiting:
    """A wait_for_event step opened, for an external event or for a signal.

    `filter` is already resolved against the execution's state; a non-null
    `timeout_at` arms the timer `wait:<step>`.
    """

    step: str
    event_type: str | None
    signal: str | None
    filter: Any
    timeout_at: int | None = None


@dataclass(frozen=True)
class SignalReceived:
    """A named signal reached the execution; kept until a wait for it consumes it."""

    name: str
    data: Any = None
    requested_by: str | None = None


@dataclass(frozen=True)
class WaitSatisfied:
    """A waiting step got its event or signal; StepCompleted follows."""

    step: str
    kind: str  # event | signal
    name: str  # event type or signal name
    event_id: str | None
    data: Any
    occurred_at: int | None = None
    source: str | None = None


@dataclass(frozen=True)
class CompensationStarted:
    """The execution is ending and enters `compensating`.

    `trigger` says how it ends once compensation is done (failed or
    cancelled); `workflow` names a compensation workflow to start instead of
    running `spec.compensation.steps`.
    """

    trigger: str  # failed | cancelled
    error: str
    step: str | None = None
    workflow: str | None = None
    requested_by: str | None = None


@dataclass(frozen=True)
class CompensationFinished:
    outcome: str  # completed | failed
    error: str | None = None


@dataclass(frozen=True)
class ChildExecutionRequested:
    """This execution started another one; the decider sent its StartWorkflow."""

    child_execution_id: str
    workflow_name: str
    workflow_version: str | None
    input: Any
    relation: str  # compensation | subworkflow
    step: str | None = None  # the `workflow` step that waits for the child (relation subworkflow)


@dataclass(frozen=True)
class StepCancelled:
    """The step was withdrawn before it ended: by a CancelStep command, a signal named
    in its `cancel_on_signal`, a first-of join that no longer needs it, or the
    cancel of the block around it. Results of its attempts are ignored from now on."""

    step: str
    reason: str
    requested_by: str | None = None


@dataclass(frozen=True)
class BranchChosen:
    """A switch step chose the case that runs (`default` when no case held)."""

    step: str
    case: str


@dataclass(frozen=True)
class ItemsResolved:
    """A for_each step resolved the list it runs over, once, when it started."""

    step: str
    items: Any  # a JSON list


@dataclass(frozen=True)
class IterationStarted:
    """Iteration `index` of a loop, or item `index` of a for_each, began.

    Its steps are recorded as `<step>[<index>].<inner step>`."""

    step: str
    index: int


@dataclass(frozen=True)
class IterationFinished:
    """Iteration or item `index` ended; its steps' states are folded into `output`."""

    step: str
    index: int
    outcome: str  # completed | failed | cancelled
    output: Any = None
    error: str | None = None


@dataclass(frozen=True)
class ExecutionPaused:
    """Status `paused`: no new step starts; calls in flight finish, timers keep their deadlines."""

    reason: str
    requested_by: str | None = None


@dataclass(frozen=True)
class ExecutionResumed:
    reason: str
    requested_by: str | None = None


@dataclass(frozen=True)
class ExecutionRetried:
    """A failed execution runs again from `steps`, reset to pending (a composite's
    inner steps are dropped with it); completed steps keep their outputs."""

    steps: tuple[str, ...]
    input: Any = None  # the replacement input; None: the recorded one is kept
    reason: str = "retried"
    requested_by: str | None = None


Event = Union[
    WorkflowStarted,
    WorkflowStartRejected,
    StepScheduled,
    StepCompleted,
    StepAttemptFailed,
    StepFailed,
    StepSkipped,
    TimerScheduled,
    TimerFired,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCancelled,
    CommandRejected,
    StepWaiting,
    SignalReceived,
    WaitSatisfied,
    CompensationStarted,
    CompensationFinished,
    ChildExecutionRequested,
    StepCancelled,
    BranchChosen,
    ItemsResolved,
    IterationStarted,
    IterationFinished,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionRetried,
]


@dataclass(frozen=True)
class RecordedEvent:
    execution_id: str
    sequence: int  # 1, 2, 3, ... per execution, never reused
    recorded_at: int  # epoch ms: the `now` of the decision
    cause: str  # e.g. "command:StartWorkflow", "result:create_user#2", "timer:retry:x:1"
    event: Event
