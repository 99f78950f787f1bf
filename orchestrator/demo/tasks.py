"""The demo's task service: a generic activity for the workflow-pattern examples (examples/patterns/).

    POST   /task-service/api/tasks/{name}          {delay_ms?, fail?, status?, ...}
                                                   -> {task: name, input: body, status: body.status or "done"}
                                                   after delay_ms (at most 10 s); 422 when `fail` is true
    GET    /task-service/api/stats                 {in_flight, max_in_flight, calls, tasks: {name: same three}}
    POST   /task-service/api/poll/{key}            {after: n} -> {calls, done: calls >= n} (calls counted per key)

It counts the calls in flight, overall and per task name, with the largest
number seen (what a concurrency limit is checked against), and the calls of
each poll key (a polling loop is done once `after` calls were made). The
stats route is not wrapped by the Recorder: reading the counts is neither
recorded nor faulted. Served by `services.py` on the same app and port; its
`/_admin/reset` clears these counts too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["MAX_TASK_DELAY_MS", "TaskService"]

MAX_TASK_DELAY_MS = 10_000

Handler = Callable[[Request], Awaitable[Response]]


class _InFlight:
    """Calls in flight now and the most seen at once, overall and per task name."""

    def __init__(self) -> None:
        self.now: dict[str | None, int] = {}
        self.peak: dict[str | None, int] = {}
        self.calls: dict[str | None, int] = {}

    def enter(self, name: str) -> None:
        for key in (None, name):
            self.now[key] = self.now.get(key, 0) + 1
            self.peak[key] = max(self.peak.get(key, 0), self.now[key])
            self.calls[key] = self.calls.get(key, 0) + 1

    def leave(self, name: str) -> None:
        for key in (None, name):  # (a reset may have come in between)
            self.now[key] = max(0, self.now.get(key, 0) - 1)

    def report(self, key: str | None) -> dict[str, int]:
        return {"in_flight": self.now.get(key, 0), "max_in_flight": self.peak.get(key, 0),
                "calls": self.calls.get(key, 0)}

    def stats(self) -> dict[str, Any]:
        return {**self.report(None), "tasks": {k: self.report(k) for k in self.calls if k is not None}}

    def clear(self) -> None:
        self.now.clear()
        self.peak.clear()
        self.calls.clear()


def _delay_ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(min(max(value, 0), MAX_TASK_DELAY_MS))


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object; {} for no body, bad JSON or another JSON type."""
    try:
        data = await request.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class TaskService:
    """The task service's state (one per app) and its routes."""

    def __init__(self) -> None:
        self.in_flight = _InFlight()
        self.polls: dict[str, int] = {}

    def reset(self) -> None:
        self.in_flight.clear()
        self.polls.clear()

    def routes(self, wrap: Callable[[Handler], Handler]) -> list[Route]:
        """The routes; `wrap` (the app's Recorder.wrap) records calls, injects faults and replays POSTs."""
        return [
            Route("/task-service/api/tasks/{name}", wrap(self.run_task), methods=["POST"]),
            Route("/task-service/api/stats", self.task_stats, methods=["GET"]),
            Route("/task-service/api/poll/{key}", wrap(self.poll), methods=["POST"]),
        ]

    async def run_task(self, request: Request) -> Response:
        name, data = request.path_params["name"], await read_json(request)
        self.in_flight.enter(name)
        try:
            await asyncio.sleep(_delay_ms(data.get("delay_ms")) / 1000)
        finally:
            self.in_flight.leave(name)
        if data.get("fail") is True:
            message = str(data.get("message") or f"task {name} failed as asked (fail: true)")
            return JSONResponse({"error": message}, 422)
        return JSONResponse({"task": name, "input": data, "status": data.get("status", "done")})

    async def task_stats(self, request: Request) -> Response:
        return JSONResponse(self.in_flight.stats())

    async def poll(self, request: Request) -> Response:
        key, data = request.path_params["key"], await read_json(request)
        calls = self.polls[key] = self.polls.get(key, 0) + 1
        after = data.get("after", 1)
        return JSONResponse({"calls": calls, "done": calls >= after if isinstance(after, int) else True})
