"""decide(state, input, definition, now) -> recorded events.

Each emitted event is applied with `evolve` at once (see `Decision`), so
later decisions in the same input see its effect, exactly as a replay will.
Nothing here reads a clock or a random source: `now` and `cause` arrive as
arguments. How executions end without completing (failure, cancel,
compensation) is in `ending`; waits for events and signals in `waits`.
"""

from __future__ import annotations

from typing import Any, Callable

from .blocks import advance_block, cancel_step, reject_cancel
from .decision import Decision, is_current_attempt, require
from .definition import OnTimeout, Step, WorkflowDefinition
from .durations import format_duration_ms
from .ending import advance_compensation, cancel, child_ended, end_failed, fail_step
from .events import (
    IterationFinished,
    StepCancelled,
    CommandRejected,
    RecordedEvent,
    SignalReceived,
    StepAttemptFailed,
    StepCompleted,
    StepFailed,
    StepSkipped,
    TimerFired,
    TimerScheduled,
    WorkflowCompleted,
    WorkflowStarted,
    WorkflowStartRejected,
)
from .evolve import EXECUTION_TIMEOUT_TIMER, retry_timer_id
from .io_schemas import OutputError, input_violations, workflow_output
from .keys import is_inner, leaf
from . import operator
from .messages import (
    CancelStep,
    CancelWorkflow,
    ChildExecutionEnded,
    DeliverEvent,
    FireTimer,
    Input,
    PauseExecution,
    ResumeExecution,
    RetryExecution,
    SignalWorkflow,
    SkipStep,
    StartWorkflow,
    TaskFailed,
    TaskSucceeded,
)
from .retry import retry_delay_ms
from .sensitive import redact
from .state import STEP_ACTIVE, ExecutionState
from .steps import schedule_attempt
from .waits import accepts_event, satisfy, waiting_for_signal

__all__ = ["decide", "handle", "Decision", "EXECUTION_TIMEOUT_TIMER"]

_STEP_ENDINGS = (StepCompleted, StepFailed, StepSkipped, StepCancelled, IterationFinished)
# Inputs that only matter to an execution that is under way.
_PROGRESS = (TaskSucceeded, TaskFailed, FireTimer, DeliverEvent, ChildExecutionEnded)


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
    if isinstance(command, _PROGRESS) and (not state.started or state.terminal):
        return state, []  # late news about an execution that has ended (or never began)
    match command:
        case StartWorkflow():
            _start(d, command, definition, unseal)
        case TaskSucceeded():
            if is_current_attempt(state, command.step, command.attempt):
                d.emit(StepCompleted(command.step, command.attempt, command.output))
                _progress(d, require(definition, state))
        case TaskFailed():
            if is_current_attempt(state, command.step, command.attempt):
                _attempt_failed(d, require(definition, state), command)
                _progress(d, require(definition, state))
        case FireTimer():
            if command.timer_id in state.timers:
                _timer(d, require(definition, state), command.timer_id)
                _progress(d, require(definition, state))
        case DeliverEvent():
            if accepts_event(state.steps.get(command.step), command, state.received_events):
                _satisfy(d, require(definition, state), command.step, "event", command.event_type,
                         command.event_id, command.data, command.occurred_at, command.source)
        case SignalWorkflow():
            _signal(d, definition, command)
        case ChildExecutionEnded():
            child_ended(d, definition, command)
            if definition is not None:
                _progress(d, definition)
        case CancelStep():
            _cancel_step(d, definition, command)
        case CancelWorkflow():
            cancel(d, definition if state.started else None, command)
            if definition is not None and d.state.status == "compensating":
                _progress(d, definition)
        case RetryExecution():
            if operator.retry(d, definition, command, unseal):
                _progress(d, require(definition, d.state))
        case PauseExecution():
            operator.pause(d, command)
        case ResumeExecution():
            if operator.resume(d, definition, command):
                _progress(d, require(definition, d.state))
        case SkipStep():
            if operator.skip(d, definition, command):
                _progress(d, require(definition, d.state))
        case _:
            raise TypeError(f"not an input of the decider: {command!r}")
    return d.state, d.recorded


