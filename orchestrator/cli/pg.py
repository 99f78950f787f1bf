"""PostgreSQL for the read commands: fail fast with a line that names the server.

The projection's schema comes from `ORCH_DATABASE_SCHEMA` (unset: the
server's search_path, normally `public`), the same one `orchestrator run
projector` and `projections rebuild|migrate` use.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg import conninfo, errors
from psycopg.rows import dict_row

from ..config import Settings
from .common import CliError

__all__ = ["CONNECT_TIMEOUT_S", "connect", "describe_url", "projection_schema", "query"]

CONNECT_TIMEOUT_S = 5
SCHEMA_ENV = "ORCH_DATABASE_SCHEMA"


def projection_schema() -> str | None:
    return os.environ.get(SCHEMA_ENV) or None


def describe_url(url: str) -> str:
    """`host:port/db` of a connection string, without the password."""
    try:
        parts = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparsable ORCH_DATABASE_URL)"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"{host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextmanager
def connect(settings: Settings, *, autocommit: bool = True, dict_rows: bool = True) -> Iterator[psycopg.Connection]:
    """A connection to the projection database (dict rows unless told), closed afterwards."""
    from projections.db import connect as projection_connect

    where = describe_url(settings.database_url)
    try:
        url = conninfo.make_conninfo(settings.database_url, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.ProgrammingError as exc:
        raise CliError(f"ORCH_DATABASE_URL is not a valid connection string: {_first_line(exc)}") from None
    try:
        conn = projection_connect(url, projection_schema(), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise CliError(f"PostgreSQL unreachable at {where} (ORCH_DATABASE_URL): {_first_line(exc)}") from None
    except ValueError as exc:  # a bad schema name
        raise CliError(f"{SCHEMA_ENV}: {exc}") from None
    if dict_rows:
        conn.row_factory = dict_row  # type: ignore[assignment]
    try:
        yield conn
    finally:
        conn.close()


def query(conn: psycopg.Connection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    """Rows as dicts; missing tables or columns become a hint to migrate."""
    try:
        return list(conn.execute(sql, params))  # type: ignore[arg-type]
    except errors.UndefinedTable as exc:
        raise CliError(f"the projection tables do not exist ({_first_line(exc)}): "
                       "run `orchestrator projections migrate` or `orchestrator run projector`") from None
    except errors.UndefinedColumn as exc:  # an older projection: a later migration adds it
        raise CliError(f"the projection tables are older than this orchestrator ({_first_line(exc)}): "
                       "run `orchestrator projections migrate` or `orchestrator run projector`") from None
    except psycopg.OperationalError as exc:
        raise CliError(f"PostgreSQL: {_first_line(exc)}") from None
