"""`orchestrator replay --all` and `status` with the v2 events (links, waits,
compensation) against the real local stack: histories written to the events
topic, projected, audited in one pass."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from orchestrator.cli import cli
from orchestrator.codec import Codec
from orchestrator.core import events as ev
from orchestrator.core.events import RecordedEvent
from orchestrator.runtime.kafka import producer_config
from tests.integration.helpers import Engine, register

pytestmark = pytest.mark.integration

codec = Codec.default()
SEED = Path(__file__).resolve().parents[2] / "examples" / "user-registration-workflow.yaml"
WORKFLOW = "user-registration-workflow"
T0 = 1_700_000_000_000
CLEANUP = """\
apiVersion: workflow/v1
kind: Workflow
metadata: {name: user-cleanup-workflow, version: "1"}
spec:
  steps:
    - name: delete_user
      type: service_call
      config: {service: user-service, endpoint: /api/users/x, method: DELETE}
"""


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def publish(settings, histories: list[list[RecordedEvent]]) -> None:
    producer = Producer(producer_config(settings))
    for history in histories:
        for recorded in history:
            producer.produce(settings.topics.events, codec.encode(recorded), recorded.execution_id.encode())
    assert producer.flush(10) == 0


def project(settings, schema: str) -> None:
    from projections.projector import Projector

    with Projector(settings, schema, group_id=f"replay-test-{uuid.uuid4().hex[:8]}") as projector:
        projector.run_until_caught_up(timeout_s=60)


def numbered(eid: str, *events: Any, at: int = T0) -> list[RecordedEvent]:
    return [RecordedEvent(eid, i, at + 10 * i, "test", e) for i, e in enumerate(events, start=1)]


def compensated(eid: str) -> list[RecordedEvent]:
    """Account created, the wait abandoned, the profile failed: cleanup runs, the execution fails."""
    return numbered(
        eid,
        ev.WorkflowStarted(WORKFLOW, "1.2.0", {"username": "ann"}, "tester"),
        ev.StepScheduled("create_user_account", 1, T0 + 60_000),
        ev.StepCompleted("create_user_account", 1, {"user_id": "u-1"}),
        ev.StepWaiting("wait_for_verification", "user.email_verified", None, {"user_id": "u-1"}, T0 + 86_400_000),
        ev.StepScheduled("create_user_profile", 1, T0 + 60_000),
        ev.StepAttemptFailed("create_user_profile", 1, "HTTP 503", True, False, 503, "open"),
        ev.StepFailed("create_user_profile", 1, "HTTP 503", "compensate"),
        ev.StepFailed("wait_for_verification", 1, "abandoned: the execution is compensating", "abandoned"),
        ev.CompensationStarted("failed", "step 'create_user_profile' failed: HTTP 503", "create_user_profile", None),
        ev.StepScheduled("cleanup_user_account", 1, T0 + 60_000),
        ev.StepCompleted("cleanup_user_account", 1, None),
        ev.CompensationFinished("completed"),
        ev.WorkflowFailed("step 'create_user_profile' failed: HTTP 503", "create_user_profile"),
    )


def waiting(eid: str) -> list[RecordedEvent]:
    return numbered(
        eid,
        ev.WorkflowStarted(WORKFLOW, "1.2.0", {"username": "bob"}, "tester"),
        ev.StepWaiting("wait_for_verification", None, "verified", None, None),
        ev.SignalReceived("other", {"x": 1}, "bob"),
    )


def child(eid: str, parent: str) -> list[RecordedEvent]:
    return numbered(eid, ev.WorkflowStarted("user-cleanup-workflow", "1", {"execution_id": parent}, None,
                                            parent, "compensation"),
                    ev.WorkflowCompleted(None))


def with_child(eid: str) -> list[RecordedEvent]:
    return numbered(
        eid,
        ev.WorkflowStarted(WORKFLOW, "1.2.0", {"username": "cy"}, "tester"),
        ev.StepScheduled("create_user_account", 1, T0 + 60_000),
        ev.StepCompleted("create_user_account", 1, {"user_id": "u-3"}),
        ev.CompensationStarted("cancelled", "changed my mind", None, "user-cleanup-workflow", "cy"),
        ev.ChildExecutionRequested(f"{eid}-compensation", "user-cleanup-workflow", None, {}, "compensation"),
    )


def test_replay_all_checks_every_execution_in_one_pass(cli_pg_env):
    settings, schema = cli_pg_env
    assert invoke("definitions", "apply", str(SEED)).exit_code == 0
    register(settings, CLEANUP)
    run = uuid.uuid4().hex[:8]
    ids = {name: f"{name}-{run}" for name in ("comp", "wait", "parent")}
    child_id = f"{ids['parent']}-compensation"
    publish(settings, [compensated(ids["comp"]), waiting(ids["wait"]), with_child(ids["parent"]),
                       child(child_id, ids["parent"]),
                       numbered(f"ghost-{run}", ev.CommandRejected("CancelWorkflow", "no such execution"))])
    project(settings, schema)

    result = invoke("replay", "--all", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["consistent"], report["inconsistent"], report["executions"]) == (True, [], 4)
    assert report["events"] == 13 + 3 + 5 + 2
    assert report["unprojected_events"] == 0

    only = json.loads(invoke("replay", "--all", "--json", "--workflow", "user-cleanup-workflow").stdout)
    assert only["executions"] == 1 and only["consistent"] is True

    # status shows the links, the compensation and what a step waits for
    doc = json.loads(invoke("status", ids["comp"], "--json").stdout)
    assert doc["status"] == "failed"
    assert doc["compensation"] == {"status": "completed", "trigger": "failed",
                                   "reason": "step 'create_user_profile' failed: HTTP 503", "error": None,
                                   "execution_id": None}
    steps = {s["name"]: s for s in doc["steps"]}
    assert (steps["cleanup_user_account"]["phase"], steps["cleanup_user_account"]["status"]) == (
        "compensation", "completed")
    assert steps["create_user_profile"]["breaker"] == "open"
    assert steps["wait_for_verification"]["waiting_for"] == "user.email_verified"
    doc = json.loads(invoke("status", ids["wait"], "--json").stdout)
    assert {s["name"]: s["waiting_for"] for s in doc["steps"]}["wait_for_verification"] == "signal:verified"
    text = invoke("status", ids["wait"]).stdout
    assert "waiting for signal:verified" in text
    parent = json.loads(invoke("status", ids["parent"], "--json").stdout)
    assert parent["status"] == "compensating"
    assert parent["compensation"]["execution_id"] == child_id
    assert parent["children"] == [{"execution_id": child_id, "relation": "compensation",
                                   "workflow_name": "user-cleanup-workflow", "workflow_version": "1",
                                   "status": "completed"}]
    text = invoke("status", ids["parent"]).stdout
    assert "compensating" in text and child_id in text
    kid = json.loads(invoke("status", child_id, "--json").stdout)
    assert (kid["parent_execution_id"], kid["parent_relation"]) == (ids["parent"], "compensation")
    listed = json.loads(invoke("list", "--json", "--status", "compensating").stdout)["executions"]
    assert [(e["execution_id"], e["compensation_status"]) for e in listed] == [(ids["parent"], "running")]

    # The replay of one execution shows the state after each event.
    one = invoke("replay", ids["comp"])
    assert one.exit_code == 0, one.output
    assert "CompensationStarted" in one.stdout and "cleanup_user_account=completed" in one.stdout
    states = json.loads(invoke("replay", ids["comp"], "--json").stdout)["states"]
    assert [s["changed"] for s in states][:3] == [[], ["create_user_account"], ["create_user_account"]]

    # Events the projector has not read yet are not differences.
    publish(settings, [[RecordedEvent(ids["wait"], 4, T0 + 500, "test", ev.SignalReceived("verified", {}, "bob"))]])
    late = json.loads(invoke("replay", "--all", "--json").stdout)
    assert (late["consistent"], late["unprojected_events"]) == (True, 1)

    # What the engine fixture's teardown runs (in process, this stack's settings and schema).
    engine = Engine(settings, schema, None, None)
    assert engine.assert_all_replay_consistent()["executions"] == 4

    # Tampered rows are reported, one line per execution, exit 1.
    import psycopg
    from psycopg import sql

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE {}.workflow_executions SET compensation_status = 'failed' WHERE id = %s")
                     .format(sql.Identifier(schema)), (ids["comp"],))
        conn.execute(sql.SQL("UPDATE {}.step_executions SET phase = 'main' WHERE execution_id = %s "
                             "AND step_name = 'cleanup_user_account'").format(sql.Identifier(schema)),
                     (ids["comp"],))
    tampered = invoke("replay", "--all", "--json")
    assert tampered.exit_code == 1
    report = json.loads(tampered.stdout)
    [bad] = report["inconsistent"]
    assert bad["execution_id"] == ids["comp"]
    assert {d["what"] for d in bad["differences"]} == {"execution.compensation_status",
                                                       "step cleanup_user_account.phase"}
    readable = invoke("replay", "--all")
    assert readable.exit_code == 1
    assert f"inconsistent {ids['comp']}" in readable.stdout and "1 inconsistent" in readable.stdout
    with pytest.raises(AssertionError, match="compensation_status"):
        engine.assert_all_replay_consistent()


def test_replay_needs_an_id_or_all(cli_env):
    assert invoke("replay").exit_code == 2
    assert invoke("replay", "x", "--all").exit_code == 2
    assert invoke("replay", "x", "--workflow", "w").exit_code == 2
