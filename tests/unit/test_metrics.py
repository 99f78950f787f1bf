"""Metrics: what recorded events count for (pure), the decider's commit/abort rule, timers
pending by partition, consumer lag from librdkafka statistics, ports and the HTTP endpoint."""

from __future__ import annotations

import json
import socket
from types import MappingProxyType

import httpx
import pytest
from prometheus_client import REGISTRY

from orchestrator.cli.run import ROLES, metrics_port
from orchestrator.config import load_settings
from orchestrator.core import events as ev
from orchestrator.core.events import RecordedEvent
from orchestrator.core.state import ExecutionState, StepState
from orchestrator.runtime import metrics
from orchestrator.runtime.metrics_events import observations, timer_changes, timer_kind

T0 = 1_700_000_000_000


def rec(event, at=T0, seq=1, eid="e1"):
    return RecordedEvent(execution_id=eid, sequence=seq, recorded_at=at, cause="test", event=event)


def running(**steps: StepState) -> ExecutionState:
    return ExecutionState(execution_id="e1", status="running", workflow_name="wf", workflow_version="1",
                          started_at=T0, steps=MappingProxyType(steps))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- events -> observations (pure) ------------------------------------------------------------


def test_a_start_counts_under_the_events_workflow_name():
    new = ExecutionState(execution_id="e1")
    out = observations(new, running(), [rec(ev.WorkflowStarted("onboarding", "1", {})),
                                        rec(ev.StepScheduled("a", 1, T0 + 30_000), seq=2)])
    assert out == [("executions_started", ("onboarding",), 1), ("step_attempts", ("onboarding", "a"), 1)]


def test_a_rejected_start_counts_as_rejected():
    new = ExecutionState(execution_id="e1")
    out = observations(new, new, [rec(ev.WorkflowStartRejected("nope", None, {}, ("unknown workflow",)))])
    assert out == [("executions_rejected", ("nope",), 1)]


def test_a_retried_attempt_counts_a_failure_and_a_retry_and_the_step_duration_spans_the_retries():
    before = running(a=StepState(status="running", attempt=2, started_at=T0 + 1000))
    failed = observations(before, before, [
        rec(ev.StepAttemptFailed("a", 2, "HTTP 503", transient=True, will_retry=True), at=T0 + 2000),
        rec(ev.TimerScheduled("retry:a:3", T0 + 7000), at=T0 + 2000)])
    assert failed == [("step_attempt_failures", ("wf", "a", "transient"), 1), ("step_retries", ("wf", "a"), 1),
                      ("timers_scheduled", ("wf", "retry_backoff"), 1)]
    done = observations(before, before, [rec(ev.StepCompleted("a", 3, {"ok": True}), at=T0 + 9500)])
    assert done == [("steps_finished", ("wf", "a", "completed"), 1),
                    ("step_duration_seconds", ("wf", "a", "completed"), 8.5)]


def test_a_permanent_failure_is_not_a_retry():
    before = running(a=StepState(status="running", attempt=1, started_at=T0))
    out = observations(before, before, [
        rec(ev.StepAttemptFailed("a", 1, "HTTP 400", transient=False, will_retry=False), at=T0 + 10),
        rec(ev.StepFailed("a", 1, "HTTP 400", "terminate"), at=T0 + 10)])
    assert out == [("step_attempt_failures", ("wf", "a", "permanent"), 1),
                   ("steps_finished", ("wf", "a", "failed"), 1), ("step_duration_seconds", ("wf", "a", "failed"), 0.01)]


def test_steps_of_iterations_count_under_their_name_in_the_definition():
    before = running(**{"pay_all[3].charge": StepState(status="running", attempt=1, started_at=T0)})
    out = observations(before, before, [rec(ev.StepScheduled("pay_all[4].charge", 1, T0 + 1), at=T0 + 5),
                                        rec(ev.StepCompleted("pay_all[3].charge", 1, None), at=T0 + 5)])
    assert [labels for _, labels, _ in out] == [("wf", "charge"), ("wf", "charge", "completed"),
                                                ("wf", "charge", "completed")]


def test_a_step_started_and_ended_in_one_decision_is_timed_from_that_decision():
    """A wait whose signal was already there: StepWaiting, WaitSatisfied and StepCompleted at once."""
    before = running()
    out = observations(before, before, [rec(ev.StepWaiting("w", None, "go", None), at=T0 + 100),
                                        rec(ev.WaitSatisfied("w", "signal", "go", None, {}), at=T0 + 100),
                                        rec(ev.StepCompleted("w", 1, {}), at=T0 + 100)])
    assert out == [("waits_opened", ("wf", "signal"), 1), ("waits_satisfied", ("wf", "signal"), 1),
                   ("steps_finished", ("wf", "w", "completed"), 1),
                   ("step_duration_seconds", ("wf", "w", "completed"), 0.0)]


