"""What a request works with: settings, keys, one connection pool, one producer, the sealer.

The pool and the producer are made on first use (an app that only serves its
OpenAPI document connects to nothing) and live as long as the app: one
producer for every request, never one per request. Pool connections have
dict rows, autocommit and the projection's schema as their search_path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from ..config import Settings
from ..operations.commands import wait_for_decision
from ..operations.sending import KafkaSender, Send
from .auth import KeyRing

__all__ = ["ApiContext", "context"]

DB_CONNECT_TIMEOUT_S = 5
POOL_WAIT_S = 5.0


@dataclass
class ApiContext:
    settings: Settings
    keys: KeyRing
    schema: str | None = None  # the projection's PostgreSQL schema (None: the server's search_path)
    templates_dir: str | None = None  # step templates for definitions validate/apply (ORCH_TEMPLATES)
    pool_size: int = 10
    pool_wait_s: float = POOL_WAIT_S  # a request waits this long for a connection, then gets 503
    kafka_timeout_s: float = 15.0  # how long a send waits for Kafka's confirmation, then 503
    send_override: Send | None = None  # tests: a sender of their own
    _pool: Any = None
    _sender: KafkaSender | None = None
    _seal: Callable[[Any], str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- PostgreSQL --------------------------------------------------------------------

    @property
    def pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                self._pool = self._make_pool()
            return self._pool

    def _make_pool(self) -> Any:
        from psycopg import conninfo
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        from projections.db import use_schema

        schema = self.schema

        def configure(conn: Any) -> None:
            use_schema(conn, schema)

        url = conninfo.make_conninfo(self.settings.database_url, connect_timeout=DB_CONNECT_TIMEOUT_S)
        return ConnectionPool(url, min_size=1, max_size=self.pool_size, timeout=self.pool_wait_s, open=True,
                              kwargs={"autocommit": True, "row_factory": dict_row}, configure=configure,
                              check=ConnectionPool.check_connection, name="orchestrator-api")

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self.pool.connection() as conn:
            yield conn

    # -- Kafka and secrets --------------------------------------------------------------

    def send(self, records: list[Any]) -> list[Any]:
        if self.send_override is not None:
            return list(self.send_override(records))
        with self._lock:
            if self._sender is None:
                self._sender = KafkaSender(self.settings, role="api", delivery_timeout_s=self.kafka_timeout_s)
            sender = self._sender
        return sender(records)

    def seal(self, value: Any) -> str:
        if self._seal is None:
            from ..runtime.secrets import Sealer

            self._seal = Sealer.from_settings(self.settings).seal
        return self._seal(value)

    # -- waiting for a decision -----------------------------------------------------------

    def wait_decision(self, execution_id: str, partition: int, offset: int, seconds: float) -> tuple[str, str | None]:
        """The decider's answer to a command this API sent (`operations.commands.wait_for_decision`)."""
        return wait_for_decision(self.connection, execution_id, partition, offset, seconds)

    def close(self) -> None:
        with self._lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def context(request: Request) -> ApiContext:
    """FastAPI dependency: the app's context."""
    return request.app.state.context
