"""Circuit breakers: the state machine on a fake clock, its transition callback,
and what `perform` reports (TaskFailed.breaker, refused calls, log lines)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from orchestrator.core.messages import ExecuteStep, TaskFailed, TaskSucceeded
from orchestrator.runtime.executor import log_breaker_change
from orchestrator.runtime.executor_steps import perform
from orchestrator.runtime.secrets import Sealer
from orchestrator.runtime.services import BreakerConfig, BreakerTransition, CircuitBreaker, ServiceRegistry

NOW = 1_700_000_000_000
SEALER = Sealer.generate()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_breaker(clock: Clock, **config: Any) -> tuple[CircuitBreaker, list[tuple[str, str, int]]]:
    changes: list[tuple[str, str, int]] = []

    def seen(change: BreakerTransition) -> None:
        assert change.service == "svc"
        changes.append((change.old, change.new, change.failures))

    settings = {"failure_threshold": 3, "window": "10s", "open_for": "5s", "half_open_probes": 1, **config}
    return CircuitBreaker(BreakerConfig(**settings), clock, name="svc", on_change=seen), changes


# -- the state machine ----------------------------------------------------------------


def test_failures_within_the_window_open_it_and_old_ones_expire() -> None:
    clock = Clock()
    breaker, changes = make_breaker(clock)
    for _ in range(2):
        permit = breaker.allow()
        assert permit is not None and not permit.probe
        breaker.record(False, permit)
    clock.now += 10.5  # both left the 10s window
    breaker.record(False, breaker.allow())
    breaker.record(True, breaker.allow())  # a success in between does not reset the count
    breaker.record(False, breaker.allow())
    assert breaker.state == "closed" and changes == []
    breaker.record(False, breaker.allow())
    assert breaker.state == "open"
    assert changes == [("closed", "open", 3)]
    assert breaker.allow() is None


def test_open_refuses_until_open_for_passes_then_probes() -> None:
    clock = Clock()
    breaker, changes = make_breaker(clock, failure_threshold=1)
    breaker.record(False, breaker.allow())
    clock.now += 2.0
    assert breaker.allow() is None
    assert breaker.retry_in() == pytest.approx(3.0)
    assert breaker.refusal() == "circuit open for svc: 1 failures within 10s; next probe in 3.0s"
    clock.now += 3.0
    assert breaker.state == "half_open" and breaker.retry_in() == 0.0
    assert changes == [("closed", "open", 1), ("open", "half_open", 0)]
    assert breaker.state == "half_open" and len(changes) == 2  # reported once


def test_a_successful_probe_closes_it() -> None:
    clock = Clock()
    breaker, changes = make_breaker(clock, failure_threshold=1)
    breaker.record(False, breaker.allow())
    clock.now += 5
    probe = breaker.allow()
    assert probe is not None and probe.probe
    breaker.record(True, probe)
    assert breaker.state == "closed"
    assert [c[1] for c in changes] == ["open", "half_open", "closed"]
    breaker.record(False, breaker.allow())  # counting starts afresh
    assert breaker.state == "open"


def test_a_failed_probe_reopens_it_for_another_open_for() -> None:
    clock = Clock()
    breaker, changes = make_breaker(clock, failure_threshold=1)
    breaker.record(False, breaker.allow())
    clock.now += 5
    breaker.record(False, breaker.allow())
    assert breaker.state == "open"
    assert changes[-1] == ("half_open", "open", 0)
    assert breaker.refusal() == "circuit open for svc: the half-open probe failed; next probe in 5.0s"
    clock.now += 4.9
    assert breaker.allow() is None
    clock.now += 0.1
    assert breaker.allow() is not None
    assert [c[1] for c in changes] == ["open", "half_open", "open", "half_open"]


def test_half_open_lets_only_the_configured_probes_through() -> None:
    clock = Clock()
    breaker, _ = make_breaker(clock, failure_threshold=1, half_open_probes=2)
    breaker.record(False, breaker.allow())
    clock.now += 5
    first, second = breaker.allow(), breaker.allow()
    assert first is not None and second is not None and first.probe and second.probe
    assert breaker.allow() is None
    assert breaker.state == "half_open"
    assert breaker.refusal() == "circuit open for svc: half-open, 2 probe(s) in flight"
    breaker.release_probe(first)  # cancelled: its slot is free again
    third = breaker.allow()
    assert third is not None and breaker.allow() is None
    breaker.record(True, second)  # the first verdict decides
    assert breaker.state == "closed"
    breaker.record(False, third)  # a probe of the finished half-open state: ignored
    assert breaker.state == "closed"


def test_verdicts_of_calls_admitted_under_an_earlier_state_are_ignored() -> None:
    clock = Clock()
    breaker, changes = make_breaker(clock, failure_threshold=2)
    in_flight = [breaker.allow() for _ in range(5)]  # concurrent calls, all admitted while closed
    for permit in in_flight:
        clock.now += 0.125
        breaker.record(False, permit)
    assert changes == [("closed", "open", 2)]  # opened once (at 100.25); the late failures neither reopen
    clock.now = 105.375  # ... nor extend it (the last one came at 100.625)
    assert breaker.state == "half_open"
    late = breaker.allow()
    breaker.record(True, in_flight[0])  # stale success: not the probe's verdict
    assert breaker.state == "half_open"
    breaker.record(True, late)
    assert breaker.state == "closed"


def test_without_a_callback_nothing_is_reported() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, open_for="1s"), clock)
    breaker.record(False)
    clock.now += 1
    assert breaker.state == "half_open"


def test_the_registry_passes_its_observer_and_clock_to_every_breaker() -> None:
    registry = ServiceRegistry.from_mapping({"services": {
        "a": {"base_url": "http://a", "breaker": {"failure_threshold": 1, "open_for": "1s"}},
        "b": {"base_url": "http://b"},
    }})
    clock = Clock()
    registry.clock = clock
    early = registry.breaker("a")  # created before the observer is set
    seen: list[BreakerTransition] = []
    registry.observe_breakers(seen.append)
    assert early is not None
    early.record(False)
    clock.now += 1
    assert registry.breaker_state("a") == "half_open"
    assert [(c.service, c.new) for c in seen] == [("a", "open"), ("a", "half_open")]
    assert registry.breaker_state("b") is None and registry.breaker_state("nope") is None
    assert registry.breaker_state(None) is None


# -- perform: what results report --------------------------------------------------------

REGISTRY_DATA = {"services": {
    "user-service": {"base_url": "http://users.test/user-service",
                     "breaker": {"failure_threshold": 2, "window": "30s", "open_for": "5s"}},
    "plain": {"base_url": "http://plain.test"},
}}


def registry(clock: Clock | None = None) -> ServiceRegistry:
    reg = ServiceRegistry.from_mapping(REGISTRY_DATA)
    reg.clock = clock or Clock()
    return reg


def make_task(step: dict[str, Any], *, input: Any = None, step_type: str = "service_call",
              attempt: int = 1) -> ExecuteStep:
    return ExecuteStep(
        execution_id="exec-1", workflow_name="wf", workflow_version="1", step_name=step["name"],
        step_type=step_type, attempt=attempt, idempotency_key=f"exec-1/{step['name']}", step=step,
        context={"input": input or {}, "steps": {},
                 "execution": {"id": "exec-1", "workflow": "wf", "version": "1", "started_at": NOW}},
        deadline_at=NOW + 60_000, timeout_ms=60_000,
    )


def call(service: str = "user-service", **config: Any) -> dict[str, Any]:
    return {"name": "create", "type": "service_call",
            "config": {"service": service, "endpoint": "/api/users", "method": "POST", **config}}


def validation(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"name": "validate_input", "type": "validation", "config": {"validation_rules": list(rules)}}


class Service:
    """A MockTransport handler answering from a script (the last answer repeats)."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def run(task: ExecuteStep, service: Service, reg: ServiceRegistry) -> TaskSucceeded | TaskFailed:
    async def go() -> TaskSucceeded | TaskFailed:
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            return await perform(task, http=http, registry=reg, sealer=SEALER, secrets_env={}, now_ms=lambda: NOW)
    return asyncio.run(go())


