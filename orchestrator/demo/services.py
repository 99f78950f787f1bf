"""Demo services for the README's demo, the integration tests and the benchmark.

One process, one port, one prefix per service (register them as
`user-service -> http://127.0.0.1:8700/user-service` etc.; see
`examples/services.yaml`):

    POST   /user-service/api/validate              {rule: unique_email|unique_username, field, value}
                                                   -> {valid, message}
    POST   /user-service/api/users                 -> 201 {id, username, email, status}
    GET    /user-service/api/users/{id}
    PUT    /user-service/api/users/{id}/activate   -> {id, status: "active", activation_date}
    DELETE /user-service/api/users/{id}            -> 204 (also when already gone)
    POST   /profile-service/api/profiles           -> 201 {id, user_id}
    DELETE /profile-service/api/profiles/user/{id} -> 204 (the user's profiles; also when none)
    POST   /notification-service/api/emails/send         -> {sent: true, id}
    POST   /notification-service/api/notifications/send  -> {sent: true, id}
    POST   /task-service/api/tasks/{name}          the task service: see `tasks.py`
    GET    /task-service/api/stats
    POST   /task-service/api/poll/{key}
    POST   /noop                                   -> {"ok": true} (benchmark; not recorded)
    GET    /healthz

Stores are in memory. A POST repeated with the same `Idempotency-Key` (same
method and path) gets the first answer again without a second effect. The
e-mail `taken@example.com` and the username `admin` are always taken, to
demo a failed validation. DELETEs are idempotent: they answer 204 No Content
whether or not there was something to delete, so a compensation step that is
retried (or a cleanup that runs twice) is safe. The notification answers
carry no `status` or `user_id`, so that the seed's workflow output (each
property from the latest step output that has it) keeps the activation's
`status` and `activation_date`. The task service, a generic activity for
the workflow-pattern examples (examples/patterns/), is in `tasks.py`;
`/_admin/reset` clears its counts too. Test seams (`/_admin/...`) are in
`admin.py`.

    python -m orchestrator.demo.services --port 8700
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .admin import Recorder, admin_handlers
from .tasks import MAX_TASK_DELAY_MS, TaskService, read_json

__all__ = ["create_app", "DemoServer", "start_demo_services", "run_demo_services", "TAKEN_EMAILS",
           "TAKEN_USERNAMES", "MAX_TASK_DELAY_MS"]

TAKEN_EMAILS = {"taken@example.com"}
TAKEN_USERNAMES = {"admin"}
SERVICES = ("user-service", "profile-service", "notification-service", "task-service")


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def create_app() -> Starlette:
    users: dict[str, dict[str, Any]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    messages: list[dict[str, Any]] = []
    recorder = Recorder()
    task_service = TaskService()

    def taken(field: str, value: Any) -> bool:
        wanted = str(value).lower()
        reserved = TAKEN_EMAILS if field == "email" else TAKEN_USERNAMES
        return wanted in reserved or any(str(u.get(field, "")).lower() == wanted for u in users.values())

    async def validate(request: Request) -> Response:
        data = await read_json(request)
        rule, value = data.get("rule"), data.get("value")
        if rule not in ("unique_email", "unique_username"):
            return _error(400, f"unknown rule {rule!r} (known: unique_email, unique_username)")
        field = "email" if rule == "unique_email" else "username"
        if value is None or value == "":
            return JSONResponse({"valid": False, "message": f"{field} is required"})
        if taken(field, value):
            return JSONResponse({"valid": False, "message": "already registered"})
        return JSONResponse({"valid": True})

    async def create_user(request: Request) -> Response:
        data = await read_json(request)
        missing = [f for f in ("username", "email") if not data.get(f)]
        if missing:
            return _error(400, f"missing fields: {', '.join(missing)}")
        for field in ("username", "email"):
            if taken(field, data[field]):
                return _error(409, f"{field} already registered")
        user = {"id": _id("usr"), "username": data["username"], "email": data["email"],
                "status": data.get("status") or "pending"}
        users[user["id"]] = {**user, "password_hash": data.get("password_hash")}
        return JSONResponse(user, 201)

    def public(user: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in user.items() if k != "password_hash"}

    async def get_user(request: Request) -> Response:
        user = users.get(request.path_params["id"])
        return JSONResponse(public(user)) if user else _error(404, "no such user")

    async def activate_user(request: Request) -> Response:
        user = users.get(request.path_params["id"])
        if user is None:
            return _error(404, "no such user")
        if user["status"] != "active":
            user.update(status="active", activation_date=_now_iso())
        return JSONResponse({"id": user["id"], "status": "active", "activation_date": user["activation_date"]})

    async def delete_user(request: Request) -> Response:
        users.pop(request.path_params["id"], None)
        return Response(status_code=204)

    async def create_profile(request: Request) -> Response:
        data = await read_json(request)
        if not data.get("user_id"):
            return _error(400, "missing fields: user_id")
        profile = {"id": _id("prf"), "user_id": data["user_id"], "profile_data": data.get("profile_data")}
        profiles[profile["id"]] = profile
        return JSONResponse({"id": profile["id"], "user_id": profile["user_id"]}, 201)

    async def delete_profiles(request: Request) -> Response:
        user_id = request.path_params["id"]
        doomed = [pid for pid, p in profiles.items() if p["user_id"] == user_id]
        for pid in doomed:
            del profiles[pid]
        return Response(status_code=204)

    def sender(kind: str) -> Any:
        async def send(request: Request) -> Response:
            message = {"id": _id("msg"), "kind": kind, "request": await read_json(request), "at": time.time()}
            messages.append(message)
            return JSONResponse({"sent": True, "id": message["id"]})
        return send

    async def noop(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "users": len(users), "profiles": len(profiles), "messages": len(messages)})

    async def reset(request: Request) -> Response:
        users.clear()
        profiles.clear()
        messages.clear()
        task_service.reset()
        recorder.reset()
        return JSONResponse({"reset": True})

    w = recorder.wrap
    admin = admin_handlers(recorder)
    routes = [
        Route("/user-service/api/validate", w(validate, idempotent_post=False), methods=["POST"]),
        Route("/user-service/api/users", w(create_user), methods=["POST"]),
        Route("/user-service/api/users/{id}", w(get_user), methods=["GET"]),
        Route("/user-service/api/users/{id}", w(delete_user), methods=["DELETE"]),
        Route("/user-service/api/users/{id}/activate", w(activate_user), methods=["PUT"]),
        Route("/profile-service/api/profiles", w(create_profile), methods=["POST"]),
        Route("/profile-service/api/profiles/user/{id}", w(delete_profiles), methods=["DELETE"]),
        Route("/notification-service/api/emails/send", w(sender("email")), methods=["POST"]),
        Route("/notification-service/api/notifications/send", w(sender("notification")), methods=["POST"]),
        *task_service.routes(w),
        Route("/noop", noop, methods=["POST", "GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/_admin/faults", admin["add_fault"], methods=["POST"]),
        Route("/_admin/faults", admin["faults"], methods=["GET", "DELETE"]),
        Route("/_admin/requests", admin["requests"], methods=["GET", "DELETE"]),
        Route("/_admin/reset", reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.recorder = recorder
    app.state.users, app.state.profiles, app.state.messages = users, profiles, messages
    return app


def _config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    return uvicorn.Config(app, host=host, port=port, loop="asyncio", http=http, lifespan="off",
                          access_log=False, log_level="warning")


class DemoServer:
    """The demo services on a background thread (tests): `.url`, `.port`, `.app`, `.stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = create_app()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._server = uvicorn.Server(_config(self.app, host, self.port))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name=f"demo-services-{self.port}", daemon=True)

    def start(self, timeout: float = 10.0) -> DemoServer:
        if self._thread.is_alive():
            return self
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"demo services did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()

    def service_urls(self) -> dict[str, str]:
        return {name: f"{self.url}/{name}" for name in SERVICES}

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_demo_services(host: str = "127.0.0.1", port: int = 0) -> DemoServer:
    return DemoServer(host, port).start()


def run_demo_services(host: str = "127.0.0.1", port: int = 8700) -> None:
    """Serve the demo services in the foreground until interrupted."""
    print(f"demo services on http://{host}:{port} ({', '.join(SERVICES)}, /noop)")
    uvicorn.Server(_config(create_app(), host, port)).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.demo.services", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    args = parser.parse_args(argv)
    run_demo_services(args.host, args.port)


if __name__ == "__main__":
    main()
