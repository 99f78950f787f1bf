"""What the HTTP API reads from the PostgreSQL projection.

Every function takes a psycopg 3 connection with dict rows whose search_path
is the projection's schema, and returns JSON-ready values (timestamps as ISO
8601 strings in UTC). Database errors propagate: the API maps them.

Lists are newest first (created_at DESC, id DESC) with keyset pagination:
the cursor names the last row of a page, and the next page starts strictly
after it, so pages never skip or repeat a row, however deep, even when many
rows share one created_at. The indexes are in
projections/migrations/0005_query_indexes.sql; scripts/bench_api.py measures
these queries on a million executions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import yaml
from psycopg.pq import TransactionStatus

from projections.step_order import STEPS_SQL, definition_order, in_definition_order

from ..cli.common import iso
from ..core.versions import version_key
from .reads_filter import (
    ExecutionFilter,
    decode_cursor,
    encode_cursor,
    filter_sql,
    parse_filter,
)
from .reads_timers import ARMING_EVENTS, TERMINAL_STATUSES, pending_timers

__all__ = ["ExecutionFilter", "count_matching", "decision_for", "get_definition", "get_definition_version",
           "get_execution", "history", "list_definitions", "list_executions", "matching_ids", "parse_filter"]

LIST_COLUMNS = ("id", "workflow_name", "workflow_version", "status", "created_at", "started_at", "finished_at",
                "updated_at", "error", "failed_step", "requested_by", "parent_execution_id")
_LIST_SELECT = ", ".join(LIST_COLUMNS)
_NEWEST_FIRST = " ORDER BY created_at DESC, id DESC"
EVENT_COLUMNS = "sequence, event_type, recorded_at, cause, payload, kafka_partition, kafka_offset"


def _ready(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON values: timestamps as ISO strings. jsonb columns are JSON already, and no
    other column type needs converting, so this walks one level only (the rows of a page are many)."""
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _where(conditions: list[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


# Filtered queries are never prepared (prepare=False): after a few runs PostgreSQL may settle on one
# generic plan for every value, and the right plan depends on the values: `input @> '{"plan": "pro"}'`
# matches a third of the rows (walk created_at, filter), `{"customer_id": ...}` a handful (GIN, sort).
def list_executions(conn: Any, f: ExecutionFilter, *, limit: int = 50, cursor: str | None = None,
                    ) -> tuple[list[dict[str, Any]], str | None]:
    """A page of matching executions, newest first, and the cursor of the next page (None: no more)."""
    if limit < 1:
        raise ValueError("limit: must be at least 1")
    where, params = filter_sql(f)
    if cursor is not None:
        at, last_id = decode_cursor(cursor)
        # The row comparison is exact; `created_at <= %s` is implied by it, in a form that
        # bitmap scans and indexes holding created_at without id can use as well.
        where += ["(created_at, id) < (%s, %s)", "created_at <= %s"]
        params += [at, last_id, at]
    rows = list(conn.execute(f"SELECT {_LIST_SELECT} FROM workflow_executions{_where(where)}"
                             f"{_NEWEST_FIRST} LIMIT %s", [*params, limit + 1], prepare=False))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return [_ready(r) for r in rows], next_cursor


def count_matching(conn: Any, f: ExecutionFilter) -> int:
    """How many executions match (a bulk dry run's figure: exact, so it reads every match)."""
    where, params = filter_sql(f)
    row = conn.execute(f"SELECT count(*) AS n FROM workflow_executions{_where(where)}", params,
                       prepare=False).fetchone()
    return int(row["n"])


def matching_ids(conn: Any, f: ExecutionFilter, *, max_items: int) -> list[str]:
    """Ids of the newest `max_items` matching executions, newest first (what a bulk action acts on)."""
    where, params = filter_sql(f)
    rows = conn.execute(f"SELECT id FROM workflow_executions{_where(where)}{_NEWEST_FIRST} LIMIT %s",
                        [*params, max_items], prepare=False)
    return [r["id"] for r in rows]


# -- one execution ---------------------------------------------------------------------------------

def get_execution(conn: Any, execution_id: str) -> dict[str, Any] | None:
    """{execution, steps, children, timers, waits} from one consistent snapshot, or None."""
    if conn.info.transaction_status == TransactionStatus.IDLE:  # our own snapshot; else the caller's transaction
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return _execution_document(conn, execution_id)
    return _execution_document(conn, execution_id)


def _execution_document(conn: Any, execution_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM workflow_executions WHERE id = %s", (execution_id,)).fetchone()
    if row is None:
        return None
    row.pop("projected_at", None)  # when the projector wrote it: bookkeeping, not the execution's
    steps = list(conn.execute(STEPS_SQL, (execution_id,)))
    steps = in_definition_order(steps, _step_names(conn, row["workflow_name"], row["workflow_version"]))
    for step in steps:
        step.pop("projected_at", None)
    row["parent_step"] = _parent_step(conn, row)
    children = list(conn.execute(f"SELECT {_LIST_SELECT}, parent_relation FROM workflow_executions "
                                 "WHERE parent_execution_id = %s ORDER BY created_at, id", (execution_id,)))
    timers: list[dict[str, Any]] = []
    if row["status"] not in TERMINAL_STATUSES:
        events = conn.execute("SELECT event_type, payload FROM execution_events WHERE execution_id = %s "
                              "AND event_type = ANY(%s) ORDER BY sequence", (execution_id, list(ARMING_EVENTS)))
        timers = pending_timers(events, steps, row["status"])
    waits = [{"step": s["step_name"], "waiting_for": s["waiting_for"], "timeout_at": s["wait_until"]}
             for s in steps if s["status"] == "waiting"]
    return {"execution": _ready(row), "steps": [_ready(s) for s in steps], "children": [_ready(c) for c in children],
            "timers": [_ready(t) for t in timers], "waits": [_ready(w) for w in waits]}


def _parent_step(conn: Any, row: dict[str, Any]) -> str | None:
    """The parent's workflow step that started this execution (relation subworkflow)."""
    if row.get("parent_relation") != "subworkflow" or not row.get("parent_execution_id"):
        return None
    found = conn.execute("SELECT step_name FROM step_executions WHERE child_execution_id = %s "
                         "AND execution_id = %s", (row["id"], row["parent_execution_id"])).fetchone()
    return found["step_name"] if found else None


_ORDERS: dict[str, list[str]] = {}  # definition digest -> step names: parsing YAML per request is slow
_CACHE_SIZE = 1024  # definitions; past it a cache starts over (plain dicts: safe across request threads)


def _step_names(conn: Any, name: str, version: str | None) -> list[str]:
    if version is None:
        return []
    found = conn.execute("SELECT digest FROM workflow_definitions WHERE name = %s AND version = %s",
                         (name, version)).fetchone()
    if found is None:
        return []
    names = _ORDERS.get(found["digest"])
    if names is None:
        source = conn.execute("SELECT source FROM workflow_definitions WHERE name = %s AND version = %s",
                              (name, version)).fetchone()
        names = definition_order(source["source"]) if source else []
        if len(_ORDERS) >= _CACHE_SIZE:
            _ORDERS.clear()
        _ORDERS[found["digest"]] = names
    return names


def history(conn: Any, execution_id: str, *, after: int = 0, limit: int = 500,
            ) -> tuple[list[dict[str, Any]], int | None]:
    """Events with a sequence above `after`, in order, and the `after` of the next page (None: no more)."""
    if limit < 1:
        raise ValueError("limit: must be at least 1")
    rows = list(conn.execute(f"SELECT {EVENT_COLUMNS} FROM execution_events WHERE execution_id = %s "
                             "AND sequence > %s ORDER BY sequence LIMIT %s", (execution_id, after, limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return [_ready(r) for r in rows], rows[-1]["sequence"] if more else None


def decision_for(conn: Any, execution_id: str, partition: int, offset: int) -> dict[str, Any] | None:
    """The first event the command at commands partition/offset caused in this execution, or None
    (not decided yet, or not projected yet). A refused command's is a CommandRejected."""
    row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM execution_events WHERE execution_id = %s AND cause = %s "
                       "ORDER BY sequence LIMIT 1", (execution_id, f"commands:{partition}:{offset}")).fetchone()
    return _ready(row) if row is not None else None


# -- definitions -----------------------------------------------------------------------------------

_DEFINITION_COLUMNS = "name, version, digest, registered_at, registered_by, step_count"


def list_definitions(conn: Any) -> list[dict[str, Any]]:
    """[{name, latest_version, versions, registered_at, registered_by, description}] by name;
    latest by version order (1.10 after 1.9), its registration and description."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(f"SELECT {_DEFINITION_COLUMNS} FROM workflow_definitions ORDER BY name"):
        by_name.setdefault(row["name"], []).append(row)
    items = []
    for name, rows in by_name.items():
        latest = max(rows, key=lambda r: version_key(r["version"]))
        items.append({"name": name, "latest_version": latest["version"], "versions": len(rows),
                      "registered_at": latest["registered_at"], "registered_by": latest["registered_by"],
                      "description": _description(conn, name, latest["version"], latest["digest"])})
    return [_ready(item) for item in items]


_DESCRIPTIONS: dict[str, str | None] = {}  # digest -> metadata.description
_UNKNOWN = object()


def _description(conn: Any, name: str, version: str, digest: str) -> str | None:
    cached = _DESCRIPTIONS.get(digest, _UNKNOWN)
    if cached is not _UNKNOWN:
        return cached  # type: ignore[return-value]
    row = conn.execute("SELECT source FROM workflow_definitions WHERE name = %s AND version = %s",
                       (name, version)).fetchone()
    try:
        text = ((yaml.safe_load(row["source"]) or {}).get("metadata") or {}).get("description")
    except (yaml.YAMLError, AttributeError, TypeError):  # TypeError: no row (deleted meanwhile)
        text = None
    text = text if isinstance(text, str) else None
    if len(_DESCRIPTIONS) >= _CACHE_SIZE:
        _DESCRIPTIONS.clear()
    _DESCRIPTIONS[digest] = text
    return text


def get_definition(conn: Any, name: str) -> dict[str, Any] | None:
    """{name, versions: [{version, digest, registered_at, registered_by, step_count}]} in version order."""
    rows = list(conn.execute(f"SELECT {_DEFINITION_COLUMNS} FROM workflow_definitions WHERE name = %s", (name,)))
    if not rows:
        return None
    rows.sort(key=lambda r: version_key(r["version"]))
    return {"name": name, "versions": [_ready({k: v for k, v in r.items() if k != "name"}) for r in rows]}


def get_definition_version(conn: Any, name: str, version: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT name, version, source, source_format, digest, registered_at, registered_by "
                       "FROM workflow_definitions WHERE name = %s AND version = %s", (name, version)).fetchone()
    return _ready(row) if row is not None else None
