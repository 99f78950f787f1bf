"""PostgreSQL connections for the projections, optionally in their own schema."""

from __future__ import annotations

import re

import psycopg
from psycopg import sql

__all__ = ["connect", "use_schema"]


_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _checked(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid PostgreSQL schema name {schema!r}")
    return schema


def use_schema(conn: psycopg.Connection, schema: str | None, *, create: bool = False) -> None:
    """Point the session's search_path at `schema` (None leaves it alone).

    With `create`, the schema is created when missing. Commits nothing: in a
    non-autocommit connection the caller's transaction carries the change.
    """
    if schema is None:
        return
    name = sql.Identifier(_checked(schema))
    if create:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
    conn.execute(sql.SQL("SET search_path TO {}").format(name))


def connect(database_url: str, schema: str | None = None, *, autocommit: bool = False,
            create_schema: bool = False) -> psycopg.Connection:
    """A new connection whose search_path is `schema` (when given).

    The search_path is set with a session-level SET in autocommit, so it
    survives the transactions that follow.
    """
    conn = psycopg.connect(database_url, autocommit=True)
    try:
        use_schema(conn, schema, create=create_schema)
        conn.autocommit = autocommit
    except BaseException:
        conn.close()
        raise
    return conn
