"""A password given to a workflow never appears in plaintext: not in any Kafka message
(keys, values, headers; aborted transactions included), not in any PostgreSQL row, not in
the roles' logs; the user-service gets an argon2 hash of it.

The whole engine runs in threads of this process (the `engine` fixture, with its log
lines captured at debug level); the execution is started with `orchestrator start`, as a
user would.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from confluent_kafka import Consumer
from psycopg import sql

from orchestrator.runtime.kafka import read_partition_to_end, reader_config

pytestmark = pytest.mark.integration

ONBOARDING = (Path(__file__).resolve().parents[2] / "examples" / "user-onboarding.yaml").read_text()


def all_messages(settings) -> dict[str, list[tuple[bytes | None, bytes | None, list]]]:
    """Every record of every topic of the settings' prefix: (key, value, headers), raw bytes,
    read uncommitted (aborted transactions' records too)."""
    consumer = Consumer(reader_config(settings, **{"isolation.level": "read_uncommitted"}))
    try:
        metadata = consumer.list_topics(timeout=10).topics
        topics = sorted(name for name in metadata if name.startswith(settings.topics.prefix))
        found: dict[str, list] = {}
        for topic in topics:
            found[topic] = [(m.key(), m.value(), m.headers() or [])
                            for p in sorted(metadata[topic].partitions)
                            for m in read_partition_to_end(consumer, topic, p, idle_timeout=10)]
        return found
    finally:
        consumer.close()


def all_rows(engine) -> dict[str, list[str]]:
    """Every row of every table in the engine's schema, as PostgreSQL's text of the row."""
    with engine.connect() as conn:
        tables = [r["table_name"] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (engine.schema,))]
        return {table: [r["row"] for r in conn.execute(
            sql.SQL("SELECT t::text AS row FROM {}.{} AS t").format(sql.Identifier(engine.schema),
                                                                    sql.Identifier(table)))]
                for table in tables}


def test_a_password_never_appears_in_plaintext_anywhere(engine):
    password = "pw-" + uuid.uuid4().hex
    secret = password.encode()
    tag = uuid.uuid4().hex[:10]
    user = {"username": f"user_{tag}", "email": f"{tag}@example.com", "password": password,
            "profile_data": {"tag": tag}}
    engine.register(ONBOARDING)
    eid = f"e2e-secret-{tag}"
    outputs = []

    def cli(*args: str) -> str:
        result = engine.cli(*args)
        outputs.append(result.output)
        assert result.exit_code == 0, result.output
        return result.stdout

    cli("start", "user-onboarding", "--id", eid, "--input", json.dumps(user))
    engine.execution_ids.append(eid)
    events = engine.wait_ended(eid, 45)
    assert type(events[-1].event).__name__ == "WorkflowCompleted", events[-1]
    row = engine.wait_projected(eid, events[-1].sequence)
    assert row["input"]["password"] == "***"
    cli("history", eid, "--json")
    cli("status", eid, "--json")
    engine.assert_replay_consistent(eid)

    # The user-service got an argon2 hash of the password, never the password.
    [created] = engine.requests(idempotency_key=f"{eid}/create_user_account", path_prefix="/user-service/api/users")
    password_hash = created["body"]["password_hash"]
    assert password_hash.startswith("$argon2id$") and PasswordHasher().verify(password_hash, password)
    requests = engine.requests()
    assert any(r["headers"].get("x-workflow-execution-id") == eid for r in requests)
    assert password not in json.dumps(requests)

    # Kafka: every message of every topic of the test's prefix.
    topics = all_messages(engine.settings)
    for name in ("commands", "tasks", "results", "events", "definitions"):
        assert topics[engine.settings.topics.prefix + name], f"nothing read from {name}?"
    for name in ("commands", "tasks", "events"):  # the dump does see the input's other fields
        assert any(tag.encode() in (value or b"") for _, value, _ in topics[engine.settings.topics.prefix + name])
    for topic, records in topics.items():
        for key, value, headers in records:
            assert secret not in (key or b""), topic
            assert secret not in (value or b""), topic
            for header, data in headers:
                assert secret not in header.encode() + (data or b""), (topic, header)

    # PostgreSQL: every row of every table of the test's schema.
    rows = all_rows(engine)
    assert {"workflow_executions", "step_executions", "execution_events", "workflow_definitions",
            "projection_offsets"} <= set(rows)
    assert any(eid in r for r in rows["execution_events"])
    assert any(user["username"] in r for r in rows["workflow_executions"])
    for table, texts in rows.items():
        for text in texts:
            assert password not in text, table

    # The roles' logs (and what the command line printed).
    logs = engine.logs.getvalue()
    assert eid in logs and "step_attempt_succeeded" in logs, "the log capture caught nothing?"
    assert password not in logs
    for output in outputs:
        assert password not in output
