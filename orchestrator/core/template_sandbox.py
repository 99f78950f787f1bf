"""The bounded, sandboxed Jinja2 environment behind `orchestrator.core.templates`.

Jinja2's `ImmutableSandboxedEnvironment` already refuses internals (`_`-prefixed
attributes, frame/code objects, mutating methods). Jinja cannot bound CPU time
exactly (there is no preemption inside a render, and the core may not read a
clock), so this module bounds the *work* instead:

- statements are limited to `{% if %}`: no loops, macros, imports or
  assignments, so evaluation visits each node of the template at most once;
- the only source of iteration is data (the scope) and `range()`, which is
  capped at the sandbox's `MAX_RANGE` and charged to a per-render work budget;
- the operators and filters that can multiply sizes (`*`, `**`, `+`, `%`,
  `str.format`, `ljust`..., `batch`, `slice`, `replace`) check the size of
  their result *before* computing it;
- `templates` rejects template text over `MAX_TEMPLATE_CHARS` and rendered
  strings over `MAX_STRING_CHARS`.

`random` (a filter) and `lipsum`/`cycler`/`joiner`/`namespace` (globals) are
removed: the core must be deterministic and has no use for them.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.runtime import Context
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment

__all__ = [
    "LimitError",
    "MAX_RANGE",
    "MAX_STRING_CHARS",
    "MAX_TEMPLATE_CHARS",
    "WORK_BUDGET",
    "BUILTIN_FUNCTIONS",
    "BoundedSandbox",
    "ENV",
    "check_tree",
    "to_json",
    "work_budget",
]

MAX_TEMPLATE_CHARS = 10_000
MAX_STRING_CHARS = 1_000_000
WORK_BUDGET = 2_000_000  # units: one per call/attribute, one per produced item/char
_MAX_INT_BITS = 64_000  # `**` results; larger integers are never useful here

# Names the compiled template code would resolve specially (`self` is the
# template reference, `loop`/`caller`... exist inside statements we forbid).
_RESERVED_NAMES = frozenset({"self", "loop", "caller", "varargs", "kwargs", "super"})
_ALLOWED_STATEMENTS = (nodes.Output, nodes.If)
_REMOVED_FILTERS = (
    "random", "pprint", "urlize", "wordwrap", "indent", "center", "xmlattr",
    "safe", "escape", "e", "forceescape",
)  # fmt: skip


class LimitError(Exception):
    """A template needed more size or work than allowed, or used a forbidden construct."""


_budget: ContextVar[list[int] | None] = ContextVar("template_work_budget", default=None)


@contextmanager
def work_budget(units: int = WORK_BUDGET) -> Iterator[None]:
    """Give the renders inside this block `units` of work (per block, not per template)."""
    token = _budget.set([units])
    try:
        yield
    finally:
        _budget.reset(token)


def _charge(units: int) -> None:
    box = _budget.get()
    if box is None:
        return
    box[0] -= units
    if box[0] < 0:
        raise LimitError("template needs too much work (operation budget exceeded)")


def _check_size(size: int, what: str) -> None:
    if size > MAX_STRING_CHARS:
        raise LimitError(f"{what} would produce {size} items/characters (limit {MAX_STRING_CHARS})")
    _charge(size)


def _check_count(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_RANGE:
        raise LimitError(f"{what} {value} is larger than {MAX_RANGE}")


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_NUMBER = re.compile(r"\d+")


def _check_printf(fmt: str) -> None:
    # A width such as "%999999999d" would allocate a gigabyte before any check.
    for match in _PRINTF_SPEC.finditer(fmt):
        for group in match.groups():
            if group == "*":
                raise LimitError("'*' widths are not allowed in % formatting")
            if group is not None:
                _check_count(int(group), "format width")


def _check_format_string(fmt: str) -> None:
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec and "{" in spec:
            raise LimitError("nested replacement fields are not allowed in format specs")
        for number in _FORMAT_NUMBER.findall(spec or ""):
            _check_count(int(number), "format width")


def _bounded_range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise LimitError(f"range of {len(result)} items is larger than MAX_RANGE ({MAX_RANGE})")
    _charge(len(result))
    return result


def to_json(value: Any) -> str:
    """`json(x)` and the `tojson` filter: plain JSON text (no HTML escaping), sorted keys."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
    _check_size(len(text), "json()")
    return text


