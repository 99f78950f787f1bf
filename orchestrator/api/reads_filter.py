"""Which executions a list page or a bulk action means, and where a page ends.

Pure: `parse_filter` turns query parameters (or a bulk request's JSON filter)
into an `ExecutionFilter`, `filter_sql` turns that into a WHERE clause for
`workflow_executions`, and the opaque page cursor is encoded and decoded here.
Errors are `ValueError`s whose message starts with the field they are about.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from psycopg.types.json import Jsonb

__all__ = ["EXECUTION_STATUSES", "PAGE_PARAMS", "ExecutionFilter", "decode_cursor", "encode_cursor",
           "filter_sql", "parse_filter"]

EXECUTION_STATUSES = ("pending", "running", "paused", "compensating", "completed", "failed", "cancelled")
# Page controls that travel with the filter in a list request's query string: not filters, left alone here.
PAGE_PARAMS = ("limit", "cursor")


@dataclass(frozen=True)
class ExecutionFilter:
    workflow: str | None = None
    version: str | None = None
    statuses: tuple[str, ...] = ()
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    input_contains: dict | None = None  # jsonb containment (@>) of the execution's input
    output_contains: dict | None = None


def parse_filter(params: Mapping[str, Any]) -> ExecutionFilter:
    """An ExecutionFilter from query parameters or a JSON filter object.

    Keys: workflow, version, status (repeated, a list, or comma-separated),
    created_after (inclusive) and created_before (exclusive) as ISO 8601 (UTC
    unless they say otherwise), and `input.<dotted.path>` / `output.<dotted.path>`
    = value: a text value is read as JSON when it is valid JSON (`5`, `true`,
    `"5"`, `{"a": 1}`), else as the string itself; a JSON filter may also give
    `input` / `output` as an object. Both become one containment object
    (`input.customer.id=7` -> `{"customer": {"id": 7}}`). `limit` and `cursor`
    are page controls and are ignored; any other key is an error.
    """
    if not isinstance(params, Mapping):
        raise ValueError("filter: must be an object")
    fields: dict[str, Any] = {}
    contains: dict[str, dict] = {"input": {}, "output": {}}
    for key, raw in params.items():
        if not isinstance(key, str):
            raise ValueError(f"filter: key {key!r} is not a string")
        if key in PAGE_PARAMS:
            continue
        if key == "status":
            fields["statuses"] = _statuses(raw)
        elif key in ("workflow", "version"):
            fields[key] = _text(key, raw)
        elif key in ("created_after", "created_before"):
            fields[key] = _time(key, raw)
        else:
            root, dot, path = key.partition(".")
            if root not in contains:
                raise ValueError(f"{key}: unknown filter (known: workflow, version, status, created_after, "
                                 "created_before, input.<path>, output.<path>)")
            if dot:
                _merge(contains[root], _nested(key, path, _value(key, raw)), key)
            elif isinstance(raw, Mapping):  # a JSON filter's `input: {...}`
                _merge(contains[root], dict(raw), key)
            else:
                raise ValueError(f"{key}: give a field path (`{key}.<field>=<value>`) or an object")
    return ExecutionFilter(**fields, input_contains=contains["input"] or None,
                           output_contains=contains["output"] or None)


def _single(key: str, raw: Any) -> Any:
    """Query strings repeat a key as a list: only `status` may have several values."""
    if isinstance(raw, (list, tuple)):
        if len(raw) != 1:
            raise ValueError(f"{key}: given {len(raw)} times; give it once")
        return raw[0]
    return raw


def _text(key: str, raw: Any) -> str:
    value = _single(key, raw)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key}: must be a non-empty string")
    return value


def _statuses(raw: Any) -> tuple[str, ...]:
    values = raw if isinstance(raw, (list, tuple)) else [raw]
    found: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"status: {value!r} is not a string")
        for status in filter(None, (part.strip() for part in value.split(","))):
            if status not in EXECUTION_STATUSES:
                raise ValueError(f"status: unknown status {status!r} (one of {', '.join(EXECUTION_STATUSES)})")
            if status not in found:
                found.append(status)
    if not found:
        raise ValueError("status: give at least one status")
    return tuple(found)


def _time(key: str, raw: Any) -> datetime:
    value = _single(key, raw)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{key}: {value!r} is not an ISO 8601 time (e.g. 2026-11-27T08:28:33Z)") from None
    else:
        raise ValueError(f"{key}: must be an ISO 8601 time string")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _value(key: str, raw: Any) -> Any:
    value = _single(key, raw)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _nested(key: str, path: str, value: Any) -> dict:
    parts = path.split(".")
    if not all(parts):
        raise ValueError(f"{key}: empty field name in the path")
    for part in reversed(parts):
        value = {part: value}
    return value


def _merge(into: dict, more: dict, key: str) -> None:
    """Deep-merge `more` into `into`; two different values for one field are an error."""
    for name, value in more.items():
        if name not in into:
            into[name] = value
        elif isinstance(into[name], dict) and isinstance(value, dict):
            _merge(into[name], value, key)
        elif into[name] != value:
            raise ValueError(f"{key}: conflicts with another filter on field {name!r}")


def filter_sql(f: ExecutionFilter) -> tuple[list[str], list[Any]]:
    """WHERE conditions (ANDed) on workflow_executions and their parameters."""
    where: list[str] = []
    params: list[Any] = []
    for condition, value in (("workflow_name = %s", f.workflow), ("workflow_version = %s", f.version),
                             ("created_at >= %s", f.created_after), ("created_at < %s", f.created_before)):
        if value is not None:
            where.append(condition)
            params.append(value)
    if len(f.statuses) == 1:
        where.append("status = %s")
        params.append(f.statuses[0])
    elif f.statuses:
        where.append("status = ANY(%s)")
        params.append(list(f.statuses))
    for column, contained in (("input", f.input_contains), ("output", f.output_contains)):
        if contained:
            where.append(f"{column} @> %s")
            params.append(Jsonb(contained))
    return where, params


# -- the page cursor: where the last page ended ----------------------------------------------------

def encode_cursor(created_at: datetime, execution_id: str) -> str:
    """Opaque to clients: URL-safe base64 of the last row's created_at (microseconds, UTC) and id."""
    moment = created_at.astimezone(timezone.utc).isoformat(timespec="microseconds")
    raw = json.dumps([moment, execution_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        moment, execution_id = json.loads(raw)
        at = datetime.fromisoformat(moment)
        if at.tzinfo is None or not isinstance(execution_id, str):
            raise ValueError
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValueError("cursor: not a cursor this API gave out (pass next_cursor back unchanged)") from None
    return at, execution_id
