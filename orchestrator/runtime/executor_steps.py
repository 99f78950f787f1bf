"""`perform(task) -> TaskSucceeded | TaskFailed`: one attempt of one step.

The executor's I/O-free-ish heart: everything it touches comes in as an
argument (an `HttpClient`, or an httpx client whose transport tests replace
with `httpx.MockTransport`; the registry; the sealer; the template secrets; the
clock). It never raises: every outcome is a result.

Secrets: sealed input values are unsealed only to render requests; outputs
are rendered against the sealed input, and every plaintext secret that the
attempt handled is replaced by "***" in the result (output and error text),
so a service echoing a secret back cannot leak it into Kafka.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx
import structlog
from argon2 import PasswordHasher
from pydantic import BaseModel, ValidationError

from orchestrator.core.definition import ServiceCallConfig, ValidationConfig
from orchestrator.core.messages import ExecuteStep, TaskFailed, TaskResult, TaskSucceeded
from orchestrator.core.sensitive import redact_message, unseal_values
from orchestrator.core.templates import TemplateError, render_value

from .executor_http import OMIT, CallFailed, Request, send
from .http_transport import HttpClient, as_http_client
from .executor_rules import MISSING, check_builtin, lookup
from .secrets import Sealer
from .services import ServiceRegistry, UnknownServiceError

__all__ = ["perform", "password_hash", "wall_clock_ms", "VALIDATE_ENDPOINT"]

log = structlog.get_logger("orchestrator.executor")

VALIDATE_ENDPOINT = "/api/validate"
_MIN_SCRUB = 4  # shorter plaintexts are not scrubbed from results (too many false hits)
_HASHER = PasswordHasher()  # argon2id, RFC 9106 low-memory profile, random salt per call
# argon2 is slow and memory hungry by design: a few threads, off the event loop.
_HASH_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="orch-hash")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def password_hash(value: Any) -> str:
    """`hash(x)` in templates: argon2id, salted; returns the encoded hash string."""
    if value is None:
        raise ValueError("hash() of an undefined or null value")
    return _HASHER.hash(value if isinstance(value, str) else str(value))


class _Attempt:
    """What one attempt renders with, and the plaintexts it must not leak."""

    def __init__(self, task: ExecuteStep, sealer: Sealer, secrets_env: Mapping[str, str]) -> None:
        self.task = task
        self.secrets_env = dict(secrets_env)
        self.plaintexts: set[str] = {v for v in self.secrets_env.values() if len(v) >= _MIN_SCRUB}
        self.context = task.context if isinstance(task.context, dict) else {}
        self._sealer = sealer
        self._input: Any = None
        self._unsealed = False
        self.service: str | None = None  # whose breaker state a failure reports

    def _unseal(self, token: str) -> Any:
        value = self._sealer.unseal(token)
        _collect_strings(value, self.plaintexts)
        return value

    @property
    def input(self) -> Any:
        """The unsealed input (request rendering only)."""
        if not self._unsealed:
            try:
                self._input = unseal_values(self.context.get("input"), self._unseal)
            except ValueError as exc:
                raise CallFailed(f"cannot unseal the input: {exc}", transient=False) from None
            self._unsealed = True
        return self._input

    def request_scope(self) -> dict[str, Any]:
        return {**self.context, "input": self.input, "secrets": self.secrets_env}

    def output_scope(self, response: Any) -> dict[str, Any]:
        return {**self.context, "response": response}  # sealed input, no secrets

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact_message(value, self.plaintexts, min_length=_MIN_SCRUB) if self.plaintexts else value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        return value

    def headers(self, service_headers: Mapping[str, str], step_headers: Mapping[str, Any]) -> dict[str, str]:
        """Registry headers, then step headers (later wins, names case-insensitive; null
        values dropped), then the orchestrator's own, which nothing overrides."""
        task = self.task
        own = {"Idempotency-Key": task.idempotency_key, "X-Workflow-Execution-Id": task.execution_id,
               "X-Workflow-Step": task.step_name, "X-Workflow-Attempt": str(task.attempt)}
        rendered = _render(service_headers, {"secrets": self.secrets_env}, "service headers")
        merged: dict[str, tuple[str, str]] = {}  # lower-case name -> (name, value)
        for source in (rendered, step_headers, own):
            for name, value in source.items():
                if value is not None:
                    merged[name.lower()] = (name, value if isinstance(value, str) else json.dumps(value))
        return dict(merged.values())


