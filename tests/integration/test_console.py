"""The web console in headless Chromium (Playwright), against the real engine.

The `engine` fixture runs a decider, an executor, a projector and a correlator
on their own topics and schema; here the API app (create_app) serves them on a
free port, executions of the examples are seeded in every state the console
shows (waiting, completed with a retry, a switch, a loop, a fan-out, failed
twice over), and Debian's Chromium (never Playwright's own download) opens
each page. Screenshots go to ORCH_SCREENSHOTS (default .stack/screenshots).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.api.auth import ApiKey, KeyRing, hash_key

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("ORCH_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("ORCH_SCREENSHOTS") or ROOT / ".stack" / "screenshots")
OPERATOR_KEY = "console-operator-" + uuid.uuid4().hex
READER_KEY = "console-reader-" + uuid.uuid4().hex
WORKFLOWS = ("examples/user-registration-workflow.yaml", "examples/user-cleanup-workflow.yaml",
             "examples/patterns/fan-out-limit.yaml", "examples/patterns/wcp04-exclusive-choice.yaml",
             "examples/patterns/wcp21-structured-loop.yaml")


# -- the data ---------------------------------------------------------------------------------


def _status(engine: Any, eid: str) -> str | None:
    rows = engine.rows("SELECT status FROM workflow_executions WHERE id = %s", (eid,))
    return rows[0]["status"] if rows else None


def _step(engine: Any, eid: str, step: str) -> dict | None:
    rows = engine.rows("SELECT * FROM step_executions WHERE execution_id = %s AND step_name = %s", (eid, step))
    return rows[0] if rows else None


def _person(name: str, run: str) -> dict:
    return {"username": f"{name}_{run}", "email": f"{name}.{run}@example.com", "password": f"{name}-secret-pw-1",
            "profile_data": {"first_name": name.title()}}


def register_through_api(api_url: str) -> None:
    """The examples, applied with POST /api/v1/definitions (registered by api:console-ops)."""
    files = [{"name": Path(p).name, "text": (ROOT / p).read_text()} for p in WORKFLOWS]
    response = httpx.post(api_url + "/api/v1/definitions", json={"files": files},
                          headers={"Authorization": f"Bearer {OPERATOR_KEY}"}, timeout=30)
    assert response.status_code == 200, response.text


def seed_executions(engine: Any, api_url: str) -> dict[str, str]:
    """Executions in the states the console shows; returns their ids by role."""
    register_through_api(api_url)
    engine.wait(lambda: len(engine.rows("SELECT 1 FROM workflow_definitions")) == len(WORKFLOWS), 30,
                "the definitions were not projected")
    run = uuid.uuid4().hex[:6]
    ids = {k: f"console-{k}-{run}" for k in ("waiting", "verified", "duplicate", "cancel", "fanout", "fanout_failed",
                                             "switch", "rejected", "loop")}
    ann, bob, cid = _person("ann", run), _person("bob", run), _person("cid", run)
    engine.fault(path_prefix="/user-service/api/users", method="POST", status=503, times=1)  # one retry to see
    engine.start("user-registration-workflow", ann, eid=ids["waiting"])  # the one that gets the 503
    engine.start("fan-out-limit", {"count": 40, "delay_ms": 30}, eid=ids["fanout"])
    engine.start("wcp04-exclusive-choice", {"amount": 5000}, eid=ids["switch"])
    engine.start("wcp04-exclusive-choice", {"amount": -3}, eid=ids["rejected"])
    engine.start("wcp21-structured-loop", {"ready_after": 3}, eid=ids["loop"])

    # Ann's account exists: a second sign-up with her e-mail fails its validation.
    engine.wait(lambda: (_step(engine, ids["waiting"], "create_user_account") or {}).get("status") == "completed",
                60, "ann's account was not created")
    engine.start("user-registration-workflow", bob, eid=ids["verified"])
    engine.start("user-registration-workflow", {**cid, "email": ann["email"]}, eid=ids["duplicate"])
    engine.start("user-registration-workflow", _person("dee", run), eid=ids["cancel"])

    # Bob verifies his e-mail: his registration completes.
    wait = engine.wait(lambda: (s := _step(engine, ids["verified"], "wait_for_verification"))
                       and s["status"] == "waiting" and s, 60, "bob's registration did not wait")
    user_id = _step(engine, ids["verified"], "create_user_account")["output"]["user_id"]
    result = engine.cli("events", "publish", "user.email_verified", "--data", json.dumps({"user_id": user_id}))
    assert result.exit_code == 0, result.output
    assert wait

    # A fan-out whose item gets a permanent 400: it fails fast, a second failure reason.
    engine.wait(lambda: _status(engine, ids["fanout"]) == "completed", 90, "the fan-out did not complete")
    engine.fault(path_prefix="/task-service/api/tasks/fan-out", method="POST", status=400, times=1)
    engine.start("fan-out-limit", {"count": 5}, eid=ids["fanout_failed"])

    expected = {"waiting": "running", "verified": "completed", "duplicate": "failed", "fanout": "completed",
                "fanout_failed": "failed", "switch": "completed", "rejected": "completed", "loop": "completed"}
    for key, status in expected.items():
        engine.wait(lambda: _status(engine, ids[key]) == status, 90, f"{key} ({ids[key]}) did not become {status}")
    engine.wait(lambda: (_step(engine, ids["cancel"], "wait_for_verification") or {}).get("status") == "waiting",
                60, "dee's registration did not wait")
    engine.wait(lambda: (_step(engine, ids["waiting"], "wait_for_verification") or {}).get("status") == "waiting",
                60, "ann's registration did not wait")
    return ids


# -- the API and the browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_url(engine: Any) -> Iterator[str]:
    """The API app (create_app) on a free port, in a thread, over the engine's topics and schema."""
    import uvicorn

    from orchestrator.api.app import create_app

    keys = KeyRing([ApiKey("console-ops", "operator", hash_key(OPERATOR_KEY)),
                    ApiKey("console-viewer", "reader", hash_key(READER_KEY))])
    app = create_app(engine.settings, keys, schema=engine.schema)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="console-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def seeded(engine: Any, api_url: str) -> dict[str, str]:
    return seed_executions(engine, api_url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM} (the console tests drive it headless): install it "
                    "with `scripts/install browser` (Debian's `apt-get install -y chromium`), or point "
                    "ORCH_CHROMIUM at a Chromium binary. Playwright's own browser download is not used.",
                    pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def _open(browser: Any, api_url: str, key: str) -> Any:
    """A page of the console with `key` entered in its key dialog; page errors are collected."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(api_url + "/")  # redirected to /console/
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-dialog", state="hidden")
    return page


@pytest.fixture
def page(browser: Any, api_url: str) -> Iterator[Any]:
    page = _open(browser, api_url, OPERATOR_KEY)
    yield page
    errors = page.errors
    page.close()
    assert not errors, f"JavaScript errors in the console: {errors}"


def shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def row_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("table.executions tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")


def wait_rows(page: Any, predicate: Any, message: str, timeout: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        ids = row_ids(page)
        if predicate(ids):
            return ids
        assert time.monotonic() < deadline, f"{message}: rows {ids}"
        page.wait_for_timeout(200)


# -- the pages ------------------------------------------------------------------------------------


def test_the_console_is_served_without_auth_and_the_api_needs_a_key(api_url: str) -> None:
    index = httpx.get(api_url + "/console/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in index.headers["content-security-policy"]
    script = httpx.get(api_url + "/console/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(api_url + "/console/app.js", headers={"If-None-Match": script.headers["etag"]}).status_code == 304
    assert httpx.get(api_url + "/console/style.css").headers["content-type"].startswith("text/css")
    assert httpx.get(api_url + "/console/..%2Fconsole.py").status_code == 404
    assert httpx.get(api_url + "/console/nothing.js").status_code == 404
    assert httpx.get(api_url + "/api/v1/analytics").status_code == 401


def test_executions_list_pages_and_filters(page: Any, api_url: str, seeded: dict[str, str]) -> None:
    page.goto(api_url + "/console/#/executions")
    ids = wait_rows(page, lambda ids: set(seeded.values()) <= set(ids), "not every execution is listed")
    assert page.locator(f"tr[data-id='{seeded['waiting']}'] .badge").inner_text() == "running"
    assert page.locator(f"tr[data-id='{seeded['duplicate']}'] td.error").inner_text().strip()
    shot(page, "executions")

    # only the failed ones, through the filter form
    page.check("input[name=status][value=failed]")
    page.click("form.filters button[type=submit]")
    failed = wait_rows(page, lambda ids: bool(ids) and seeded["verified"] not in ids, "the status filter did nothing")
    assert {seeded["duplicate"], seeded["fanout_failed"]} <= set(failed)
    statuses = page.eval_on_selector_all("table.executions tbody tr[data-id]", "rows => rows.map(r => r.dataset.status)")
    assert set(statuses) == {"failed"}
    assert "status=failed" in page.evaluate("location.hash")
    shot(page, "executions-failed")

    # keyset paging: three at a time, newest first, forward and back
    page.goto(api_url + "/console/#/executions?limit=3")
    first = wait_rows(page, lambda ids: len(ids) == 3, "no first page of 3")
    page.click("text=Older →")
    second = wait_rows(page, lambda ids: len(ids) == 3 and ids != first, "no second page")
    assert not set(first) & set(second)
    assert first + second == ids[:6]
    page.click("text=← Newer")
    wait_rows(page, lambda ids: ids == first, "back to the first page")


def test_an_execution_shows_its_graph_timeline_waits_and_history(page: Any, api_url: str,
                                                                 seeded: dict[str, str]) -> None:
    page.goto(f"{api_url}/console/#/executions/{seeded['waiting']}")
    page.wait_for_selector("svg.graph g.node[data-node=wait_for_verification].st-waiting")
    for step in ("validate_input", "create_user_account", "create_user_profile", "send_welcome_email"):
        assert page.locator(f"svg.graph g.node[data-node={step}]").get_attribute("class").split().count(
            "st-completed") == 1, step
    later = page.locator("svg.graph g.node[data-node=activate_user_account]").get_attribute("class").split()
    assert "st-pending" in later or "st-none" in later
    assert page.locator("svg.graph g.node[data-node=cleanup_user_account]").count() == 1  # compensation lane
    # the account's call got a 503 once: two attempts, in the steps table and the timeline
    assert page.locator("table.steps tr[data-step=create_user_account] td.num").inner_text() == "2"
    assert page.locator(".timeline .tl-row[data-step]").count() >= 5
    assert "2 attempts" in page.locator(".timeline .tl-row[data-step=create_user_account]").inner_text()
    why = page.locator("ul.why").inner_text()
    assert "wait_for_verification" in why and "user.email_verified" in why
    # input: the password is redacted, never shown
    text = page.locator("main").inner_text()
    assert "***" in text and "ann-secret-pw-1" not in text
    page.wait_for_selector("table.events tbody tr.ev-StepWaiting")
    assert page.locator("table.events tbody tr").count() >= 10
    assert page.locator("button", has_text="Cancel").count() == 1  # an operator's key
    shot(page, "execution-waiting")

    page.goto(f"{api_url}/console/#/executions/{seeded['verified']}")
    page.wait_for_selector("svg.graph g.node[data-node=send_activation_notification].st-completed")
    assert page.locator("svg.graph g.node.st-waiting").count() == 0
    assert page.locator("ul.why").count() == 0  # ended: nothing to wait for
    shot(page, "execution-completed")


def test_composite_steps_show_their_progress_and_branch(page: Any, api_url: str, seeded: dict[str, str]) -> None:
    page.goto(f"{api_url}/console/#/executions/{seeded['fanout']}")
    page.wait_for_selector("svg.graph g.group[data-node=fan_out].st-completed")
    assert "40/40 items" in page.locator("svg.graph g.group[data-node=fan_out] text.note").text_content()
    assert "40 runs" in page.locator("svg.graph g.node[data-node=call] text.detail").text_content()
    shot(page, "execution-fanout")

    page.goto(f"{api_url}/console/#/executions/{seeded['switch']}")
    page.wait_for_selector("svg.graph g.group[data-node='route::large'].st-chosen")
    assert "not-taken" in page.locator("svg.graph g.group[data-node='route::small']").get_attribute("class")
    assert "st-completed" in page.locator("svg.graph g.node[data-node=manager_approve]").get_attribute("class")

    page.goto(f"{api_url}/console/#/executions/{seeded['fanout_failed']}")
    page.wait_for_selector("svg.graph g.group[data-node=fan_out].st-failed")
    assert page.locator("dl.facts .error").inner_text().strip()


def test_definitions_page_shows_each_versions_graph_and_source(page: Any, api_url: str, seeded: dict[str, str]) -> None:
    page.goto(api_url + "/console/#/definitions")
    page.wait_for_selector("table.definitions a:text('user-registration-workflow')")
    assert page.locator("table.definitions tbody tr").count() == len(WORKFLOWS)
    page.click("table.definitions a:text('user-registration-workflow')")
    page.wait_for_selector("svg.graph g.node[data-node=wait_for_verification]")
    assert page.locator("svg.graph rect.lane-compensation").count() == 1
    assert "apiVersion: workflow/v1" in page.locator("pre.source").inner_text()
    assert page.locator(".version.current").inner_text() == "1.2.0"
    shot(page, "definition")
    page.goto(api_url + "/console/#/definitions/wcp04-exclusive-choice")
    page.wait_for_selector("svg.graph g.group[data-node='route::default']")


def test_analytics_page_and_endpoint(page: Any, api_url: str, seeded: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {READER_KEY}"}
    doc = httpx.get(api_url + "/api/v1/analytics", headers=headers).json()
    assert doc["totals"]["started"] >= len(seeded)
    assert doc["totals"]["failed"] >= 2 and doc["totals"]["completed"] >= 5
    assert 0 < doc["totals"]["success_rate"] < 1
    assert sum(b["started"] for b in doc["throughput"]) == doc["totals"]["started"]
    flows = {w["workflow"]: w for w in doc["workflows"]}
    assert flows["fan-out-limit"]["ended"] >= 2 and flows["fan-out-limit"]["p95_ms"] >= flows["fan-out-limit"]["p50_ms"]
    steps = {(s["workflow"], s["step"]) for s in doc["steps"]}
    assert ("fan-out-limit", "call") in steps and ("user-registration-workflow", "create_user_account") in steps
    assert any("Validation failed" in f["reason"] for f in doc["failure_reasons"])
    assert doc["slowest_steps"] and doc["slowest_steps"][0]["duration_ms"] >= doc["slowest_steps"][-1]["duration_ms"]
    one = httpx.get(api_url + "/api/v1/analytics", params={"workflow": "wcp04-exclusive-choice"}, headers=headers).json()
    assert [w["workflow"] for w in one["workflows"]] == ["wcp04-exclusive-choice"]
    bad = httpx.get(api_url + "/api/v1/analytics", params={"since": "2024-01-01T00:00:00Z",
                                                            "until": "2024-06-01T00:00:00Z"}, headers=headers)
    assert bad.status_code == 422 and "31 days" in bad.json()["error"]["message"]

    page.goto(api_url + "/console/#/analytics")
    page.wait_for_selector("svg.throughput rect.bar.started")
    page.wait_for_selector("text=Validation failed")
    assert page.locator(".stat .value").first.inner_text() != "—"
    shot(page, "analytics")


def test_operator_buttons_act_and_a_reader_sees_none(page: Any, browser: Any, api_url: str,
                                                     seeded: dict[str, str]) -> None:
    reader = _open(browser, api_url, READER_KEY)
    try:
        reader.goto(f"{api_url}/console/#/executions/{seeded['cancel']}")
        reader.wait_for_selector("svg.graph g.node[data-node=wait_for_verification].st-waiting")
        # GET /api/v1/whoami says the key is a reader: the page offers no action at all.
        reader.wait_for_selector(".actions:has-text('Read-only key')")
        assert reader.locator("button", has_text="Cancel").count() == 0
    finally:
        reader.close()

    page.goto(f"{api_url}/console/#/executions/{seeded['cancel']}")
    page.wait_for_selector("svg.graph g.node[data-node=wait_for_verification].st-waiting")
    page.once("dialog", lambda dialog: dialog.accept("signed up twice"))
    page.click("button:has-text('Cancel')")
    page.wait_for_selector(".message .ok:has-text('accepted')", timeout=15000)
    page.wait_for_selector("dl.facts .badge.st-cancelled", timeout=30000)
    page.wait_for_selector("table.events tr.ev-WorkflowCancelled")
    shot(page, "execution-cancelled")
