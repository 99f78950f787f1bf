"""Template checks of a definition: names, steps, input fields and functions.

Where a template sits decides what it may use:

- a step's request (`config` of service_call, rule values of validation) is
  rendered by the executor: `secrets` and `hash()` are available there only,
  so neither can end up in a recorded event;
- `condition`, wait `filter`, step `output` and `spec.output.mapping` are
  rendered by the decider; `response` exists only in a step's `output`
  mapping (and `event` in a wait_for_event step's);
- a main step may read only steps upstream of it (transitively in
  `dependencies`): anything else may not have run yet. Compensation steps may
  read every main step and the compensation steps listed before them; the
  workflow output mapping may read every main step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .definition import ServiceCallConfig, Step, ValidationConfig, WaitForEventConfig, WorkflowDefinition
from .templates import (
    BUILTIN_FUNCTION_NAMES,
    EXECUTOR_FUNCTIONS,
    STEP_FIELDS,
    TemplateError,
    check_template,
    function_names,
    is_single_expression,
    is_template,
    join_where,
    referenced_paths,
)
from .validation import declared_properties, suggest

__all__ = ["check_templates"]

_BASE_ROOTS = frozenset({"input", "steps", "execution"})
_ROOT_HELP = {
    "response": "'response' is only available in a step's output mapping",
    "event": "'event' is only available in the output mapping of a wait_for_event step",
    "secrets": "'secrets' are only available in a step's request config (rendered by the executor, never recorded)",
}

Add = Callable[[str | None, str, str], None]
_Check = Callable[[str | None, str, Any, "_Place"], None]


@dataclass(frozen=True)
class _Place:
    roots: frozenset[str]
    functions: frozenset[str]
    visible: Callable[[str], str | None]  # step name -> why it cannot be read, or None


def check_templates(defn: WorkflowDefinition, ancestors: Mapping[str, frozenset[str]], add: Add) -> None:
    main = list(defn.steps_by_name)
    schema = defn.spec.input.schema_

    def check(step: str | None, field: str, value: Any, place: _Place) -> None:
        for where, source in _strings(field, value):
            _check_one(step, where, source, place, schema, add)

    for step in defn.spec.steps:

        def visible(target: str, me: str = step.name) -> str | None:
            if target == me:
                return "a step cannot read its own result"
            if target not in defn.steps_by_name:
                return f"unknown step '{target}'{suggest(target, main)}"
            if target not in ancestors.get(me, ()):
                return (f"step '{target}' is not upstream of '{me}', so it may not have run yet "
                        f"(add it to depends_on)")  # fmt: skip
            return None

        _check_step(step, visible, check, add)

    comp = defn.spec.compensation
    comp_names = [s.name for s in comp.steps] if comp else []
    for k, step in enumerate(comp.steps if comp else ()):

        def visible_comp(target: str, earlier: tuple[str, ...] = tuple(comp_names[:k])) -> str | None:
            if target in defn.steps_by_name or target in earlier:
                return None
            if target in comp_names:
                return f"compensation step '{target}' has not run yet when this one runs"
            return f"unknown step '{target}'{suggest(target, main + comp_names)}"

        _check_step(step, visible_comp, check, add)

    if defn.spec.output is not None and defn.spec.output.mapping is not None:

        def visible_out(target: str) -> str | None:
            return None if target in defn.steps_by_name else f"unknown step '{target}'{suggest(target, main)}"

        place = _Place(_BASE_ROOTS, BUILTIN_FUNCTION_NAMES, visible_out)
        check(None, "spec.output.mapping", defn.spec.output.mapping, place)


def _check_step(step: Step, visible: Callable[[str], str | None], check: _Check, add: Add) -> None:
    request = _Place(_BASE_ROOTS | {"secrets"}, BUILTIN_FUNCTION_NAMES | EXECUTOR_FUNCTIONS, visible)
    decider = _Place(_BASE_ROOTS, BUILTIN_FUNCTION_NAMES, visible)
    output_roots = {"response", "event"} if step.type == "wait_for_event" else {"response"}
    output = _Place(_BASE_ROOTS | output_roots, BUILTIN_FUNCTION_NAMES, visible)
    name, config = step.name, step.config
    if step.condition is not None:
        # A condition may be written bare ("steps.x.completed"), as evaluate_condition accepts.
        source = step.condition if is_template(step.condition) else "{{ " + step.condition + " }}"
        check(name, "condition", source, decider)
        try:
            if not is_single_expression(source):
                add(name, "condition", "a condition must be a single expression, e.g. {{ steps.x.completed }}")
        except TemplateError:
            pass  # the syntax error was reported by `check`
    if isinstance(config, ServiceCallConfig):
        for key in ("endpoint", "payload", "headers", "query"):
            check(name, f"config.{key}", getattr(config, key), request)
    elif isinstance(config, ValidationConfig):
        for i, rule in enumerate(config.validation_rules):
            check(name, f"config.validation_rules[{i}].value", rule.value, request)
    elif isinstance(config, WaitForEventConfig):
        check(name, "config.filter", config.filter, decider)
    if step.output is not None:
        check(name, "output", step.output, output)


def _strings(where: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        if is_template(value):
            yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(join_where(where, str(key)), item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _strings(join_where(where, i), item)


def _check_one(step: str | None, field: str, source: str, place: _Place, schema: Any, add: Add) -> None:
    try:
        check_template(source)
        paths, functions = referenced_paths(source), function_names(source)
    except TemplateError as exc:
        add(step, field, exc.message)
        return
    for fn in sorted(functions - place.functions):
        if fn in EXECUTOR_FUNCTIONS:
            add(step, field, f"{fn}() is only available in a step's request config (the executor computes it)")
        else:
            known = sorted(BUILTIN_FUNCTION_NAMES | EXECUTOR_FUNCTIONS)
            add(step, field, f"unknown function '{fn}'{suggest(fn, known)} (available: {', '.join(known)})")
    for path in sorted(paths):
        root = path[0]
        if root in BUILTIN_FUNCTION_NAMES or root in EXECUTOR_FUNCTIONS:
            continue
        if root not in place.roots:
            message = _ROOT_HELP.get(root) or (
                f"unknown name '{root}'{suggest(root, place.roots)} "
                f"(templates here can use {', '.join(sorted(place.roots))})"
            )
            add(step, field, message)
        elif root == "input":
            problem = _input_problem(path, schema)
            if problem:
                add(step, field, problem)
        elif root == "steps" and len(path) >= 2:
            problem = place.visible(path[1])
            if problem:
                add(step, field, problem)
            elif len(path) >= 3 and path[2] not in STEP_FIELDS:
                add(step, field, f"steps.{path[1]} has no field '{path[2]}'{suggest(path[2], STEP_FIELDS)} "
                    f"(expected {', '.join(STEP_FIELDS)})")  # fmt: skip


def _input_problem(path: tuple[str, ...], schema: Any) -> str | None:
    """`input.x.y` must name declared properties where the schema declares them."""
    for depth, part in enumerate(path[1:], start=1):
        properties = declared_properties(schema)
        if properties is None:
            return None
        if part not in properties:
            shown = ".".join(path[:depth])
            hint = suggest(part, properties) or f" (the input schema defines {', '.join(sorted(properties))})"
            return f"{shown} has no property '{part}'{hint}"
        schema = properties[part]
    return None
