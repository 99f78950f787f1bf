"""Starting a step: its condition, then what its type does first.

Calls and validations become tasks for the executors; a wait opens; a delay
arms its timer; a switch chooses its case; a loop starts its first iteration;
a for_each resolves its items; a workflow step asks for its child execution.
Steps are addressed by key (see `keys`): `charge`, or `pay_all[3].charge`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .decision import Decision
from .definition import (
    DelayConfig,
    ForEachConfig,
    LoopConfig,
    Step,
    SubWorkflowConfig,
    SwitchConfig,
    WorkflowDefinition,
)
from .events import (
    BranchChosen,
    ChildExecutionRequested,
    ItemsResolved,
    IterationStarted,
    StepCompleted,
    StepScheduled,
    StepSkipped,
    StepWaiting,
)
from .keys import child_execution_id, prefix_of
from .scope import instance_scope
from .templates import TemplateError, evaluate_condition, render_value
from .waits import open_wait

__all__ = ["begin_step", "schedule_attempt", "scope_at", "loop_continues"]


def scope_at(d: Decision, definition: WorkflowDefinition, key: str) -> dict[str, Any]:
    """The template scope of the step recorded under `key`."""
    return instance_scope(d.state, definition, prefix_of(key))


def begin_step(d: Decision, definition: WorkflowDefinition, step: Step, key: str | None = None) -> str | None:
    """Skip or start the step; an error message when it cannot start (a template
    failed to evaluate, a for_each over something that is not a list): the
    caller fails it."""
    key = key or step.name
    try:
        if step.condition is not None:
            scope = scope_at(d, definition, key)
            if not evaluate_condition(step.condition, scope, where=f"step '{step.name}': condition"):
                d.emit(StepSkipped(key, f"condition is false: {step.condition}"))
                return None
        config = step.config
        if step.type == "wait_for_event":
            return open_wait(d, definition, step, key)
        if isinstance(config, DelayConfig):
            d.emit(StepWaiting(key, None, None, {}, _wake_at(d, definition, step, key, config)))
        elif isinstance(config, SwitchConfig):
            d.emit(BranchChosen(key, _chosen_case(d, definition, step, key, config)))
        elif isinstance(config, LoopConfig):
            if loop_continues(d, definition, step, key, 0):
                d.emit(IterationStarted(key, 0))
            else:
                d.emit(StepCompleted(key, 1, None))
        elif isinstance(config, ForEachConfig):
            items = _items(d, definition, step, key, config)
            if isinstance(items, str):
                return items
            d.emit(ItemsResolved(key, items))
            if not items:
                d.emit(StepCompleted(key, 1, []))
        elif isinstance(config, SubWorkflowConfig):
            where = f"step '{step.name}': config.input"
            child_input = render_value(config.input, scope_at(d, definition, key), where=where)
            d.emit(ChildExecutionRequested(child_execution_id(d.state.execution_id, key, d.state.step(key).attempt_base), config.workflow,
                                           config.version, child_input, "subworkflow", key))
        else:
            schedule_attempt(d, definition, step, d.state.step(key).attempt + 1, key)
    except TemplateError as exc:
        return str(exc)
    return None


def schedule_attempt(d: Decision, definition: WorkflowDefinition, step: Step, attempt: int,
                     key: str | None = None) -> None:
    d.emit(StepScheduled(key or step.name, attempt, d.now + definition.attempt_timeout_ms(step)))


def loop_continues(d: Decision, definition: WorkflowDefinition, step: Step, key: str, index: int) -> bool:
    """Whether iteration `index` runs, by the loop's `while` (before each iteration)."""
    config = step.config
    assert isinstance(config, LoopConfig)
    if config.while_ is None:
        return True
    scope = {**scope_at(d, definition, key), "index": index}
    return evaluate_condition(config.while_, scope, where=f"step '{step.name}': config.while")


def _chosen_case(d: Decision, definition: WorkflowDefinition, step: Step, key: str, config: SwitchConfig) -> str:
    scope = scope_at(d, definition, key)
    for i, case in enumerate(config.cases):
        if evaluate_condition(case.when, scope, where=f"step '{step.name}': config.cases[{i}].when"):
            return case.label(i)
    return "default"


def _items(d: Decision, definition: WorkflowDefinition, step: Step, key: str, config: ForEachConfig) -> Any:
    items = render_value(config.items, scope_at(d, definition, key), where=f"step '{step.name}': config.items")
    if not isinstance(items, list):
        return f"step '{step.name}': config.items must be a list, not {type(items).__name__}"
    return items


def _wake_at(d: Decision, definition: WorkflowDefinition, step: Step, key: str, config: DelayConfig) -> int:
    if config.duration_ms is not None:
        return d.now + config.duration_ms
    where = f"step '{step.name}': config.until"
    value = render_value(config.until, scope_at(d, definition, key), where=where)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                return int(moment.timestamp() * 1000)
    raise TemplateError(where, f"must give epoch milliseconds or an ISO-8601 time with a zone, not {value!r}")
