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
    ["cancel", "some-id", "--step", " "],
    ["signal", "only-an-id"],
    ["status", "some-id", "--until", "ended"],
    ["status", "some-id", "--timeout", "5"],
    ["status", "some-id", "--since", "2026-11-27T08:00:00Z"],
    ["status", "some-id", "--follow", "--until", "paused"],
    ["status", "some-id", "--follow", "--until", "waiting:"],
    ["status", "some-id", "--follow", "--since", "yesterday"],
    ["status", "some-id", "--follow", "--timeout", "0"],
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
    ["cancel", "some-id", "--step", "pay_all[3].charge"],
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


@pytest.mark.parametrize("args", [["status", "some-id"], ["status", "some-id", "--follow"], ["list"],
                                  ["projections", "migrate"]])
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


# -- status --follow: its lines and when it stops (orchestrator.cli.follow) ----------------------


T0 = "2026-11-27T08:00:00.000Z"


def at(seconds: float) -> str:
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 11, 27, 8, tzinfo=timezone.utc) + timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def step(name: str, status: str = "pending", attempts: int = 0, **fields: object) -> dict:
    return {"name": name, "status": status, "attempts": attempts, "error": None, "status_reason": None,
            "started_at": None, "finished_at": None, "waiting_for": None, "breaker": None, **fields}


def execution(status: str, *steps: dict, **fields: object) -> dict:
    return {"execution_id": "reg-1", "workflow_name": "reg", "workflow_version": "1", "status": status,
            "error": None, "started_at": T0, "finished_at": None, "updated_at": T0, "compensation": None,
            "sequence": 1, "steps": list(steps), **fields}


def lines(changes: list, width: int = 12) -> list[str]:
    from orchestrator.cli.follow import format_change

    return [format_change(c, width) for c in changes]


def test_follow_parses_until_and_since() -> None:
    from orchestrator.cli.follow import Until, parse_since, parse_until

    assert parse_until("ended") == Until("ended")
    assert parse_until("waiting") == Until("waiting")
    assert parse_until("waiting:wait_for_verification") == Until("waiting", "wait_for_verification")
    assert str(parse_until("waiting:x")) == "waiting:x"
    for bad in ("ended:x", "waiting:", "done", ""):
        with pytest.raises(ValueError):
            parse_until(bad)
    assert parse_since("2026-11-27T08:00:01.500Z") == parse_since("2026-11-27T08:00:01.5") == parse_since(at(1.5))
    assert parse_since("2026-11-27T09:00:00+01:00") == parse_since(T0)
    with pytest.raises(ValueError):
        parse_since("yesterday")


def test_follow_prints_each_change_once_oldest_first_with_its_recorded_time() -> None:
    from orchestrator.cli.follow import observe

    first = execution("running",
                      step("validate", "completed", 1, started_at=at(0), finished_at=at(0.04)),
                      step("create", "retrying", 1, started_at=at(0.05), error="HTTP 503 from user-service"),
                      step("profile"))
    updated = {"validate": at(0.04), "create": at(0.4)}
    changes, seen = observe(first, updated, {})
    assert lines(changes) == [
        "   +0.0s  (execution)   running",
        "   +0.0s  validate      completed",
        "   +0.4s  create        retrying HTTP 503 from user-service",
    ]
    assert observe(first, updated, seen) == ([], seen)  # nothing new: nothing printed

    # the error stays while attempt 2 runs: not shown for a running step
    second = execution("running", first["steps"][0],
                       step("create", "running", 2, started_at=at(0.05), error="HTTP 503 from user-service"),
                       step("profile"))
    changes, seen = observe(second, {**updated, "create": at(5.3)}, seen)
    assert lines(changes) == ["   +5.3s  create        running (attempt 2)"]

    ended = execution("failed", first["steps"][0],
                      step("create", "failed", 3, error="HTTP 400 Bad Request", finished_at=at(75)),
                      step("profile", "skipped", 0, status_reason="create failed", finished_at=at(75)),
                      finished_at=at(75), error="step create failed: HTTP 400 Bad Request")
    changes, seen = observe(ended, {**updated, "create": at(75), "profile": at(75)}, seen)
    assert lines(changes) == [
        "  +1m15s  create        failed (attempt 3) HTTP 400 Bad Request",
        "  +1m15s  profile       skipped create failed",
        "  +1m15s  (execution)   failed step create failed: HTTP 400 Bad Request",
    ]