def _collect_strings(value: Any, into: set[str]) -> None:
    if isinstance(value, str):
        if len(value) >= _MIN_SCRUB:
            into.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_strings(item, into)
    elif isinstance(value, list):
        for item in value:
            _collect_strings(item, into)


def _render(value: Any, scope: dict[str, Any], where: str) -> Any:
    try:
        return render_value(value, scope, functions={"hash": password_hash}, where=where)
    except TemplateError as exc:
        text = str(exc)
        where = getattr(exc, "where", "") or where
        raise CallFailed(text if where and where in text else f"{where}: {text}", transient=False) from None
    except ValueError as exc:  # e.g. hash() of null
        raise CallFailed(f"{where}: {exc}", transient=False) from None


async def _render_off_loop(value: Any, scope: dict[str, Any], where: str) -> Any:
    """Render where `hash()` may run in the hash pool, so the event loop never stalls."""
    if "hash" not in repr(value):
        return _render(value, scope, where)
    return await asyncio.get_running_loop().run_in_executor(_HASH_POOL, partial(_render, value, scope, where))


def _service(registry: ServiceRegistry, name: str) -> Any:
    try:
        return registry.get(name)
    except UnknownServiceError as exc:
        raise CallFailed(str(exc), transient=False) from None


def _config(model: type[BaseModel], step: Any) -> Any:
    raw = step.get("config") if isinstance(step, dict) else None
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise CallFailed(f"invalid step config: {loc}: {first['msg']}", transient=False) from None


async def _service_call(attempt: _Attempt, http: HttpClient, registry: ServiceRegistry,
                        now_ms: Callable[[], int]) -> Any:
    task = attempt.task
    config: ServiceCallConfig = _config(ServiceCallConfig, task.step)
    attempt.service = config.service
    service = _service(registry, config.service)
    scope = attempt.request_scope()
    rendered = await _render_off_loop(
        {"endpoint": config.endpoint, "payload": config.payload, "headers": config.headers, "query": config.query},
        scope, "config",
    )
    endpoint = rendered["endpoint"]
    if not isinstance(endpoint, str):
        raise CallFailed(f"config.endpoint must render to text, got {type(endpoint).__name__}", transient=False)
    request = Request(
        service=service,
        method=config.method,
        endpoint=endpoint,
        body=OMIT if rendered["payload"] is None else rendered["payload"],
        headers=attempt.headers(service.headers, rendered["headers"] or {}),
        params=rendered["query"] or {},
    )
    _, response = await send(http, request, registry=registry, deadline_at=task.deadline_at,
                             now_ms=now_ms, scrub=attempt.scrub)
    return response


async def _validation(attempt: _Attempt, http: HttpClient, registry: ServiceRegistry,
                      now_ms: Callable[[], int]) -> Any:
    task = attempt.task
    config: ValidationConfig = _config(ValidationConfig, task.step)
    failures: list[str] = []
    failed_service: str | None = None  # the service of the first remote rule that failed
    checked: list[str] = []
    for rule in config.validation_rules:
        value = lookup(attempt.input, rule.field)
        if rule.field not in checked:
            checked.append(rule.field)
        if rule.service is None:
            try:
                reason = check_builtin(rule.rule, value, rule.value)
            except ValueError as exc:
                raise CallFailed(f"{rule.field}: {exc}", transient=False) from None
        else:
            attempt.service = rule.service  # a failed request reports this service's breaker
            reason = await _remote_rule(attempt, http, registry, now_ms, rule, value)
            if reason is not None and failed_service is None:
                failed_service = rule.service
        if reason is not None:
            failures.append(f"{rule.field}: {rule.rule} failed: {rule.message or reason}")
    if failures:
        attempt.service = failed_service or attempt.service
        raise CallFailed("; ".join(failures), transient=False)
    return {"valid": True, "checked": checked}