def test_a_step_that_never_started_has_no_duration():
    before = running()
    out = observations(before, before, [rec(ev.StepCancelled("a", "not needed")),
                                        rec(ev.StepSkipped("b", "condition"))])
    assert out == [("steps_finished", ("wf", "a", "cancelled"), 1), ("steps_finished", ("wf", "b", "skipped"), 1)]


@pytest.mark.parametrize("event, key", [
    (ev.WorkflowCompleted({}), "executions_completed"),
    (ev.WorkflowFailed("boom", "a"), "executions_failed"),
    (ev.WorkflowCancelled("asked"), "executions_cancelled"),
])
def test_an_ending_counts_by_status_with_the_executions_duration(event, key):
    before = running()
    out = observations(before, before, [rec(event, at=T0 + 61_000)])
    status = key.removeprefix("executions_")
    assert out == [(key, ("wf",), 1), ("execution_duration_seconds", ("wf", status), 61.0)]


def test_compensation_counts_its_trigger_and_outcome():
    before = running()
    out = observations(before, before, [rec(ev.CompensationStarted("failed", "boom", "a")),
                                        rec(ev.CompensationFinished("completed"))])
    assert out == [("compensations_started", ("wf", "failed"), 1), ("executions_compensated", ("wf", "completed"), 1)]


def test_operator_actions_and_rejected_commands():
    before = running()
    recorded = [rec(ev.CommandRejected("PauseExecution", "already paused", "api:alice")),
                rec(ev.StepSkipped("b", "not needed", output=None, requested_by="api:alice"))]
    expected = [("commands_rejected", ("wf", "PauseExecution"), 1), ("steps_finished", ("wf", "b", "skipped"), 1),
                ("operator_actions", ("wf", "skip"), 1)]
    for name, action, args in (("ExecutionPaused", "pause", ("ops",)), ("ExecutionResumed", "resume", ("ops",)),
                               ("ExecutionRetried", "retry", (("a",),))):
        event_type = getattr(ev, name, None)
        if event_type is not None:  # the operator events of events schema v4
            recorded.append(rec(event_type(*args)))
            expected.append(("operator_actions", ("wf", action), 1))
    assert observations(before, before, recorded) == expected


def test_timer_changes_by_kind():
    assert timer_kind("timeout:a:1") == "attempt_deadline"
    assert timer_kind("retry:x[2].a:3") == "retry_backoff"
    assert timer_kind("wait:w") == "wait_timeout"
    assert timer_kind("execution-timeout") == "execution_timeout"
    assert timer_kind("something-new") == "other"
    before = {"timeout:a:1": 5, "execution-timeout": 9}
    after = {"retry:a:2": 7, "execution-timeout": 9}
    assert timer_changes(before, after) == {"attempt_deadline": -1, "retry_backoff": 1}
    assert timer_changes(after, after) == {}


# -- the decider's rule: counted once committed --------------------------------------------------


def test_the_decider_counts_a_batch_only_when_it_commits():
    workflow = "unit-commit-rule"
    new = ExecutionState(execution_id="e1")
    after = ExecutionState(execution_id="e1", status="running", workflow_name=workflow, started_at=T0,
                           timers=MappingProxyType({"timeout:a:1": T0 + 1000}))
    recorded = [rec(ev.WorkflowStarted(workflow, "1", {})), rec(ev.StepScheduled("a", 1, T0 + 1000), seq=2)]
    m = metrics.DeciderMetrics()
    m.decided(new, after, recorded, 7)
    m.aborted()
    assert sample("orchestrator_executions_started_total", workflow=workflow) == 0
    assert sample("orchestrator_timers_pending", partition="7", kind="attempt_deadline") == 0
    m.decided(new, after, recorded, 7)
    m.committed(inputs=1, seconds=0.002)
    assert sample("orchestrator_executions_started_total", workflow=workflow) == 1
    assert sample("orchestrator_step_attempts_total", workflow=workflow, step="a") == 1
    assert sample("orchestrator_timers_pending", partition="7", kind="attempt_deadline") == 1
    m.decided(after, new, [], 7)  # the timer went away (state without timers)
    m.committed(inputs=1, seconds=0.001)
    assert sample("orchestrator_timers_pending", partition="7", kind="attempt_deadline") == 0


def test_timers_pending_are_set_on_restore_and_dropped_on_revoke():
    m = metrics.DeciderMetrics()
    states = [ExecutionState(execution_id=f"e{i}", status="running",
                             timers=MappingProxyType({"wait:w": 1, f"retry:a:{i}": 2})) for i in range(3)]
    m.restored(9, states, seconds=0.01)
    assert sample("orchestrator_timers_pending", partition="9", kind="wait_timeout") == 3
    assert sample("orchestrator_timers_pending", partition="9", kind="retry_backoff") == 3
    none_armed = {"partition": "9", "kind": "execution_timeout"}
    assert REGISTRY.get_sample_value("orchestrator_timers_pending", none_armed) == 0  # a series, at 0
    m.revoked([9])
    assert REGISTRY.get_sample_value("orchestrator_timers_pending", none_armed) is None


# -- consumer lag from librdkafka statistics -------------------------------------------------------

