"""What templates see for an execution under its definition.

An optional input property the author declared but the caller left out reads
as null (`{{ input.profile_data }}` in the seed), as it would in any caller's
language; validation already rejects paths the input schema does not declare,
so a typo still fails before anything runs.
"""

from __future__ import annotations

from typing import Any

from .definition import WorkflowDefinition
from .state import ExecutionState

__all__ = ["scope_for", "with_declared_nulls"]


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
    return scope
