"""The HTTP API against the real engine (decider, executor, projector, correlator in threads: the
`engine` fixture), through FastAPI's TestClient: what it starts and cancels is what the CLI shows,
who did it is recorded as `api:<key name>`, keys and roles are enforced, an Idempotency-Key gives
one execution, webhooks start workflows, bulk actions report each execution's decision."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.api.auth import ApiKey, KeyRing, hash_key
from orchestrator.core.messages import ExternalEvent, StartWorkflow
from orchestrator.runtime.secrets import Sealer

from orchestrator.runtime.kafka import partition_for

from .helpers import read_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

OPS, VIEWER, HOOK = {"X-API-Key": "ops-key"}, {"Authorization": "Bearer viewer-key"}, {"X-API-Key": "hook-key"}

# One quick step (the demo's notification service).
NOTIFY = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: api-notify, version: "1"}
spec:
  steps:
    - name: notify
      type: service_call
      config:
        service: notification-service
        endpoint: /api/notifications/send
        payload: {type: api-test, who: "{{ input.who }}"}
"""

# Waits for the signal `approve`; `pin` is sensitive by the schema only (writeOnly), not by its name.
APPROVAL = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: api-approval, version: "1"}
spec:
  input:
    schema:
      type: object
      properties:
        batch: {type: string}
        pin: {type: string, writeOnly: true}
  steps:
    - name: approved
      type: wait_for_event
      config: {signal: approve, timeout: 5m}
    - name: record
      type: service_call
      config:
        service: notification-service
        endpoint: /api/notifications/send
        payload: {approved_by: "{{ steps.approved.output.by }}"}
"""

# A profile without user_id: the demo answers 400, a permanent failure.
FAILING = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: api-failing, version: "1"}
spec:
  steps:
    - name: profile
      type: service_call
      config:
        service: profile-service
        endpoint: /api/profiles
        payload: {bio: nobody}
"""


@pytest.fixture(scope="module")
def api(engine) -> Any:
    keys = KeyRing([ApiKey("ops", "operator", hash_key("ops-key")), ApiKey("viewer", "reader", hash_key("viewer-key")),
                    ApiKey("hook", "webhook", hash_key("hook-key"))])
    with TestClient(create_app(engine.settings, keys, schema=engine.schema)) as client:
        applied = client.post("/api/v1/definitions", headers=OPS, json={"files": [
            {"name": "notify.yaml", "text": NOTIFY}, {"name": "approval.yaml", "text": APPROVAL},
            {"name": "failing.yaml", "text": FAILING}]})
        assert applied.status_code == 200, applied.text
        for name in ("api-notify", "api-approval", "api-failing"):  # projected: starts seal with the registered schema
            engine.wait(lambda: client.get(f"/api/v1/definitions/{name}", headers=VIEWER).status_code == 200,
                        message=f"{name} not projected")
        client.engine = engine
        yield client


def start(api: Any, workflow: str, value: Any, headers: dict = OPS, **extra: Any) -> str:
    response = api.post("/api/v1/executions", headers=headers, json={"workflow": workflow, "input": value, **extra})
    assert response.status_code == 202, response.text
    eid = response.json()["execution_id"]
    api.engine.execution_ids.append(eid)
    return eid


def detail(api: Any, eid: str) -> dict | None:
    response = api.get(f"/api/v1/executions/{eid}", headers=VIEWER)
    return response.json() if response.status_code == 200 else None


def wait_until(api: Any, eid: str, predicate: Any, message: str) -> dict:
    return api.engine.wait(lambda: (lambda d: d if d and predicate(d) else None)(detail(api, eid)), 60,
                           message=f"{eid}: {message}")


def waiting(api: Any, eid: str) -> dict:
    return wait_until(api, eid, lambda d: d["waits"], "never waited for its signal")


def events(api: Any, eid: str) -> list[dict]:
    response = api.get(f"/api/v1/executions/{eid}/history", headers=VIEWER)
    assert response.status_code == 200, response.text
    return response.json()["events"]


# -- definitions ------------------------------------------------------------------------------