def test_failures_report_closed_then_open_when_the_threshold_is_crossed() -> None:
    reg = registry()
    service = Service(httpx.Response(503, json={"error": "down"}))
    first, second = (run(make_task(call(), attempt=n), service, reg) for n in (1, 2))
    assert isinstance(first, TaskFailed) and first.transient and first.status_code == 503
    assert first.breaker == "closed"
    assert isinstance(second, TaskFailed) and second.transient and second.breaker == "open"
    assert len(service.requests) == 2


def test_an_open_breaker_refuses_without_a_request() -> None:
    clock = Clock()
    reg = registry(clock)
    breaker = reg.breaker("user-service")
    assert breaker is not None
    breaker.record(False)
    breaker.record(False)
    clock.now += 0.8
    service = Service(httpx.Response(201, json={"id": "usr_1"}))
    result = run(make_task(call()), service, reg)
    assert isinstance(result, TaskFailed)
    assert service.requests == []
    assert result.transient and result.status_code is None and result.breaker == "open"
    assert result.error == "circuit open for user-service: 2 failures within 30s; next probe in 4.2s"


def test_a_successful_probe_closes_and_the_call_succeeds() -> None:
    clock = Clock()
    reg = registry(clock)
    down = Service(httpx.ConnectError("refused"))
    assert [run(make_task(call()), down, reg).breaker for _ in range(3)] == ["closed", "open", "open"]
    assert len(down.requests) == 2
    clock.now += 5
    up = Service(httpx.Response(201, json={"id": "usr_1"}))
    result = run(make_task(call()), up, reg)
    assert isinstance(result, TaskSucceeded) and result.output == {"id": "usr_1"}
    assert reg.breaker_state("user-service") == "closed"


