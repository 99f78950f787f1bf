"""Prometheus metrics against the real stack: a decider and an executor (threads of this
process, one metrics endpoint) run a workflow whose first call fails once; the scraped text
counts the start, the attempts, the retry, the ending, the dead letter, and shows each
consumer's lag. Then `orchestrator run all --metrics-port P` serves one endpoint per role."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.core.messages import StartWorkflow
from orchestrator.runtime import metrics
from orchestrator.runtime.decider import Decider
from orchestrator.runtime.executor import run_executor
from orchestrator.runtime.kafka import partition_for, producer_config

from .helpers import Running, read_all, register, send, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def definition(name: str) -> str:
    return f"""
apiVersion: workflow/v1
kind: Workflow
metadata: {{name: {name}, version: "1"}}
spec:
  config:
    timeout: 5s
    retry_policy: {{max_attempts: 3, backoff: fixed, initial_delay: 100ms}}
  steps:
    - name: first
      type: service_call
      config: {{service: notification-service, endpoint: /api/notifications/send, method: POST,
                payload: {{user_id: u-1, type: first}}}}
    - name: second
      type: service_call
      config: {{service: notification-service, endpoint: /api/emails/send, method: POST,
                payload: {{to: someone@example.com, template: second}}}}
"""


def free_ports(count: int) -> int:
    """A base port with `count` consecutive ports free (checked, not reserved)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no free consecutive ports")


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(url, timeout=5, trust_env=False).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class ExecutorRole:
    """`Running` calls `run(stop)`; the executor's entry point takes the event as well."""

    def __init__(self, settings) -> None:
        self.settings = settings

    def run(self, stop: threading.Event) -> None:
        run_executor(self.settings, stop)


@pytest.fixture
def endpoint() -> str:
    """This process's metrics endpoint (one per test process; later ones add a server)."""
    return metrics.serve("test", free_ports(1))


