"""Shared fixtures for tests against the real local stack (scripts/stack-up).

Kafka must be reachable at ORCH_KAFKA_BOOTSTRAP (default 127.0.0.1:9092);
when it is not, tests fail with a clear message, or skip when ORCH_ALLOW_SKIP=1.
Append fixtures here; keep the existing ones.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet

from orchestrator.config import Settings, Topics, load_settings

# -- Kafka -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The broker address, after checking that a broker answers."""
    from orchestrator.runtime.kafka import KafkaUnavailable, check_kafka

    settings = load_settings()
    try:
        check_kafka(settings, timeout=5.0)
    except KafkaUnavailable as exc:
        message = f"{exc}\nStart the local stack with scripts/stack-up (or set ORCH_ALLOW_SKIP=1 to skip)."
        if os.environ.get("ORCH_ALLOW_SKIP") == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    return settings.kafka_bootstrap


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> Iterator[Settings]:
    """Settings with a unique topic prefix per test, its topics created (and deleted after),
    and a fresh secret key."""
    from orchestrator.runtime.kafka import admin_client, ensure_topics, topic_configs

    prefix = f"test-{uuid.uuid4().hex[:10]}."
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topics=Topics(prefix), partitions=2,
                        secret_key=Fernet.generate_key().decode(), instance=uuid.uuid4().hex[:6])
    ensure_topics(settings)
    yield settings
    admin = admin_client(settings)
    for future in admin.delete_topics(list(topic_configs(settings)), operation_timeout=10).values():
        try:
            future.result()
        except Exception:  # best effort clean-up
            pass


# -- demo services ---------------------------------------------------------------


@pytest.fixture
def demo_services() -> Iterator[object]:
    """The demo services (orchestrator.demo.services) on a free port, in a thread."""
    from orchestrator.demo.services import start_demo_services

    with start_demo_services() as server:
        yield server


# -- PostgreSQL (projections) ------------------------------------------------------


@pytest.fixture(scope="session")
def database_url() -> str:
    """ORCH_DATABASE_URL, after checking that PostgreSQL answers."""
    import psycopg

    url = load_settings().database_url
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        message = (f"PostgreSQL at {url} is unreachable: {exc}\n"
                   "Start the local stack with scripts/stack-up (or set ORCH_ALLOW_SKIP=1 to skip).")
        if os.environ.get("ORCH_ALLOW_SKIP") == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    return url


