"""Versioned SQL migrations: `projections/migrations/NNNN_name.sql`, in order.

Each file runs in its own transaction together with its row in
`schema_migrations`, so a failed file leaves nothing behind and the next run
retries it. A session-level advisory lock (per schema) keeps two processes
from migrating at the same time; the second one waits, then finds nothing to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

import psycopg

from .db import use_schema

__all__ = ["Migration", "migrate", "migrations"]

_FILE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")
_LOCK_CLASS = 0x0F1A  # first key of pg_advisory_lock(int, int): "projections migrate"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str = field(repr=False)


def migrations() -> list[Migration]:
    """The migration files shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("projections").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in projections/migrations: {versions}")
    return found


def migrate(conn: psycopg.Connection, schema: str | None = None) -> list[Migration]:
    """Apply the migrations not yet recorded; returns those applied now.

    `conn` must not be inside a transaction. With `schema`, the schema is
    created if needed and the session's search_path is set to it.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("migrate() needs a connection outside a transaction (commit or roll back first)")
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        use_schema(conn, schema, create=True)
        current = conn.execute("SELECT current_schema()").fetchone()
        lock_key = (_LOCK_CLASS, f"projections:{current[0] if current else ''}")
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", lock_key)
        try:
            conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer     PRIMARY KEY,
                    name       text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            applied: list[Migration] = []
            for migration in migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)  # type: ignore[call-overload]  # no params: simple protocol, many statements
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration)
            return applied
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", lock_key)
    finally:
        conn.autocommit = autocommit
