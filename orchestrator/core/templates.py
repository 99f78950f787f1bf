"""`{{ expr }}` templates of the workflow language, evaluated by a sandboxed Jinja2.

A string that is exactly one `{{ expr }}` (whitespace around allowed) keeps the
expression's type: `"{{ input.profile_data }}"` is an object, `"{{ 1 + 2 }}"`
is 3. Any other string containing `{{`, `{%` or `{#` renders to text, where
`None` prints as "", booleans as true/false and objects/lists as JSON. Strings
without template markers are returned unchanged.

Scope names are whatever the caller passes (`input`, `steps`, `response`,
`execution`, `secrets`, `event`). On JSON objects `a.b` and `a['b']` both
read field `b` (never a dict method). Missing names, fields, and steps that
have no result yet are errors (`TemplateError`), never silently empty.

Bounds (see `template_sandbox`): templates over 10,000 characters and rendered
strings over 1 MB are rejected; only `{% if %}` statements are allowed;
`range()` is capped at the sandbox's MAX_RANGE; size-multiplying operations are
checked before they run; each `render_value`/`evaluate_condition` call has a
small work budget. Jinja cannot bound CPU time exactly; these bounds make the
work roughly linear in the template and data sizes.

`hash()` needs a random salt, so it is not defined here: the executor passes
it in `functions`. `EXECUTOR_FUNCTIONS` names it so validation knows it exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import Template, TemplateSyntaxError, Undefined, nodes
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError, TemplateRuntimeError

from .template_analysis import analyze, explain_missing
from .template_sandbox import (
    BUILTIN_FUNCTIONS,
    ENV,
    MAX_STRING_CHARS,
    MAX_TEMPLATE_CHARS,
    LimitError,
    check_tree,
    work_budget,
)

__all__ = [
    "TemplateError",
    "render_value",
    "evaluate_condition",
    "referenced_paths",
    "function_names",
    "check_template",
    "is_single_expression",
    "is_template",
    "join_where",
    "BUILTIN_FUNCTION_NAMES",
    "EXECUTOR_FUNCTIONS",
    "SCOPE_NAMES",
    "STEP_FIELDS",
]

BUILTIN_FUNCTION_NAMES = frozenset(BUILTIN_FUNCTIONS)
EXECUTOR_FUNCTIONS = frozenset({"hash"})  # supplied by the executor at render time
SCOPE_NAMES = frozenset({"input", "steps", "response", "execution", "secrets", "event"})
# What `steps.<name>` holds for every step of the definition (others' results
# are built by the decider): `output` is None until the step completed.
STEP_FIELDS = ("output", "completed", "status", "error", "attempts")

_MARKERS = ("{{", "{%", "{#")


class TemplateError(ValueError):
    """A template that cannot be compiled or evaluated; `where` names the field."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


def is_template(value: Any) -> bool:
    return isinstance(value, str) and any(marker in value for marker in _MARKERS)


def join_where(where: str, key: str | int) -> str:
    """`where` extended by a dict key (`a.b`) or list index (`a[0]`)."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return key if not where or where.endswith(": ") else f"{where}.{key}"


@dataclass(frozen=True)
class _Compiled:
    tree: nodes.Template
    template: Template | None  # mixed text
    expression: TemplateExpression | None  # exactly one `{{ expr }}`


@lru_cache(maxsize=2048)
def _compile(source: str) -> _Compiled:
    """Parse and compile once per distinct source; raises TemplateError without `where`."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError("", f"template is {len(source)} characters long (limit {MAX_TEMPLATE_CHARS})")
    try:
        tree = ENV.parse(source)
        check_tree(tree)
        expr = _single_expression(tree)
        if expr is None:
            return _Compiled(tree, ENV.from_string(tree), None)
        body = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)]
        expression = TemplateExpression(ENV.from_string(nodes.Template(body, lineno=1)), False)
        return _Compiled(tree, None, expression)
    except TemplateSyntaxError as exc:
        raise TemplateError("", f"syntax error: {exc.message} (line {exc.lineno})") from None
    except LimitError as exc:
        raise TemplateError("", str(exc)) from None


def _single_expression(tree: nodes.Template) -> nodes.Expr | None:
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = [
        n for n in tree.body[0].nodes
        if not (isinstance(n, nodes.TemplateData) and not n.data.strip())
    ]  # fmt: skip
    if len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData):
        return parts[0]
    return None


def check_template(source: str, *, where: str = "") -> None:
    """Compile `source` (syntax, allowed statements, filters) or raise TemplateError."""
    try:
        _compile(source)
    except TemplateError as exc:
        raise TemplateError(where, exc.message) from None