@pytest.fixture
def pg_schema(database_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema per test (dropped after): pass it as `schema=` to
    the projections API, or `SET search_path` to it."""
    import psycopg
    from psycopg import sql

    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield schema
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def projection_settings(kafka_settings: Settings, database_url: str) -> Settings:
    """`kafka_settings` (unique topic prefix) with the stack's database URL."""
    import dataclasses

    return dataclasses.replace(kafka_settings, database_url=database_url)


# -- the command line ------------------------------------------------------------------


@pytest.fixture
def cli_env(kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment of `orchestrator ...` pointed at `kafka_settings` (its unique topic
    prefix via ORCH_TOPIC_PREFIX, partitions, secret key, instance)."""
    for name in list(os.environ):
        if name.startswith("ORCH_") and name not in ("ORCH_DATABASE_URL", "ORCH_ALLOW_SKIP"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ORCH_KAFKA_BOOTSTRAP", kafka_settings.kafka_bootstrap)
    monkeypatch.setenv("ORCH_TOPIC_PREFIX", kafka_settings.topics.prefix)
    monkeypatch.setenv("ORCH_PARTITIONS", str(kafka_settings.partitions))
    monkeypatch.setenv("ORCH_SECRET_KEY", kafka_settings.secret_key or "")
    monkeypatch.setenv("ORCH_INSTANCE", kafka_settings.instance)
    return kafka_settings


@pytest.fixture
def cli_pg_env(cli_env: Settings, database_url: str, pg_schema: str,
               monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, str]:
    """`cli_env` plus the database and a fresh projection schema (ORCH_DATABASE_SCHEMA)."""
    import dataclasses

    monkeypatch.setenv("ORCH_DATABASE_URL", database_url)
    monkeypatch.setenv("ORCH_DATABASE_SCHEMA", pg_schema)
    return dataclasses.replace(cli_env, database_url=database_url), pg_schema


# -- the whole engine in threads ---------------------------------------------------------


@pytest.fixture(scope="module")
def engine(kafka_bootstrap: str, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A decider, an executor, a projector and a correlator (threads of this process) with one Settings of
    their own: a unique topic prefix (2 partitions), a fresh PostgreSQL schema, a service
    registry pointing at the demo services (started here) and a fresh secret key. The roles'
    log lines are captured (JSON, debug level) in `engine.logs`. One per test module: give each
    test its own execution ids. See tests/integration/helpers.py (`Engine`)."""
    import io
    import logging

    import psycopg
    import structlog
    from psycopg import sql

    from orchestrator.demo.services import start_demo_services
    from orchestrator.logging import configure_logging
    from orchestrator.runtime.correlator import run_correlator
    from orchestrator.runtime.decider import Decider
    from orchestrator.runtime.executor import run_executor
    from orchestrator.runtime.kafka import admin_client, ensure_topics, topic_configs
    from projections import connect, migrate, run_projector

    from .helpers import Engine

    prefix = f"test-{uuid.uuid4().hex[:10]}."
    schema = f"test_{uuid.uuid4().hex[:12]}"
    demo = start_demo_services()
    registry = tmp_path_factory.mktemp("engine") / "services.yaml"
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=Topics(prefix),
                        partitions=2, services_file=registry, secret_key=Fernet.generate_key().decode(),
                        instance=uuid.uuid4().hex[:6], executor_concurrency=16, log_level="debug",
                        log_format="json")
    logs = io.StringIO()
    eng = Engine(settings, schema, demo, logs)
    # plus `flaky-service`: the demo's user-service behind a small circuit breaker
    # (tests/integration/test_circuit_breaker.py)
    registry.write_text(eng.service_registry() + (
        f"  flaky-service:\n    base_url: {demo.url}/user-service\n    timeout: 10s\n    connect_timeout: 2s\n"
        "    breaker: {failure_threshold: 3, window: 30s, open_for: 2s, half_open_probes: 1}\n"))

    # Logging: the product's set-up (redaction included) into a buffer; pytest's own
    # handlers stay, and everything is put back afterwards.
    root = logging.getLogger()
    saved_structlog, saved_handlers, saved_level = structlog.get_config(), list(root.handlers), root.level
    configure_logging(settings, stream=logs)
    ours = [h for h in root.handlers if h not in saved_handlers]
    for handler in saved_handlers:
        if handler not in root.handlers:
            root.addHandler(handler)

    try:
        ensure_topics(settings)
        with connect(database_url, schema, create_schema=True, autocommit=True) as conn:
            migrate(conn, schema)
        eng.launch("decider", lambda: Decider(settings).run(eng.stop))
        eng.launch("executor", lambda: run_executor(settings, eng.stop))
        eng.launch("projector", lambda: run_projector(settings, eng.stop, schema=schema))
        eng.launch("correlator", lambda: run_correlator(settings, eng.stop))
        yield eng
        # The audit: every execution this engine ran replays to what the projection shows.
        if not eng.errors:
            eng.assert_all_replay_consistent()
    finally:
        eng.shutdown()
        demo.stop()
        for handler in ours:
            root.removeHandler(handler)
        root.setLevel(saved_level)
        structlog.configure(**saved_structlog)
        admin = admin_client(settings)
        for future in admin.delete_topics(list(topic_configs(settings)), operation_timeout=10).values():
            try:
                future.result()
            except Exception:  # best effort clean-up
                pass
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
