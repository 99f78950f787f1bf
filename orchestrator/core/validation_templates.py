"""Template checks of a definition: names, steps, input fields and functions.

Where a template sits decides what it may use:

- a step's request (`config` of service_call, rule values of validation) is
  rendered by the executor: `secrets` and `hash()` are available there only,
  so neither can end up in a recorded event;
- everything else is rendered by the decider: `condition` (`when`), wait
  `filter`, step `output`, a switch case's `when`, a loop's `while`/`until`,
  a for_each's `items`, a delay's `until`, a workflow step's `config.input`
  and `spec.output.mapping`; `response` exists only in a step's `output`
  mapping (and `event` in a wait_for_event step's);
- inside a for_each body `item` and `index` are in scope; inside a loop body
  and in the loop's `while`/`until`, `index` and `steps.<loop>.iterations`
  (only loops have `iterations`); both are the innermost iteration's, so a
  loop body does not see the `item` of a for_each around it; a loop's
  `until`, checked after each iteration, also reads the steps of its body;
- a trigger's `input` sees only `event` (an event trigger) or `schedule` (a
  schedule trigger): no execution exists yet;
- a main step may read the steps upstream of it in its own block
  (transitively in `dependencies`) and whatever the composite step running
  its block may read, recursively: anything else may not have run yet. A
  switch case's `when` and a for_each's `items` see what their step sees.
  Steps inside a block are read from outside it only through the composite's
  output (their states end with their iteration). Compensation steps may read
  every top-level main step and the compensation steps listed before them;
  the workflow output mapping may read every top-level main step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .definition import (
    DelayConfig,
    ForEachConfig,
    LoopConfig,
    ServiceCallConfig,
    Step,
    SubWorkflowConfig,
    SwitchConfig,
    ValidationConfig,
    WaitForEventConfig,
    WorkflowDefinition,
)
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
from .validation_blocks import Layout

__all__ = ["check_templates"]

_BASE_ROOTS = frozenset({"input", "steps", "execution"})
_ROOT_HELP = {
    "response": "'response' is only available in a step's output mapping",
    "event": "'event' is only available in the output mapping of a wait_for_event step and in an event trigger's input",
    "secrets": "'secrets' are only available in a step's request config (rendered by the executor, never recorded)",
    "item": "'item' is only available inside a for_each body (the current element)",
    "index": "'index' is only available inside a loop or for_each body and in a loop's while/until",
    "schedule": "'schedule' is only available in a schedule trigger's input",
}

Add = Callable[[str | None, str, str], None]
Visible = Callable[[str, str | None], str | None]  # (step, field read) -> why it cannot be read, or None
_Check = Callable[[str | None, str, Any, "_Place"], None]


@dataclass(frozen=True)
class _Place:
    roots: frozenset[str]
    functions: frozenset[str]
    visible: Visible
    loops: frozenset[str] = frozenset()  # steps with `iterations`
    only: str | None = None  # a place with just `roots` in scope: what to say about any other name


def check_templates(defn: WorkflowDefinition, layout: Layout, add: Add) -> None:
    schema = defn.spec.input.schema_
    loops = frozenset(name for name, step in layout.steps.items() if step.type == "loop")

    def check(step: str | None, field: str, value: Any, place: _Place) -> None:
        for where, source in _strings(field, value):
            _check_one(step, where, source, place, schema, add)

    def walk(steps: tuple[Step, ...], extra: frozenset[str]) -> None:
        for step in steps:

            def visible(target: str, field: str | None, me: str = step.name) -> str | None:
                return _main_visible(layout, me, target, field)

            _check_step(step, extra, visible, check, add, loops)
            _check_composite(step, extra, visible, check, add, loops)
            for block in step.inner_blocks:
                walk(block, _body_roots(step.type, extra))

    walk(defn.spec.steps, frozenset())
    main = list(layout.steps)
    comp = defn.spec.compensation
    comp_names = [s.name for s in comp.steps] if comp else []
    for k, step in enumerate(comp.steps if comp else ()):

        def visible_comp(target: str, field: str | None, earlier: tuple[str, ...] = tuple(comp_names[:k])
                         ) -> str | None:  # fmt: skip
            if target in layout.steps:
                return _reach(layout, None, target)
            if target in earlier:
                return None
            if target in comp_names:
                return f"compensation step '{target}' has not run yet when this one runs"
            return f"unknown step '{target}'{suggest(target, main + comp_names)}"

        _check_step(step, frozenset(), visible_comp, check, add, loops)

    def visible_out(target: str, field: str | None) -> str | None:
        if target in layout.steps:
            return _reach(layout, None, target)
        return f"unknown step '{target}'{suggest(target, main)}"

    if defn.spec.output is not None and defn.spec.output.mapping is not None:
        place = _Place(_BASE_ROOTS, BUILTIN_FUNCTION_NAMES, visible_out, loops)
        check(None, "spec.output.mapping", defn.spec.output.mapping, place)

    for i, trigger in enumerate(defn.spec.triggers):
        root = "event" if trigger.event is not None else "schedule"
        what = "the event that fired it" if root == "event" else "the trigger's name and nominal time"
        only = f"a trigger's input sees only '{root}' ({what}): no execution exists yet"
        place = _Place(frozenset({root}), BUILTIN_FUNCTION_NAMES, visible_out, only=only)
        check(None, f"spec.triggers[{i}].input", trigger.input, place)


def _main_visible(layout: Layout, reader: str, target: str, field: str | None) -> str | None:
    """Why main step `reader` may not read `target` (None: it may)."""
    if target not in layout.steps:
        return f"unknown step '{target}'{suggest(target, layout.steps)}"
    if target == reader:
        return "a step cannot read its own result"
    if target in layout.enclosing(reader):
        if layout.kind(target) == "loop":
            if field == "iterations":
                return None
            return (f"step '{reader}' runs inside loop '{target}', which has no output until it ends "
                    f"(earlier iterations: steps.{target}.iterations)")  # fmt: skip
        return f"step '{reader}' runs inside {layout.kind(target)} '{target}', which has no result until it ends"
    return _reach(layout, reader, target)


def _reach(layout: Layout, reader: str | None, target: str) -> str | None:
    """Whether `target` is upstream of `reader` (None: outside every block, after every top-level step)."""
    mine = {block.key: name for name, block in layout.chain(reader)} if reader else {(None, 0): None}
    for name, block in layout.chain(target):
        if block.key not in mine:
            continue
        near = mine[block.key]  # the reader, or the composite running it, in the block shared with target
        if name == target:
            if near is None or target in layout.ancestors.get(near, ()):
                return None
            if near == reader:
                return (f"step '{target}' is not upstream of '{reader}', so it may not have run yet "
                        f"(add it to depends_on)")  # fmt: skip
            return (f"step '{target}' is not upstream of '{near}' (which runs '{reader}'), so it may not "
                    f"have run yet (add it to depends_on of '{near}')")  # fmt: skip
        kind = layout.kind(name)
        if name != near:
            return f"step '{target}' is inside {kind} '{name}': read it through steps.{name}.output"
        if near == reader:
            if kind == "loop":
                return (f"step '{target}' is inside loop '{name}': read its outputs through "
                        f"steps.{name}.iterations")  # fmt: skip
            return f"step '{target}' is inside {kind} '{name}' itself: read its result through the output of '{name}'"
        assert reader is not None  # a reader outside every block shares only the top-level block
        theirs = next(b for _, b in layout.chain(target) if b.owner == name)
        ours = next(b for _, b in layout.chain(reader) if b.owner == name)
        return (f"step '{target}' is in {theirs.label}, this step in {ours.label}: "
                f"only one of them runs")  # fmt: skip
    return f"step '{target}' cannot be read here"


def _check_step(step: Step, extra: frozenset[str], visible: Visible, check: _Check, add: Add,
                loops: frozenset[str]) -> None:  # fmt: skip
    roots = _BASE_ROOTS | extra
    request = _Place(roots | {"secrets"}, BUILTIN_FUNCTION_NAMES | EXECUTOR_FUNCTIONS, visible, loops)
    decider = _Place(roots, BUILTIN_FUNCTION_NAMES, visible, loops)
    output_roots = {"response", "event"} if step.type == "wait_for_event" else {"response"}
    output = _Place(roots | output_roots, BUILTIN_FUNCTION_NAMES, visible, loops)
    name, config = step.name, step.config
    if step.condition is not None:
        _condition(name, "condition", step.condition, decider, check, add)
    if isinstance(config, ServiceCallConfig):
        for key in ("endpoint", "payload", "headers", "query"):
            check(name, f"config.{key}", getattr(config, key), request)
    elif isinstance(config, ValidationConfig):
        for i, rule in enumerate(config.validation_rules):
            check(name, f"config.validation_rules[{i}].value", rule.value, request)
    elif isinstance(config, WaitForEventConfig):
        check(name, "config.filter", config.filter, decider)
    elif isinstance(config, DelayConfig):
        check(name, "config.until", config.until, decider)
    elif isinstance(config, SubWorkflowConfig):
        check(name, "config.input", config.input, decider)
    if step.output is not None:
        check(name, "output", step.output, output)


def _body_roots(kind: str, extra: frozenset[str]) -> frozenset[str]:
    """The roots inside a composite's block: `index` (and `item`) of the innermost iteration."""
    if kind == "loop":
        return (extra - {"item"}) | {"index"}
    if kind == "for_each":
        return extra | {"item", "index"}
    return extra


