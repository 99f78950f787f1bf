"""The `orchestrator` command line against the real local stack.

Every test has its own topic prefix (ORCH_TOPIC_PREFIX via the `cli_env`
fixture) and, when it needs the projection, its own PostgreSQL schema
(ORCH_DATABASE_SCHEMA via `cli_pg_env`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from orchestrator.cli import cli
from orchestrator.codec import Codec
from orchestrator.core.events import (
    RecordedEvent,
    StepCompleted,
    StepScheduled,
    WorkflowCompleted,
    WorkflowStarted,
)
from orchestrator.core.messages import (
    CancelWorkflow,
    DefinitionRegistered,
    ExternalEvent,
    SignalWorkflow,
    StartWorkflow,
)
from orchestrator.runtime.kafka import partition_for, producer_config, read_partition_to_end
from orchestrator.runtime.secrets import Sealer

pytestmark = pytest.mark.integration

codec = Codec.default()
ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "user-registration-workflow.yaml"
ONBOARDING = ROOT / "examples" / "user-onboarding.yaml"


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def messages(settings, topic: str, key: str | None = None, partition: int | None = None) -> list:
    """(partition, offset, key, value bytes) of every record of a topic (or one partition)."""
    from orchestrator.cli.kafka_io import reader, watermarks

    found = []
    partitions = [partition] if partition is not None else range(settings.partitions)
    consumer = reader(settings)
    for p in partitions:
        watermarks(consumer, topic, p)  # a topic created a moment ago may not have its leaders yet
    consumer.close()
    for p in partitions:
        for msg in read_partition_to_end(settings, topic, p, idle_timeout=10):
            if key is None or msg.key() == key.encode():
                found.append((msg.partition(), msg.offset(), msg.key().decode(), msg.value()))
    return found


def produce(settings, topic: str, key: str, message: Any) -> None:
    producer = Producer(producer_config(settings))
    producer.produce(topic, codec.encode(message), key.encode())
    assert producer.flush(10) == 0


# -- definitions ----------------------------------------------------------------------------


def test_apply_is_idempotent_and_refuses_changed_content_under_the_same_version(cli_env, tmp_path):
    first = invoke("definitions", "apply", "--json", str(SEED))
    assert first.exit_code == 0, first.output
    [row] = json.loads(first.stdout)["definitions"]
    assert row["result"] == "registered"
    assert (row["name"], row["version"]) == ("user-registration-workflow", "1.2.0")

    again = invoke("definitions", "apply", "--json", str(SEED))
    assert again.exit_code == 0, again.output
    [row2] = json.loads(again.stdout)["definitions"]
    assert row2["result"] == "unchanged" and row2["digest"] == row["digest"]

    changed = tmp_path / "changed.yaml"
    changed.write_text(SEED.read_text().replace('message: "Validation failed"', 'message: "Invalid input"'))
    refused = invoke("definitions", "apply", str(changed))
    assert refused.exit_code == 1
    assert "user-registration-workflow@1.2.0 is already registered with other content" in refused.stderr
    assert "new metadata.version" in refused.stderr

    # Only the first apply reached the compacted topic, keyed name@version.
    records = messages(cli_env, cli_env.topics.definitions)
    assert [r[2] for r in records] == ["user-registration-workflow@1.2.0"]
    registered = codec.decode(records[0][3], expect="definitions")
    assert isinstance(registered, DefinitionRegistered)
    assert registered.digest == row["digest"]
    assert registered.source == SEED.read_text()
    assert registered.source_format == "yaml"
    assert abs(registered.registered_at - time.time() * 1000) < 120_000

    listed = invoke("definitions", "list", "--json")
    assert listed.exit_code == 0
    [entry] = json.loads(listed.stdout)["definitions"]
    assert entry["name"] == "user-registration-workflow" and entry["digest"] == row["digest"]
    assert entry["registered_at"].endswith("Z")


def test_apply_is_all_or_nothing(cli_env, tmp_path):
    broken = tmp_path / "broken.yaml"
    source = SEED.read_text().replace('depends_on: ["validate_input"]', 'depends_on: ["nope"]', 1)
    assert "nope" in source
    broken.write_text(source)
    result = invoke("definitions", "apply", str(ONBOARDING), str(broken))
    assert result.exit_code == 1
    assert f"{broken}" in result.stderr and "nothing applied" in result.stderr
    assert messages(cli_env, cli_env.topics.definitions) == []
    listed = invoke("definitions", "list")
    assert listed.exit_code == 0 and "no definitions registered" in listed.stdout


# -- commands ---------------------------------------------------------------------------------


def test_start_publishes_a_sealed_start_command_on_the_execution_partition(cli_env):
    assert invoke("definitions", "apply", str(SEED)).exit_code == 0
    eid = f"exec-{uuid.uuid4()}"
    password = "correct horse battery staple"
    user_input = {"username": "alice", "email": "alice@example.com", "password": password}
    result = invoke("start", "user-registration-workflow", "--id", eid, "--input", json.dumps(user_input),
                    "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["execution_id"] == eid
    expected_partition = partition_for(eid, cli_env.partitions)
    assert doc["command"]["partition"] == expected_partition

    [(partition, offset, key, value)] = messages(cli_env, cli_env.topics.commands)
    assert (partition, offset, key) == (expected_partition, doc["command"]["offset"], eid)
    assert password.encode() not in value
    command = codec.decode(value, expect="commands")
    assert isinstance(command, StartWorkflow)
    assert command.execution_id == eid
    assert command.workflow_name == "user-registration-workflow" and command.workflow_version is None
    assert command.input["username"] == "alice" and command.input["email"] == "alice@example.com"
    sealed = command.input["password"]
    assert set(sealed) == {"$secret"}
    assert Sealer(cli_env.secret_key).unseal(sealed["$secret"]) == password
    assert command.requested_by


def test_start_without_a_registered_definition_still_seals_by_name_and_prints_the_id(cli_env):
    result = invoke("start", "not-registered", "--version", "7", "--input",
                    '{"api_token": "tok-123", "nested": {"client_secret": "s-456"}, "n": 1}')
    assert result.exit_code == 0, result.output
    eid = result.stdout.strip()
    uuid.UUID(eid)
    assert "not-registered" in result.stderr and "not registered" in result.stderr
    [(_, _, key, value)] = messages(cli_env, cli_env.topics.commands)
    assert key == eid
    assert b"tok-123" not in value and b"s-456" not in value
    command = codec.decode(value)
    assert command.workflow_version == "7"
    assert set(command.input["api_token"]) == {"$secret"}
    assert set(command.input["nested"]["client_secret"]) == {"$secret"}
    assert command.input["n"] == 1


def test_cancel_signal_and_external_events_are_published(cli_env):
    eid = "exec-cancel-me"
    assert invoke("cancel", eid, "--reason", "customer asked").exit_code == 0
    assert invoke("signal", eid, "approve", "--data", '{"by": "ops"}').exit_code == 0
    published = invoke("events", "publish", "user.email_verified", "--data", '{"user_id": "u-1"}',
                       "--id", "evt-1", "--json")
    assert published.exit_code == 0, published.output
    assert json.loads(published.stdout)["event_id"] == "evt-1"

    commands = [codec.decode(r[3]) for r in messages(cli_env, cli_env.topics.commands, key=eid)]
    assert [type(c) for c in commands] == [CancelWorkflow, SignalWorkflow]
    assert commands[0].reason == "customer asked"
    assert (commands[1].name, commands[1].data) == ("approve", {"by": "ops"})
    [(_, _, key, value)] = messages(cli_env, cli_env.topics.external_events)
    event = codec.decode(value, expect="external-events")
    assert key == "evt-1" and isinstance(event, ExternalEvent)
    assert (event.event_type, event.data) == ("user.email_verified", {"user_id": "u-1"})


# -- history ----------------------------------------------------------------------------------


def _same_partition_id(eid: str, partitions: int) -> str:
    target = partition_for(eid, partitions)
    return next(other for other in (f"other-{i}" for i in range(1000)) if partition_for(other, partitions) == target)


def record_history(settings, eid: str, *, password_token: str = "sealed-token") -> list[RecordedEvent]:
    t0 = 1_700_000_000_000
    history = [
        RecordedEvent(eid, 1, t0, "command:StartWorkflow",
                      WorkflowStarted("user-registration-workflow", "1.2.0",
                                      {"username": "bob", "password": {"$secret": password_token}}, "tester")),
        RecordedEvent(eid, 2, t0, "command:StartWorkflow", StepScheduled("validate_input", 1, t0 + 60_000)),
        RecordedEvent(eid, 3, t0 + 250, "result:validate_input#1",
                      StepCompleted("validate_input", 1, {"checked": ["email"]})),
        RecordedEvent(eid, 4, t0 + 250, "result:validate_input#1", WorkflowCompleted({"user_id": "u-9"})),
    ]
    for recorded in history:
        produce(settings, settings.topics.events, eid, recorded)
    return history


def test_history_reads_the_execution_events_from_kafka(cli_env):
    eid = f"exec-{uuid.uuid4()}"
    other = _same_partition_id(eid, cli_env.partitions)
    record_history(cli_env, other)  # same partition, another key: never shown
    history = record_history(cli_env, eid)

    result = invoke("history", eid, "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["sequence"] for line in lines] == [1, 2, 3, 4]
    assert [line["event_type"] for line in lines] == [
        "WorkflowStarted", "StepScheduled", "StepCompleted", "WorkflowCompleted"]
    assert {line["execution_id"] for line in lines} == {eid}
    partition = partition_for(eid, cli_env.partitions)
    assert {line["partition"] for line in lines} == {partition}
    offsets = [line["offset"] for line in lines]
    assert offsets == sorted(offsets) and offsets[0] == 4  # after the other execution's four
    first = lines[0]
    assert first["recorded_at"] == "2023-11-14T22:13:20.000Z"
    assert first["cause"] == "command:StartWorkflow"
    assert first["event"]["input"] == {"username": "bob", "password": "***"}
    assert lines[1]["event"] == {"step": "validate_input", "attempt": 1, "deadline_at": "2023-11-14T22:14:20.000Z"}
    assert lines[2]["event"]["output"] == {"checked": ["email"]}
    assert lines[3]["event"]["output"] == {"user_id": "u-9"}
    assert "sealed-token" not in result.stdout
    assert len(history) == len(lines)

    table = invoke("history", eid)
    assert table.exit_code == 0
    for name in ("WorkflowStarted", "StepScheduled", "StepCompleted", "WorkflowCompleted"):
        assert name in table.stdout
    assert f"{partition}/{offsets[0]}" in table.stdout


def test_history_of_an_unknown_execution_is_one_line(cli_env):
    result = invoke("history", "no-such-execution")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: execution no-such-execution: no events")


# -- the projection: status, list, replay -----------------------------------------------------


def project(settings, schema: str) -> None:
    from projections.projector import Projector

    with Projector(settings, schema, group_id=f"cli-test-{uuid.uuid4().hex[:8]}") as projector:
        projector.run_until_caught_up(timeout_s=60)


def test_status_list_and_replay_agree_with_the_projection(cli_pg_env):
    settings, schema = cli_pg_env
    assert invoke("definitions", "apply", str(SEED)).exit_code == 0
    eid = f"exec-{uuid.uuid4()}"
    record_history(settings, eid)
    project(settings, schema)

    status = invoke("status", eid, "--json")
    assert status.exit_code == 0, status.output
    doc = json.loads(status.stdout)
    assert (doc["execution_id"], doc["status"], doc["output"]) == (eid, "completed", {"user_id": "u-9"})
    assert doc["input"]["password"] == "***"
    assert doc["started_at"] == "2023-11-14T22:13:20.000Z"
    assert doc["steps"][0] == {**doc["steps"][0], "name": "validate_input", "status": "completed", "attempts": 1}
    assert [s["name"] for s in doc["steps"]][:3] == ["validate_input", "create_user_account", "create_user_profile"]
    assert all(s["status"] == "pending" for s in doc["steps"][1:])

    listed = invoke("list", "--json", "--workflow", "user-registration-workflow", "--status", "completed")
    assert listed.exit_code == 0
    assert [e["execution_id"] for e in json.loads(listed.stdout)["executions"]] == [eid]
    assert json.loads(invoke("list", "--json", "--status", "failed").stdout)["executions"] == []

    replay = invoke("replay", eid, "--json")
    assert replay.exit_code == 0, replay.output
    report = json.loads(replay.stdout)
    assert report["consistent"] is True and report["differences"] == []
    assert [s["status"] for s in report["states"]] == ["running", "running", "running", "completed"]
    assert report["final"]["output"] == {"user_id": "u-9"}
    readable = invoke("replay", eid)
    assert readable.exit_code == 0 and "consistent" in readable.stdout

    # Tamper with the projection: replay must notice.
    import psycopg
    from psycopg import sql

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE {}.step_executions SET status = 'failed', error = 'boom' "
                             "WHERE execution_id = %s AND step_name = 'validate_input'")
                     .format(sql.Identifier(schema)), (eid,))
    tampered = invoke("replay", eid, "--json")
    assert tampered.exit_code == 1
    diffs = {d["what"]: d for d in json.loads(tampered.stdout)["differences"]}
    assert diffs["step validate_input.status"] == {
        "what": "step validate_input.status", "kafka": "completed", "projection": "failed"}
    assert diffs["step validate_input.error"]["projection"] == "boom"


def test_status_of_an_unknown_execution_is_one_line(cli_pg_env):
    settings, schema = cli_pg_env
    assert invoke("projections", "migrate").exit_code == 0
    result = invoke("status", "nobody")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: execution nobody not found in the projection")


# -- start --wait -------------------------------------------------------------------------------


def test_start_wait_gives_up_after_the_timeout_with_exit_2(cli_env):
    assert invoke("definitions", "apply", str(SEED)).exit_code == 0  # no decider runs: nothing happens
    started = time.monotonic()
    result = invoke("start", "user-registration-workflow", "--input", '{"username": "ann"}', "--wait",
                    "--timeout", "2", "--json")
    assert result.exit_code == 2
    assert 2 <= time.monotonic() - started < 15
    doc = json.loads(result.stdout)
    assert doc["timed_out"] is True and doc["status"] == "pending"
    assert (doc["workflow_name"], doc["workflow_version"]) == ("user-registration-workflow", "1.2.0")


@pytest.fixture
def running_roles(cli_env, demo_services, tmp_path):
    """A decider and an executor (threads) on the test's topics, calling the demo services."""
    from orchestrator.runtime.decider import run_decider
    from orchestrator.runtime.executor import run_executor

    registry = tmp_path / "services.yaml"
    registry.write_text("services:\n" + "".join(
        f"  {name}:\n    base_url: {demo_services.url}/{name}\n    timeout: 5s\n"
        for name in ("user-service", "profile-service", "notification-service")))
    settings = dataclasses.replace(cli_env, services_file=registry)
    assert invoke("definitions", "apply", str(ONBOARDING)).exit_code == 0
    stop = threading.Event()
    threads = [threading.Thread(target=run, args=(settings, stop), daemon=True) for run in (run_decider, run_executor)]
    for thread in threads:
        thread.start()
    yield settings
    stop.set()
    for thread in threads:
        thread.join(30)


