"""`perform(task)` against httpx.MockTransport: requests, classification, secrets."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from orchestrator.core.messages import ExecuteStep, TaskFailed, TaskSucceeded
from orchestrator.runtime.executor_steps import perform
from orchestrator.runtime.secrets import Sealer
from orchestrator.runtime.services import ServiceRegistry

NOW = 1_700_000_000_000
SEALER = Sealer.generate()
REGISTRY_DATA = {"services": {
    "user-service": {"base_url": "http://users.test/user-service", "timeout": "2s",
                     "headers": {"Authorization": "Bearer {{ secrets.USER_TOKEN }}"}},
    "slow-service": {"base_url": "http://slow.test", "timeout": "50ms"},
    "fragile": {"base_url": "http://fragile.test", "breaker": {"failure_threshold": 2, "open_for": "1h"}},
}}
SECRETS = {"USER_TOKEN": "tok-user-0123456789"}


def registry() -> ServiceRegistry:
    return ServiceRegistry.from_mapping(REGISTRY_DATA)


def sealed(value: Any) -> dict[str, str]:
    return {"$secret": SEALER.seal(value)}


def make_task(step: dict[str, Any], *, input: Any = None, attempt: int = 1, step_type: str = "service_call",
              deadline_at: int = NOW + 60_000, steps: dict[str, Any] | None = None) -> ExecuteStep:
    return ExecuteStep(
        execution_id="exec-1", workflow_name="wf", workflow_version="1", step_name=step["name"],
        step_type=step_type, attempt=attempt, idempotency_key=f"exec-1/{step['name']}", step=step,
        context={"input": input or {}, "steps": steps or {},
                 "execution": {"id": "exec-1", "workflow": "wf", "version": "1", "started_at": NOW}},
        deadline_at=deadline_at, timeout_ms=60_000,
    )


def call(name: str = "create", **config: Any) -> dict[str, Any]:
    return {"name": name, "type": "service_call", "config": {"service": "user-service", **config}}


class Recorder:
    """A MockTransport handler that records requests and answers from a script."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], Any]) -> None:
        self.answers = list(answers) or [httpx.Response(200, json={"ok": True})]
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            answer = answer(request)
            if asyncio.iscoroutine(answer):
                answer = await answer
        return answer

    def body(self, i: int = -1) -> Any:
        content = self.requests[i].content
        return json.loads(content) if content else None


def run(task: ExecuteStep, handler: Any, reg: ServiceRegistry | None = None) -> TaskSucceeded | TaskFailed:
    async def go() -> TaskSucceeded | TaskFailed:
        transport = handler if isinstance(handler, httpx.AsyncBaseTransport) else httpx.MockTransport(handler)
        async with httpx.AsyncClient(transport=transport) as http:
            return await perform(task, http=http, registry=reg or registry(), sealer=SEALER,
                                 secrets_env=SECRETS, now_ms=lambda: NOW)
    return asyncio.run(go())


# -- service_call ------------------------------------------------------------------


def test_payload_templates_keep_their_types() -> None:
    handler = Recorder(httpx.Response(201, json={"id": "usr_1"}))
    task = make_task(call(
        endpoint="/api/users/{{ input.group }}", method="post",
        payload={"age": "{{ input.age }}", "profile": "{{ input.profile }}", "tags": "{{ input.tags }}",
                 "greeting": "hi {{ input.name }}", "fixed": 3, "prev": "{{ steps.a.output.n }}"},
        query={"verbose": "{{ input.age > 18 }}", "skip": None},
    ), input={"age": 30, "profile": {"bio": "x", "langs": ["en"]}, "tags": ["a"], "name": "Ann", "group": "g1"},
        steps={"a": {"output": {"n": 7}, "status": "completed", "completed": True, "error": None, "attempts": 1}})
    result = run(task, handler)
    assert isinstance(result, TaskSucceeded), result
    request = handler.requests[0]
    assert request.method == "POST"
    assert request.url.path == "/user-service/api/users/g1"
    assert dict(request.url.params) == {"verbose": "true"}
    assert handler.body() == {"age": 30, "profile": {"bio": "x", "langs": ["en"]}, "tags": ["a"],
                              "greeting": "hi Ann", "fixed": 3, "prev": 7}
    assert request.headers["content-type"] == "application/json"
    assert result.output == {"id": "usr_1"}  # no output mapping: the whole response
    assert (result.started_at, result.finished_at, result.attempt) == (NOW, NOW, 1)


def test_idempotency_key_and_workflow_headers_are_stable_across_attempts() -> None:
    handler = Recorder()
    for attempt in (1, 2, 3):
        run(make_task(call(payload={"a": 1}), attempt=attempt), handler)
    keys = {r.headers["idempotency-key"] for r in handler.requests}
    assert keys == {"exec-1/create"}
    assert [r.headers["x-workflow-attempt"] for r in handler.requests] == ["1", "2", "3"]
    assert {r.headers["x-workflow-execution-id"] for r in handler.requests} == {"exec-1"}
    assert {r.headers["x-workflow-step"] for r in handler.requests} == {"create"}


