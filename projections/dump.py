"""A canonical dump of the projection tables, for comparing live and rebuilt."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from .db import use_schema

__all__ = ["SNAPSHOT_TABLES", "snapshot"]

# table -> ordering key. Bookkeeping columns that legitimately differ between
# a live and a rebuilt projection (`projected_at`, when the row was written)
# are left out; everything else, Kafka offsets included, must be equal.
SNAPSHOT_TABLES: dict[str, tuple[str, ...]] = {
    "workflow_definitions": ("name", "version"),
    "workflow_executions": ("id",),
    "step_executions": ("execution_id", "step_name"),
    "execution_events": ("execution_id", "sequence"),
}
_BOOKKEEPING = {"projected_at", "updated_at_wall"}


def snapshot(conn: psycopg.Connection, schema: str | None = None, *,
             include_offsets: bool = False) -> dict[str, list[dict[str, Any]]]:
    """{table: [row dict, ...]} in primary-key order, bookkeeping columns left out.

    With `include_offsets`, `projection_offsets` (without updated_at) is added.
    """
    tables = dict(SNAPSHOT_TABLES)
    if include_offsets:
        tables["projection_offsets"] = ("projection", "topic", "partition")
    use_schema(conn, schema)
    out: dict[str, list[dict[str, Any]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for table, key in tables.items():
            cur.execute(f"SELECT * FROM {table} ORDER BY {', '.join(key)}")
            skip = _BOOKKEEPING | ({"updated_at"} if table == "projection_offsets" else set())
            out[table] = [{k: v for k, v in row.items() if k not in skip} for row in cur.fetchall()]
    if not conn.autocommit:
        conn.rollback()
    return out
