"""Does an event's data match a wait's resolved `filter`?

Every filter field must equal the data's value at that field. A field name
with dots ("customer.id") walks into nested objects, unless the data has the
dotted name as a key of its own. Values compare as JSON: 1 equals 1.0, but
true is not 1 and "42" is not 42. An empty filter matches any data.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["filter_matches", "value_at", "index_key", "MISSING"]

# JSON values arrive as dicts and lists: plain type checks, not the slower ABCs.
MISSING = object()


def value_at(data: Any, field: str) -> Any:
    """The value of `field` in `data`, or MISSING (which equals nothing)."""
    if type(data) is dict and field in data:
        return data[field]
    current = data
    for part in field.split("."):
        if type(current) is not dict or part not in current:
            return MISSING
        current = current[part]
    return current


def index_key(value: Any) -> Any:
    """A hashable key under which values that `filter_matches` may call equal meet:
    1 and 1.0 share one (Python hashes them alike), true and 1 do not; containers
    share one per kind (the full comparison decides)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, (dict, list, tuple)):
        return ("c", "list" if isinstance(value, tuple) else type(value).__name__)
    return (type(value).__name__, value)


def _json_equal(a: Any, b: Any) -> bool:
    if type(a) is str or type(b) is str:  # the common case, first
        return type(a) is type(b) and a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def filter_matches(filter_: Mapping[str, Any] | None, data: Any) -> bool:
    for field, expected in (filter_ or {}).items():
        actual = value_at(data, field)
        if actual is MISSING or not _json_equal(expected, actual):
            return False
    return True