def test_registry_and_step_headers() -> None:
    handler = Recorder()
    step_headers = {"X-Tenant": "{{ input.tenant }}", "X-Beta": "{{ input.beta }}", "X-None": "{{ input.none }}",
                    "idempotency-key": "mine", "authorization": "Basic override"}
    result = run(make_task(call(headers=step_headers), input={"tenant": "t1", "beta": True, "none": None}), handler)
    assert isinstance(result, TaskSucceeded)
    headers = handler.requests[0].headers
    assert headers.get_list("authorization") == ["Basic override"]  # the step's header wins over the registry's
    assert (headers["x-tenant"], headers["x-beta"]) == ("t1", "true")
    assert "x-none" not in headers
    assert headers.get_list("idempotency-key") == ["exec-1/create"]  # never overridden


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
def test_no_body_without_payload(method: str) -> None:
    handler = Recorder(httpx.Response(200, json={"deleted": True}))
    result = run(make_task(call(endpoint="/api/users/1", method=method)), handler)
    assert isinstance(result, TaskSucceeded)
    assert handler.requests[0].method == method
    assert handler.requests[0].content == b""


@pytest.mark.parametrize(
    ("response", "output"),
    [
        (httpx.Response(200, text="plain words"), {"text": "plain words"}),
        (httpx.Response(204), None),
        (httpx.Response(200, content=b"[1, 2]", headers={"content-type": "application/json"}), [1, 2]),
        (httpx.Response(200, content=b"{not json", headers={"content-type": "application/json"}),
         {"text": "{not json"}),
    ],
)
def test_response_bodies(response: httpx.Response, output: Any) -> None:
    result = run(make_task(call()), Recorder(response))
    assert isinstance(result, TaskSucceeded)
    assert result.output == output


def test_output_mapping_sees_response_and_context() -> None:
    step = {**call(), "output": {"user_id": "{{ response.id }}", "who": "{{ response.user }}",
                                 "label": "user {{ response.id }} of {{ execution.workflow }}"}}
    result = run(make_task(step), Recorder(httpx.Response(201, json={"id": "usr_9", "user": {"n": 1}})))
    assert isinstance(result, TaskSucceeded)
    assert result.output == {"user_id": "usr_9", "who": {"n": 1}, "label": "user usr_9 of wf"}


def test_output_mapping_error_is_permanent() -> None:
    step = {**call(), "output": {"user_id": "{{ response.missing.id }}"}}
    result = run(make_task(step), Recorder(httpx.Response(200, json={"id": 1})))
    assert isinstance(result, TaskFailed) and not result.transient
    assert result.error.startswith("output.user_id: ")


# -- classification ----------------------------------------------------------------


@pytest.mark.parametrize(("status", "transient"), [(503, True), (500, True), (429, True), (408, True),
                                                    (400, False), (404, False), (409, False), (302, False)])
def test_http_status_classification(status: int, transient: bool) -> None:
    handler = Recorder(httpx.Response(status, json={"error": "boom " * 200, "password": "hunter2"}))
    result = run(make_task(call()), handler)
    assert isinstance(result, TaskFailed)
    assert (result.transient, result.status_code) == (transient, status)
    assert result.error.startswith(f"HTTP {status} ")
    assert "user-service POST /" in result.error and "boom" in result.error
    assert len(result.error) < 500  # a short excerpt
    assert "hunter2" not in result.error  # redacted


@pytest.mark.parametrize("exc", [httpx.ReadTimeout("read timed out"), httpx.ConnectTimeout("connect timed out"),
                                 httpx.ConnectError("[Errno 111] Connection refused"),
                                 httpx.RemoteProtocolError("server disconnected")])
def test_transport_errors_are_transient(exc: Exception) -> None:
    result = run(make_task(call()), Recorder(exc))
    assert isinstance(result, TaskFailed) and result.transient and result.status_code is None
    assert "user-service POST /" in result.error


def test_real_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    reg = ServiceRegistry.from_mapping({"services": {"gone": {"base_url": f"http://127.0.0.1:{port}"}}})
    result = run(make_task(call(service="gone")), httpx.AsyncHTTPTransport(), reg)
    assert isinstance(result, TaskFailed) and result.transient
    assert "connection error" in result.error


def test_slow_service_times_out_transiently() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    result = run(make_task(call(service="slow-service")), Recorder(slow))
    assert isinstance(result, TaskFailed) and result.transient
    assert "timed out after 50ms" in result.error


