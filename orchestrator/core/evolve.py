"""evolve(state, recorded event) -> state: the only way state changes.

Live decisions and replays both run these appliers, so they cannot drift.
Appliers never look at the definition: a history replays on its own.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from .events import (
    BranchChosen,
    ItemsResolved,
    IterationFinished,
    IterationStarted,
    StepCancelled,
    ChildExecutionRequested,
    CommandRejected,
    CompensationFinished,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionRetried,
    CompensationStarted,
    SignalReceived,
    StepWaiting,
    WaitSatisfied,
    RecordedEvent,
    StepAttemptFailed,
    StepCompleted,
    StepFailed,
    StepScheduled,
    StepSkipped,
    TimerFired,
    TimerScheduled,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowStartRejected,
)
from .state import Block, Compensation, ExecutionState, StepState, Wait

__all__ = ["evolve", "fold", "initial_state", "APPLIERS", "attempt_timer_id", "retry_timer_id", "wait_timer_id",
           "EXECUTION_TIMEOUT_TIMER", "REJECTED_PREFIX"]

EXECUTION_TIMEOUT_TIMER = "execution-timeout"
REJECTED_PREFIX = "rejected: "  # the error of an execution whose start was rejected


def replace(value: Any, **changes: Any) -> Any:
    """`dataclasses.replace` for our frozen state values, minus its per-call
    re-validation of every field (a fifth of the decider's CPU)."""
    copy = object.__new__(type(value))
    copy.__dict__.update(value.__dict__)
    copy.__dict__.update(changes)
    return copy


def initial_state(execution_id: str) -> ExecutionState:
    return ExecutionState(execution_id=execution_id)


def attempt_timer_id(step: str, attempt: int) -> str:
    return f"timeout:{step}:{attempt}"


def retry_timer_id(step: str, attempt: int) -> str:
    return f"retry:{step}:{attempt}"


def wait_timer_id(step: str) -> str:
    return f"wait:{step}"


def _frozen(mapping: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(mapping)


def _with_step(state: ExecutionState, name: str, step: StepState, **changes: Any) -> ExecutionState:
    return replace(state, steps=_frozen({**state.steps, name: step}), **changes)


def _without_timer(timers: Mapping[str, int], timer_id: str) -> Mapping[str, int]:
    if timer_id not in timers:
        return timers
    return _frozen({k: v for k, v in timers.items() if k != timer_id})


def _started(s: ExecutionState, e: WorkflowStarted, r: RecordedEvent) -> ExecutionState:
    return replace(
        s,
        status="running",
        workflow_name=e.workflow_name,
        workflow_version=e.workflow_version,
        input=e.input,
        requested_by=e.requested_by,
        started_at=r.recorded_at,
        parent_execution_id=e.parent_execution_id,
        parent_relation=e.parent_relation,
    )


def _rejected(s: ExecutionState, e: WorkflowStartRejected, r: RecordedEvent) -> ExecutionState:
    return replace(
        s,
        status="failed",
        workflow_name=e.workflow_name,
        workflow_version=e.workflow_version or "",
        input=e.input,
        requested_by=e.requested_by,
        error=REJECTED_PREFIX + "; ".join(e.violations),
        started_at=r.recorded_at,
        finished_at=r.recorded_at,
        parent_execution_id=e.parent_execution_id,
        parent_relation=e.parent_relation,
    )


def _scheduled(s: ExecutionState, e: StepScheduled, r: RecordedEvent) -> ExecutionState:
    step = s.step(e.step)
    started = step.started_at if step.started_at is not None else r.recorded_at
    timers = _without_timer(s.timers, retry_timer_id(e.step, e.attempt))
    timers = _frozen({**timers, attempt_timer_id(e.step, e.attempt): e.deadline_at})
    return _with_step(s, e.step, replace(step, status="running", attempt=e.attempt, started_at=started), timers=timers)


def _completed(s: ExecutionState, e: StepCompleted, r: RecordedEvent) -> ExecutionState:
    step = replace(
        s.step(e.step),
        status="completed",
        output=e.output,
        error=None,
        finished_at=r.recorded_at,
        finished_seq=r.sequence,
        wait=None,
    )
    timers = _without_timer(_without_timer(s.timers, attempt_timer_id(e.step, e.attempt)), wait_timer_id(e.step))
    return _with_step(s, e.step, step, timers=timers)


def _attempt_failed(s: ExecutionState, e: StepAttemptFailed, r: RecordedEvent) -> ExecutionState:
    step = s.step(e.step)
    step = replace(step, status="retrying" if e.will_retry else step.status, error=e.error)
    return _with_step(s, e.step, step, timers=_without_timer(s.timers, attempt_timer_id(e.step, e.attempt)))


def _step_failed(s: ExecutionState, e: StepFailed, r: RecordedEvent) -> ExecutionState:
    step = replace(
        s.step(e.step),
        status="failed",
        attempt=max(e.attempts, s.step(e.step).attempt),
        error=e.error,
        finished_at=r.recorded_at,
        finished_seq=r.sequence,
        wait=None,
        failure_action=e.action,
    )
    return _with_step(s, e.step, step, timers=_without_step_timers(s.timers, e.step, step.attempt))


def _without_step_timers(timers: Mapping[str, int], key: str, attempts: int) -> Mapping[str, int]:
    timers = _without_timer(timers, wait_timer_id(key))
    for attempt in range(1, attempts + 2):
        timers = _without_timer(_without_timer(timers, attempt_timer_id(key, attempt)), retry_timer_id(key, attempt))
    return timers


def _step_cancelled(s: ExecutionState, e: StepCancelled, r: RecordedEvent) -> ExecutionState:
    current = s.step(e.step)
    step = replace(current, status="cancelled", error=e.reason, finished_at=r.recorded_at,
                   finished_seq=r.sequence, wait=None)
    return _with_step(s, e.step, step, timers=_without_step_timers(s.timers, e.step, current.attempt))


def _first_attempt(step: StepState) -> int:
    """A step that runs once (a wait, a composite, a child) counts 1, or one more
    than it had before an operator's retry (so its new run has a new key)."""
    return step.attempt_base + 1


def _block_started(s: ExecutionState, key: str, block: Block, r: RecordedEvent) -> ExecutionState:
    step = s.step(key)
    return _with_step(s, key, replace(step, status="running", attempt=_first_attempt(step), started_at=r.recorded_at,
                                      block=block))


def _branch_chosen(s: ExecutionState, e: BranchChosen, r: RecordedEvent) -> ExecutionState:
    return _block_started(s, e.step, Block("switch", case=e.case), r)


def _items_resolved(s: ExecutionState, e: ItemsResolved, r: RecordedEvent) -> ExecutionState:
    return _block_started(s, e.step, Block("for_each", items=tuple(e.items)), r)


def _iteration_started(s: ExecutionState, e: IterationStarted, r: RecordedEvent) -> ExecutionState:
    step = s.step(e.step)
    if step.block is None:  # a loop's first iteration starts the loop
        s = _block_started(s, e.step, Block("loop"), r)
        step = s.step(e.step)
    assert step.block is not None
    block = replace(step.block, started=max(step.block.started, e.index + 1), active=step.block.active | {e.index})
    return _with_step(s, e.step, replace(step, block=block))


def _iteration_finished(s: ExecutionState, e: IterationFinished, r: RecordedEvent) -> ExecutionState:
    step = s.step(e.step)
    block = step.block
    assert block is not None
    changes: dict[str, Any] = {"active": block.active - {e.index}}
    if e.outcome == "completed":
        changes["outputs"] = block.outputs.with_output(e.index, e.output)
    elif e.outcome == "failed":
        changes["failed"] = _frozen({**block.failed, e.index: e.error or ""})
    # The iteration's steps are folded into its output: drop their states.
    prefix = f"{e.step}[{e.index}]."
    steps = {k: v for k, v in s.steps.items() if not k.startswith(prefix)}
    steps[e.step] = replace(step, block=replace(block, **changes))
    return replace(s, steps=_frozen(steps))


def _skipped(s: ExecutionState, e: StepSkipped, r: RecordedEvent) -> ExecutionState:
    current = s.step(e.step)
    step = replace(current, status="skipped", output=e.output, finished_at=r.recorded_at, finished_seq=r.sequence,
                   wait=None)
    return _with_step(s, e.step, step, timers=_without_step_timers(s.timers, e.step, current.attempt))


def _paused(s: ExecutionState, e: ExecutionPaused, r: RecordedEvent) -> ExecutionState:
    return replace(s, status="paused")


def _resumed(s: ExecutionState, e: ExecutionResumed, r: RecordedEvent) -> ExecutionState:
    return replace(s, status="running")


def _retried(s: ExecutionState, e: ExecutionRetried, r: RecordedEvent) -> ExecutionState:
    """The listed steps start over (their inner steps dropped); attempts keep counting."""
    inner = tuple(f"{name}[" for name in e.steps)
    steps = {k: v for k, v in s.steps.items() if not k.startswith(inner)}
    for name in e.steps:
        old = s.step(name)
        steps[name] = StepState(attempt=old.attempt, attempt_base=old.attempt)
    return replace(s, status="running", steps=_frozen(steps), error=None, failed_step=None, output=None,
                   finished_at=None, compensation=None, input=s.input if e.input is None else e.input)


def _timer_scheduled(s: ExecutionState, e: TimerScheduled, r: RecordedEvent) -> ExecutionState:
    return replace(s, timers=_frozen({**s.timers, e.timer_id: e.fire_at}))


def _timer_fired(s: ExecutionState, e: TimerFired, r: RecordedEvent) -> ExecutionState:
    return replace(s, timers=_without_timer(s.timers, e.timer_id))


def _finished(status: str) -> Callable[[ExecutionState, Any, RecordedEvent], ExecutionState]:
    def apply(s: ExecutionState, e: Any, r: RecordedEvent) -> ExecutionState:
        changes: dict[str, Any] = {"status": status, "finished_at": r.recorded_at, "timers": _frozen({})}
        if isinstance(e, WorkflowCompleted):
            changes["output"] = e.output
        elif isinstance(e, WorkflowFailed):
            changes.update(error=e.error, failed_step=e.step)
        elif isinstance(e, WorkflowCancelled):
            changes["error"] = e.reason
        return replace(s, **changes)

    return apply


def _unchanged(s: ExecutionState, e: Any, r: RecordedEvent) -> ExecutionState:
    return s


def _waiting(s: ExecutionState, e: StepWaiting, r: RecordedEvent) -> ExecutionState:
    step = replace(s.step(e.step), status="waiting", attempt=_first_attempt(s.step(e.step)), started_at=r.recorded_at,
                   wait=Wait(e.event_type, e.signal, e.filter, e.timeout_at))
    timers = s.timers
    if e.timeout_at is not None:
        timers = _frozen({**timers, wait_timer_id(e.step): e.timeout_at})
    return _with_step(s, e.step, step, timers=timers)


def _signal_received(s: ExecutionState, e: SignalReceived, r: RecordedEvent) -> ExecutionState:
    return replace(s, pending_signals=(*s.pending_signals, (e.name, e.data)))


def _wait_satisfied(s: ExecutionState, e: WaitSatisfied, r: RecordedEvent) -> ExecutionState:
    if e.kind == "signal":
        signals = list(s.pending_signals)
        index = next((i for i, (name, _) in enumerate(signals) if name == e.name), None)
        if index is not None:
            del signals[index]
        return replace(s, pending_signals=tuple(signals), timers=_without_timer(s.timers, wait_timer_id(e.step)))
    received = s.received_events | {e.event_id} if e.event_id else s.received_events
    return replace(s, received_events=received, timers=_without_timer(s.timers, wait_timer_id(e.step)))


def _compensation_started(s: ExecutionState, e: CompensationStarted, r: RecordedEvent) -> ExecutionState:
    # The execution's own time limit stops here: compensation steps have theirs.
    return replace(s, status="compensating", timers=_without_timer(s.timers, EXECUTION_TIMEOUT_TIMER),
                   compensation=Compensation(e.trigger, e.error, e.step, e.workflow, e.requested_by))


def _child_requested(s: ExecutionState, e: ChildExecutionRequested, r: RecordedEvent) -> ExecutionState:
    if e.step is not None:
        step = replace(s.step(e.step), status="running", attempt=_first_attempt(s.step(e.step)),
                       started_at=r.recorded_at, child_execution_id=e.child_execution_id)
        return _with_step(s, e.step, step)
    if e.relation == "compensation" and s.compensation is not None:
        return replace(s, compensation=replace(s.compensation, child_execution_id=e.child_execution_id))
    return s


def _compensation_finished(s: ExecutionState, e: CompensationFinished, r: RecordedEvent) -> ExecutionState:
    if s.compensation is None:
        return s
    return replace(s, compensation=replace(s.compensation, outcome=e.outcome, outcome_error=e.error))


APPLIERS: dict[type, Callable[[ExecutionState, Any, RecordedEvent], ExecutionState]] = {
    WorkflowStarted: _started,
    WorkflowStartRejected: _rejected,
    StepScheduled: _scheduled,
    StepCompleted: _completed,
    StepAttemptFailed: _attempt_failed,
    StepFailed: _step_failed,
    StepSkipped: _skipped,
    TimerScheduled: _timer_scheduled,
    TimerFired: _timer_fired,
    WorkflowCompleted: _finished("completed"),
    WorkflowFailed: _finished("failed"),
    WorkflowCancelled: _finished("cancelled"),
    CommandRejected: _unchanged,
    StepWaiting: _waiting,
    SignalReceived: _signal_received,
    WaitSatisfied: _wait_satisfied,
    CompensationStarted: _compensation_started,
    CompensationFinished: _compensation_finished,
    ChildExecutionRequested: _child_requested,
    StepCancelled: _step_cancelled,
    BranchChosen: _branch_chosen,
    ItemsResolved: _items_resolved,
    IterationStarted: _iteration_started,
    IterationFinished: _iteration_finished,
    ExecutionPaused: _paused,
    ExecutionResumed: _resumed,
    ExecutionRetried: _retried,
}


def evolve(state: ExecutionState, recorded: RecordedEvent) -> ExecutionState:
    if recorded.sequence != state.sequence + 1:
        raise ValueError(
            f"execution {state.execution_id}: event sequence {recorded.sequence} "
            f"does not follow {state.sequence}"
        )
    applier = APPLIERS[type(recorded.event)]
    return replace(applier(state, recorded.event, recorded), sequence=recorded.sequence)


def fold(execution_id: str, history: Iterable[RecordedEvent]) -> ExecutionState:
    state = initial_state(execution_id)
    for recorded in history:
        state = evolve(state, recorded)
    return state