def _start(d: Decision, cmd: StartWorkflow, definition: WorkflowDefinition | None,
           unseal: Callable[[str], Any] | None) -> None:
    if d.state.started:
        if d.state.workflow_name != cmd.workflow_name:
            d.emit(CommandRejected("StartWorkflow", f"execution id already used by workflow "
                                   f"'{d.state.workflow_name}'", cmd.requested_by))
        return  # a repeated start of the same execution changes nothing
    parent = (cmd.parent_execution_id, cmd.parent_relation)
    if definition is None:
        version = f" version '{cmd.workflow_version}'" if cmd.workflow_version else ""
        d.emit(WorkflowStartRejected(cmd.workflow_name, cmd.workflow_version, redact(cmd.input),
                                     (f"unknown workflow '{cmd.workflow_name}'{version}",), cmd.requested_by, *parent))
        return
    violations = input_violations(definition, cmd.input, unseal)
    if violations:
        d.emit(WorkflowStartRejected(definition.name, definition.version, redact(cmd.input),
                                     tuple(violations), cmd.requested_by, *parent))
        return
    d.emit(WorkflowStarted(definition.name, definition.version, cmd.input, cmd.requested_by, *parent))
    limit = definition.spec.config.execution_timeout_ms
    if limit is not None:
        d.emit(TimerScheduled(EXECUTION_TIMEOUT_TIMER, d.now + limit))
    _progress(d, definition)


def _progress(d: Decision, definition: WorkflowDefinition) -> None:
    """Move the execution on until nothing more follows from what is recorded: another
    pass only when the last one ended a step (a skip, a signal already there, a failure
    that continues: it may release a step listed before it) or changed the status."""
    while True:
        status, before = d.state.status, len(d.recorded)
        if status == "running":
            _advance(d, definition)
        elif status == "compensating":
            advance_compensation(d, definition)
        if d.state.status == status and not any(
                isinstance(r.event, _STEP_ENDINGS) for r in d.recorded[before:]):
            return


def _advance(d: Decision, definition: WorkflowDefinition) -> None:
    """Start every step whose join is satisfied, move blocks on; complete when all are done."""
    def fail(step: Step, key: str, error: str) -> None:
        fail_step(d, definition, step, d.state.step(key).attempt, error, key=key)

    if advance_block(d, definition, definition.spec.steps, "", fail) == "completed" and d.state.status == "running":
        try:
            output = workflow_output(d.state, definition)
        except OutputError as exc:
            end_failed(d, definition, str(exc))
            return
        d.emit(WorkflowCompleted(output))


def _attempt_failed(d: Decision, definition: WorkflowDefinition, failed: TaskFailed, *,
                    error: str | None = None) -> None:
    step = definition.all_steps_by_name[leaf(failed.step)]
    policy = definition.retry_policy(step)
    # While compensating, only compensation steps get further attempts.
    retrying_allowed = d.state.status in ("running", "paused") or step.name not in definition.steps_by_name
    # Attempts count from the operator's latest retry of the step, if any.
    attempt = failed.attempt - d.state.step(failed.step).attempt_base
    will_retry = failed.transient and attempt < policy.max_attempts and retrying_allowed
    message = error or failed.error
    d.emit(StepAttemptFailed(failed.step, failed.attempt, message, failed.transient, will_retry,
                             failed.status_code, failed.breaker))
    if will_retry:
        delay = retry_delay_ms(policy, attempt, f"{d.state.execution_id}/{failed.step}")
        d.emit(TimerScheduled(retry_timer_id(failed.step, failed.attempt + 1), d.now + delay))
    else:
        fail_step(d, definition, step, failed.attempt, message, key=failed.step)


