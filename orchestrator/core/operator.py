"""What operators do to one execution: retry it, pause and resume it, skip a step.

Each is a command on `wf.commands`, decided here like any other input, so it
is recorded (with who asked) and replays exactly. A command that does not
apply becomes a `CommandRejected` naming why.

- Retry: a failed execution runs again from the steps whose failure ended
  it (and the steps that ending abandoned); completed steps keep their
  recorded outputs and are not called again. A switch, loop, for_each or
  workflow step that failed reruns whole. New attempts keep counting up
  (late results of old attempts stay stale) and get a fresh retry budget
  and a new idempotency key, so a service that remembered the failed
  request does not answer the rerun from its cache.
- Pause: status `paused`: no step starts (a retry whose backoff ends waits
  for the resume); calls in flight finish, waits keep listening and every
  timer keeps its deadline. Cancel still works; a step that fails for good
  still ends the execution.
- Skip: a step that has not ended ends `skipped` with the given output,
  which its dependents see as `steps.<name>.output`.
"""

from __future__ import annotations

from typing import Any, Callable

from .decision import Decision
from .definition import WorkflowDefinition
from .events import CommandRejected, ExecutionPaused, ExecutionResumed, ExecutionRetried, StepSkipped, TimerScheduled
from .evolve import EXECUTION_TIMEOUT_TIMER, REJECTED_PREFIX, retry_timer_id
from .io_schemas import input_violations
from .keys import frames, is_inner, leaf, prefix_of
from .messages import PauseExecution, ResumeExecution, RetryExecution, SkipStep
from .state import STEP_DONE, ExecutionState
from .steps import schedule_attempt

__all__ = ["retry", "pause", "resume", "skip", "held_retry"]


def _reject(d: Decision, command: Any, reason: str) -> bool:
    d.emit(CommandRejected(type(command).__name__, reason, command.requested_by))
    return False


def _not_running_reason(state: ExecutionState) -> str:
    return "no such execution" if not state.started else f"execution is {state.status}"


def retry(d: Decision, definition: WorkflowDefinition | None, cmd: RetryExecution,
          unseal: Callable[[str], Any] | None) -> bool:
    """Record the retry; True when the execution runs again (the caller moves it on)."""
    state = d.state
    if state.status != "failed":
        return _reject(d, cmd, f"{_not_running_reason(state)}; only a failed execution can be retried")
    if definition is None or (state.error or "").startswith(REJECTED_PREFIX):
        return _reject(d, cmd, "its start was rejected, so nothing ran: start a new execution")
    undone = _undone_by_compensation(state, definition)
    if undone:
        return _reject(d, cmd, f"compensation undid its completed steps ({undone}): there is nothing "
                               "to resume from; start a new execution")
    if cmd.input is not None:
        violations = input_violations(definition, cmd.input, unseal)
        if violations:
            return _reject(d, cmd, "the new input is invalid: " + "; ".join(violations))
    rerun = _steps_to_rerun(state, definition)
    d.emit(ExecutionRetried(tuple(rerun), cmd.input, cmd.reason, cmd.requested_by))
    limit = definition.spec.config.execution_timeout_ms
    if limit is not None:  # the whole-execution limit counts again from the retry
        d.emit(TimerScheduled(EXECUTION_TIMEOUT_TIMER, d.now + limit))
    return True


def _undone_by_compensation(state: ExecutionState, definition: WorkflowDefinition) -> str | None:
    c = state.compensation
    if c is None:
        return None
    if c.child_execution_id is not None:
        return f"compensation workflow {c.child_execution_id}"
    ran = [s.name for s in definition.compensation_steps if state.step(s.name).status == "completed"]
    return ", ".join(ran) or None


def _steps_to_rerun(state: ExecutionState, definition: WorkflowDefinition) -> list[str]:
    """Main steps whose failure ended the execution or that its ending abandoned, with
    the case steps of a failed switch; compensation steps that were skipped may run again."""
    keys = [key for key, step in state.steps.items()
            if not is_inner(key) and leaf(key) in definition.steps_by_name
            and step.status == "failed" and step.failure_action != "continue"]
    keys += [s.name for s in definition.compensation_steps if s.name in state.steps]
    return keys


def pause(d: Decision, cmd: PauseExecution) -> None:
    if d.state.status != "running":
        reason = "already paused" if d.state.status == "paused" else _not_running_reason(d.state)
        _reject(d, cmd, f"{reason}; only a running execution can be paused")
        return
    d.emit(ExecutionPaused(cmd.reason, cmd.requested_by))


def resume(d: Decision, definition: WorkflowDefinition | None, cmd: ResumeExecution) -> bool:
    """Record the resume and start the attempts whose backoff ended while paused."""
    if d.state.status != "paused" or definition is None:
        _reject(d, cmd, f"{_not_running_reason(d.state)}; only a paused execution can be resumed")
        return False
    d.emit(ExecutionResumed(cmd.reason, cmd.requested_by))
    d.advance_every_item = True
    for key, step in list(d.state.steps.items()):
        if step.status == "retrying" and retry_timer_id(key, step.attempt + 1) not in d.state.timers:
            schedule_attempt(d, definition, definition.all_steps_by_name[leaf(key)], step.attempt + 1, key)
    return True


def held_retry(state: ExecutionState) -> bool:
    """A retry whose backoff ends now waits for the resume."""
    return state.status == "paused"


def skip(d: Decision, definition: WorkflowDefinition | None, cmd: SkipStep) -> bool:
    """Record the skip; True when the execution may move on."""
    state = d.state
    if state.status not in ("running", "paused") or definition is None:
        return _reject(d, cmd, f"step '{cmd.step}': {_not_running_reason(state)}")
    if leaf(cmd.step) not in definition.steps_by_name:
        return _reject(d, cmd, f"step '{cmd.step}': no such step in {definition.key}")
    if is_inner(cmd.step) and cmd.step not in state.steps and not _iteration_running(state, cmd.step):
        return _reject(d, cmd, f"step '{cmd.step}': its iteration is not running")
    current = state.step(cmd.step)
    if current.status in STEP_DONE:
        return _reject(d, cmd, f"step '{cmd.step}': step already {current.status}")
    if current.block is not None or current.child_execution_id is not None:
        return _reject(d, cmd, f"step '{cmd.step}': a running {definition.all_steps_by_name[leaf(cmd.step)].type} "
                               "step cannot be skipped; cancel it instead (`orchestrator cancel ID --step STEP`)")
    who = f" by {cmd.requested_by}" if cmd.requested_by else ""
    d.emit(StepSkipped(cmd.step, f"skipped{who}: {cmd.reason}", cmd.output, cmd.requested_by))
    return True


def _iteration_running(state: ExecutionState, key: str) -> bool:
    composite, index = frames(prefix_of(key))[-1]
    block = state.step(composite).block
    return block is not None and index in block.active