def _tojson(value: Any, indent: int | None = None) -> str:
    _check_count(indent, "indent")
    return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False, indent=indent)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    fmt = str(value)
    _check_printf(fmt)
    return fmt % (kwargs or args)


def _replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text, old, new = str(value), str(old), str(new)
    hits = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    _check_size(len(text) + hits * len(new), "replace")
    return text.replace(old, new, -1 if count is None else count)


def _guard_count_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    # batch(n, fill) and slice(n, fill) build n-sized structures up front.
    def guarded(value: Any, count: int, *args: Any, **kwargs: Any) -> Any:
        _check_count(count, f"{name}() size")
        return fn(value, count, *args, **kwargs)

    guarded.__name__ = name
    return guarded


# str methods whose first argument is the size of the result.
_WIDTH_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox plus size checks, a work budget and mapping-first lookups."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _charge(1)
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if max(1, abs(left).bit_length()) * right > _MAX_INT_BITS:
                raise LimitError("power too large")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                    _check_size(len(seq) * max(times, 0), "repetition")
        elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            _check_size(len(left) + len(right), "concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _charge(1)
        owner = getattr(obj, "__self__", None)
        name = getattr(obj, "__name__", "")
        if isinstance(owner, str):
            if name in _WIDTH_METHODS and args:
                _check_size(args[0] if isinstance(args[0], int) else 0, f"str.{name}")
            elif name == "expandtabs":
                size = args[0] if args and isinstance(args[0], int) else 8
                _check_size(len(owner) * max(size, 1), "str.expandtabs")
            elif name == "replace" and len(args) >= 2:
                return _replace(owner, *args[:3])
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format_string(fmt)
            return wrapped(*args, **kwargs)

        return checked

    # On objects (JSON mappings), `a.b` and `a['b']` both mean the field: a
    # field named `items` or `keys` must not resolve to the dict method.
    def getattr(self, obj: Any, attribute: str) -> Any:
        _charge(1)
        if isinstance(obj, Mapping):
            return self._field(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _charge(1)
        if isinstance(obj, Mapping):
            return self._field(obj, argument)
        return super().getitem(obj, argument)

    def _field(self, obj: Mapping[Any, Any], name: Any) -> Any:
        try:
            return obj[name]
        except (KeyError, TypeError):
            return self.undefined(obj=obj, name=name)


def _finalize(value: Any) -> Any:
    # Mixed text follows JSON conventions rather than Python's repr.
    if isinstance(value, Undefined) or isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise LimitError("not a finite number")
    if isinstance(value, (Mapping, list, tuple)):
        return to_json(value)
    return value


def _make_env() -> BoundedSandbox:
    env = BoundedSandbox(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,  # text outside `{{ }}` is kept verbatim
        finalize=_finalize,
        cache_size=0,  # `templates` caches compiled templates itself
    )
    env.globals.clear()
    env.globals.update(BUILTIN_FUNCTIONS)
    for name in _REMOVED_FILTERS:
        env.filters.pop(name, None)
    env.filters.update(
        tojson=_tojson,
        format=_format,
        replace=_replace,
        batch=_guard_count_filter("batch", env.filters["batch"]),
        slice=_guard_count_filter("slice", env.filters["slice"]),
    )
    return env


BUILTIN_FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "range": _bounded_range,
    "dict": dict,
    "json": to_json,
}

ENV = _make_env()


def check_tree(tree: nodes.Node) -> None:
    """Refuse what the language does not allow: statements other than `if`,
    reserved names, unknown filters and tests (raises LimitError)."""
    for node in tree.find_all(nodes.Stmt):
        if not isinstance(node, _ALLOWED_STATEMENTS):
            tag = type(node).__name__.lower()
            raise LimitError(f"'{{% {tag} %}}' is not allowed (templates may only use {{% if %}})")
    for name in tree.find_all(nodes.Name):
        if name.name in _RESERVED_NAMES:
            raise LimitError(f"'{name.name}' is not available in templates")
    for flt in tree.find_all(nodes.Filter):
        if flt.name not in ENV.filters:
            raise LimitError(f"unknown filter '{flt.name}'")
    for test in tree.find_all(nodes.Test):
        if test.name not in ENV.tests:
            raise LimitError(f"unknown test '{test.name}'")
