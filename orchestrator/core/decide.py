"""decide(state, input, definition, now) -> recorded events.

Each emitted event is applied with `evolve` at once, so later decisions in
the same input see its effect, exactly as a replay will. Nothing here reads a
clock or a random source: `now` and `cause` arrive as arguments.
"""

from __future__ import annotations

from typing import Any, Callable

from .definition import Step, WorkflowDefinition
from .durations import format_duration_ms
from .events import (
    CommandRejected,
    Event,
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
from .evolve import evolve, retry_timer_id
from .io_schemas import OutputError, input_violations, workflow_output
from .messages import CancelWorkflow, FireTimer, Input, SignalWorkflow, StartWorkflow, TaskFailed, TaskSucceeded
from .retry import retry_delay_ms
from .sensitive import redact
from .state import STEP_DONE, ExecutionState
from .templates import TemplateError, evaluate_condition

__all__ = ["decide", "handle", "Decision", "EXECUTION_TIMEOUT_TIMER"]

EXECUTION_TIMEOUT_TIMER = "execution-timeout"


class Decision:
    """Collects the events of one input, evolving the state as it goes."""

    def __init__(self, state: ExecutionState, now: int, cause: str) -> None:
        self.state = state
        self.now = now
        self.cause = cause
        self.recorded: list[RecordedEvent] = []

    def emit(self, event: Event) -> None:
        recorded = RecordedEvent(self.state.execution_id, self.state.sequence + 1, self.now, self.cause, event)
        self.state = evolve(self.state, recorded)
        self.recorded.append(recorded)


def decide(
    state: ExecutionState,
    command: Input,
    definition: WorkflowDefinition | None,
    now: int,
    *,
    cause: str = "",
    unseal: Callable[[str], Any] | None = None,
) -> list[RecordedEvent]:
    """The events that `command` leads to; [] when it changes nothing.

    `definition` is the version the execution is pinned to (for a start: the
    one asked for, or None when no such version is registered). `unseal`
    reveals sealed input values for schema validation only.
    """
    return handle(state, command, definition, now, cause=cause, unseal=unseal)[1]


def handle(
    state: ExecutionState,
    command: Input,
    definition: WorkflowDefinition | None,
    now: int,
    *,
    cause: str = "",
    unseal: Callable[[str], Any] | None = None,
) -> tuple[ExecutionState, list[RecordedEvent]]:
    """`decide`, also returning the state after the events (already evolved)."""
    d = Decision(state, now, cause or f"command:{type(command).__name__}")
    match command:
        case StartWorkflow():
            _start(d, command, definition, unseal)
        case TaskSucceeded() | TaskFailed() | FireTimer() if not state.started or state.terminal:
            pass  # late news about an execution that has ended: nothing to do
        case TaskSucceeded():
            if _is_current_attempt(state, command.step, command.attempt):
                d.emit(StepCompleted(command.step, command.attempt, command.output))
                _advance(d, _require(definition, state))
        case TaskFailed():
            if _is_current_attempt(state, command.step, command.attempt):
                _attempt_failed(d, _require(definition, state), command.step, command.attempt,
                                command.error, command.transient, command.status_code)
        case FireTimer():
            if command.timer_id in state.timers:
                _timer(d, _require(definition, state), command.timer_id)
        case CancelWorkflow():
            _cancel(d, command)
        case SignalWorkflow():
            d.emit(CommandRejected("SignalWorkflow", f"no step is waiting for signal '{command.name}'",
                                   command.requested_by))
        case _:
            raise TypeError(f"not an input of the decider: {command!r}")
    return d.state, d.recorded


def _require(definition: WorkflowDefinition | None, state: ExecutionState) -> WorkflowDefinition:
    if definition is None:
        raise LookupError(f"definition {state.workflow_name}@{state.workflow_version} is not loaded")
    return definition


def _is_current_attempt(state: ExecutionState, step: str, attempt: int) -> bool:
    current = state.steps.get(step)
    return current is not None and current.status == "running" and current.attempt == attempt


def _start(d: Decision, cmd: StartWorkflow, definition: WorkflowDefinition | None,
           unseal: Callable[[str], Any] | None) -> None:
    if d.state.started:
        if d.state.workflow_name != cmd.workflow_name:
            d.emit(CommandRejected("StartWorkflow", f"execution id already used by workflow "
                                   f"'{d.state.workflow_name}'", cmd.requested_by))
        return  # a repeated start of the same execution changes nothing
    if definition is None:
        version = f" version '{cmd.workflow_version}'" if cmd.workflow_version else ""
        d.emit(WorkflowStartRejected(cmd.workflow_name, cmd.workflow_version, redact(cmd.input),
                                     (f"unknown workflow '{cmd.workflow_name}'{version}",), cmd.requested_by))
        return
    violations = input_violations(definition, cmd.input, unseal)
    if violations:
        d.emit(WorkflowStartRejected(definition.name, definition.version, redact(cmd.input),
                                     tuple(violations), cmd.requested_by))
        return
    d.emit(WorkflowStarted(definition.name, definition.version, cmd.input, cmd.requested_by))
    limit = definition.spec.config.execution_timeout_ms
    if limit is not None:
        d.emit(TimerScheduled(EXECUTION_TIMEOUT_TIMER, d.now + limit))
    _advance(d, definition)


def _advance(d: Decision, definition: WorkflowDefinition) -> None:
    """Start every step whose dependencies are done; finish when all are."""
    progressed = True
    while progressed and d.state.status == "running":
        progressed = False
        for step in definition.spec.steps:
            if d.state.step(step.name).status != "pending":
                continue
            if all(d.state.step(dep).status in STEP_DONE for dep in definition.dependencies[step.name]):
                _begin(d, definition, step)
                progressed = True  # a skipped step may release others at once
    if d.state.status == "running" and all(
        d.state.step(s.name).status in STEP_DONE for s in definition.spec.steps
    ):
        _complete(d, definition)


def _begin(d: Decision, definition: WorkflowDefinition, step: Step) -> None:
    if step.condition is not None:
        scope = d.state.template_scope(tuple(definition.steps_by_name))
        try:
            run = evaluate_condition(step.condition, scope, where=f"step '{step.name}': condition")
        except TemplateError as exc:
            _step_failed(d, definition, step, d.state.step(step.name).attempt, str(exc))
            return
        if not run:
            d.emit(StepSkipped(step.name, f"condition is false: {step.condition}"))
            return
    _schedule(d, definition, step, d.state.step(step.name).attempt + 1)


def _schedule(d: Decision, definition: WorkflowDefinition, step: Step, attempt: int) -> None:
    d.emit(StepScheduled(step.name, attempt, d.now + definition.attempt_timeout_ms(step)))


def _attempt_failed(d: Decision, definition: WorkflowDefinition, name: str, attempt: int,
                    error: str, transient: bool, status_code: int | None) -> None:
    step = definition.steps_by_name[name]
    policy = definition.retry_policy(step)
    will_retry = transient and attempt < policy.max_attempts
    d.emit(StepAttemptFailed(name, attempt, error, transient, will_retry, status_code))
    if will_retry:
        delay = retry_delay_ms(policy, attempt, f"{d.state.execution_id}/{name}")
        d.emit(TimerScheduled(retry_timer_id(name, attempt + 1), d.now + delay))
    else:
        _step_failed(d, definition, step, attempt, error)


def _step_failed(d: Decision, definition: WorkflowDefinition, step: Step, attempts: int, error: str) -> None:
    action = step.on_failure.action
    action = "terminate" if action == "retry" else action
    d.emit(StepFailed(step.name, attempts, error, action))
    if action == "continue":
        _advance(d, definition)
        return
    message = step.on_failure.message
    reason = f"{message}: {error}" if message else f"step '{step.name}' failed: {error}"
    d.emit(WorkflowFailed(reason, step.name))


def _timer(d: Decision, definition: WorkflowDefinition, timer_id: str) -> None:
    d.emit(TimerFired(timer_id))
    kind, _, rest = timer_id.partition(":")
    if kind == "retry":
        name, _, attempt = rest.rpartition(":")
        step = definition.steps_by_name[name]
        if d.state.step(name).status == "retrying":
            _schedule(d, definition, step, int(attempt))
    elif kind == "timeout":
        name, _, attempt = rest.rpartition(":")
        limit = definition.attempt_timeout_ms(definition.steps_by_name[name])
        if _is_current_attempt(d.state, name, int(attempt)):
            _attempt_failed(d, definition, name, int(attempt),
                            f"attempt timed out after {format_duration_ms(limit)}", True, None)
    elif timer_id == EXECUTION_TIMEOUT_TIMER:
        limit = definition.spec.config.execution_timeout_ms or 0
        d.emit(WorkflowFailed(f"execution timed out after {format_duration_ms(limit)}"))


def _cancel(d: Decision, cmd: CancelWorkflow) -> None:
    if not d.state.started:
        d.emit(CommandRejected("CancelWorkflow", "no such execution", cmd.requested_by))
    elif d.state.terminal:
        d.emit(CommandRejected("CancelWorkflow", f"execution already {d.state.status}", cmd.requested_by))
    else:
        d.emit(WorkflowCancelled(cmd.reason, cmd.requested_by))


def _complete(d: Decision, definition: WorkflowDefinition) -> None:
    try:
        output = workflow_output(d.state, definition)
    except OutputError as exc:
        d.emit(WorkflowFailed(str(exc)))
        return
    d.emit(WorkflowCompleted(output))
