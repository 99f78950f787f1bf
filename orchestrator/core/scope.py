"""What templates see for an execution under its definition.

An optional input property the author declared but the caller left out reads
as null (`{{ input.profile_data }}` in the seed), as it would in any caller's
language; validation already rejects paths the input schema does not declare,
so a typo still fails before anything runs.
"""

from __future__ import annotations

from typing import Any

from .definition import Step, SwitchConfig, WorkflowDefinition
from .keys import frames, leaf
from .state import ExecutionState, step_view

__all__ = ["scope_for", "with_declared_nulls", "instance_scope", "block_step_names"]


def with_declared_nulls(value: Any, schema: Any) -> Any:
    if not isinstance(value, dict) or not isinstance(schema, dict):
        return value
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return value
    filled = dict(value)
    for name, sub in properties.items():
        filled[name] = with_declared_nulls(value[name], sub) if name in value else None
    return filled


def scope_for(state: ExecutionState, definition: WorkflowDefinition, *, main_only: bool = False) -> dict[str, Any]:
    names = definition.steps_by_name if main_only else definition.all_steps_by_name
    scope = state.template_scope(tuple(names))
    scope["input"] = with_declared_nulls(scope["input"], definition.spec.input.schema_)
    for name in definition.loop_names:  # a loop's `while` reads its iterations before there are any
        view = scope["steps"].get(name)
        if view is not None and "iterations" not in view:
            view["iterations"] = []
    return scope


def block_step_names(step: Step) -> list[str]:
    """The names a loop or for_each iteration records under its prefix: its
    block's steps and, through switches, their case steps (not the steps of
    nested loops and for_each, which have their own iterations)."""
    names: list[str] = []
    todo = [inner for block in step.inner_blocks for inner in block]
    while todo:
        inner = todo.pop(0)
        names.append(inner.name)
        if isinstance(inner.config, SwitchConfig):
            todo.extend(s for block in inner.inner_blocks for s in block)
    return names


def instance_scope(state: ExecutionState, definition: WorkflowDefinition, prefix: str,
                   base: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a step recorded under `prefix` (`""` or `pay_all[3].`) sees: the
    execution's scope, each enclosing iteration's steps under their own names,
    and `index` (and `item` in a for_each) of the innermost iteration."""
    scope = base if base is not None else scope_for(state, definition)
    if not prefix:
        return scope
    scope = {**scope, "steps": dict(scope["steps"])}
    for composite_key, index in frames(prefix):
        composite = state.step(composite_key)
        step = definition.all_steps_by_name[leaf(composite_key)]
        inner_prefix = f"{composite_key}[{index}]."
        for name in block_step_names(step):
            scope["steps"][name] = step_view(state.step(inner_prefix + name))
        scope["index"] = index
        block = composite.block
        if block is not None and block.items is not None:
            scope["item"] = block.items[index]
        else:
            scope.pop("item", None)
    return scope
