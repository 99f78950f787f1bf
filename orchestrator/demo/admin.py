"""The demo services' test seams: recorded requests, injected faults, idempotency.

    POST   /_admin/faults    {path_prefix, method?, status?, times?, delay_ms?}
                             "answer 503 twice, then behave": {"path_prefix":
                             "/user-service/api/users", "method": "POST",
                             "status": 503, "times": 2}; `delay_ms` alone slows
                             answers down (timeouts); times -1 = until cleared
    GET    /_admin/faults    the active faults
    DELETE /_admin/faults    clear them
    GET    /_admin/requests  recorded requests [{method, path, headers, body, at}]
                             (?path_prefix=...&method=...); `at` is epoch seconds
    DELETE /_admin/requests  forget them
    POST   /_admin/reset     forget everything (stores, faults, requests, keys)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["Fault", "Recorder", "admin_handlers"]

MAX_RECORDED = 20_000
Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Fault:
    path_prefix: str
    method: str | None = None
    status: int | None = 503
    times: int = 1  # -1: until cleared
    delay_ms: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.times != 0 and path.startswith(self.path_prefix) and self.method in (None, method)


class Recorder:
    """Shared mutable state of the demo's seams (one per app)."""

    def __init__(self) -> None:
        self.requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED)
        self.faults: list[Fault] = []
        self.replies: dict[tuple[str, str, str], tuple[int, Any]] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    def reset(self) -> None:
        self.requests.clear()
        self.faults.clear()
        self.replies.clear()
        self._locks.clear()

    def fault_for(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                if fault.times > 0:
                    fault.times -= 1
                return fault
        return None

    def wrap(self, handler: Handler, *, idempotent_post: bool = True) -> Handler:
        """Record the request, apply faults, and replay POST answers per Idempotency-Key."""

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            method, path = request.method, request.url.path
            self.requests.append({"method": method, "path": path, "headers": dict(request.headers),
                                  "body": body, "at": time.time()})
            fault = self.fault_for(method, path)
            if fault is not None:
                if fault.delay_ms:
                    await asyncio.sleep(fault.delay_ms / 1000)
                if fault.status is not None:
                    return JSONResponse({"error": "injected fault", "status": fault.status}, fault.status)
            key = request.headers.get("idempotency-key")
            if not (idempotent_post and method == "POST" and key):
                return await handler(request)
            scope = (method, path, key)
            lock = self._locks.setdefault(scope, asyncio.Lock())
            async with lock:
                if scope in self.replies:
                    status, content = self.replies[scope]
                    return JSONResponse(content, status, headers={"Idempotent-Replayed": "true"})
                response = await handler(request)
                if response.status_code < 500:  # server errors may be retried for real
                    self.replies[scope] = (response.status_code, json.loads(bytes(response.body) or b"null"))
                return response

        return endpoint


def admin_handlers(recorder: Recorder) -> dict[str, Handler]:
    async def add_fault(request: Request) -> Response:
        try:
            data = await request.json()
            fault = Fault(path_prefix=str(data["path_prefix"]),
                          method=str(data["method"]).upper() if data.get("method") else None,
                          status=int(data["status"]) if data.get("status") is not None else None,
                          times=int(data.get("times", 1)), delay_ms=int(data.get("delay_ms", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad fault: {exc}"}, 400)
        recorder.faults.append(fault)
        return JSONResponse(asdict(fault), 201)

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            recorder.faults.clear()
            return JSONResponse({"cleared": True})
        return JSONResponse({"faults": [asdict(f) for f in recorder.faults]})

    async def requests(request: Request) -> Response:
        if request.method == "DELETE":
            recorder.requests.clear()
            return JSONResponse({"cleared": True})
        prefix = request.query_params.get("path_prefix", "")
        method = request.query_params.get("method", "").upper()
        found = [r for r in recorder.requests
                 if r["path"].startswith(prefix) and (not method or r["method"] == method)]
        return JSONResponse({"requests": found})

    return {"add_fault": add_fault, "faults": faults, "requests": requests}