def _timer(d: Decision, definition: WorkflowDefinition, timer_id: str) -> None:
    d.emit(TimerFired(timer_id))
    kind, _, rest = timer_id.partition(":")
    if kind == "retry":
        name, _, attempt = rest.rpartition(":")
        if d.state.step(name).status == "retrying" and not operator.held_retry(d.state):
            schedule_attempt(d, definition, definition.all_steps_by_name[leaf(name)], int(attempt), name)
    elif kind == "timeout":
        name, _, attempt = rest.rpartition(":")
        if is_current_attempt(d.state, name, int(attempt)):
            limit = definition.attempt_timeout_ms(definition.all_steps_by_name[leaf(name)])
            timed_out = TaskFailed(d.state.execution_id, name, int(attempt), "", True, None, d.now, d.now)
            _attempt_failed(d, definition, timed_out, error=f"attempt timed out after {format_duration_ms(limit)}")
    elif kind == "wait":
        step = definition.all_steps_by_name[leaf(rest)]
        wait = d.state.step(rest).wait
        if d.state.step(rest).status != "waiting" or wait is None:
            return
        if step.type == "delay":
            d.emit(StepCompleted(rest, 1, {"woke_at": d.now}))
            return
        what = f"event '{wait.event_type}'" if wait.event_type else f"signal '{wait.signal}'"
        limit = definition.wait_timeout_ms(step) or 0
        fail_step(d, definition, step, 1, f"no {what} within {format_duration_ms(limit)}",
                  step.on_timeout or OnTimeout(), key=rest)
    elif timer_id == EXECUTION_TIMEOUT_TIMER:
        limit = definition.spec.config.execution_timeout_ms or 0
        end_failed(d, definition, f"execution timed out after {format_duration_ms(limit)}")


def _signal(d: Decision, definition: WorkflowDefinition | None, cmd: SignalWorkflow) -> None:
    state = d.state
    if not state.started or state.terminal:
        reason = "no such execution" if not state.started else f"execution already {state.status}"
        d.emit(CommandRejected("SignalWorkflow", f"signal '{cmd.name}': {reason}", cmd.requested_by))
        return
    d.emit(SignalReceived(cmd.name, cmd.data, cmd.requested_by))
    definition = require(definition, state)
    cancelled = [key for key, step in d.state.steps.items() if step.status in STEP_ACTIVE
                 and definition.all_steps_by_name[leaf(key)].cancel_on_signal == cmd.name]
    for key in cancelled:
        cancel_step(d, definition, key, f"signal '{cmd.name}'", cmd.requested_by)
    key = waiting_for_signal(definition, d.state.steps, cmd.name)
    if key is not None:
        _satisfy(d, definition, key, "signal", cmd.name, None, cmd.data)
    elif cancelled:
        _progress(d, definition)


def _cancel_step(d: Decision, definition: WorkflowDefinition | None, cmd: CancelStep) -> None:
    state = d.state
    if not state.started or state.terminal or state.status == "compensating":
        reason = "no such execution" if not state.started else f"execution already {state.status}"
        d.emit(CommandRejected("CancelStep", f"step '{cmd.step}': {reason}", cmd.requested_by))
        return
    definition = require(definition, state)
    if leaf(cmd.step) not in definition.steps_by_name:
        d.emit(CommandRejected("CancelStep", f"step '{cmd.step}': no such step in "
                               f"{definition.key}", cmd.requested_by))
    elif is_inner(cmd.step) and cmd.step not in state.steps:
        # An iteration's steps exist only while it runs: before, there is nothing to
        # cancel; after, its steps were folded into its output.
        d.emit(CommandRejected("CancelStep", f"step '{cmd.step}': its iteration is not running",
                               cmd.requested_by))
    elif not cancel_step(d, definition, cmd.step, cmd.reason, cmd.requested_by):
        reject_cancel(d, cmd.step, cmd.requested_by)
    _progress(d, definition)


def _satisfy(d: Decision, definition: WorkflowDefinition, key: str, kind: str, what: str,
             event_id: str | None, data: Any, occurred_at: int | None = None, source: str | None = None) -> None:
    step = definition.all_steps_by_name[leaf(key)]
    error = satisfy(d, definition, step, key, kind, what, event_id, data, occurred_at, source)
    if error is not None:
        fail_step(d, definition, step, 1, error, key=key)
    _progress(d, definition)