def test_follow_shows_waits_breakers_and_compensation() -> None:
    from orchestrator.cli.follow import observe

    doc = execution("compensating",
                    step("approved", "waiting", 1, started_at=at(2), waiting_for="signal:approve"),
                    step("charge", "retrying", 2, error="timed out", breaker="open"),
                    updated_at=at(9), compensation={"status": "running", "trigger": "cancelled",
                                                    "reason": "signed up twice"})
    changes, _ = observe(doc, {"approved": at(2), "charge": at(8)}, {})
    assert lines(changes) == [
        "   +2.0s  approved      waiting for signal:approve",
        "   +8.0s  charge        retrying (attempt 2) timed out (breaker open)",
        "   +9.0s  (execution)   compensating because it was cancelled: signed up twice",
    ]
    # without the rows' updated_at, a step's own times stand in
    changes, _ = observe(doc, {}, {})
    assert [round(c.offset_s, 1) for c in changes if c.subject == "approved"] == [2.0]


def test_follow_lines_are_one_line_each_and_times_grow_with_the_execution() -> None:
    from orchestrator.cli.follow import Change, elapsed_text, format_change, subject_width

    assert [elapsed_text(s) for s in (0, 9.96, 59.9, 61, 3601, 90061)] == [
        "+0.0s", "+10.0s", "+59.9s", "+1m01s", "+1h00m", "+1d01h"]
    assert subject_width(execution("running", step("send_activation_notification"))) == 28
    assert subject_width(execution("running", step("a"))) == len("(execution)")
    from orchestrator.cli.follow import observe

    doc = execution("running", step("s", "retrying", 1, error="line one\n  line two " + "x" * 400))
    [change] = [c for c in observe(doc, {"s": at(1)}, {})[0] if c.subject == "s"]
    text = format_change(change, 11)
    assert "\n" not in text and text.startswith("   +1.0s  s            retrying line one line two x")
    assert len(change.detail) == 240 and change.detail.endswith("…")
    assert format_change(Change(0, 0.0, "s", "running"), 3) == "   +0.0s  s    running"


@pytest.mark.parametrize("until, doc, expected", [
    ("ended", execution("running"), (False, None)),
    ("ended", execution("compensating"), (False, None)),
    ("ended", execution("completed"), (True, None)),
    ("ended", execution("failed"), (True, None)),  # reached; the exit code says it did not complete
    ("waiting", execution("running", step("a", "running", 1)), (False, None)),
    ("waiting", execution("running", step("a", "waiting", 1)), (True, None)),
    ("waiting:b", execution("running", step("a", "waiting", 1), step("b")), (False, None)),
    ("waiting:b", execution("running", step("a"), step("b", "waiting", 1)), (True, None)),
    ("waiting:b", execution("running", step("b", "completed", 1)),
     (False, "execution reg-1: step b is completed; it will not wait (any more)")),
    ("waiting:b", execution("running", step("b", "skipped")),
     (False, "execution reg-1: step b is skipped; it will not wait (any more)")),
    ("waiting:b", execution("cancelled", step("b")), (False, "execution reg-1 ended cancelled before b waited")),
    ("waiting", execution("completed", step("b", "completed", 1)),
     (False, "execution reg-1 ended completed before any step waited")),
])
def test_follow_stops_when_the_condition_holds_or_never_can(until: str, doc: dict, expected: tuple) -> None:
    from orchestrator.cli.follow import check, parse_until

    assert check(doc, parse_until(until)) == expected


