"""The ASGI app: `create_app(settings, keys)`.

Routes live in the routers (definitions, executions, commands, bulk, and the
console's: static files, definition graphs, analytics); this module wires
them, adds the unauthenticated routes (/healthz, GET / -> /console/), the
Prometheus endpoint (/metrics: the process's default registry), and one
outermost middleware that times every request by route template and status
and turns any exception that escaped the routes into a JSON error (503 when
Kafka or PostgreSQL is out of reach, else a logged 500 without a traceback).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import Depends, FastAPI
from fastapi.responses import RedirectResponse
from prometheus_client import Counter, Histogram, make_asgi_app

from ..config import Settings
from . import (analytics, console, graph, routes_audit, routes_bulk, routes_commands, routes_definitions,
               routes_executions)
from .auth import ApiKey, KeyRing, caller
from .context import ApiContext
from .errors import ERROR_RESPONSES, install_handlers, refuse_unstorable, unexpected
from .models import Health, Identity

__all__ = ["create_app"]

log = structlog.get_logger("orchestrator.api")

REQUESTS = Counter("orchestrator_api_requests_total", "HTTP requests served by the API",
                   ["method", "route", "status"])
LATENCY = Histogram("orchestrator_api_request_duration_seconds", "Time to serve an API request", ["method", "route"],
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))

DESCRIPTION = """\
The orchestrator's HTTP API: what the `orchestrator` command line does, over HTTP.

Writes are commands sent to Kafka (202: sent, with where they landed; `?wait=` waits for the decider's
decision); reads come from the PostgreSQL projection. Send an API key as `Authorization: Bearer <key>` or
`X-API-Key: <key>`; roles: `reader` (GET), `operator` (everything), `webhook` (POST /api/v1/webhooks/... only).
Every error is `{"error": {"code", "message", "details"?}}`. See docs/api.md.
"""


class Guard:
    """Outermost middleware: request metrics by route template, and no exception escapes as a traceback."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = {"code": 500, "started": False}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if status["started"]:  # too late for a JSON error: the client sees a cut response
                log.error("api_error_after_response_started", path=scope.get("path"), exc_info=exc)
                raise
            response = unexpected(exc, scope.get("method", ""), scope.get("path", ""))
            await response(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            REQUESTS.labels(method, route, str(status["code"])).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - began)


def create_app(settings: Settings, keys: KeyRing, *, schema: str | None = None, templates_dir: str | None = None,
               send: Any = None, pool_size: int = 10, pool_wait_s: float = 5.0,
               kafka_timeout_s: float = 15.0) -> FastAPI:
    """The API over `settings` (Kafka, PostgreSQL, topics) for the holders of `keys`.
    `schema`: the projection's PostgreSQL schema; `send`: a sender instead of the app's own producer (tests);
    `pool_wait_s`, `kafka_timeout_s`: how long a request waits for a connection or Kafka before a 503."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        app_version = version("orchestrator")
    except PackageNotFoundError:
        app_version = "0"
    ctx = ApiContext(settings, keys, schema=schema, templates_dir=templates_dir, pool_size=pool_size,
                     pool_wait_s=pool_wait_s, kafka_timeout_s=kafka_timeout_s, send_override=send)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.close()

    app = FastAPI(title="orchestrator API", version=app_version, description=DESCRIPTION, lifespan=lifespan,
                  openapi_tags=[{"name": "executions"}, {"name": "commands"}, {"name": "events"},
                                {"name": "definitions"}, {"name": "bulk"}, {"name": "analytics"}],
                  dependencies=[Depends(refuse_unstorable)])
    app.state.context = ctx
    install_handlers(app)
    app.add_middleware(Guard)

    @app.get("/healthz", response_model=Health, tags=["health"], summary="The API process answers")
    def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/api/v1/whoami", response_model=Identity, tags=["health"], responses=ERROR_RESPONSES,
             summary="The caller's key name and role (what the console shows and enables)")
    def whoami(key: ApiKey = Depends(caller)) -> Any:
        return {"name": key.name, "role": key.role}

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    for module in (routes_definitions, graph, routes_executions, routes_commands, routes_bulk, routes_audit,
                   analytics, console):
        app.include_router(module.router)
    # prometheus_client's ASGI app at exactly /metrics (a mount would answer /metrics with a redirect)
    app.add_route("/metrics", _AsgiEndpoint(make_asgi_app()), include_in_schema=False)
    return app


class _AsgiEndpoint:
    """Starlette runs an endpoint that is not a function as a plain ASGI app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
