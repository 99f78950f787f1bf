"""The demo's operator part (scripts/demo runs it): the HTTP API serves the registration
the demo ran, starts a second one, pauses it while it waits for its verification event,
shows that the event is recorded but activation does not start while paused, resumes
it and shows who did what in its history.

    python scripts/demo_operator.py API_URL API_KEY EXECUTION_ID
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any, Callable

import httpx


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise SystemExit(f"[demo] error: {what} did not happen within {timeout:g}s")


def main(url: str, key: str, execution_id: str) -> None:
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def detail(eid: str) -> dict[str, Any]:
        """The execution from the projection ({} until the projector has recorded it)."""
        response = api.get(f"/api/v1/executions/{eid}")
        if response.status_code == 404:
            return {}
        response.raise_for_status()
        return response.json()

    def step(doc: dict[str, Any], name: str) -> dict[str, Any]:
        return next(s for s in doc["steps"] if s["step_name"] == name)

    refused = httpx.get(f"{url}/api/v1/executions/{execution_id}", timeout=10)
    say(f"GET /api/v1/executions/{execution_id} without a key: HTTP {refused.status_code} "
        f"{refused.json()['error']['code']}")
    doc = detail(execution_id)
    say(f"with the key: {doc['execution']['status']}, {len(doc['steps'])} steps, "
        f"output {doc['execution']['output']}")

    n = uuid.uuid4().hex[:6]
    user = {"username": f"ada_{n}", "email": f"ada.{n}@example.com", "password": "s3cret-passw0rd",
            "profile_data": {"first_name": "Ada"}}
    started = api.post("/api/v1/executions", json={"workflow": "user-registration-workflow", "input": user},
                       headers={"Idempotency-Key": f"demo-{n}"})
    started.raise_for_status()
    second = started.json()["execution_id"]
    say(f"POST /api/v1/executions (Idempotency-Key demo-{n}) started {second}")
    doc = until(f"{second} waiting for its verification",
                lambda: (d := detail(second)) and step(d, "wait_for_verification")["status"] == "waiting" and d)
    user_id = step(doc, "create_user_account")["output"]["user_id"]

    paused = api.post(f"/api/v1/executions/{second}/pause", params={"wait": 10}, json={"reason": "demo: hold it"})
    say(f"POST .../pause: {paused.json()['outcome']}")
    api.post("/api/v1/events", json={"type": "user.email_verified", "data": {"user_id": user_id}}).raise_for_status()
    say(f"POST /api/v1/events user.email_verified for {user_id}")
    doc = until("the wait to complete", lambda: (d := detail(second))
                and step(d, "wait_for_verification")["status"] == "completed" and d)
    time.sleep(1.0)
    doc = detail(second)
    say(f"while paused: the event completed wait_for_verification; execution "
        f"{doc['execution']['status']}, activate_user_account {step(doc, 'activate_user_account')['status']}")

    resumed = api.post(f"/api/v1/executions/{second}/resume", params={"wait": 10})
    say(f"POST .../resume: {resumed.json()['outcome']}")
    doc = until(f"{second} to complete", lambda: (d := detail(second))
                and d["execution"]["status"] in ("completed", "failed", "cancelled") and d)
    say(f"{second} {doc['execution']['status']}: output {doc['execution']['output']}")
    history = api.get(f"/api/v1/executions/{second}/history").json()["events"]
    for event in history:
        who = (event["payload"] or {}).get("requested_by")
        if who:
            say(f"  history #{event['sequence']} {event['event_type']} by {who}")
    if doc["execution"]["status"] != "completed":
        raise SystemExit(1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
