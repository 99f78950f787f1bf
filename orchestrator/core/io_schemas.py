"""Workflow input and output against their JSON Schemas."""

from __future__ import annotations

from typing import Any, Callable

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from .scope import scope_for
from .definition import WorkflowDefinition
from .sensitive import is_sensitive_name, sensitive_paths, unseal_values
from .state import ExecutionState
from .templates import TemplateError, render_value

__all__ = ["input_violations", "workflow_output", "OutputError"]

_FORMATS = FormatChecker()
_validators: dict[int, Draft202012Validator] = {}


class OutputError(ValueError):
    pass


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    # Definitions live as long as the process; their schema dicts do too.
    key = id(schema)
    validator = _validators.get(key)
    if validator is None or validator.schema is not schema:
        validator = _validators[key] = Draft202012Validator(schema, format_checker=_FORMATS)
    return validator


def _describe(error: ValidationError, secret_paths: set[tuple[str, ...]]) -> str:
    path = tuple(str(p) for p in error.absolute_path)
    where = "/".join(path) or "(input)"
    if path in secret_paths or any(is_sensitive_name(p) for p in path):
        # jsonschema quotes the offending value; never for a secret.
        return f"{where}: does not satisfy '{error.validator}' ({error.validator_value!r})"
    return f"{where}: {error.message}"


def input_violations(
    definition: WorkflowDefinition,
    value: Any,
    unseal: Callable[[str], Any] | None = None,
) -> list[str]:
    schema = definition.spec.input.schema_
    if not schema:
        return []
    plain = unseal_values(value, unseal) if unseal is not None else value
    secret_paths = sensitive_paths(schema)
    errors = sorted(_validator(schema).iter_errors(plain), key=lambda e: tuple(map(str, e.absolute_path)))
    return [_describe(e, secret_paths) for e in errors]


def workflow_output(state: ExecutionState, definition: WorkflowDefinition) -> Any:
    """The execution's output, as DESIGN.md defines it; raises OutputError."""
    spec = definition.spec.output
    scope = scope_for(state, definition, main_only=True)
    completed = sorted(
        (s for s in state.steps.values() if s.status == "completed"),
        key=lambda s: s.finished_seq or 0,
        reverse=True,
    )
    if spec is not None and spec.mapping is not None:
        try:
            output = render_value(spec.mapping, scope, where="spec.output.mapping")
        except TemplateError as exc:
            raise OutputError(str(exc)) from exc
    elif spec is not None and spec.schema_ and "properties" in spec.schema_:
        output = {}
        for prop in spec.schema_["properties"]:
            for step in completed:
                if isinstance(step.output, dict) and prop in step.output:
                    output[prop] = step.output[prop]
                    break
    else:
        output = {
            name: step.output for name, step in state.steps.items() if step.status == "completed"
        }
    if spec is not None and spec.schema_:
        problems = [f"{'/'.join(map(str, e.absolute_path)) or '(output)'}: {e.message}"
                    for e in _validator(spec.schema_).iter_errors(output)]
        if problems:
            raise OutputError("output does not match spec.output.schema: " + "; ".join(problems))
    return output
