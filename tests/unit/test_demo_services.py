"""The demo services: the seed's endpoints, idempotent POSTs, injected faults."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from orchestrator.demo.services import create_app, start_demo_services


def session(test: Any, app: Any = None) -> Any:
    async def go() -> Any:
        transport = httpx.ASGITransport(app=app or create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            return await test(client)
    return asyncio.run(go())


def test_registration_endpoints() -> None:
    async def test(c: httpx.AsyncClient) -> None:
        r = await c.post("/user-service/api/validate", json={"rule": "unique_email", "field": "email",
                                                              "value": "ann@example.com"})
        assert r.json() == {"valid": True}
        r = await c.post("/user-service/api/users", json={"username": "ann", "email": "ann@example.com",
                                                           "password_hash": "$argon2id$x", "status": "pending"})
        assert r.status_code == 201
        user = r.json()
        assert set(user) == {"id", "username", "email", "status"} and user["status"] == "pending"
        r = await c.post("/user-service/api/validate", json={"rule": "unique_email", "field": "email",
                                                              "value": "ANN@example.com"})
        assert r.json() == {"valid": False, "message": "already registered"}
        r = await c.post("/user-service/api/validate", json={"rule": "unique_username", "value": "admin"})
        assert r.json()["valid"] is False
        r = await c.post("/profile-service/api/profiles", json={"user_id": user["id"], "profile_data": {"a": 1}})
        assert r.status_code == 201 and r.json()["user_id"] == user["id"]
        r = await c.post("/notification-service/api/emails/send", json={"to": "ann@example.com"})
        assert r.json()["sent"] is True and r.json()["id"]
        r = await c.put(f"/user-service/api/users/{user['id']}/activate")
        body = r.json()
        assert body["status"] == "active" and body["id"] == user["id"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["activation_date"])
        r = await c.post("/notification-service/api/notifications/send", json={"user_id": user["id"]})
        # no `status` or `user_id` here: the seed's output takes each property from the latest
        # step output that has it, and must keep the activation's status
        assert r.json()["sent"] is True and set(r.json()) == {"sent", "id"}
        r = await c.post("/user-service/api/validate", json={"rule": "unique_phone", "value": "1"})
        assert r.status_code == 400
        r = await c.put("/user-service/api/users/usr_nobody/activate")
        assert r.status_code == 404
        r = await c.post("/profile-service/api/profiles", json={"profile_data": {}})
        assert r.status_code == 400
        r = await c.post("/noop")
        assert r.json() == {"ok": True}
    session(test)


def test_deletes_are_idempotent_for_compensation_retries() -> None:
    app = create_app()

    async def test(c: httpx.AsyncClient) -> None:
        user = (await c.post("/user-service/api/users", json={"username": "eve", "email": "eve@example.com"})).json()
        await c.post("/profile-service/api/profiles", json={"user_id": user["id"], "profile_data": {}})
        await c.post("/profile-service/api/profiles", json={"user_id": "usr_other"})
        for _ in range(2):  # a retried or repeated cleanup gets the same answer
            r = await c.delete(f"/profile-service/api/profiles/user/{user['id']}")
            assert r.status_code == 204 and r.content == b""
            r = await c.delete(f"/user-service/api/users/{user['id']}")
            assert r.status_code == 204 and r.content == b""
        assert [p["user_id"] for p in app.state.profiles.values()] == ["usr_other"]
        assert (await c.get(f"/user-service/api/users/{user['id']}")).status_code == 404
        r = await c.post("/user-service/api/validate", json={"rule": "unique_email", "value": "eve@example.com"})
        assert r.json() == {"valid": True}  # a deleted user's e-mail can register again
        r = await c.delete("/user-service/api/users/usr_never_existed")
        assert r.status_code == 204
    session(test, app)


def test_a_repeated_idempotency_key_replays_without_a_second_effect() -> None:
    async def test(c: httpx.AsyncClient) -> None:
        headers = {"Idempotency-Key": "exec-1/create_user_account"}
        payload = {"username": "bob", "email": "bob@example.com"}
        first = await c.post("/user-service/api/users", json=payload, headers=headers)
        again = await c.post("/user-service/api/users", json=payload, headers=headers)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        assert again.headers["idempotent-replayed"] == "true"
        other = await c.post("/user-service/api/users", json=payload, headers={"Idempotency-Key": "exec-2/x"})
        assert other.status_code == 409  # a new key is a new request: bob exists already
        health = (await c.get("/healthz")).json()
        assert health["users"] == 1
    session(test)


def test_faults_then_success_and_recorded_requests() -> None:
    async def test(c: httpx.AsyncClient) -> None:
        r = await c.post("/_admin/faults", json={"path_prefix": "/user-service/api/users", "method": "POST",
                                                 "status": 503, "times": 2})
        assert r.status_code == 201
        headers = {"Idempotency-Key": "exec-1/create"}
        payload = {"username": "cy", "email": "cy@example.com"}
        statuses = [(await c.post("/user-service/api/users", json=payload, headers=headers)).status_code
                    for _ in range(3)]
        assert statuses == [503, 503, 201]  # faults are not remembered as the key's answer
        recorded = (await c.get("/_admin/requests", params={"path_prefix": "/user-service"})).json()["requests"]
        assert [r["headers"]["idempotency-key"] for r in recorded] == ["exec-1/create"] * 3
        assert recorded[0]["body"] == payload and recorded[0]["at"] <= recorded[2]["at"]
        assert (await c.get("/_admin/faults")).json()["faults"][0]["times"] == 0
        await c.post("/_admin/faults", json={"path_prefix": "/noop", "status": 500})
        await c.post("/_admin/reset")
        assert (await c.get("/_admin/requests")).json()["requests"] == []
        assert (await c.post("/noop")).status_code == 200
        bad = await c.post("/_admin/faults", json={"status": 503})
        assert bad.status_code == 400
    session(test)


def test_serves_on_a_real_port() -> None:
    with start_demo_services() as server:
        assert server.port > 0
        r = httpx.post(server.url + "/user-service/api/users", json={"username": "d", "email": "d@x.io"})
        assert r.status_code == 201
        assert server.service_urls()["user-service"] == server.url + "/user-service"
        assert server.service_urls()["task-service"] == server.url + "/task-service"


def test_task_service_echoes_fails_when_asked_and_counts_calls_in_flight() -> None:
    async def test(c: httpx.AsyncClient) -> None:
        r = await c.post("/task-service/api/tasks/ship", json={"order": 7})
        assert r.json() == {"task": "ship", "input": {"order": 7}, "status": "done"}
        r = await c.post("/task-service/api/tasks/check", json={"status": "pending"})
        assert r.json()["status"] == "pending"
        r = await c.post("/task-service/api/tasks/charge", json={"fail": True})
        assert r.status_code == 422 and "charge" in r.json()["error"]
        r = await c.post("/task-service/api/tasks/charge", json={"fail": True, "message": "card declined"})
        assert r.json() == {"error": "card declined"}
        # five slow calls of one task at once, two of another, then one more alone
        slow = [c.post("/task-service/api/tasks/slow", json={"delay_ms": 100, "i": i}) for i in range(5)]
        other = [c.post("/task-service/api/tasks/other", json={"delay_ms": 50}) for _ in range(2)]
        answers = await asyncio.gather(*slow, *other)
        assert [a.json()["input"]["i"] for a in answers[:5]] == [0, 1, 2, 3, 4]
        await c.post("/task-service/api/tasks/slow", json={"delay_ms": "soon"})  # not a number: no delay
        stats = (await c.get("/task-service/api/stats")).json()
        assert stats["in_flight"] == 0 and stats["max_in_flight"] == 7 and stats["calls"] == 12
        assert stats["tasks"]["slow"] == {"in_flight": 0, "max_in_flight": 5, "calls": 6}
        assert stats["tasks"]["other"] == {"in_flight": 0, "max_in_flight": 2, "calls": 2}
        assert stats["tasks"]["ship"]["max_in_flight"] == 1
        # a retried call (same Idempotency-Key) is answered again without running again
        headers = {"Idempotency-Key": "exec-1/each[0].charge"}
        for _ in range(2):
            r = await c.post("/task-service/api/tasks/once", json={}, headers=headers)
        assert r.headers["idempotent-replayed"] == "true"
        assert (await c.get("/task-service/api/stats")).json()["tasks"]["once"]["calls"] == 1
        await c.post("/_admin/reset")
        assert (await c.get("/task-service/api/stats")).json() == {
            "in_flight": 0, "max_in_flight": 0, "calls": 0, "tasks": {}}
    session(test)


def test_task_service_delays_are_capped() -> None:
    from orchestrator.demo.tasks import MAX_TASK_DELAY_MS, _delay_ms

    assert [_delay_ms(v) for v in (250, 3_600_000, -5, "1s", True, None, 1.5)] == [
        250, MAX_TASK_DELAY_MS, 0, 0, 0, 0, 1]


def test_task_service_polls_are_done_after_their_count_per_key() -> None:
    async def test(c: httpx.AsyncClient) -> None:
        answers = [(await c.post("/task-service/api/poll/job-1", json={"after": 3})).json() for _ in range(4)]
        assert answers == [{"calls": 1, "done": False}, {"calls": 2, "done": False},
                           {"calls": 3, "done": True}, {"calls": 4, "done": True}]
        assert (await c.post("/task-service/api/poll/job-2", json={})).json() == {"calls": 1, "done": True}
        await c.post("/_admin/reset")
        assert (await c.post("/task-service/api/poll/job-1", json={"after": 2})).json() == {"calls": 1, "done": False}
    session(test)