STATS = {"name": "c#1", "type": "consumer", "topics": {"wf.commands": {"partitions": {
    "0": {"desired": True, "hi_offset": 21, "ls_offset": 21, "app_offset": 14, "next_offset": 14},
    "1": {"desired": True, "hi_offset": 5, "ls_offset": 5, "app_offset": -1001, "next_offset": 5},  # idle
    "2": {"desired": True, "hi_offset": 30, "ls_offset": 25, "app_offset": 20, "next_offset": 24},  # open transaction
    "3": {"desired": False, "hi_offset": 9, "ls_offset": 9, "app_offset": -1001, "next_offset": 0},  # not ours
    "4": {"desired": True, "hi_offset": -1001, "ls_offset": -1001, "app_offset": -1001, "next_offset": -1001},
    "-1": {"desired": False, "hi_offset": -1001, "ls_offset": -1001, "app_offset": -1001, "next_offset": 0},
}}}}


def test_lag_is_the_last_stable_offset_minus_the_applications_position():
    assert metrics.partition_lags(STATS) == {("wf.commands", "0"): 7, ("wf.commands", "1"): 0,
                                             ("wf.commands", "2"): 5}


def test_lag_series_follow_the_assignment():
    lag = metrics.ConsumerLag("unit-role")
    lag.on_stats(json.dumps(STATS))
    assert sample("orchestrator_consumer_lag_messages", role="unit-role", topic="wf.commands", partition="0") == 7
    revoked = json.loads(json.dumps(STATS))
    revoked["topics"]["wf.commands"]["partitions"]["0"]["desired"] = False
    lag.on_stats(json.dumps(revoked))
    labels = {"role": "unit-role", "topic": "wf.commands"}
    assert REGISTRY.get_sample_value("orchestrator_consumer_lag_messages", {**labels, "partition": "0"}) is None
    assert REGISTRY.get_sample_value("orchestrator_consumer_lag_messages", {**labels, "partition": "2"}) == 5


def test_unreadable_statistics_never_reach_the_roles_poll():
    metrics.ConsumerLag("unit-role-2").on_stats("{not json")  # logged, not raised


def test_lag_statistics_are_requested_only_while_metrics_are_served(monkeypatch):
    monkeypatch.setattr(metrics, "_serving", None)
    assert metrics.consumer_lag_config("decider") == {}
    monkeypatch.setattr(metrics, "_serving", "http://127.0.0.1:1/metrics")
    conf = metrics.consumer_lag_config("decider")
    assert conf["statistics.interval.ms"] == metrics.LAG_INTERVAL_MS and callable(conf["stats_cb"])


# -- breakers, ports, the endpoint -------------------------------------------------------------


def test_breaker_state_is_a_number_per_service():
    from orchestrator.runtime.services import BreakerTransition

    metrics.breaker_changed(BreakerTransition("unit-svc", "closed", "open", 3, 30_000, 5_000))
    assert sample("orchestrator_circuit_breaker_state", service="unit-svc") == 2
    metrics.breaker_changed(BreakerTransition("unit-svc", "open", "half_open", 0, 30_000, 5_000))
    assert sample("orchestrator_circuit_breaker_state", service="unit-svc") == 1
    assert sample("orchestrator_circuit_breaker_transitions_total", service="unit-svc", state="open") == 1


def test_run_all_gives_each_role_its_own_port():
    assert [metrics_port(9400, role) for role in ROLES] == [9400, 9401, 9402, 9403, 9404]
    assert metrics_port(0, "executor") == 0


def test_metrics_port_and_host_from_the_environment():
    settings = load_settings({"ORCH_METRICS_PORT": "9400", "ORCH_METRICS_HOST": "0.0.0.0"})
    assert (settings.metrics_port, settings.metrics_host) == (9400, "0.0.0.0")
    assert (load_settings({}).metrics_port, load_settings({}).metrics_host) == (0, "127.0.0.1")
    with pytest.raises(ValueError, match="ORCH_METRICS_PORT"):
        load_settings({"ORCH_METRICS_PORT": "ninety"})


def test_port_zero_serves_nothing():
    assert metrics.serve("decider", 0) is None


def test_the_endpoint_serves_the_text_format(monkeypatch):
    monkeypatch.setattr(metrics, "_serving", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = metrics.serve("unit", port)
    assert url == f"http://127.0.0.1:{port}/metrics"
    text = httpx.get(url, timeout=5, trust_env=False).text
    assert "# TYPE orchestrator_executions_started_total counter" in text
    assert "# TYPE orchestrator_consumer_lag_messages gauge" in text


def test_a_metrics_port_in_use_stops_the_role_with_a_message_naming_it():
    from click.testing import CliRunner

    from orchestrator.cli import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["run", "decider", "--metrics-port", str(port)],
                                    env={"ORCH_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert result.exit_code == 1
    assert f"cannot serve the decider's metrics on 127.0.0.1:{port}" in result.output
    assert "--metrics-port" in result.output