def test_a_run_with_a_retry_is_counted_and_every_consumer_reports_its_lag(
        kafka_settings, demo_services, tmp_path, endpoint):
    registry = tmp_path / "services.yaml"
    registry.write_text("services:\n" + "".join(f"  {n}:\n    base_url: {u}\n    timeout: 5s\n"
                                                for n, u in demo_services.service_urls().items()))
    s = dataclasses.replace(kafka_settings, services_file=registry, executor_concurrency=4)
    workflow = f"metrics-{uuid.uuid4().hex[:8]}"
    register(s, definition(workflow))
    httpx.post(f"{demo_services.url}/_admin/faults", trust_env=False, json={
        "path_prefix": "/notification-service/api/notifications/send", "method": "POST", "status": 503,
        "times": 1}).raise_for_status()
    roles = [Running("decider", Decider(s)), Running("executor", ExecutorRole(s))]
    try:
        eid = f"metrics-{uuid.uuid4().hex[:8]}"
        send(s, s.topics.commands, StartWorkflow(eid, workflow, None, {}, "test"))
        roles[0].wait(lambda: any(type(r.event).__name__ == "WorkflowCompleted"
                                  for r in read_all(s, s.topics.events, eid)), 30, "the execution did not complete")
        # A command no decider can read: a dead letter.
        producer = Producer(producer_config(s))
        producer.produce(s.topics.commands, b"\x00\xffnot avro", eid.encode())
        assert producer.flush(10) == 0

        dlq = {"role": "decider", "topic": s.topics.commands, "reason": "undecodable"}
        samples = wait_for(lambda: (m := scrape(endpoint)) and value(m, "orchestrator_dlq_messages_total", **dlq)
                           and value(m, "orchestrator_executions_completed_total", workflow=workflow) and m,
                           20, message="the completion and the dead letter were not counted")
        w = {"workflow": workflow}
        assert value(samples, "orchestrator_executions_started_total", **w) == 1
        assert value(samples, "orchestrator_executions_completed_total", **w) == 1
        assert value(samples, "orchestrator_executions_failed_total", **w) is None
        assert value(samples, "orchestrator_execution_duration_seconds_count", **w, status="completed") == 1
        assert value(samples, "orchestrator_step_attempts_total", **w, step="first") == 2
        assert value(samples, "orchestrator_step_attempts_total", **w, step="second") == 1
        assert value(samples, "orchestrator_step_retries_total", **w, step="first") == 1
        assert value(samples, "orchestrator_step_retries_total", **w, step="second") is None
        assert value(samples, "orchestrator_step_attempt_failures_total", **w, step="first", kind="transient") == 1
        assert value(samples, "orchestrator_steps_finished_total", **w, step="first", status="completed") == 1
        assert value(samples, "orchestrator_step_duration_seconds_count", **w, step="first", status="completed") == 1
        first_took = value(samples, "orchestrator_step_duration_seconds_sum", **w, step="first", status="completed")
        assert first_took >= 0.1  # the 100ms backoff is part of the step
        assert value(samples, "orchestrator_timers_scheduled_total", **w, kind="retry_backoff") == 1
        assert value(samples, "orchestrator_timers_fired_total", **w, kind="retry_backoff") == 1
        calls = {o: value(samples, "orchestrator_executor_call_duration_seconds_count", **w, step="first", outcome=o)
                 for o in ("succeeded", "failed_transient")}
        assert calls == {"succeeded": 1, "failed_transient": 1}
        assert value(samples, "orchestrator_dlq_messages_total", **dlq) == 1
        assert value(samples, "orchestrator_executor_tasks_in_flight") == 0
        p = str(partition_for(eid, s.partitions))
        assert value(samples, "orchestrator_timers_pending", partition=p, kind="attempt_deadline") == 0
        assert value(samples, "orchestrator_timers_pending", partition=p, kind="retry_backoff") == 0

        # Lag: librdkafka's statistics come every 5 s; both consumers catch up to the end.
        def caught_up() -> dict | None:
            m = scrape(endpoint)
            series = {(role, topic, int(part)): v for (name, labels), v in m.items()
                      if name == "orchestrator_consumer_lag_messages"
                      for role, topic, part in [(dict(labels)["role"], dict(labels)["topic"],
                                                 dict(labels)["partition"])]
                      if topic.startswith(s.topics.prefix)}
            wanted = {(role, topic, n) for role, topic in (("decider", s.topics.commands),
                                                          ("decider", s.topics.results),
                                                          ("executor", s.topics.tasks))
                      for n in range(s.partitions)}
            return series if wanted <= series.keys() and not any(series.values()) else None
        lags = wait_for(caught_up, 30, message="no lag series of every assigned partition at 0")
        assert len(lags) == 3 * s.partitions
    finally:
        for role in roles:
            role.halt.set()
        for role in roles:
            role.stop()


def test_run_all_serves_each_roles_metrics_on_its_own_port(cli_pg_env):
    env = dict(os.environ, PYTHONPATH=str(ROOT), ORCH_LOG_FORMAT="json")
    base = free_ports(5)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "all", "--metrics-port", str(base)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        urls: dict[str, str] = {}
        while len(urls) < 5:
            line = proc.stderr.readline()
            assert line, "run all ended early:\n" + "".join(lines)
            lines.append(line)
            if '"metrics_serving"' in line:
                record = json.loads(line)
                urls[record["role"]] = record["url"]
        assert urls == {role: f"http://127.0.0.1:{base + i}/metrics"
                        for i, role in enumerate(("decider", "executor", "projector", "correlator", "triggers"))}
        for role, own in (("decider", "orchestrator_decider_transaction_seconds_count"),
                          ("executor", "orchestrator_executor_tasks_in_flight"),
                          ("projector", "orchestrator_projector_events_total"),
                          ("correlator", "orchestrator_correlator_waits_open"),
                          ("triggers", "orchestrator_scheduler_fenced")):
            # the role registers its own metrics once built, a moment after its endpoint is up
            wait_for(lambda: f"\n{own}" in httpx.get(urls[role], timeout=5, trust_env=False).text, 30,
                     message=f"no {own} from the {role}")
        # Each role's consumer reports its lag under its own role label (statistics come every 5 s).
        threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()  # keep the pipe drained
        for role in urls:
            wait_for(lambda: f'role="{role}"' in _lag_lines(urls[role]), 30, message=f"no lag series from the {role}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _lag_lines(url: str) -> str:
    text = httpx.get(url, timeout=5, trust_env=False).text
    return "\n".join(line for line in text.splitlines() if line.startswith("orchestrator_consumer_lag_messages{"))
