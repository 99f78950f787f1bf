"""The tasks that follow from recorded events: what executors must perform."""

from __future__ import annotations

from typing import Any, Iterable

from .keys import leaf, prefix_of
from .scope import instance_scope, scope_for
from .task_context import context_for
from .definition import WorkflowDefinition
from .events import RecordedEvent, StepScheduled
from .messages import ExecuteStep
from .state import ExecutionState

__all__ = ["tasks_for", "task_for", "idempotency_key"]


def idempotency_key(execution_id: str, step: str, attempt_base: int = 0) -> str:
    """Stable across the retries of one run of the step; a run an operator's retry
    started gets its own key, so a service does not answer it from its cache."""
    key = f"{execution_id}/{step}"
    return f"{key}/rerun-{attempt_base}" if attempt_base else key


def task_for(state: ExecutionState, definition: WorkflowDefinition, scheduled: StepScheduled, now: int,
             context: dict[str, Any] | None = None) -> ExecuteStep:
    step = definition.all_steps_by_name[leaf(scheduled.step)]
    return ExecuteStep(
        execution_id=state.execution_id,
        workflow_name=state.workflow_name,
        workflow_version=state.workflow_version,
        step_name=scheduled.step,
        step_type=step.type,
        attempt=scheduled.attempt,
        idempotency_key=idempotency_key(state.execution_id, scheduled.step, state.step(scheduled.step).attempt_base),
        step=definition.steps_json[step.name],
        context=context_for(step, definition.steps_json[step.name],
                            context if context is not None else instance_scope(state, definition,
                                                                              prefix_of(scheduled.step))),
        deadline_at=scheduled.deadline_at,
        timeout_ms=max(scheduled.deadline_at - now, 0),
    )


def tasks_for(state: ExecutionState, definition: WorkflowDefinition | None,
              recorded: Iterable[RecordedEvent]) -> list[ExecuteStep]:
    """One task per StepScheduled among `recorded`; `state` is the state after them."""
    scheduled = [r for r in recorded if isinstance(r.event, StepScheduled)]
    if definition is None or not scheduled:
        return []
    # One scope serves every task of this decision in the same block (parallel
    # steps share it); each loop iteration or for_each item adds its own layer.
    base = scope_for(state, definition)
    contexts: dict[str, dict] = {}
    tasks = []
    for r in scheduled:
        if leaf(r.event.step) not in definition.all_steps_by_name:
            continue
        prefix = prefix_of(r.event.step)
        if prefix not in contexts:
            contexts[prefix] = instance_scope(state, definition, prefix, base)
        tasks.append(task_for(state, definition, r.event, r.recorded_at, contexts[prefix]))
    return tasks