def test_the_deadline_bounds_the_request() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    result = run(make_task(call(), deadline_at=NOW + 30), Recorder(slow))  # service allows 2s
    assert isinstance(result, TaskFailed) and result.transient
    assert "timed out after 30ms" in result.error


def test_a_passed_deadline_sends_nothing() -> None:
    handler = Recorder()
    result = run(make_task(call(), deadline_at=NOW - 1), handler)
    assert isinstance(result, TaskFailed) and result.transient and "deadline" in result.error
    assert handler.requests == []


def test_unregistered_service_is_permanent() -> None:
    handler = Recorder()
    result = run(make_task(call(service="billing")), handler)
    assert isinstance(result, TaskFailed)
    assert (result.transient, result.error, result.status_code) == (False, "service 'billing' is not registered", None)
    assert handler.requests == []


@pytest.mark.parametrize("endpoint", ["http://evil.test/x", "//evil.test/x", "/api/../../admin"])
def test_endpoint_cannot_leave_the_service(endpoint: str) -> None:
    handler = Recorder()
    result = run(make_task(call(endpoint=endpoint)), handler)
    assert isinstance(result, TaskFailed) and not result.transient
    assert handler.requests == []


def test_template_errors_are_permanent_and_name_the_field() -> None:
    result = run(make_task(call(payload={"u": "{{ input.nope }}"}), input={"a": 1}), Recorder())
    assert isinstance(result, TaskFailed) and not result.transient
    assert result.error.startswith("config.payload.u: ")


def test_wait_for_event_is_not_for_executors() -> None:
    step = {"name": "wait", "type": "wait_for_event", "config": {"event_type": "x"}}
    result = run(make_task(step, step_type="wait_for_event"), Recorder())
    assert isinstance(result, TaskFailed) and not result.transient and "decider" in result.error


def test_circuit_breaker_fails_fast_once_open() -> None:
    handler = Recorder(httpx.Response(503))
    reg = registry()
    outcomes = [run(make_task(call(service="fragile")), handler, reg) for _ in range(3)]
    assert all(isinstance(r, TaskFailed) and r.transient for r in outcomes)
    assert len(handler.requests) == 2  # the third never left
    assert outcomes[2].error.startswith("circuit open for fragile: 2 failures within 30s; next probe in ")
    assert [r.breaker for r in outcomes] == ["closed", "open", "open"]  # more in test_circuit_breaker.py


# -- secrets ------------------------------------------------------------------------


def test_secrets_are_unsealed_only_for_the_request() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(400 if body.get("fail") else 201,
                              json={"id": "usr_1", "echo": body, "auth": request.headers["authorization"]})

    step = {**call(payload={"password_hash": "{{ hash(input.password) }}", "api_token": "{{ input.api_token }}",
                            "fail": "{{ input.fail }}"}),
            "output": {"user_id": "{{ response.id }}", "echo": "{{ response.echo }}",
                       "auth": "{{ response.auth }}", "pw": "{{ input.password }}"}}
    secret_input = {"password": sealed("correct horse battery"), "api_token": sealed("tok-abcdef123456"),
                    "fail": False}
    handler = Recorder(echo)
    result = run(make_task(step, input=secret_input), handler)
    assert isinstance(result, TaskSucceeded), result
    sent = handler.body()
    assert sent["api_token"] == "tok-abcdef123456"  # plaintext only on the wire to the service
    assert PasswordHasher().verify(sent["password_hash"], "correct horse battery")
    assert sent["password_hash"].startswith("$argon2id$")
    recorded = json.dumps(result.output)
    for plain in ("correct horse battery", "tok-abcdef123456", "tok-user-0123456789"):
        assert plain not in recorded
    assert result.output["echo"]["api_token"] == "***"
    assert result.output["pw"] == secret_input["password"]  # still sealed
    assert "$secret" not in json.dumps(sent)

    failed = run(make_task(step, input={**secret_input, "fail": True}), Recorder(echo))
    assert isinstance(failed, TaskFailed) and not failed.transient
    assert "tok-abcdef123456" not in failed.error and "tok-user-0123456789" not in failed.error


def test_hash_salts_each_call() -> None:
    handler = Recorder()
    step = call(payload={"h": "{{ hash(input.password) }}"})
    for _ in range(2):
        run(make_task(step, input={"password": sealed("pw-123456")}), handler)
    first, second = handler.body(0)["h"], handler.body(1)["h"]
    assert first != second
    assert PasswordHasher().verify(first, "pw-123456") and PasswordHasher().verify(second, "pw-123456")


def test_a_token_from_another_key_is_a_permanent_failure() -> None:
    foreign = {"$secret": Sealer.generate().seal("x")}
    handler = Recorder()
    result = run(make_task(call(payload={"p": "{{ input.p }}"}), input={"p": foreign}), handler)
    assert isinstance(result, TaskFailed) and not result.transient and "unseal" in result.error
    assert handler.requests == []