def test_permanent_answers_do_not_count_against_the_service() -> None:
    reg = registry()
    service = Service(httpx.Response(409, json={"error": "taken"}))
    results = [run(make_task(call()), service, reg) for _ in range(4)]
    assert all(isinstance(r, TaskFailed) and not r.transient and r.breaker == "closed" for r in results)
    assert len(service.requests) == 4


def test_failures_before_the_request_still_report_the_state() -> None:
    reg = registry()
    result = run(make_task(call(payload={"x": "{{ input.a.b.c }}"})), Service(httpx.Response(200)), reg)
    assert isinstance(result, TaskFailed) and not result.transient and result.breaker == "closed"


def test_no_breaker_no_state() -> None:
    reg = registry()
    plain = run(make_task(call("plain")), Service(httpx.Response(503)), reg)
    unknown = run(make_task(call("nope")), Service(httpx.Response(503)), reg)
    assert isinstance(plain, TaskFailed) and plain.breaker is None
    assert isinstance(unknown, TaskFailed) and unknown.breaker is None


def test_validation_reports_the_breaker_of_the_rules_service() -> None:
    reg = registry()
    step = validation({"field": "email", "rule": "email"},
                      {"field": "email", "rule": "unique_email", "service": "user-service"})
    task = make_task(step, input={"email": "ann@example.com"}, step_type="validation")
    down = Service(httpx.Response(503))
    outcomes = [run(task, down, reg) for _ in range(3)]
    assert all(isinstance(r, TaskFailed) and r.transient for r in outcomes)
    assert [r.breaker for r in outcomes] == ["closed", "open", "open"]
    assert len(down.requests) == 2
    assert outcomes[2].error.startswith("circuit open for user-service: ")

    rejected = run(task, Service(httpx.Response(200, json={"valid": False, "message": "taken"})), registry())
    assert isinstance(rejected, TaskFailed) and not rejected.transient
    assert rejected.error == "email: unique_email failed: taken" and rejected.breaker == "closed"

    local = run(make_task(validation({"field": "email", "rule": "email"}), input={"email": "x"},
                          step_type="validation"), Service(httpx.Response(200)), registry())
    assert isinstance(local, TaskFailed) and local.breaker is None  # no service involved


def test_state_changes_are_logged_once_each() -> None:
    clock = Clock()
    reg = registry(clock)
    reg.observe_breakers(log_breaker_change)
    down = Service(httpx.Response(503))
    with capture_logs() as logs:
        for _ in range(4):
            run(make_task(call()), down, reg)  # 2 failures open it, 2 refused
        clock.now += 5
        run(make_task(call()), down, reg)  # the probe fails: open again
        clock.now += 5
        run(make_task(call()), Service(httpx.Response(201, json={})), reg)
    breaker_logs = [e for e in logs if e["event"].startswith("breaker_")]
    assert [e["event"] for e in breaker_logs] == [
        "breaker_opened", "breaker_half_open", "breaker_reopened", "breaker_half_open", "breaker_closed"]
    opened = breaker_logs[0]
    assert (opened["service"], opened["failures"], opened["window"], opened["open_for"]) == \
        ("user-service", 2, "30s", "5s")
    assert opened["log_level"] == "warning"
    assert {e["service"] for e in breaker_logs} == {"user-service"}
