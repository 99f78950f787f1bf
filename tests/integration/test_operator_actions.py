"""Operators' actions on the real engine, from the command line: retry a failed execution
from its failed step, pause and resume, skip a step with an output. Every role runs against
real Kafka and PostgreSQL and the demo's task service; the module's executions are audited
(`replay`) against the projection at the end (the `engine` fixture)."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FULFILMENT = (Path(__file__).resolve().parents[2] / "examples" / "operations" / "fulfilment.yaml").read_text("utf-8")


@pytest.fixture(scope="module")
def fulfilment(engine):
    engine.register(FULFILMENT)
    return engine


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


def names(engine, eid: str) -> list[str]:
    return [type(r.event).__name__ for r in engine.events(eid)]


def wait_for_event(engine, eid: str, name: str, timeout: float = 30.0) -> list:
    return engine.wait(lambda: name in names(engine, eid) and engine.events(eid), timeout,
                       message=f"{eid}: no {name} in {names(engine, eid)}")


def calls(engine, eid: str) -> Counter:
    """Calls the task service received for the execution, by task."""
    return Counter(r["path"].rsplit("/", 1)[-1]
                   for r in engine.requests(execution_id=eid, path_prefix="/task-service/api/tasks/"))


def cli_json(engine, *args: str, exit_code: int = 0) -> dict:
    result = engine.cli(*args, "--json")
    assert result.exit_code == exit_code, f"{args}: exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def test_retry_reruns_from_the_failed_fourth_step_without_calling_steps_one_to_three(fulfilment):
    engine = fulfilment
    eid = new_id("retry")
    engine.start("fulfilment", {"order_id": "o-1", "carrier_down": True}, eid=eid)
    wait_for_event(engine, eid, "WorkflowFailed")
    assert calls(engine, eid) == {"reserve": 1, "charge": 1, "pack": 1, "ship": 1}

    doc = cli_json(engine, "retry", eid, "--input", '{"order_id": "o-1", "carrier_down": false}',
                   "--reason", "carrier is back", "--wait", "20")
    assert doc["outcome"] == "accepted" and doc["command"] == "RetryExecution"
    wait_for_event(engine, eid, "WorkflowCompleted")

    assert calls(engine, eid) == {"reserve": 1, "charge": 1, "pack": 1, "ship": 2}
    [rerun] = [r for r in engine.requests(execution_id=eid, path_prefix="/task-service/api/tasks/ship")
               if r["headers"]["idempotency-key"].endswith("/rerun-1")]
    assert rerun["body"]["fail"] is False
    retried = next(r.event for r in engine.events(eid) if type(r.event).__name__ == "ExecutionRetried")
    assert retried.steps == ("ship",) and retried.reason == "carrier is back" and retried.requested_by
    row = engine.wait_projected(eid, engine.events(eid)[-1].sequence)
    assert row["status"] == "completed" and row["output"]["trail"] == ["reserve", "charge", "pack", "ship"]
    steps = {s["step_name"]: s for s in engine.rows("SELECT * FROM step_executions WHERE execution_id = %s", (eid,))}
    assert steps["ship"]["status"] == "completed" and steps["ship"]["attempts"] == 2
    assert steps["reserve"]["attempts"] == 1


def test_a_paused_execution_starts_nothing_new_until_resumed_then_completes(fulfilment):
    engine = fulfilment
    eid = new_id("pause")
    engine.start("fulfilment", {"order_id": "o-2", "pack_delay_ms": 3000}, eid=eid)
    engine.wait(lambda: any(type(r.event).__name__ == "StepScheduled" and r.event.step == "pack"
                            for r in engine.events(eid)), 30, message="pack never started")
    doc = cli_json(engine, "pause", eid, "--reason", "carrier incident", "--wait", "20")
    assert doc["outcome"] == "accepted"
    assert engine.rows("SELECT status FROM workflow_executions WHERE id = %s", (eid,))[0]["status"] == "paused"

    # The call in flight finishes and is recorded; nothing after it starts while paused.
    wait_for_event(engine, eid, "StepCompleted")
    engine.wait(lambda: any(getattr(r.event, "step", None) == "pack" and type(r.event).__name__ == "StepCompleted"
                            for r in engine.events(eid)), 30, message="pack never completed")
    time.sleep(1.5)
    assert "ship" not in calls(engine, eid)
    assert not any(getattr(r.event, "step", None) == "ship" for r in engine.events(eid))

    assert cli_json(engine, "resume", eid, "--wait", "20")["outcome"] == "accepted"
    wait_for_event(engine, eid, "WorkflowCompleted")
    assert calls(engine, eid)["ship"] == 1


def test_skip_a_step_with_an_output_and_refusals_are_recorded_with_their_reason(fulfilment):
    engine = fulfilment
    eid = new_id("skip")
    engine.start("fulfilment", {"order_id": "o-3", "pack_delay_ms": 4000}, eid=eid)
    engine.wait(lambda: any(getattr(r.event, "step", None) == "pack" for r in engine.events(eid)), 30)
    # Held first, so that ship cannot start while the skip is on its way.
    assert cli_json(engine, "pause", eid, "--wait", "20")["outcome"] == "accepted"
    assert cli_json(engine, "skip", eid, "ship", "--output", '{"task": "shipped-by-hand"}',
                    "--reason", "sent by courier", "--wait", "20")["outcome"] == "accepted"
    assert cli_json(engine, "resume", eid, "--wait", "20")["outcome"] == "accepted"
    events = wait_for_event(engine, eid, "WorkflowCompleted")
    assert "ship" not in calls(engine, eid)
    [skipped] = [r.event for r in events if type(r.event).__name__ == "StepSkipped"]
    assert skipped.output == {"task": "shipped-by-hand"} and skipped.requested_by
    row = engine.wait_projected(eid, events[-1].sequence)
    assert row["output"]["trail"][-1] == "shipped-by-hand" and row["output"]["shipped"] is False

    refused = cli_json(engine, "retry", eid, "--wait", "20", exit_code=1)
    assert refused["outcome"] == "rejected" and "only a failed execution can be retried" in refused["reason"]
    rejection = [r.event for r in engine.events(eid) if type(r.event).__name__ == "CommandRejected"]
    assert rejection and rejection[-1].command == "RetryExecution"


def test_bulk_pause_and_resume_with_a_dry_run_and_per_item_results(fulfilment):
    engine = fulfilment
    batch = new_id("batch")
    ids = [engine.start("fulfilment", {"order_id": f"o-{i}", "batch": batch, "pack_delay_ms": 2000},
                        eid=f"{batch}-{i}") for i in range(3)]
    engine.wait(lambda: len(engine.rows("SELECT id FROM workflow_executions WHERE input @> %s::jsonb",
                                        (json.dumps({"batch": batch}),))) == 3, 30, message="not projected")
    where = ("--workflow", "fulfilment", "--field", f"input.batch={batch}")

    dry = cli_json(engine, "bulk", "pause", *where, "--dry-run")
    assert dry["matched"] == 3 and sorted(dry["sample"]) == sorted(ids) and "results" not in dry
    assert not any("ExecutionPaused" in names(engine, eid) for eid in ids)

    paused = cli_json(engine, "bulk", "pause", *where, "--rate", "50", "--reason", "carrier incident")
    assert sorted(r["execution_id"] for r in paused["results"]) == sorted(ids)
    assert {r["outcome"] for r in paused["results"]} == {"accepted"}

    resumed = cli_json(engine, "bulk", "resume", *where, "--status", "paused")
    assert {r["outcome"] for r in resumed["results"]} == {"accepted"}
    for eid in ids:
        wait_for_event(engine, eid, "WorkflowCompleted")

    refused = cli_json(engine, "bulk", "retry", *where, exit_code=1)
    assert [r["outcome"] for r in refused["results"]] == ["rejected"] * 3
    assert all("only a failed execution can be retried" in r["reason"] for r in refused["results"])
