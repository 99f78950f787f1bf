"""The tasks that follow from recorded events: what executors must perform."""

from __future__ import annotations

from typing import Any, Iterable

from .scope import scope_for
from .definition import WorkflowDefinition
from .events import RecordedEvent, StepScheduled
from .messages import ExecuteStep
from .state import ExecutionState

__all__ = ["tasks_for", "task_for", "idempotency_key"]


def idempotency_key(execution_id: str, step: str) -> str:
    return f"{execution_id}/{step}"


def task_for(state: ExecutionState, definition: WorkflowDefinition, scheduled: StepScheduled, now: int,
             context: dict[str, Any] | None = None) -> ExecuteStep:
    step = definition.all_steps_by_name[scheduled.step]
    return ExecuteStep(
        execution_id=state.execution_id,
        workflow_name=state.workflow_name,
        workflow_version=state.workflow_version,
        step_name=step.name,
        step_type=step.type,
        attempt=scheduled.attempt,
        idempotency_key=idempotency_key(state.execution_id, step.name),
        step=definition.steps_json[step.name],
        context=context if context is not None else scope_for(state, definition),
        deadline_at=scheduled.deadline_at,
        timeout_ms=max(scheduled.deadline_at - now, 0),
    )


def tasks_for(state: ExecutionState, definition: WorkflowDefinition | None,
              recorded: Iterable[RecordedEvent]) -> list[ExecuteStep]:
    """One task per StepScheduled among `recorded`; `state` is the state after them."""
    scheduled = [r for r in recorded if isinstance(r.event, StepScheduled)]
    if definition is None or not scheduled:
        return []
    # One scope serves every task of this decision (parallel steps share it).
    context = scope_for(state, definition)
    return [
        task_for(state, definition, r.event, r.recorded_at, context)
        for r in scheduled
        if r.event.step in definition.all_steps_by_name
    ]
