"""Crash recovery: the roles as real OS processes (`orchestrator run ROLE`), SIGKILLed
in the middle of a batch of executions and restarted.

Each test gets its own topic prefix (2 partitions), PostgreSQL schema, service registry
(the demo services in a thread of this process, every call slowed down so that steps are
in flight at the kill) and secret key. The roles are subprocesses of the test; their
output goes to `tmp_path/<role>-<n>.log` and is shown when a test fails.

After the crash and restart every test checks the same invariants:
- every execution completes within a bounded time;
- `wf.events` holds each (execution_id, sequence) once, sequences gap-free 1..n;
- the services saw each (Idempotency-Key, X-Workflow-Attempt) once, except the calls
  the killed executor had started but whose task offset it had not committed yet (in
  progress, or finished within the last commit interval), which are repeated exactly
  once, one call before the kill and one after the restart; a killed decider repeats
  none: its unfinished transaction (events, tasks, input offsets) is aborted;
- the projection equals a rebuild from offset 0 (`orchestrator projections rebuild`
  into a fresh schema), row for row and offset for offset, one row per event, step and
  execution.
The decider test also has retry timers pending across the crash (the restarted decider
re-arms them from the restored state); the projector test kills the projector while it is
projecting the batch.

Recovery takes about 10 s: a restarted role waits for the dead member's session to
expire (session.timeout.ms) before its partitions are assigned again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from psycopg import sql

from orchestrator.config import Settings
from orchestrator.core.messages import StartWorkflow
from orchestrator.runtime.kafka import consumer_config, producer_config, read_partition_to_end

from .helpers import codec, register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXECUTIONS = 40
CALL_DELAY_MS = 250  # every service call takes this long: steps are in flight at the kill
RETRY_DELAY = "2s"  # a failed `announce` is retried after this (a durable timer)
STEPS = ("announce", "profile", "email", "notify", "finish")
WORKFLOW = "crash-five"

# announce (creates a user) -> (profile | email | notify, in parallel) -> finish
DEFINITION = f"""
apiVersion: workflow/v1
kind: Workflow
metadata: {{name: {WORKFLOW}, version: "1"}}
spec:
  config:
    timeout: 60s
    retry_policy: {{max_attempts: 3, backoff: fixed, initial_delay: 100ms}}
  input:
    schema: {{type: object, properties: {{n: {{type: integer}}}}, required: [n]}}
  steps:
    - name: announce
      type: service_call
      retry_policy: {{max_attempts: 3, backoff: fixed, initial_delay: {RETRY_DELAY}}}
      config: {{service: user-service, endpoint: /api/users, method: POST,
               payload: {{username: "{{{{ execution.id }}}}", email: "{{{{ execution.id }}}}@example.com"}}}}
    - name: profile
      type: service_call
      parallel: true
      config: {{service: profile-service, endpoint: /api/profiles, method: POST,
               payload: {{user_id: "u-{{{{ input.n }}}}"}}}}
    - name: email
      type: service_call
      parallel: true
      config: {{service: notification-service, endpoint: /api/emails/send, method: POST,
               payload: {{n: "{{{{ input.n }}}}", step: email}}}}
    - name: notify
      type: service_call
      parallel: true
      config: {{service: notification-service, endpoint: /api/notifications/send, method: POST,
               payload: {{n: "{{{{ input.n }}}}", step: notify}}}}
    - name: finish
      type: service_call
      depends_on: [profile, email, notify]
      config: {{service: notification-service, endpoint: /api/notifications/send, method: POST,
               payload: {{user: "{{{{ steps.announce.output.id }}}}", profile: "{{{{ steps.profile.output.id }}}}"}}}}