async def _remote_rule(attempt: _Attempt, http: HttpClient, registry: ServiceRegistry,
                       now_ms: Callable[[], int], rule: Any, value: Any) -> str | None:
    service = _service(registry, rule.service)
    headers = attempt.headers(service.headers, {})
    # One key per rule: the same key must always mean the same request.
    headers["Idempotency-Key"] = f"{attempt.task.idempotency_key}/{rule.field}/{rule.rule}"
    body = {"rule": rule.rule, "field": rule.field, "value": None if value is MISSING else value}
    request = Request(service=service, method="POST", endpoint=VALIDATE_ENDPOINT, body=body, headers=headers)
    _, answer = await send(http, request, registry=registry, deadline_at=attempt.task.deadline_at,
                           now_ms=now_ms, scrub=attempt.scrub)
    if not isinstance(answer, dict) or not isinstance(answer.get("valid"), bool):
        raise CallFailed(f"{request.label}: expected {{valid: bool, message?}}, got {str(answer)[:100]}",
                         transient=False)
    if answer["valid"]:
        return None
    return str(answer.get("message") or "rejected by " + service.name)


_KINDS = {"service_call": _service_call, "validation": _validation}


async def perform(
    task: ExecuteStep,
    *,
    http: HttpClient | httpx.AsyncClient,
    registry: ServiceRegistry,
    sealer: Sealer,
    secrets_env: Mapping[str, str] | None = None,
    now_ms: Callable[[], int] = wall_clock_ms,
) -> TaskResult:
    """Perform one attempt of `task`; never raises (except cancellation)."""
    started = now_ms()
    attempt = _Attempt(task, sealer, secrets_env or {})
    try:
        kind = _KINDS.get(task.step_type)
        if kind is None:
            if task.step_type == "wait_for_event":
                raise CallFailed("wait_for_event steps are handled by the decider, not by executors",
                                 transient=False)
            raise CallFailed(f"unknown step type {task.step_type!r}", transient=False)
        response = await kind(attempt, as_http_client(http), registry, now_ms)
        mapping = task.step.get("output") if isinstance(task.step, dict) else None
        output = response if mapping is None else _render(mapping, attempt.output_scope(response), "output")
        return TaskSucceeded(execution_id=task.execution_id, step=task.step_name, attempt=task.attempt,
                             output=attempt.scrub(output), started_at=started, finished_at=now_ms())
    except CallFailed as exc:
        return TaskFailed(execution_id=task.execution_id, step=task.step_name, attempt=task.attempt,
                          error=attempt.scrub(exc.error), transient=exc.transient, status_code=exc.status_code,
                          started_at=started, finished_at=now_ms(), breaker=_breaker_state(registry, attempt))
    except Exception as exc:  # a bug here must not kill the executor; retried as transient
        log.exception("perform_crashed", execution_id=task.execution_id, step=task.step_name,
                      attempt=task.attempt, error_type=type(exc).__name__)
        return TaskFailed(execution_id=task.execution_id, step=task.step_name, attempt=task.attempt,
                          error=f"executor error: {type(exc).__name__}", transient=True, status_code=None,
                          started_at=started, finished_at=now_ms(), breaker=_breaker_state(registry, attempt))


def _breaker_state(registry: ServiceRegistry, attempt: _Attempt) -> str | None:
    """The state of the breaker of the service the attempt failed on, right after it;
    None when the step called no service, or the service has no breaker."""
    try:
        return registry.breaker_state(attempt.service)
    except Exception:  # never let reporting turn a result into a crash
        return None