# -- validation ---------------------------------------------------------------------


def validation(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"name": "validate_input", "type": "validation", "config": {"validation_rules": list(rules)}}


def validate(step: dict[str, Any], input: Any, handler: Any = None) -> TaskSucceeded | TaskFailed:
    return run(make_task(step, input=input, step_type="validation"), handler or Recorder())


def test_local_rules_pass() -> None:
    step = validation(
        {"field": "email", "rule": "required"}, {"field": "email", "rule": "email"},
        {"field": "username", "rule": "regex", "value": "^[a-z]+$"},
        {"field": "username", "rule": "min_length", "value": 3},
        {"field": "username", "rule": "max_length", "value": 8},
        {"field": "profile.city", "rule": "not_empty"},
        {"field": "nickname", "rule": "min_length", "value": 3},  # absent: only `required` demands it
    )
    handler = Recorder()
    result = validate(step, {"email": "a@b.io", "username": "ann", "profile": {"city": "Oslo"}}, handler)
    assert isinstance(result, TaskSucceeded), result
    assert result.output == {"valid": True, "checked": ["email", "username", "profile.city", "nickname"]}
    assert handler.requests == []


@pytest.mark.parametrize(
    ("rule", "input", "error"),
    [
        ({"field": "email", "rule": "required"}, {}, "email: required failed: is required"),
        ({"field": "email", "rule": "email"}, {"email": "nope"}, "email: email failed: is not a valid email address"),
        ({"field": "name", "rule": "regex", "value": "^[a-z]+$"}, {"name": "A1"},
         "name: regex failed: does not match '^[a-z]+$'"),
        ({"field": "name", "rule": "min_length", "value": 3}, {"name": "ab"},
         "name: min_length failed: is shorter than 3"),
        ({"field": "name", "rule": "max_length", "value": 2, "message": "too long, sorry"}, {"name": "abc"},
         "name: max_length failed: too long, sorry"),
        ({"field": "a.b", "rule": "not_empty"}, {"a": {"b": "  "}}, "a.b: not_empty failed: must not be empty"),
        ({"field": "x", "rule": "shiny"}, {"x": 1}, "x: unknown rule 'shiny'"),
    ],
)
def test_local_rule_failures_are_permanent_and_name_the_field(rule: dict[str, Any], input: Any, error: str) -> None:
    result = validate(validation(rule), input)
    assert isinstance(result, TaskFailed) and not result.transient
    assert result.error.startswith(error)


def test_remote_rules_ask_the_service() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        taken = body["rule"] == "unique_email" and body["value"] == "taken@example.com"
        return httpx.Response(200, json={"valid": not taken, "message": "already registered" if taken else None})

    step = validation({"field": "email", "rule": "unique_email", "service": "user-service"},
                      {"field": "username", "rule": "unique_username", "service": "user-service"})
    handler = Recorder(answer)
    ok = validate(step, {"email": "new@example.com", "username": "ann"}, handler)
    assert isinstance(ok, TaskSucceeded) and ok.output == {"valid": True, "checked": ["email", "username"]}
    assert [r.url.path for r in handler.requests] == ["/user-service/api/validate"] * 2
    assert handler.body(0) == {"rule": "unique_email", "field": "email", "value": "new@example.com"}
    assert handler.requests[0].headers["authorization"] == "Bearer tok-user-0123456789"
    assert handler.requests[0].headers["idempotency-key"] == "exec-1/validate_input/email/unique_email"

    bad = validate(step, {"email": "taken@example.com", "username": "ann"}, Recorder(answer))
    assert isinstance(bad, TaskFailed) and not bad.transient
    assert bad.error == "email: unique_email failed: already registered"


def test_remote_rules_get_unsealed_values_and_transient_errors_stay_transient() -> None:
    handler = Recorder(httpx.Response(200, json={"valid": True}))
    step = validation({"field": "password", "rule": "not_pwned", "service": "user-service"})
    result = validate(step, {"password": sealed("s3cret-pass")}, handler)
    assert isinstance(result, TaskSucceeded)
    assert handler.body() == {"rule": "not_pwned", "field": "password", "value": "s3cret-pass"}

    down = validate(step, {"password": "x"}, Recorder(httpx.Response(503, text="down")))
    assert isinstance(down, TaskFailed) and down.transient and down.status_code == 503
    odd = validate(step, {"password": "x"}, Recorder(httpx.Response(200, json={"ok": 1})))
    assert isinstance(odd, TaskFailed) and not odd.transient and "expected {valid" in odd.error
    missing = validate(validation({"field": "e", "rule": "unique_email", "service": "nope"}), {"e": "x"})
    assert isinstance(missing, TaskFailed) and missing.error == "service 'nope' is not registered"
