"""Built-in validation rules, run locally by the executor.

| rule        | argument (`value`) | passes when |
|-------------|--------------------|-------------|
| required    | -                  | the field is present and not null |
| not_empty   | -                  | present, and not "" / whitespace / [] / {} |
| email       | -                  | a plausible address (local@domain.tld) |
| regex       | pattern            | `re.search(pattern, str(value))` (anchor it yourself) |
| min_length  | n                  | `len(value) >= n` (strings, lists, objects) |
| max_length  | n                  | `len(value) <= n` |

Rules other than `required` and `not_empty` pass when the field is absent:
combine them with `required` to demand it. A rule with a `service` is asked
to that service instead (`POST <base>/api/validate`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["BUILTIN_RULES", "check_builtin", "lookup", "MISSING"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")


def lookup(data: Any, path: str) -> Any:
    """`data["a"]["b"]` for "a.b" (list indexes allowed); MISSING when absent."""
    current = data
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, list, dict)) else None


def _int_arg(arg: Any, rule: str) -> int:
    if isinstance(arg, bool) or not isinstance(arg, (int, str)) or not str(arg).isdigit():
        raise ValueError(f"rule {rule} needs a non-negative integer `value`, got {arg!r}")
    return int(arg)


def _required(value: Any, arg: Any) -> str | None:
    return "is required" if value is MISSING or value is None else None


def _not_empty(value: Any, arg: Any) -> str | None:
    if value is MISSING or value is None:
        return "is required"
    if (isinstance(value, str) and not value.strip()) or (isinstance(value, (list, dict)) and not value):
        return "must not be empty"
    return None


def _email(value: Any, arg: Any) -> str | None:
    return None if isinstance(value, str) and _EMAIL.match(value) else "is not a valid email address"


def _regex(value: Any, arg: Any) -> str | None:
    if not isinstance(arg, str):
        raise ValueError(f"rule regex needs a pattern in `value`, got {arg!r}")
    try:
        pattern = re.compile(arg)
    except re.error as exc:
        raise ValueError(f"rule regex: invalid pattern {arg!r}: {exc}") from None
    if isinstance(value, (dict, list)):
        return "must be text"
    return None if pattern.search(str(value)) else f"does not match {arg!r}"


def _min_length(value: Any, arg: Any) -> str | None:
    n, size = _int_arg(arg, "min_length"), _length(value)
    if size is None:
        return "has no length"
    return None if size >= n else f"is shorter than {n}"


def _max_length(value: Any, arg: Any) -> str | None:
    n, size = _int_arg(arg, "max_length"), _length(value)
    if size is None:
        return "has no length"
    return None if size <= n else f"is longer than {n}"


BUILTIN_RULES: dict[str, Callable[[Any, Any], str | None]] = {
    "required": _required,
    "not_empty": _not_empty,
    "email": _email,
    "regex": _regex,
    "min_length": _min_length,
    "max_length": _max_length,
}
_PRESENCE_RULES = {"required", "not_empty"}


def check_builtin(rule: str, value: Any, arg: Any = None) -> str | None:
    """None when `value` passes `rule`, else the reason it failed.

    Raises ValueError for an unknown rule or a bad argument (a definition
    problem, hence a permanent failure too).
    """
    check = BUILTIN_RULES.get(rule)
    if check is None:
        raise ValueError(f"unknown rule {rule!r} (built-in rules: {', '.join(BUILTIN_RULES)}; "
                         "or give the rule a `service`)")
    if rule not in _PRESENCE_RULES and (value is MISSING or value is None):
        return None
    return check(value, arg)