def is_single_expression(source: str) -> bool:
    """True when `source` is exactly one `{{ expr }}` (its value keeps its type)."""
    return is_template(source) and _compile(source).expression is not None


def render_value(
    value: Any,
    scope: Mapping[str, Any],
    *,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    where: str = "",
) -> Any:
    """Render every template string inside `value` (dicts, lists, strings)."""
    variables = {**(functions or {}), **scope}
    with work_budget():
        return _render(value, variables, where)


def _render(value: Any, variables: dict[str, Any], where: str) -> Any:
    if isinstance(value, str):
        return _render_string(value, variables, where) if is_template(value) else value
    if isinstance(value, Mapping):
        return {k: _render(v, variables, join_where(where, str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_render(v, variables, join_where(where, i)) for i, v in enumerate(value)]
    return value


def _render_string(source: str, variables: dict[str, Any], where: str) -> Any:
    try:
        compiled = _compile(source)
        if compiled.expression is not None:
            return _to_json_value(compiled.expression(variables), 0)
        assert compiled.template is not None
        chunks, size = [], 0
        for chunk in compiled.template.generate(variables):
            size += len(chunk)
            if size > MAX_STRING_CHARS:
                raise LimitError(f"rendered text is longer than {MAX_STRING_CHARS} characters")
            chunks.append(chunk)
        return "".join(chunks)
    except TemplateError as exc:
        raise TemplateError(where, exc.message) from None
    except SecurityError as exc:
        raise TemplateError(where, f"not allowed: {exc}") from None
    except TemplateRuntimeError as exc:  # UndefinedError: say which path is missing
        raise TemplateError(where, _explain(source, variables) or str(exc)) from None
    except LimitError as exc:
        raise TemplateError(where, str(exc)) from None
    except Exception as exc:  # a filter, operator or supplied function failed
        raise TemplateError(where, f"{type(exc).__name__}: {exc}") from None


def _to_json_value(value: Any, depth: int) -> Any:
    """The native result as plain JSON data (generators become lists...)."""
    if depth > 100:
        raise LimitError("value nested too deeply")
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()  # raises UndefinedError or SecurityError
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LimitError(f"{value} is not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise LimitError(f"string is longer than {MAX_STRING_CHARS} characters")
        return str(value)  # Markup -> str
    if isinstance(value, Mapping):
        return {_key(k): _to_json_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, range)) or _is_iterator(value):
        return [_to_json_value(v, depth + 1) for v in value]
    raise LimitError(f"the expression gives a {type(value).__name__}, not a JSON value")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str(key)
    raise LimitError(f"object keys must be strings, not {type(key).__name__}")


def _is_iterator(value: Any) -> bool:
    return hasattr(value, "__next__") and hasattr(value, "__iter__")


def _explain(source: str, variables: Mapping[str, Any]) -> str | None:
    try:
        return explain_missing(*_analysis(source), variables)
    except TemplateError:
        return None


def evaluate_condition(expr: str, scope: Mapping[str, Any], *, where: str = "") -> bool:
    """Truth of a `condition`: "{{ x }}" or bare "x" (Python truthiness of the value)."""
    source = expr if is_template(expr) else "{{ " + expr + " }}"
    try:
        compiled = _compile(source)
    except TemplateError as exc:
        raise TemplateError(where, exc.message) from None
    if compiled.expression is None:
        raise TemplateError(where, "a condition must be a single expression, e.g. {{ steps.x.completed }}")
    return bool(render_value(source, scope, where=where))


def referenced_paths(value: Any) -> set[tuple[str, ...]]:
    """Variable paths read by the templates in `value`, e.g. ("steps", "a", "output", "id").

    A path stops at the first dynamic or numeric subscript. Called names
    (functions) are not paths; see `function_names`. Raises TemplateError on
    a template that does not compile.
    """
    paths: set[tuple[str, ...]] = set()
    for source in _sources(value):
        paths |= _analysis(source)[0]
    return paths


def function_names(value: Any) -> set[str]:
    """Names called as functions in the templates in `value`, e.g. {"hash"}."""
    names: set[str] = set()
    for source in _sources(value):
        names |= _analysis(source)[1]
    return names


@lru_cache(maxsize=2048)
def _analysis(source: str) -> tuple[frozenset[tuple[str, ...]], frozenset[str]]:
    paths, calls = analyze(_compile(source).tree)
    return frozenset(paths), frozenset(calls)


def _sources(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        if is_template(value):
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _sources(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _sources(item)