def test_apply_records_the_key_and_refuses_other_content_under_a_registered_version(api) -> None:
    again = api.post("/api/v1/definitions", headers=OPS, json={"files": [{"name": "n.yaml", "text": NOTIFY}]})
    assert again.status_code == 200
    [row] = again.json()["definitions"]
    assert (row["name"], row["result"], row["partition"]) == ("api-notify", "unchanged", None)

    changed = api.post("/api/v1/definitions", headers=OPS, json={"files": [
        {"name": "n.yaml", "text": NOTIFY.replace("api-test", "other")}]})
    assert changed.status_code == 409
    error = changed.json()["error"]
    assert error["code"] == "conflict" and "api-notify@1 is already registered with other content" in error[
        "details"][0]

    items = {i["name"]: i for i in api.get("/api/v1/definitions", headers=VIEWER).json()["items"]}
    assert items["api-notify"]["registered_by"] == "api:ops" and items["api-notify"]["latest_version"] == "1"
    listed = api.engine.cli("definitions", "list", "--json")
    by_cli = {d["name"]: d for d in json.loads(listed.stdout)["definitions"]}
    assert by_cli["api-notify"]["registered_by"] == "api:ops"
    assert by_cli["api-notify"]["digest"] == api.get("/api/v1/definitions/api-notify/versions/1",
                                                     headers=VIEWER).json()["digest"]


# -- start, status, history --------------------------------------------------------------------