class FakeProjection:
    """`query` and `load_projection` for follow_projection: one (row, steps) per poll, on a fake clock."""

    def __init__(self, polls: list) -> None:
        self.polls = polls
        self.now = 0.0
        self.loads = 0

    def current(self):
        return self.polls[min(int(self.now / 0.25), len(self.polls) - 1)]

    def query(self, conn, sql, params):
        found = self.current()
        return [] if found is None else [{"last_sequence": found[0]["last_sequence"], "started_at": T0}]

    def load_projection(self, conn, execution_id, orders=None):
        self.loads += 1
        return self.current()

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def rows(status: str, sequence: int, *steps: tuple[str, str, float]) -> tuple[dict, list]:
    from datetime import datetime

    def ts(text: str | None):
        return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))

    row = {"id": "reg-1", "workflow_name": "reg", "workflow_version": "1", "status": status, "input": {},
           "output": None, "error": None, "failed_step": None, "requested_by": None, "created_at": ts(T0),
           "started_at": ts(T0), "finished_at": ts(at(9)) if status == "completed" else None,
           "updated_at": ts(at(sequence)), "last_sequence": sequence}
    return row, [{"step_name": name, "step_type": "service_call", "status": st, "attempts": 1, "output": None,
                  "error": None, "status_reason": None, "started_at": ts(at(t)), "finished_at": None,
                  "updated_at": ts(at(t))} for name, st, t in steps]


def test_follow_polls_until_the_condition_and_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli import follow as module
    from orchestrator.cli.follow import Until, follow_projection, parse_since

    polls = [None, rows("running", 1), rows("running", 1), rows("running", 2, ("a", "running", 1)),
             rows("running", 3, ("a", "waiting", 2)), rows("completed", 4, ("a", "completed", 9))]
    fake = FakeProjection(polls)
    monkeypatch.setattr(module, "query", fake.query)
    monkeypatch.setattr(module, "load_projection", fake.load_projection)
    printed: list[str] = []

    def run(until: Until, deadline: float | None = None, since: float | None = None):
        fake.now, printed[:] = 0.0, []
        return follow_projection(None, "reg-1", until, deadline=deadline, since=since, clock=lambda: fake.now,
                                 sleep=fake.sleep, emit=lambda c, w: printed.append(module.format_change(c, w)))

    result = run(Until("waiting", "a"))
    assert result.reached and result.doc["status"] == "running" and not result.timed_out
    assert printed == ["   +0.0s  (execution)  running", "   +1.0s  a            running",
                       "   +2.0s  a            waiting"]
    result = run(Until("ended"))
    assert result.reached and result.doc["status"] == "completed"
    assert printed[-2:] == ["   +9.0s  a            completed", "   +9.0s  (execution)  completed"]
    loads = fake.loads
    result = run(Until("ended"), since=parse_since(at(5)))  # only what was recorded after 5s
    assert printed == ["   +9.0s  a            completed", "   +9.0s  (execution)  completed"]
    assert fake.loads - loads == 4  # the unmoved sequence of the third poll is not loaded again
    result = run(Until("ended"), deadline=0.6)
    assert result.timed_out and not result.reached and result.doc["sequence"] == 1

    fake.polls = [None]
    result = run(Until("ended"), deadline=1.0)
    assert result.timed_out and result.doc is None and fake.now == pytest.approx(1.0)


def test_cancel_with_a_step_sends_cancel_step_keyed_by_the_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli import executions
    from orchestrator.cli.kafka_io import Published
    from orchestrator.core.messages import CancelStep, CancelWorkflow

    sent: list = []

    def publish(settings, records):
        sent.extend(records)
        return [Published(topic, key, 0, 7) for topic, key, _ in records]

    monkeypatch.setattr(executions, "publish", publish)
    monkeypatch.setattr(executions, "require_topics", lambda *a, **k: None)
    monkeypatch.setattr(executions, "requested_by", lambda: "ops")
    result = invoke("cancel", "abc", "--step", "pay_all[3].charge", "--reason", "customer called")
    assert result.exit_code == 0, result.output
    assert result.stdout == "cancel of step pay_all[3].charge requested for abc\n"
    [(topic, key, command)] = sent
    assert (topic, key) == ("wf.commands", "abc")
    assert command == CancelStep("abc", "pay_all[3].charge", "customer called", "ops")
    sent.clear()
    result = invoke("cancel", "abc", "--json")
    assert json.loads(result.stdout)["command"] == "CancelWorkflow"
    assert sent[0][2] == CancelWorkflow("abc", "cancelled", "ops")


