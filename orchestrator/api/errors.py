"""Every failure is one JSON document: {"error": {"code", "message", "details"?}}.

Codes: unauthenticated 401, forbidden 403, not_found 404, method_not_allowed
405, conflict 409, invalid 422 (bad body, parameters, definition or input),
unavailable 503 (Kafka or PostgreSQL out of reach), internal 500. A 500's
message never carries a traceback: the exception is logged (structlog) with
the request's method and path, and the client gets a short reference to it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "ERROR_RESPONSES", "ErrorResponse", "classify", "error_doc", "error_response",
           "install_handlers", "refuse_unstorable", "unexpected"]

log = structlog.get_logger("orchestrator.api")

CODES = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "invalid", 415: "invalid", 422: "invalid", 500: "internal", 503: "unavailable"}


class ApiError(Exception):
    """An error the client gets as it is (status, code, message, details)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


class ErrorBody(BaseModel):
    code: str = Field(description="unauthenticated, forbidden, not_found, method_not_allowed, conflict, "
                                  "invalid, unavailable or internal")
    message: str = Field(description="What went wrong, for a human")
    details: Any = Field(None, description="More about it: the invalid fields, the definition problems...")


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_doc(text: str) -> dict[str, Any]:
    """An error response for the OpenAPI document."""
    return {"model": ErrorResponse, "description": text}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: error_doc("No API key, or an unknown one (code unauthenticated)"),
    403: error_doc("The key's role may not do this (code forbidden)"),
    422: error_doc("Invalid parameters or body (code invalid; details lists each field's location)"),
    500: error_doc("An unexpected failure (code internal); logged on the server"),
    503: error_doc("Kafka or PostgreSQL is unavailable (code unavailable)"),
}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def classify(exc: BaseException) -> tuple[int, str, str] | None:
    """(status, code, message) for the failures that are not bugs: services out of reach (503),
    values PostgreSQL refuses (422). None for anything else (a 500)."""
    import psycopg
    from confluent_kafka import KafkaError, KafkaException
    from psycopg_pool import PoolTimeout

    from ..operations.sending import SendError
    from ..runtime.kafka import KafkaUnavailable

    if isinstance(exc, (KafkaUnavailable, SendError)):
        return 503, "unavailable", f"Kafka: {exc}"
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else None
        return 503, "unavailable", f"Kafka: {err.str() if isinstance(err, KafkaError) else _first_line(exc)}"
    if isinstance(exc, PoolTimeout):
        return 503, "unavailable", "PostgreSQL: no connection available (is the database reachable?)"
    if isinstance(exc, (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn)):
        return 503, "unavailable", (f"PostgreSQL: the projection tables are missing or older than this "
                                    f"orchestrator ({_first_line(exc)}): run `orchestrator projections migrate`")
    if isinstance(exc, psycopg.OperationalError):
        return 503, "unavailable", f"PostgreSQL: {_first_line(exc)}"
    if isinstance(exc, psycopg.DataError):  # e.g. a NUL character, a number out of range
        return 422, "invalid", f"a value PostgreSQL cannot take: {_first_line(exc)}"
    return None


def unexpected(exc: BaseException, method: str, path: str) -> JSONResponse:
    """The response for an exception that is not an ApiError: 503/422 when known, else a logged 500."""
    known = classify(exc)
    if known is not None:
        status, code, message = known
        if status >= 500:
            log.warning("api_unavailable", method=method, path=path, error=message)
        return error_response(status, code, message)
    reference = uuid.uuid4().hex[:12]
    log.error("api_internal_error", method=method, path=path, reference=reference, exc_info=exc)
    return error_response(500, "internal", f"internal error (reference {reference}); the server log has it")


def _unstorable(value: Any, where: str) -> str | None:
    """Why `value` cannot travel through Kafka into the projection, or None. PostgreSQL's text and
    jsonb hold no NUL character, UTF-8 no lone surrogate, JSON no NaN or infinity."""
    stack = [(value, where)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return f"{at}: contains a NUL character (\\u0000), which cannot be stored"
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return f"{at}: not valid Unicode (a lone surrogate)"
        elif isinstance(node, float):
            if node != node or node in (float("inf"), float("-inf")):
                return f"{at}: not a finite number"
        elif isinstance(node, dict):
            for key, item in node.items():
                shown = json.dumps(str(key))[1:-1]  # escaped: the message must itself be storable text
                stack.append((key, f"{at}.{shown} (the key)"))
                stack.append((item, f"{at}.{shown}"))
        elif isinstance(node, list):
            stack.extend((item, f"{at}[{i}]") for i, item in enumerate(node))
    return None


async def refuse_unstorable(request: Request) -> None:
    """App-wide dependency: 422 for text the engine could carry but the projection could not store
    (it would stop the projector), in the path, the query or a JSON body."""
    found = _unstorable(dict(request.path_params), "path") or _unstorable(
        [[k, v] for k, v in request.query_params.multi_items()], "query")
    if found is None and request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            body = None  # not JSON: the route's own validation says so
        found = _unstorable(body, "body")
    if found is not None:
        raise ApiError(422, "invalid", found)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"location": [str(part) for part in e.get("loc", ())], "message": e.get("msg", ""),
             "type": e.get("type", "")} for e in exc.errors()]


def install_handlers(app: FastAPI) -> None:
    """ApiError, validation and routing errors as JSON; everything else is the middleware's (app.py)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="orchestrator"'} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        shown = "; ".join(f"{'.'.join(d['location'])}: {d['message']}" for d in details[:3])
        more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
        return error_response(422, "invalid", f"invalid request: {shown}{more}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = 422 if exc.status_code == 400 else exc.status_code  # a body that does not parse: invalid
        code = CODES.get(status, "internal" if status >= 500 else "invalid")
        if status == 404:
            message = f"no such route: {request.method} {request.url.path}"
        elif status == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(status, code, message, headers=getattr(exc, "headers", None))
