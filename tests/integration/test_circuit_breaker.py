"""End to end: a service's circuit breaker in the real engine (decider, executor and
projector in threads, the real Kafka and PostgreSQL, the demo services).

The `engine` fixture registers `flaky-service` (the demo's user-service) with a small
breaker: 3 transient failures within 30s open it for 2s, then one half-open probe.
While the service answers 503, the executor stops calling it after the third failure:
the decider's retries are refused locally ("circuit open", breaker="open", no HTTP
request) until a probe is let through; once the service is healthy again a probe
succeeds, the breaker closes and the step completes.
"""

from __future__ import annotations

import json
import uuid

import pytest

pytestmark = pytest.mark.integration

PATH = "/user-service/api/users"
MAX_ATTEMPTS = 20  # 300ms apart: enough attempts to outlast several 2s open periods

BREAKER_WF = f"""
apiVersion: workflow/v1
kind: Workflow
metadata: {{name: e2e-breaker, version: "1"}}
spec:
  config:
    timeout: 5s
    retry_policy: {{max_attempts: {MAX_ATTEMPTS}, backoff: fixed, initial_delay: 300ms, jitter: 0}}
  input:
    schema: {{type: object, properties: {{tag: {{type: string}}}}, required: [tag]}}
  steps:
    - name: create
      type: service_call
      config:
        service: flaky-service
        endpoint: /api/users
        method: POST
        payload: {{username: "u_{{{{ input.tag }}}}", email: "{{{{ input.tag }}}}@example.com"}}
"""


@pytest.fixture(scope="module")
def flaky(engine):
    engine.register(BREAKER_WF)
    yield engine
    engine.clear_faults()


def of(events: list, kind: str) -> list:
    return [r.event for r in events if type(r.event).__name__ == kind]


def refused(failure) -> bool:
    return "circuit open" in failure.error


def test_an_open_breaker_stops_calls_until_a_probe_succeeds(flaky):
    engine = flaky
    engine.fault(path_prefix=PATH, method="POST", status=503, times=1000)
    tag = uuid.uuid4().hex[:10]
    eid = engine.start("e2e-breaker", {"tag": tag})
    key = f"{eid}/create"

    # Poll until the executor has refused an attempt (the breaker is open) ...
    engine.wait(lambda: any(refused(f) for f in of(engine.events(eid), "StepAttemptFailed")), timeout=30,
                message="no attempt was refused by the circuit breaker")
    # ... then let the service recover: a later half-open probe succeeds.
    engine.clear_faults()
    events = engine.wait_ended(eid, timeout=60)
    kinds = [type(r.event).__name__ for r in events]
    assert kinds[-1] == "WorkflowCompleted", kinds

    failures = of(events, "StepAttemptFailed")
    [completed] = of(events, "StepCompleted")
    refusals = [f for f in failures if refused(f)]
    answered = [f for f in failures if not refused(f)]  # the service answered 503

    # The first three attempts reached the service and failed; the third opened the breaker.
    assert [(f.attempt, f.status_code, f.transient) for f in failures[:3]] == [
        (1, 503, True), (2, 503, True), (3, 503, True)]
    assert all(f.status_code == 503 for f in answered)
    assert refusals and min(f.attempt for f in refusals) == 4

    # Refused attempts: transient, no HTTP status, "circuit open for flaky-service: ...".
    for f in refusals:
        assert f.transient and f.will_retry and f.status_code is None, f
        assert f.error.startswith("circuit open for flaky-service: "), f.error
        assert " failures within 30s; next probe in " in f.error or "probe failed" in f.error, f.error

    # No request left while the breaker was open: the service saw exactly the attempts
    # that were not refused (the 503s and the probe that succeeded), fewer than the attempts.
    requests = engine.requests(idempotency_key=key, path_prefix=PATH)
    sent = sorted(int(r["headers"]["x-workflow-attempt"]) for r in requests)
    assert sent == sorted([f.attempt for f in answered] + [completed.attempt]), (sent, failures)
    assert len(requests) < completed.attempt
    assert completed.attempt > max(f.attempt for f in refusals)  # the probe came after the refusals
    assert completed.output["username"] == f"u_{tag}"

    # The executor's logs: each state change once per change, in order.
    lines = [json.loads(line) for line in engine.logs.getvalue().splitlines() if line.startswith("{")]
    changes = [line for line in lines if line.get("event", "").startswith("breaker_")
               and line.get("service") == "flaky-service"]
    names = [line["event"] for line in changes]
    assert names[0] == "breaker_opened" and names[-1] == "breaker_closed", names
    assert names[-2] == "breaker_half_open", names
    opened = changes[0]
    assert (opened["failures"], opened["window"], opened["open_for"]) == (3, "30s", "2s"), opened
    failed_probes = [f for f in answered if f.attempt > 3]
    assert names.count("breaker_reopened") == len(failed_probes), (names, failed_probes)
    refusal_logs = [line for line in lines if line.get("event") == "step_attempt_failed"
                    and line.get("execution_id") == eid and "circuit open" in (line.get("error") or "")]
    assert refusal_logs and {line["breaker"] for line in refusal_logs} == {"open"}

    # The breaker's state in the recorded events (copied by the decider from TaskFailed.breaker):
    # closed for the first two failures, open from the one that crossed the threshold on.
    assert [f.breaker for f in failures[:3]] == ["closed", "closed", "open"], failures[:3]
    assert {f.breaker for f in refusals} == {"open"}, refusals
    assert {f.breaker for f in failed_probes} <= {"open"}, failed_probes


def test_a_closed_breaker_lets_calls_through(flaky):
    engine = flaky
    tag = uuid.uuid4().hex[:10]
    eid = engine.start("e2e-breaker", {"tag": tag})
    events = engine.wait_ended(eid)
    assert type(events[-1].event).__name__ == "WorkflowCompleted"
    assert of(events, "StepAttemptFailed") == []
    assert len(engine.requests(idempotency_key=f"{eid}/create", path_prefix=PATH)) == 1