"""

ROLE_NAMES = ("decider", "executor", "projector")


def _orchestrator_command() -> list[str]:
    script = Path(sys.executable).with_name("orchestrator")
    return [str(script)] if script.exists() else [sys.executable, "-m", "orchestrator"]


# -- the stack: roles as subprocesses ------------------------------------------------------


class Stack:
    """The three roles as subprocesses on one Settings, plus the demo services."""

    def __init__(self, settings: Settings, schema: str, demo: Any, tmp_path: Path) -> None:
        self.settings = settings
        self.schema = schema
        self.demo = demo
        self.logdir = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}
        self.all_procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.env = self._env(tmp_path)
        self.execution_ids: list[str] = []
        self.probes: list[Consumer] = []

    def _env(self, tmp_path: Path) -> dict[str, str]:
        registry = tmp_path / "services.yaml"
        registry.write_text("services:\n" + "".join(
            f"  {name}:\n    base_url: {url}\n    timeout: 20s\n    connect_timeout: 2s\n"
            for name, url in self.demo.service_urls().items()))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        s = self.settings
        env.update({
            "ORCH_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "ORCH_DATABASE_URL": s.database_url,
            "ORCH_DATABASE_SCHEMA": self.schema,
            "ORCH_TOPIC_PREFIX": s.topics.prefix,
            "ORCH_PARTITIONS": str(s.partitions),
            "ORCH_SERVICES": str(registry),
            "ORCH_SECRET_KEY": s.secret_key or "",
            "ORCH_INSTANCE": s.instance,
            "ORCH_EXECUTOR_CONCURRENCY": "64",
            "ORCH_LOG_FORMAT": "json",
            "ORCH_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    # -- processes ------------------------------------------------------------------

    def start(self, role: str) -> float:
        """Start `orchestrator run ROLE`; the wall-clock time it was started."""
        assert role not in self.procs or self.procs[role].poll() is not None, f"{role} is running"
        n = sum(1 for r, _, _ in self.all_procs if r == role) + 1
        log = self.logdir / f"{role}-{n}.log"
        started = time.time()
        with open(log, "wb") as out:
            proc = subprocess.Popen([*_orchestrator_command(), "run", role], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[role] = proc
        self.all_procs.append((role, proc, log))
        return started

    def kill(self, *roles: str) -> tuple[float, float]:
        """SIGKILL the roles' processes; (time just before the kill, time all were reaped)."""
        procs = [self.procs[role] for role in roles]
        for proc in procs:
            assert proc.poll() is None, f"pid {proc.pid} died before the test killed it"
        before = time.time()
        for proc in procs:
            os.kill(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.wait(10)
            assert proc.returncode == -signal.SIGKILL
        return before, time.time()

    def open_probes(self) -> None:
        """Two readers of `wf.events` end offsets, one read_committed, one not (see below)."""
        group = f"{self.settings.topics.prefix}probe"
        self.probes = [Consumer(consumer_config(self.settings, group, **{"isolation.level": level}))
                       for level in ("read_committed", "read_uncommitted")]
        for probe in self.probes:  # connect now: the probe must be quick when it matters
            probe.get_watermark_offsets(TopicPartition(self.settings.topics.events, 0), timeout=10, cached=False)

    def wait_transaction_open(self, timeout: float = 5.0) -> bool:
        """Return as soon as `wf.events` has an open transaction (a read_committed reader's
        end, the last stable offset, is behind the log end), i.e. the decider is in the middle
        of a batch; False after `timeout`."""
        committed, raw = self.probes
        topic = self.settings.topics.events
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in range(self.settings.partitions):
                tp = TopicPartition(topic, p)
                stable = committed.get_watermark_offsets(tp, timeout=5, cached=False)[1]
                if raw.get_watermark_offsets(tp, timeout=5, cached=False)[1] > stable:
                    return True
        return False

    def check_alive(self) -> None:
        for role, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{role} (pid {proc.pid}) exited with {proc.returncode}\n{self.log_tail(role)}")

    def log_tail(self, role: str, lines: int = 40) -> str:
        logs = [log for r, _, log in self.all_procs if r == role]
        if not logs:
            return ""
        text = logs[-1].read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def assert_replay_consistent(self, timeout: float = 30.0) -> None:
        """`orchestrator replay --all`: every execution's history, folded by the core, agrees
        with the projection (once the projector has read everything)."""
        deadline = time.monotonic() + timeout
        while True:
            run = subprocess.run([*_orchestrator_command(), "replay", "--all", "--json"], env=self.env,
                                 capture_output=True, text=True, timeout=120)
            assert run.returncode in (0, 1), f"replay --all: exit {run.returncode}\n{run.stdout}\n{run.stderr}"
            doc = json.loads(run.stdout)
            if doc["unprojected_events"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert run.returncode == 0 and doc["inconsistent"] == [], json.dumps(doc["inconsistent"], indent=2)

    def shutdown(self) -> None:
        """Stop every child still running: SIGTERM (a graceful stop), then SIGKILL."""
        for probe in self.probes:
            probe.close()
        alive = [proc for _, proc, _ in self.all_procs if proc.poll() is None]
        for proc in alive:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        for proc in alive:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)

    # -- waiting ----------------------------------------------------------------------

    def wait(self, predicate, timeout: float, message: str, interval: float = 0.25) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"{message} (after {timeout:g}s)")
            time.sleep(interval)

    # -- Kafka ------------------------------------------------------------------------

    def start_executions(self, count: int) -> list[str]:
        producer = Producer(producer_config(self.settings))
        ids = []
        for n in range(count):
            eid = f"crash-{uuid.uuid4().hex[:12]}"
            message = StartWorkflow(eid, WORKFLOW, "1", {"n": n}, "test")
            producer.produce(self.settings.topics.commands, codec.encode(message), eid.encode())
            ids.append(eid)
        assert producer.flush(10) == 0
        self.execution_ids += ids
        return ids

    def read(self, topic: str) -> list[tuple[int, int, Any]]:
        """(partition, offset, decoded value) of every committed message of `topic`."""
        out = []
        for p in range(self.settings.partitions):
            for msg in read_partition_to_end(self.settings, topic, p, idle_timeout=10):
                out.append((p, msg.offset(), codec.decode(msg.value())))
        return out

    def events(self) -> dict[str, list]:
        by_execution: dict[str, list] = defaultdict(list)
        for _, _, recorded in self.read(self.settings.topics.events):
            by_execution[recorded.execution_id].append(recorded)
        return by_execution

    def completed(self) -> set[str]:
        return {eid for eid, events in self.events().items()
                if type(events[-1].event).__name__ == "WorkflowCompleted"}

    def wait_all_completed(self, timeout: float) -> dict[str, list]:
        wanted = set(self.execution_ids)

        def done() -> dict[str, list] | None:
            events = self.events()
            ended = {eid for eid, evs in events.items() if type(evs[-1].event).__name__ in
                     ("WorkflowCompleted", "WorkflowFailed", "WorkflowCancelled")}
            return events if wanted <= ended else None

        try:
            return self.wait(done, timeout, "not every execution ended", interval=0.5)
        except AssertionError:
            events = self.events()
            pending = sorted(wanted - {e for e, evs in events.items()
                                       if type(evs[-1].event).__name__ == "WorkflowCompleted"})
            raise AssertionError(f"{len(pending)} executions did not end in {timeout}s, e.g. "
                                 f"{[(e, [type(r.event).__name__ for r in events.get(e, [])]) for e in pending[:3]]}"
                                 f"\n--- decider\n{self.log_tail('decider')}\n--- executor\n"
                                 f"{self.log_tail('executor')}") from None

    def uncommitted_count(self, topic: str) -> int:
        """How many records of `topic` a read_uncommitted reader sees (aborted ones included)."""
        count = 0
        for p in range(self.settings.partitions):
            consumer = Consumer(consumer_config(self.settings, f"{self.settings.topics.prefix}raw",
                                                **{"isolation.level": "read_uncommitted"}))
            try:
                count += sum(1 for _ in read_partition_to_end(consumer, topic, p, idle_timeout=10))
            finally:
                consumer.close()
        return count

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offset per partition of `topic` (0 when none)."""
        consumer = Consumer(consumer_config(self.settings, group))
        try:
            tps = consumer.committed([TopicPartition(topic, p) for p in range(self.settings.partitions)], timeout=10)
            return {tp.partition: max(tp.offset, 0) for tp in tps}
        finally:
            consumer.close()

    # -- the demo services ---------------------------------------------------------------

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.demo.url}/_admin/{path}", timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def requests(self) -> list[dict]:
        return self.admin("GET", "requests")["requests"]

    # -- PostgreSQL ------------------------------------------------------------------------

    def rows(self, query: str, schema: str | None = None) -> list[tuple]:
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema or self.schema)))
            return list(conn.execute(query))

    def projected_events(self) -> int:
        try:
            return self.rows("SELECT count(*) FROM execution_events")[0][0]
        except psycopg.errors.UndefinedTable:  # the projector has not migrated yet
            return 0

    def snapshot(self, schema: str) -> dict:
        from projections import snapshot

        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            return snapshot(conn, schema, include_offsets=True)


@pytest.fixture
def stack(kafka_settings: Settings, database_url: str, pg_schema: str, demo_services, tmp_path: Path):
    import dataclasses

    settings = dataclasses.replace(kafka_settings, database_url=database_url)
    s = Stack(settings, pg_schema, demo_services, tmp_path)
    try:
        yield s
        if s.procs.get("projector") is not None and s.procs["projector"].poll() is None:
            s.assert_replay_consistent()
    finally:
        s.shutdown()
        for role, proc, log in s.all_procs:  # shown by pytest when the test failed
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            print(f"--- {log.name} (pid {proc.pid}, exit {proc.returncode})\n{tail}")


# -- the scenario ------------------------------------------------------------------------------


def launch(stack: Stack) -> None:
    """Start the roles, register the workflow, slow every call down, and run one execution
    to the end so every role has joined its group before the batch starts."""
    register(stack.settings, DEFINITION)
    stack.admin("POST", "faults", json={"path_prefix": "/", "status": None, "times": -1,
                                        "delay_ms": CALL_DELAY_MS})
    for role in ROLE_NAMES:
        stack.start(role)
    stack.start_executions(1)
    stack.wait(lambda: stack.completed() >= set(stack.execution_ids), 40, "the warm-up execution did not complete")
    stack.open_probes()


def start_batch_and_wait_mid_flight(stack: Stack, failing_announcements: int = 0) -> None:
    """Start the batch and return once a good part of its calls were made (but not all).
    The first `failing_announcements` calls of `announce` fail with a 503 (retried after
    RETRY_DELAY, so their retry timers are pending for a while)."""
    if failing_announcements:
        stack.admin("DELETE", "faults")  # the first matching fault applies: the 503 goes first
        stack.admin("POST", "faults", json={"path_prefix": "/user-service/api/users", "method": "POST",
                                            "status": 503, "times": failing_announcements,
                                            "delay_ms": CALL_DELAY_MS})
        stack.admin("POST", "faults", json={"path_prefix": "/", "status": None, "times": -1,
                                            "delay_ms": CALL_DELAY_MS})
    before = len(stack.requests())
    stack.start_executions(EXECUTIONS)
    stack.wait(lambda: len(stack.requests()) - before >= EXECUTIONS * 1.5, 20, "the batch made no progress",
               interval=0.05)


def check_history(events: dict[str, list], execution_ids: list[str]) -> None:
    """Every execution completed; (execution_id, sequence) unique and gap-free from 1."""
    assert set(events) == set(execution_ids), "events of unknown executions"
    for eid in execution_ids:
        history = events[eid]
        sequences = [r.sequence for r in history]
        duplicates = [s for s, n in Counter(sequences).items() if n > 1]
        assert not duplicates, f"{eid}: sequences recorded twice: {duplicates}"
        assert sequences == list(range(1, len(history) + 1)), f"{eid}: sequences {sequences}"
        kinds = [type(r.event).__name__ for r in history]
        assert kinds[-1] == "WorkflowCompleted", f"{eid}: {kinds}"
        completed = [r.event.step for r in history if type(r.event).__name__ == "StepCompleted"]
        assert sorted(completed) == sorted(STEPS), f"{eid}: steps completed {completed}"


def calls_by_attempt(stack: Stack) -> dict[tuple[str, str], list[float]]:
    """(Idempotency-Key, X-Workflow-Attempt) -> the times the services received the call."""
    calls: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in stack.requests():
        headers = r["headers"]
        key = headers.get("idempotency-key")
        assert key, f"a call without Idempotency-Key: {r['method']} {r['path']}"
        calls[(key, headers.get("x-workflow-attempt", ""))].append(r["at"])
    return {k: sorted(v) for k, v in calls.items()}


def check_calls_match_schedule(calls: dict[tuple[str, str], list[float]], events: dict[str, list]) -> None:
    """Every scheduled attempt was called, and nothing else was."""
    scheduled = {(f"{eid}/{r.event.step}", str(r.event.attempt)) for eid, history in events.items()
                 for r in history if type(r.event).__name__ == "StepScheduled"}
    assert set(calls) == scheduled, (sorted(set(calls) - scheduled)[:5], sorted(scheduled - set(calls))[:5])


def executor_in_flight(stack: Stack, committed: dict[int, int], restarted_at: float,
                       calls: dict[tuple[str, str], list[float]]) -> set[tuple[str, str]]:
    """The attempts the killed executor had started (a call reached the service before the
    new executor was started) but not committed (task offset >= the group's committed
    offset at the kill): exactly what a new executor runs again."""
    in_flight = set()
    for partition, offset, task in stack.read(stack.settings.topics.tasks):
        pair = (task.idempotency_key, str(task.attempt))
        if offset >= committed[partition] and any(at < restarted_at for at in calls.get(pair, ())):
            in_flight.add(pair)
    return in_flight


def check_duplicate_calls(calls: dict[tuple[str, str], list[float]], allowed: set[tuple[str, str]],
                          dead_at: float, restarted_at: float) -> set[tuple[str, str]]:
    """Attempts called more than once are among `allowed`, were called exactly twice, once by
    the killed process (before it was reaped) and once after the restart."""
    duplicated = {pair for pair, times in calls.items() if len(times) > 1}
    assert duplicated <= allowed, f"repeated calls not in flight at the kill: {sorted(duplicated - allowed)[:5]}"
    assert len(duplicated) <= len(allowed)
    for pair in duplicated:
        times = calls[pair]
        assert len(times) == 2, (pair, times)
        assert times[0] <= dead_at + 0.5 and times[1] >= restarted_at, (
            f"{pair}: calls at {times} do not straddle the kill ({dead_at}) and restart ({restarted_at})")
    return duplicated


def wait_projected(stack: Stack, events: dict[str, list], timeout: float = 30) -> None:
    total = sum(len(h) for h in events.values())

    def caught_up() -> bool:
        if stack.projected_events() != total:
            return False
        done = stack.rows("SELECT count(*) FROM workflow_executions WHERE status = 'completed'")[0][0]
        defs = stack.rows("SELECT count(*) FROM workflow_definitions")[0][0]
        return done == len(events) and defs == 1

    stack.wait(caught_up, timeout, f"the projection did not catch up with {total} events")


def check_projection_equals_rebuild(stack: Stack, events: dict[str, list]) -> None:
    """The live projection (no duplicate rows, one per event/step/execution) equals a rebuild
    from offset 0 into a fresh schema by `orchestrator projections rebuild`."""
    wait_projected(stack, events)
    live = stack.snapshot(stack.schema)
    total = sum(len(h) for h in events.values())
    assert len(live["execution_events"]) == total
    assert len({(r["execution_id"], r["sequence"]) for r in live["execution_events"]}) == total
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in live["execution_events"]}) == total
    assert len(live["workflow_executions"]) == len(events)
    steps = live["step_executions"]
    assert len(steps) == len(events) * len(STEPS)
    attempts = {(eid, r.event.step): r.event.attempt for eid, history in events.items()
                for r in history if type(r.event).__name__ == "StepScheduled"}
    assert {(r["execution_id"], r["step_name"]): (r["status"], r["attempts"]) for r in steps} == {
        key: ("completed", n) for key, n in attempts.items()}

    other = f"test_{uuid.uuid4().hex[:12]}"
    try:
        env = {**stack.env, "ORCH_DATABASE_SCHEMA": other, "ORCH_INSTANCE": stack.settings.instance + "-rebuild"}
        result = subprocess.run([*_orchestrator_command(), "projections", "rebuild", "--yes", "--json"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        doc = json.loads(result.stdout)
        assert doc["events"] == total and doc["definitions"] == 1, doc
        rebuilt = stack.snapshot(other)
        for table in live:
            assert rebuilt[table] == live[table], f"{table}: the live projection differs from the rebuild"
    finally:
        with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other)))


def unfinished_at(events: dict[str, list], moment: float) -> int:
    """How many executions had started but not completed at `moment` (epoch s)."""
    ms = moment * 1000
    return sum(1 for history in events.values()
               if history[0].recorded_at <= ms and history[-1].recorded_at > ms)


# -- the tests ------------------------------------------------------------------------------


def test_a_killed_decider_restarts_and_every_execution_completes_exactly_once(stack):
    launch(stack)
    start_batch_and_wait_mid_flight(stack, failing_announcements=10)
    # Aim the kill at an open transaction (best effort: it may commit in between).
    caught_open = stack.wait_transaction_open()
    killed_at, dead_at = stack.kill("decider")
    restarted_at = stack.start("decider")

    events = stack.wait_all_completed(60)
    recovered_at = time.time()
    check_history(events, stack.execution_ids)
    unfinished = unfinished_at(events, killed_at)
    assert unfinished > 0, "the kill hit no execution mid-flight"

    # Exactly once inside Kafka: the killed decider's open transaction (events, tasks and
    # input offsets) was aborted, so the new one decided those inputs again and no task
    # reached an executor twice: no call is repeated.
    calls = calls_by_attempt(stack)
    check_calls_match_schedule(calls, events)
    assert check_duplicate_calls(calls, set(), dead_at, restarted_at) == set()

    # Durable timers: retries scheduled before the kill fired after the restart, from the
    # restored state, and each failed announcement was retried once and then completed.
    timers = {(eid, r.event.timer_id): r for eid, history in events.items() for r in history
              if type(r.event).__name__ == "TimerScheduled"}
    fired = {(eid, r.event.timer_id): r for eid, history in events.items() for r in history
             if type(r.event).__name__ == "TimerFired"}
    assert set(timers) == set(fired) and len(timers) == 10, (sorted(timers), sorted(fired))
    assert {timer_id for _, timer_id in timers} == {"retry:announce:2"}
    rearmed = [key for key, r in timers.items()
               if r.recorded_at < killed_at * 1000 and fired[key].recorded_at > restarted_at * 1000]
    assert rearmed, "no retry timer was pending across the crash"
    for (eid, _), r in fired.items():
        assert fired[(eid, "retry:announce:2")].recorded_at >= timers[(eid, "retry:announce:2")].event.fire_at
        assert [e.event.attempt for e in events[eid] if type(e.event).__name__ == "StepCompleted"
                and e.event.step == "announce"] == [2]
    # Diagnostic only (where the kill fell is luck): events of the aborted transaction.
    aborted = stack.uncommitted_count(stack.settings.topics.events) - sum(len(h) for h in events.values())
    print(f"unfinished at the kill: {unfinished}; retry timers pending across the crash: {len(rearmed)}; "
          f"transaction open at the kill: {caught_open}, aborted events: {aborted}; "
          f"all completed {recovered_at - restarted_at:.1f}s after the restart")

    check_projection_equals_rebuild(stack, events)


def test_a_killed_executor_repeats_only_the_calls_in_flight_and_every_execution_completes(stack):
    launch(stack)
    start_batch_and_wait_mid_flight(stack)
    killed_at, dead_at = stack.kill("executor")
    time.sleep(1.0)  # late commits of the dead process (if any) land before we look
    committed = stack.committed(stack.settings.group_id("executor"), stack.settings.topics.tasks)
    restarted_at = stack.start("executor")

    events = stack.wait_all_completed(60)
    recovered_at = time.time()
    check_history(events, stack.execution_ids)
    unfinished = unfinished_at(events, killed_at)
    assert unfinished > 0, "the kill hit no execution mid-flight"

    calls = calls_by_attempt(stack)
    check_calls_match_schedule(calls, events)
    in_flight = executor_in_flight(stack, committed, restarted_at, calls)
    assert in_flight, "no call was in flight at the kill"
    duplicated = check_duplicate_calls(calls, in_flight, dead_at, restarted_at)
    # Every uncommitted task runs again, and the demo answers the repeat from its
    # Idempotency-Key store: each call in flight was repeated, once.
    assert duplicated == in_flight
    print(f"unfinished at the kill: {unfinished}; calls in flight: {len(in_flight)}, repeated: {len(duplicated)}; "
          f"all completed {recovered_at - restarted_at:.1f}s after the restart")

    check_projection_equals_rebuild(stack, events)


def test_killing_decider_and_executor_together_loses_nothing(stack):
    launch(stack)
    start_batch_and_wait_mid_flight(stack)
    stack.wait_transaction_open()
    killed_at, dead_at = stack.kill("decider", "executor")
    time.sleep(1.0)
    committed = stack.committed(stack.settings.group_id("executor"), stack.settings.topics.tasks)
    restarted_at = stack.start("decider")
    stack.start("executor")

    events = stack.wait_all_completed(60)
    recovered_at = time.time()
    check_history(events, stack.execution_ids)
    unfinished = unfinished_at(events, killed_at)
    assert unfinished > 0, "the kill hit no execution mid-flight"

    calls = calls_by_attempt(stack)
    check_calls_match_schedule(calls, events)
    in_flight = executor_in_flight(stack, committed, restarted_at, calls)
    duplicated = check_duplicate_calls(calls, in_flight, dead_at, restarted_at)
    print(f"unfinished at the kill: {unfinished}; calls in flight: {len(in_flight)}, repeated: {len(duplicated)}; "
          f"all completed {recovered_at - restarted_at:.1f}s after the restart")

    check_projection_equals_rebuild(stack, events)


def test_a_killed_projector_resumes_from_its_stored_offsets_without_duplicates(stack):
    launch(stack)
    before = stack.projected_events()
    stack.start_executions(EXECUTIONS)
    stack.wait(lambda: stack.projected_events() >= before + EXECUTIONS * 3, 20, "the projector made no progress",
               interval=0.02)
    stack.kill("projector")
    at_kill = stack.projected_events()
    stored_at_kill = stack.rows("SELECT topic, partition, next_offset FROM projection_offsets")
    stack.start("projector")

    events = stack.wait_all_completed(60)
    check_history(events, stack.execution_ids)
    total = sum(len(h) for h in events.values())
    assert before < at_kill < total, f"the kill was not mid-stream ({before} < {at_kill} < {total})"
    assert stored_at_kill, "no offsets were stored before the kill"
    print(f"events projected at the kill: {at_kill - before} of {total - before}")
    check_projection_equals_rebuild(stack, events)
