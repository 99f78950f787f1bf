"""Starting a step: its condition, then a task for the executors or a wait."""

from __future__ import annotations

from .scope import scope_for
from .decision import Decision
from .definition import Step, WorkflowDefinition
from .events import StepScheduled, StepSkipped
from .templates import TemplateError, evaluate_condition
from .waits import open_wait

__all__ = ["begin_step", "schedule_attempt"]


def begin_step(d: Decision, definition: WorkflowDefinition, step: Step) -> str | None:
    """Skip, schedule or open the step; an error message when it cannot start
    (its condition or wait filter failed to evaluate): the caller fails it."""
    if step.condition is not None:
        scope = scope_for(d.state, definition)
        try:
            run = evaluate_condition(step.condition, scope, where=f"step '{step.name}': condition")
        except TemplateError as exc:
            return str(exc)
        if not run:
            d.emit(StepSkipped(step.name, f"condition is false: {step.condition}"))
            return None
    if step.type == "wait_for_event":
        return open_wait(d, definition, step)
    schedule_attempt(d, definition, step, d.state.step(step.name).attempt + 1)
    return None


def schedule_attempt(d: Decision, definition: WorkflowDefinition, step: Step, attempt: int) -> None:
    d.emit(StepScheduled(step.name, attempt, d.now + definition.attempt_timeout_ms(step)))
