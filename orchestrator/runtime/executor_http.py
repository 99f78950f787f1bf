"""One HTTP request to a registered service, and what its outcome means.

Classification (the decider retries only transient failures):

    transient  connection errors, timeouts, an open circuit breaker
               ("circuit open for user-service: ...", nothing sent),
               HTTP 408, 429 and 5xx
    permanent  any other 4xx (and 3xx: redirects are not followed),
               an invalid URL or header

`CallFailed` carries the error text (status, service, method, path and a
short redacted excerpt of the body) and the status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.retry import is_transient_status
from orchestrator.core.sensitive import redact

from .http_transport import HttpClient, HttpConnectionError, HttpInvalidRequest, HttpReply, HttpTimeout
from .services import ServiceConfig, ServiceRegistry

__all__ = ["CallFailed", "Request", "send", "parse_body", "excerpt", "is_transient_status", "OMIT"]

EXCERPT_CHARS = 300
OMIT: Any = object()  # no request body


class CallFailed(Exception):
    def __init__(self, error: str, *, transient: bool, status_code: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.transient = transient
        self.status_code = status_code


@dataclass
class Request:
    service: ServiceConfig
    method: str
    endpoint: str  # rendered path below the service's base URL
    body: Any = OMIT
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.service.name} {self.method} {self.endpoint}"


def parse_body(response: HttpReply) -> Any:
    """JSON when the body is JSON, `{"text": ...}` otherwise, None when empty."""
    content = response.content
    if not content.strip():
        return None
    ctype = response.content_type.lower()
    if "json" in ctype or not ctype:
        try:
            return json.loads(content)
        except ValueError:
            pass
    return {"text": response.text}


def excerpt(body: Any, scrub: Callable[[str], str] = lambda s: s) -> str:
    """A short, redacted, single-line rendering of a body for error texts."""
    if body is None:
        return "(empty body)"
    if isinstance(body, dict) and set(body) == {"text"} and isinstance(body["text"], str):
        text = body["text"]
    else:
        text = json.dumps(redact(body), ensure_ascii=False, default=str)
    text = " ".join(scrub(text).split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "..."


def _check_endpoint(endpoint: str) -> None:
    if "://" in endpoint or endpoint.startswith("//") or "\\" in endpoint:
        raise CallFailed(f"endpoint {endpoint!r} must be a path below the service's base URL", transient=False)
    if any(part in ("..", ".") for part in endpoint.split("?")[0].split("/")):
        raise CallFailed(f"endpoint {endpoint!r} must not contain '.' or '..' segments", transient=False)


async def send(
    http: HttpClient,
    request: Request,
    *,
    registry: ServiceRegistry,
    deadline_at: int,
    now_ms: Callable[[], int],
    scrub: Callable[[str], str] = lambda s: s,
) -> tuple[int, Any]:
    """Send `request`; return (status, parsed body) for a 2xx, else raise CallFailed."""
    _check_endpoint(request.endpoint)
    service = request.service
    timeout_ms = service.timeout_ms
    if deadline_at > 0:
        remaining = deadline_at - now_ms()
        if remaining <= 0:
            raise CallFailed(f"{request.label}: the attempt's deadline passed before the request", transient=True)
        timeout_ms = min(timeout_ms, remaining)
    seconds = timeout_ms / 1000

    breaker = registry.breaker(service.name)
    permit = None
    if breaker is not None:
        permit = breaker.allow()
        if permit is None:  # fail fast: nothing is sent
            raise CallFailed(breaker.refusal(), transient=True)
    limiter = registry.limiter(service.name)
    # For the breaker: True = the service answered sanely (2xx, or a 4xx that is the
    # caller's fault), False = it is unwell (transient), None = no verdict (cancelled,
    # or a local error before anything reached it).
    verdict: bool | None = None
    try:
        try:
            async with asyncio.timeout(seconds):  # the client times each phase; this bounds the whole call
                async with limiter if limiter is not None else contextlib.nullcontext():
                    response = await _request(http, request, seconds, min(seconds, service.connect_timeout_ms / 1000))
        except TimeoutError:
            raise CallFailed(f"{request.label}: timed out after {timeout_ms}ms (total time)", transient=True) from None
        status = response.status
        body = parse_body(response)
        if 200 <= status < 300:
            verdict = True
            return status, body
        transient = is_transient_status(status)
        verdict = not transient
        reason = response.reason
        raise CallFailed(
            f"HTTP {status} {reason} from {request.label}: {excerpt(body, scrub)}".replace("  ", " "),
            transient=transient,
            status_code=status,
        )
    except CallFailed as exc:
        if verdict is None and exc.transient:  # timeouts, connection errors
            verdict = False
        raise
    finally:
        if breaker is not None:
            if verdict is None:
                breaker.release_probe(permit)
            else:
                breaker.record(verdict, permit)


async def _request(http: HttpClient, request: Request, seconds: float, connect_seconds: float) -> HttpReply:
    headers = dict(request.headers)
    body = None
    if request.body is not OMIT:
        try:
            body = json.dumps(request.body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise CallFailed(f"{request.label}: invalid request: body is not JSON: {exc}", transient=False) from None
        headers.setdefault("Content-Type", "application/json")
    params = {k: v for k, v in request.params.items() if v is not None}
    try:
        return await http.request(request.method, request.service.url(request.endpoint), headers=headers,
                                  params=params, body=body, timeout_s=seconds, connect_timeout_s=connect_seconds)
    except HttpTimeout as exc:
        raise CallFailed(f"{request.label}: timed out after {seconds * 1000:.0f}ms ({exc})", transient=True) from None
    except HttpInvalidRequest as exc:
        raise CallFailed(f"{request.label}: invalid request: {exc}", transient=False) from None
    except HttpConnectionError as exc:
        raise CallFailed(f"{request.label}: connection error: {exc}", transient=True) from None
    except (TypeError, ValueError) as exc:  # e.g. a header value that is not text
        raise CallFailed(f"{request.label}: invalid request: {exc}", transient=False) from None
