"""`orchestrator status ID --follow` on the real engine (decider, executor, projector,
correlator in threads; the `engine` fixture): a short workflow followed to its end, one
that fails, and a signal wait followed until it waits, then (after the signal) to its end."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Two steps; the first meets one 503 (a quick retry), so it completes on attempt 2.
SHORT = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: follow-short, version: "1"}
spec:
  config:
    retry_policy: {max_attempts: 3, backoff: fixed, initial_delay: 500ms}
  steps:
    - name: notify
      type: service_call
      config:
        service: notification-service
        endpoint: /api/notifications/send
        payload: {type: follow-test}
    - name: email
      type: service_call
      depends_on: [notify]
      config:
        service: notification-service
        endpoint: /api/emails/send
        payload: {to: someone@example.com}
"""

# A profile without user_id: the demo answers 400, a permanent failure.
FAILING = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: follow-failing, version: "1"}
spec:
  steps:
    - name: profile
      type: service_call
      config:
        service: profile-service
        endpoint: /api/profiles
        payload: {bio: nobody}
"""

# As in test_long_running.py: waits for the signal `approve`, then records who approved.
APPROVAL = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: follow-approval, version: "1"}
spec:
  steps:
    - name: approved
      type: wait_for_event
      config: {signal: approve, timeout: 1m}
    - name: record
      type: service_call
      config:
        service: notification-service
        endpoint: /api/notifications/send
        payload: {approved_by: "{{ steps.approved.output.by }}"}
"""

LINE = re.compile(r"^ *\+(\d+\.\ds|\d+m\d\ds)  (\S+) +(\S+)(.*)$")


@pytest.fixture(scope="module")
def follow_engine(engine):
    for source in (SHORT, FAILING, APPROVAL):
        engine.register(source)
    return engine


@pytest.fixture(autouse=True)
def no_faults(follow_engine):
    follow_engine.clear_faults()
    yield
    follow_engine.clear_faults()


def parsed(stdout: str) -> list[tuple[str, str, str]]:
    """(subject, status, rest) of every line; each line must have the follow shape."""
    found = []
    for line in stdout.splitlines():
        match = LINE.match(line)
        assert match, f"not a follow line: {line!r}"
        found.append((match[2], match[3], match[4].strip()))
    return found


def test_a_short_workflow_is_followed_to_its_end(follow_engine):
    engine = follow_engine
    engine.fault(path_prefix="/notification-service/api/notifications/send", method="POST", status=503, times=1)
    eid = engine.start("follow-short", {})
    # followed at once: the execution is not even projected yet
    result = engine.cli("status", eid, "--follow", "--timeout", "60")
    assert result.exit_code == 0, result.output
    lines = parsed(result.stdout)
    assert lines[-1] == ("(execution)", "completed", "")
    last = {subject: (status, rest) for subject, status, rest in lines}
    assert last == {"notify": ("completed", "(attempt 2)"), "email": ("completed", ""),
                    "(execution)": ("completed", "")}
    assert len(lines) == len(set(lines))  # each change once
    retrying = [rest for subject, status, rest in lines if status == "retrying"]
    assert all(rest.startswith("HTTP 503") for rest in retrying)
    # an ended execution: its state at once, same exit code; --json is the status document
    again = engine.cli("status", eid, "--follow", "--json")
    assert again.exit_code == 0, again.output
    doc = json.loads(again.stdout)
    status = json.loads(engine.cli("status", eid, "--json").stdout)
    assert doc == {**status, "timed_out": False}
    engine.assert_replay_consistent(eid)


def test_a_failed_execution_exits_1(follow_engine):
    engine = follow_engine
    eid = engine.start("follow-failing", {})
    result = engine.cli("status", eid, "--follow", "--timeout", "60")
    assert result.exit_code == 1, result.output
    subject, status, rest = parsed(result.stdout)[-1]
    assert (subject, status) == ("(execution)", "failed") and "400" in rest
    assert ("profile", "failed") in [line[:2] for line in parsed(result.stdout)]
    waited = engine.cli("status", eid, "--follow", "--until", "waiting")
    assert waited.exit_code == 1
    assert waited.stderr.strip() == f"error: execution {eid} ended failed before any step waited"


def test_a_signal_wait_is_followed_until_it_waits_then_to_its_end(follow_engine):
    engine = follow_engine
    eid = engine.start("follow-approval", {})
    result = engine.cli("status", eid, "--follow", "--until", "waiting:approved", "--timeout", "60")
    assert result.exit_code == 0, result.output
    lines = parsed(result.stdout)
    assert lines[-1] == ("approved", "waiting", "for signal:approve")
    assert ("(execution)", "running", "") in lines

    # not a step of the workflow
    unknown = engine.cli("status", eid, "--follow", "--until", "waiting:aproved")
    assert unknown.exit_code == 1
    assert unknown.stderr.strip() == ("error: workflow follow-approval@1 has no step aproved "
                                      "(its steps: approved, record)")
    # it waits: following to the end runs out of time
    timed_out = engine.cli("status", eid, "--follow", "--timeout", "1")
    assert timed_out.exit_code == 2
    assert timed_out.stderr.strip() == (f"error: execution {eid}: its end not reached after the --timeout (1s); "
                                        "it is running and goes on")
    assert parsed(timed_out.stdout)[-1] == ("approved", "waiting", "for signal:approve")
    # --json: the status document when the condition held
    waiting = engine.cli("status", eid, "--follow", "--until", "waiting", "--json")
    assert waiting.exit_code == 0, waiting.output
    doc = json.loads(waiting.stdout)
    assert doc["status"] == "running" and doc["timed_out"] is False
    assert [(s["name"], s["status"], s["waiting_for"]) for s in doc["steps"]] == [
        ("approved", "waiting", "signal:approve"), ("record", "pending", None)]

    since = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    assert engine.cli("signal", eid, "approve", "--data", '{"by": "bob"}').exit_code == 0
    result = engine.cli("status", eid, "--follow", "--since", since, "--timeout", "60")
    assert result.exit_code == 0, result.output
    lines = parsed(result.stdout)  # only what happened after the signal
    assert lines[0] == ("approved", "completed", "")
    assert lines[-2:] == [("record", "completed", ""), ("(execution)", "completed", "")]
    assert not any(status in ("waiting", "running") and subject in ("approved", "(execution)")
                   for subject, status, _ in lines)
    engine.assert_replay_consistent(eid)