def test_follow_shows_cancelled_steps_delays_branches_and_children() -> None:
    from orchestrator.cli.follow import observe

    doc = execution("running",
                    step("route", "running", 1, branch="big"),
                    step("pay_all[3].receipt", "running", 1, child_execution_id="reg-1.pay_all.3.receipt"),
                    step("poll[0].pause", "waiting", 1, wait_until=at(70)),
                    step("slow", "cancelled", 1, error="signal 'stop'"))
    changes, _ = observe(doc, {"route": at(1), "pay_all[3].receipt": at(2), "poll[0].pause": at(3),
                               "slow": at(4)}, {})
    assert lines(changes, 18) == [
        "   +0.0s  (execution)         running",
        "   +1.0s  route               running branch big",
        "   +2.0s  pay_all[3].receipt  running child reg-1.pay_all.3.receipt",
        "   +3.0s  poll[0].pause       waiting until 2026-11-27T08:01:10.000Z",
        "   +4.0s  slow                cancelled signal 'stop'",
    ]


@pytest.mark.parametrize("until, doc, expected", [
    ("waiting:b", execution("running", step("b", "cancelled", 1)),
     (False, "execution reg-1: step b is cancelled; it will not wait (any more)")),
    ("waiting:each[2].b", execution("running", step("each[2].b", "waiting", 1)), (True, None)),
])
def test_follow_knows_cancelled_and_inner_steps(until: str, doc: dict, expected: tuple) -> None:
    from orchestrator.cli.follow import _unknown_step, check, parse_until

    assert check(doc, parse_until(until)) == expected
    orders = {("reg", "1"): ["each", "b"]}
    assert _unknown_step(doc, orders, parse_until("waiting:each[7].b")) is None
    assert "has no step each[7].nope" in _unknown_step(doc, orders, parse_until("waiting:each[7].nope"))


def test_a_large_block_lists_its_notable_steps_and_counts_the_rest() -> None:
    from rich.console import Console

    from orchestrator.cli.render import execution_panel

    items = [step(f"each[{i}].charge", "failed" if i == 3 else "running" if i >= 98 else "completed", 1,
                  parent_step="each", output="ok") for i in range(100)]
    doc = execution("running", step("each", "running", 1, items_total=1000, iterations_started=100,
                                    iterations_completed=97, iterations_failed=1),
                    step("cleanup", "cancelled", 0, error="not needed"), *items,
                    workflow_name="reg", workflow_version="1", input=None, output=None, failed_step=None,
                    requested_by=None, duration_ms=None, parent_execution_id="p", parent_relation="subworkflow",
                    parent_step="fan[2].sub",
                    children=[{"execution_id": "reg-1.x", "relation": "subworkflow", "status": "running"}])
    console = Console(width=160, record=True)
    console.print(execution_panel(doc))
    text = console.export_text()
    shown = [line.split()[0] for line in text.splitlines() if line.startswith("  each[")]
    assert len(shown) == 20 and "each[3].charge" in shown and {"each[98].charge", "each[99].charge"} <= set(shown)
    assert "  … 80 more: 80 completed" in text
    assert "98/1000 items, 1 failed, 2 running" in text
    assert "started by  p (subworkflow, step fan[2].sub)" in text
    assert "reg-1.x" not in text  # a workflow step's child shows on its step's row, not in the header
    assert [line.split()[:2] for line in text.splitlines() if line.startswith("cleanup")] == [["cleanup", "cancelled"]]


def test_history_summarises_long_item_lists() -> None:
    from orchestrator.cli.audit import HistoryEntry, summary
    from orchestrator.core.events import ItemsResolved, RecordedEvent

    entry = HistoryEntry(0, 5, RecordedEvent("x", 2, 0, "command:StartWorkflow",
                                             ItemsResolved("each", [{"id": i} for i in range(1000)])))
    assert summary(entry).startswith("step=each, items=1000 items [{")
    assert entry.as_json()["event"]["items"][999] == {"id": 999}


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