def _check_composite(step: Step, extra: frozenset[str], visible: Visible, check: _Check, add: Add,
                     loops: frozenset[str]) -> None:  # fmt: skip
    """A composite's own templates see what the step sees; a loop's while/until
    also `index` and the loop's iterations, and `until` (checked after each
    iteration, before its steps are folded away) the steps of its body."""
    name, config = step.name, step.config
    decider = _Place(_BASE_ROOTS | extra, BUILTIN_FUNCTION_NAMES, visible, loops)
    if isinstance(config, SwitchConfig):
        for i, case in enumerate(config.cases):
            _condition(name, f"config.cases[{i}].when", case.when, decider, check, add)
    elif isinstance(config, LoopConfig):
        body = frozenset(s.name for s in config.steps)
        for key, source, seen in (("while", config.while_, frozenset()), ("until", config.until, body)):

            def own(target: str, field: str | None, seen: frozenset[str] = seen) -> str | None:
                if (target == name and field == "iterations") or target in seen:
                    return None
                return visible(target, field)

            place = _Place(_BASE_ROOTS | _body_roots("loop", extra), BUILTIN_FUNCTION_NAMES, own, loops)
            if source is not None:
                _condition(name, f"config.{key}", source, place, check, add)
    elif isinstance(config, ForEachConfig):
        check(name, "config.items", config.items, decider)


def _condition(name: str, field: str, condition: str, place: _Place, check: _Check, add: Add) -> None:
    # A condition may be written bare ("steps.x.completed"), as evaluate_condition accepts.
    source = condition if is_template(condition) else "{{ " + condition + " }}"
    check(name, field, source, place)
    try:
        if not is_single_expression(source):
            add(name, field, "a condition must be a single expression, e.g. {{ steps.x.completed }}")
    except TemplateError:
        pass  # the syntax error was reported by `check`


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
            if place.only is not None:
                message = f"'{root}' is not available here: {place.only}"
            else:
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
            target, read = path[1], (path[2] if len(path) >= 3 else None)
            fields = (*STEP_FIELDS, "iterations") if target in place.loops else STEP_FIELDS
            problem = place.visible(target, read)
            if problem:
                add(step, field, problem)
            elif read == "iterations" and read not in fields:
                add(step, field, f"steps.{target}.iterations: only loop steps have iterations")
            elif read is not None and read not in fields:
                add(step, field, f"steps.{target} has no field '{read}'{suggest(read, fields)} "
                    f"(expected {', '.join(fields)})")  # fmt: skip


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
