"""The command line without Kafka or PostgreSQL: validation, argument errors,
and the one-line failures when a service cannot be reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli

from tests.seed import SEED

BROKEN = textwrap.dedent("""\
    apiVersion: workflow/v1
    kind: Workflow
    metadata:
      name: broken
      version: "1"
    spec:
      steps:
        - name: first
          type: service_call
          config:
            service: user-service
            endpoint: /a
        - name: second
          type: service_call
          depends_on: [frist]
          config:
            service: user-service
            endpoint: /b
    """)


@pytest.fixture(autouse=True)
def unreachable_services(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing listens on port 1: any test that reached a service would fail fast."""
    for name in list(os.environ):
        if name.startswith("ORCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ORCH_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("ORCH_DATABASE_URL", "postgresql://nobody:nothing@127.0.0.1:1/nowhere")
    monkeypatch.setenv("ORCH_SECRET_KEY_FILE", str(tmp_path / "secret.key"))


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    return path


# -- definitions validate ----------------------------------------------------------


def test_the_seed_example_validates() -> None:
    result = invoke("definitions", "validate", str(SEED))
    assert result.exit_code == 0, result.output
    assert "user-registration-workflow@1.2.0" in result.stdout
    assert result.stderr == ""


def test_a_broken_file_names_the_file_the_step_and_the_problem(broken: Path) -> None:
    result = invoke("definitions", "validate", str(broken))
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if "step 'second'" in line]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"{broken}:")
    assert "step 'second': depends_on: unknown step 'frist'" in line
    assert "did you mean 'first'" in line


def test_every_file_is_checked_and_one_bad_file_fails_the_run(broken: Path, tmp_path: Path) -> None:
    result = invoke("definitions", "validate", str(SEED), str(broken), str(tmp_path / "missing.yaml"))
    assert result.exit_code == 1
    assert "user-registration-workflow@1.2.0" in result.stdout
    assert f"{tmp_path / 'missing.yaml'}: file not found" in result.stderr
    assert "step 'second'" in result.stderr


def test_validate_json_shape(broken: Path) -> None:
    result = invoke("definitions", "validate", "--json", str(SEED), str(broken))
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["valid"] is False
    good, bad = doc["files"]
    assert good == {
        "file": str(SEED), "valid": True, "name": "user-registration-workflow", "version": "1.2.0",
        "digest": good["digest"], "problems": [],
    }
    assert len(good["digest"]) == 64
    assert bad["valid"] is False and bad["name"] is None and bad["digest"] is None
    [problem] = [p for p in bad["problems"] if p["step"] == "second"]
    assert set(problem) == {"file", "line", "step", "field", "message"}
    assert problem["file"] == str(broken)
    assert problem["field"] == "depends_on"
    assert "unknown step 'frist'" in problem["message"]
    assert problem["line"] is not None


def test_validate_json_of_a_valid_file_exits_zero() -> None:
    result = invoke("definitions", "validate", "--json", str(SEED))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["valid"] is True


def test_a_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "junk.yaml"
    path.write_text("spec: [unclosed\n")
    result = invoke("definitions", "validate", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(str(path))


# -- argument errors ------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["definitions", "validate"],
    ["start"],
    ["start", "wf", "--timeout", "5"],
    ["start", "wf", "--wait", "--timeout", "-1"],
    ["run", "conductor"],
    ["list", "--status", "sleeping"],
    ["list", "--limit", "0"],
    ["events", "publish", "user.created"],
    ["cancel"],
    ["signal", "only-an-id"],
    ["nonsense"],
])
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["start", "wf", "--input", '{"user": '], "--input: not valid JSON"),
    (["start", "wf", "--input", "@/no/such/input.json"], "--input: file not found: /no/such/input.json"),
    (["signal", "some-id", "go", "--data", "[1,"], "--data: not valid JSON"),
    (["events", "publish", "user.created", "--data", "{oops}"], "--data: not valid JSON"),
])
def test_bad_json_is_one_line_before_any_kafka_call(args: list[str], message: str) -> None:
    started = time.monotonic()
    result = invoke(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 2


def test_input_from_a_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"username": "ann"}')
    result = invoke("start", "wf", "--input", f"@{path}")
    # The input parsed; what fails now is Kafka (port 1), in one line.
    assert result.exit_code == 1
    assert "Kafka unreachable" in result.stderr


# -- services out of reach ----------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["definitions", "list"],
    ["definitions", "apply", str(SEED)],
    ["start", "user-registration-workflow", "--input", '{"password": "p4ssw0rd!"}'],
    ["history", "some-id"],
    ["cancel", "some-id"],
    ["events", "publish", "user.created", "--data", "{}"],
    ["topics", "create"],
])
def test_kafka_unreachable_fails_fast_in_one_line(args: list[str]) -> None:
    started = time.monotonic()
    result = invoke(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: Kafka unreachable at 127.0.0.1:1"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("args", [["status", "some-id"], ["list"], ["projections", "migrate"]])
def test_postgres_unreachable_fails_fast_in_one_line(args: list[str]) -> None:
    started = time.monotonic()
    result = invoke(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: PostgreSQL unreachable at 127.0.0.1:1/nowhere"), result.stderr
    assert "nothing" not in result.stderr  # the password
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 10


def test_bad_configuration_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_PARTITIONS", "four")
    result = invoke("definitions", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid configuration")


# -- the program itself ---------------------------------------------------------------------


def test_python_dash_m_runs_the_same_command_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "orchestrator", "definitions", "validate", "--json", str(SEED)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["valid"] is True


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("definitions", "start", "status", "list", "history", "replay", "cancel", "signal",
                    "events", "run", "projections", "topics"):
        assert f"  {command} " in result.stdout


# -- logging ---------------------------------------------------------------------------------


@pytest.fixture
def restore_logging():
    """configure_logging changes process-wide state: put it back for the other tests."""
    import logging

    import structlog

    import orchestrator.logging as orchestrator_logging

    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    orchestrator_logging._STATIC.clear()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_carry_the_execution_id_and_never_a_secret(restore_logging: None) -> None:
    import dataclasses
    import io

    import structlog

    from orchestrator.config import load_settings
    from orchestrator.logging import bind_role, configure_logging

    stream = io.StringIO()
    configure_logging(dataclasses.replace(load_settings({}), log_format="json", log_level="info"), stream=stream)
    bind_role("decider")
    log = structlog.get_logger("test")
    log.info("step_scheduled", execution_id="e-1", input={"password": "hunter2", "nested": {"$secret": "tok"}})
    log.debug("hidden")
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "step_scheduled"
    assert record["execution_id"] == "e-1"
    assert record["role"] == "decider"
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")
    assert record["input"] == {"password": "***", "nested": "***"}
    assert "hunter2" not in line and "tok" not in line


def test_console_logs_and_level_errors(restore_logging: None) -> None:
    import dataclasses
    import io

    import structlog

    from orchestrator.config import load_settings
    from orchestrator.logging import configure_logging

    stream = io.StringIO()
    configure_logging(dataclasses.replace(load_settings({}), log_format="console", log_level="warning"), stream=stream)
    structlog.get_logger("t").info("quiet")
    structlog.get_logger("t").warning("loud", execution_id="e-2", token="abc")
    text = stream.getvalue()
    assert "quiet" not in text
    assert "loud" in text and "execution_id=e-2" in text and "abc" not in text
    with pytest.raises(ValueError, match="ORCH_LOG_LEVEL"):
        configure_logging(dataclasses.replace(load_settings({}), log_level="chatty"))