def test_an_execution_started_by_the_api_reads_as_the_cli_shows_it(api) -> None:
    eid = start(api, "api-notify", {"who": "ann"})
    doc = wait_until(api, eid, lambda d: d["execution"]["status"] == "completed", "did not complete")
    result = api.engine.cli("status", eid, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    execution = doc["execution"]
    assert (execution["id"], execution["status"], execution["workflow_name"], execution["workflow_version"],
            execution["input"], execution["output"], execution["requested_by"]) == (
        shown["execution_id"], shown["status"], shown["workflow_name"], shown["workflow_version"],
        shown["input"], shown["output"], "api:ops")
    assert [(s["step_name"], s["status"], s["attempts"]) for s in doc["steps"]] == [
        (s["name"], s["status"], s["attempts"]) for s in shown["steps"]]

    listed = api.get("/api/v1/executions", headers=VIEWER, params={"workflow": "api-notify", "status": "completed",
                                                                   "input.who": "ann"})
    assert eid in [i["id"] for i in listed.json()["items"]]

    # The audit, as `orchestrator replay ID --json` gives it.
    audit = api.get(f"/api/v1/executions/{eid}/replay", headers=VIEWER).json()
    cli_audit = json.loads(api.engine.cli("replay", eid, "--json").stdout)
    assert audit["consistent"] is True and audit["states"] is None
    assert (audit["events"], audit["final"]) == (cli_audit["events"], cli_audit["final"])
    assert api.get("/api/v1/executions/nothing-here/replay", headers=VIEWER).status_code == 404
    assert api.get("/api/v1/triggers", headers=VIEWER).json() == {"triggers": []}


def test_a_start_is_sealed_and_a_cancel_is_recorded_with_the_key(api) -> None:
    batch = uuid.uuid4().hex
    eid = start(api, "api-approval", {"batch": batch, "pin": "4321"})
    [command] = [c for c in read_all(api.engine.settings, api.engine.settings.topics.commands, eid)
                 if isinstance(c, StartWorkflow)]
    assert command.requested_by == "api:ops" and set(command.input["pin"]) == {"$secret"}
    assert Sealer(api.engine.settings.secret_key).unseal(command.input["pin"]["$secret"]) == "4321"
    assert waiting(api, eid)["waits"][0]["step"] == "approved"

    cancelled = api.post(f"/api/v1/executions/{eid}/cancel", headers=OPS, params={"wait": 30},
                         json={"reason": "changed my mind"})
    assert cancelled.status_code == 202, cancelled.text
    doc = cancelled.json()
    assert (doc["command"], doc["outcome"], doc["partition"]) == (
        "CancelWorkflow", "accepted", partition_for(eid, api.engine.settings.partitions))

    history = {e["event_type"]: e for e in events(api, eid)}
    assert history["WorkflowStarted"]["payload"]["requested_by"] == "api:ops"
    assert history["WorkflowCancelled"]["payload"]["requested_by"] == "api:ops"
    assert history["WorkflowCancelled"]["cause"] == f"commands:{doc['partition']}:{doc['offset']}"

    again = api.post(f"/api/v1/executions/{eid}/cancel", headers=OPS, params={"wait": 30}).json()
    assert (again["outcome"], again["reason"]) == ("rejected", "execution already cancelled")
    page = api.get(f"/api/v1/executions/{eid}/history", headers=VIEWER, params={"limit": 2}).json()
    assert [e["sequence"] for e in page["events"]] == [1, 2] and page["next_after"] == 2
    assert api.get("/api/v1/executions/nobody-has-this-id/history", headers=VIEWER).status_code == 404
    assert api.post("/api/v1/executions/nobody-has-this-id/cancel", headers=OPS).status_code == 404


def test_pause_resume_skip_and_retry_are_decided_and_recorded_with_the_key(api) -> None:
    eid = start(api, "api-approval", {"batch": uuid.uuid4().hex})
    waiting(api, eid)

    def act(path: str, body: dict | None = None) -> dict:
        response = api.post(f"/api/v1/executions/{eid}/{path}", headers=OPS, params={"wait": 30}, json=body or {})
        assert response.status_code == 202, response.text
        return response.json()

    assert act("pause", {"reason": "look first"})["outcome"] == "accepted"
    assert detail(api, eid)["execution"]["status"] == "paused"
    assert act("resume")["outcome"] == "accepted"
    skipped = act("steps/approved/skip", {"output": {"by": "ops"}, "reason": "approved by phone"})
    assert (skipped["command"], skipped["outcome"]) == ("SkipStep", "accepted")
    done = wait_until(api, eid, lambda d: d["execution"]["status"] == "completed", "did not complete")
    assert done["steps"][0]["status"] == "skipped"
    history = {e["event_type"]: e["payload"] for e in events(api, eid)}
    for kind in ("ExecutionPaused", "ExecutionResumed", "StepSkipped"):
        assert history[kind]["requested_by"] == "api:ops", kind
    assert act("pause")["outcome"] == "rejected"  # it has ended

    failing = start(api, "api-failing", {})
    wait_until(api, failing, lambda d: d["execution"]["status"] == "failed", "did not fail")
    eid = failing
    retried = act("retry", {"reason": "profile service fixed"})
    assert (retried["command"], retried["outcome"]) == ("RetryExecution", "accepted")
    [event] = [e for e in events(api, failing) if e["event_type"] == "ExecutionRetried"]
    assert event["payload"]["requested_by"] == "api:ops" and event["payload"]["reason"] == "profile service fixed"


# -- keys and roles ----------------------------------------------------------------------------


def test_keys_and_roles_are_enforced(api) -> None:
    assert api.get("/api/v1/executions").status_code == 401
    assert api.post("/api/v1/executions", json={"workflow": "api-notify"}).status_code == 401
    assert api.get("/api/v1/executions", headers=VIEWER).status_code == 200
    for path in ("/api/v1/executions", "/api/v1/executions/x/cancel", "/api/v1/executions/x/retry"):
        response = api.post(path, headers=VIEWER, json={"workflow": "api-notify"})
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden", path
    assert api.get("/api/v1/executions", headers=HOOK).status_code == 403
    assert api.get("/api/v1/whoami", headers=VIEWER).json()["role"] == "reader"
    assert api.get("/api/v1/whoami").status_code == 401


# -- idempotency and webhooks -------------------------------------------------------------------


def test_an_idempotency_key_starts_one_execution(api) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    body = {"workflow": "api-notify", "input": {"who": "idem"}}
    first = api.post("/api/v1/executions", headers={**OPS, **key}, json=body)
    second = api.post("/api/v1/executions", headers={**OPS, **key}, json=body)
    assert first.status_code == 202 and second.status_code in (200, 202)
    eid = first.json()["execution_id"]
    assert second.json()["execution_id"] == eid and uuid.UUID(eid).version == 5
    api.engine.execution_ids.append(eid)
    wait_until(api, eid, lambda d: d["execution"]["status"] == "completed", "did not complete")
    third = api.post("/api/v1/executions", headers={**OPS, **key}, json=body)
    assert third.status_code == 200
    assert third.json() | {"warnings": []} == {"execution_id": eid, "workflow": "api-notify", "version": "1",
                                               "command": None, "existing": True, "warnings": [],
                                               "outcome": None, "reason": None}
    started = [e for e in events(api, eid) if e["event_type"] == "WorkflowStarted"]
    assert len(started) == 1
    listed = api.get("/api/v1/executions", headers=VIEWER, params={"input.who": "idem"}).json()["items"]
    assert [i["id"] for i in listed] == [eid]
    # The same key names another execution in another workflow; an explicit id with it is refused.
    other = api.post("/api/v1/executions", headers={**OPS, **key}, json={**body, "execution_id": "x-1"})
    assert other.status_code == 422


def test_a_webhook_starts_a_workflow_and_a_signal_finishes_it(api) -> None:
    batch = uuid.uuid4().hex
    response = api.post("/api/v1/webhooks/api-approval", headers=HOOK, json={"batch": batch},
                        params={"wait": 30})
    assert response.status_code == 202, response.text
    doc = response.json()
    eid = doc["execution_id"]
    api.engine.execution_ids.append(eid)
    assert doc["outcome"] == "accepted"
    assert waiting(api, eid)["execution"]["requested_by"] == "api:hook"

    signalled = api.post(f"/api/v1/executions/{eid}/signal", headers=OPS, json={"name": "approve",
                                                                                 "data": {"by": "bob"}})
    assert signalled.status_code == 202 and signalled.json()["command"] == "SignalWorkflow"
    done = wait_until(api, eid, lambda d: d["execution"]["status"] == "completed", "did not complete")
    assert done["steps"][0]["output"] == {"by": "bob"}
    assert api.post("/api/v1/webhooks/api-approval", headers=HOOK, json=[1, 2]).status_code == 422


def test_an_external_event_is_published_with_its_source(api) -> None:
    response = api.post("/api/v1/events", headers=OPS, json={"type": "user.created", "data": {"id": 7},
                                                             "id": f"evt-{uuid.uuid4()}"})
    assert response.status_code == 202, response.text
    doc = response.json()
    [event] = read_all(api.engine.settings, api.engine.settings.topics.external_events, doc["event_id"])
    assert isinstance(event, ExternalEvent)
    assert (event.event_type, event.data, event.source) == ("user.created", {"id": 7}, "api:ops")


# -- bulk -----------------------------------------------------------------------------------------


def test_bulk_cancel_counts_first_then_reports_each_decision(api) -> None:
    batch = uuid.uuid4().hex
    ids = [start(api, "api-approval", {"batch": batch}) for _ in range(3)]
    for eid in ids:
        waiting(api, eid)
    selection = {"workflow": "api-approval", "input": {"batch": batch}}
    dry = api.post("/api/v1/bulk/cancel", headers=OPS, json={"filter": selection, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json()["matched"] == 3 and sorted(dry.json()["sample"]) == sorted(ids)

    run = api.post("/api/v1/bulk/cancel", headers=OPS, json={"filter": selection, "rate_per_second": 50,
                                                             "reason": "bulk test", "decision_timeout_s": 30})
    assert run.status_code == 200, run.text
    report = run.json()
    assert report["matched"] == 3
    assert sorted((r["execution_id"], r["outcome"]) for r in report["results"]) == sorted(
        (eid, "accepted") for eid in ids)
    for eid in ids:
        wait_until(api, eid, lambda d: d["execution"]["status"] == "cancelled", "not cancelled")
        [cancel] = [e for e in events(api, eid) if e["event_type"] == "WorkflowCancelled"]
        assert cancel["payload"]["requested_by"] == "api:ops"

    empty = api.post("/api/v1/bulk/cancel", headers=OPS, json={"filter": {}})
    assert empty.status_code == 422 and "empty filter" in empty.json()["error"]["message"]
    bad = api.post("/api/v1/bulk/cancel", headers=OPS, json={"filter": {"colour": "red"}, "dry_run": True})
    assert bad.status_code == 422 and bad.json()["error"]["message"].startswith("colour: unknown filter")