def test_start_wait_follows_the_execution_to_its_end(running_roles):
    user = uuid.uuid4().hex[:8]
    user_input = {"username": f"user_{user}", "email": f"{user}@example.com", "password": "secure_password123",
                  "profile_data": {"first_name": "Ann"}}
    result = invoke("start", "user-onboarding", "--input", json.dumps(user_input), "--wait", "--timeout", "90",
                    "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "completed" and doc["timed_out"] is False
    assert doc["output"]["user_id"]
    assert {s["status"] for s in doc["steps"]} == {"completed"}
    assert doc["input"]["password"] == "***"

    taken = {**user_input, "email": "taken@example.com", "username": f"other_{user}"}
    failed = invoke("start", "user-onboarding", "--input", json.dumps(taken), "--wait", "--timeout", "90")
    assert failed.exit_code == 1, failed.output
    lines = failed.stdout.splitlines()
    uuid.UUID(lines[0])  # the id comes first
    assert "failed" in failed.stdout and "validate_input" in failed.stdout


# -- run --------------------------------------------------------------------------------------------


def _spawn_run(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "all"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_log(proc: subprocess.Popen, lines: list[str], event: str, role: str | None = None,
                  timeout: float = 90) -> dict:
    """The first JSON log line of `event` (from `role`) on the process's stderr."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event and (role is None or record.get("role") == role):
            return record
    raise AssertionError(f"no {event!r} log line:\n" + "".join(lines))


@pytest.fixture
def run_env(cli_pg_env) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()}
    env["PYTHONPATH"] = str(ROOT)
    env["ORCH_LOG_FORMAT"] = "json"
    return env


def test_run_all_stops_gracefully_on_sigterm(run_env):
    proc = _spawn_run(run_env)
    lines: list[str] = []
    try:
        _wait_for_log(proc, lines, "decider_started")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines) + proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = proc.stderr.read()
    assert '"event": "all_stopped"' in rest


def test_run_all_exits_non_zero_when_a_role_dies(run_env):
    proc = _spawn_run(run_env)
    lines: list[str] = []
    try:
        pid = _wait_for_log(proc, lines, "role_spawned", "decider")["pid"]
        _wait_for_log(proc, lines, "decider_started")
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = proc.stderr.read()
    assert '"event": "role_died"' in rest
