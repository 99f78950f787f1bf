"""Benchmark: the long-running path, `wait_for_event` steps and the correlator.

Prints:
  1. the correlator's pure core (`orchestrator.core.correlation.Correlation`):
     events/s through `event_arrived` with W open waits, waits/s through
     `open_wait` against a buffer of B events, and the memory (tracemalloc) of
     W waits and of B buffered events. A measurement that would take longer
     than --core-budget seconds is cut short and its rate taken over the
     operations done (the cost per operation does not change as it runs);
  2. end to end on the local stack (scripts/stack-up): the decider and the
     correlator as `orchestrator run ROLE` processes on a fresh topic prefix,
     a one-step workflow that waits for `bench.event` with
     `filter: {key: "{{ input.key }}"}`:
       - waits first: N executions started and all waiting, then N matching
         events published: deliveries/s, and the latency from each event's
         publish to its execution's WorkflowCompleted (recorded_at);
       - events first (buffered): N events published and consumed by the
         correlator, then N executions started: executions/s, and the latency
         from each start to its WorkflowCompleted;
     with the CPU each process used per execution;
  3. the restore cost: a fresh decider (then a fresh correlator) started on the
     same topics after the run, and what its `partitions_assigned` log line says.
No executor runs: the workflow has no task for one.
A measurement, not a test: it asserts nothing. Its topics and consumer groups
are deleted at the end (unless --keep).

    .venv/bin/python scripts/bench_waits.py [--waits 10000] [--events 20000] [--buffer 20000]
        [--types 4] [--core-budget 8] [--executions 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any, Callable

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from benchlib import cpu_seconds, kafka_pid, percentile  # scripts/ is on sys.path when run as a script
from orchestrator.codec import Codec
from orchestrator.config import Settings, Topics, load_settings
from orchestrator.core.correlation import Correlation
from orchestrator.core.events import StepWaiting, WorkflowCancelled, WorkflowCompleted, WorkflowFailed
from orchestrator.core.loading import canonical_digest, load_definition_source
from orchestrator.core.messages import DefinitionRegistered, ExternalEvent, StartWorkflow, WaitOpened
from orchestrator.runtime.kafka import admin_client, consumer_config, ensure_topics, producer_config, topic_configs

REPO = Path(__file__).resolve().parent.parent
EVENT_TYPE = "bench.event"
WORKFLOW = "bench-waits"
DEFINITION = f"""apiVersion: workflow/v1
kind: Workflow
metadata: {{name: {WORKFLOW}, version: '1'}}
spec:
  steps:
    - name: wait
      type: wait_for_event
      config:
        event_type: {EVENT_TYPE}
        timeout: 1h
        filter: {{key: "{{{{ input.key }}}}"}}
"""
codec = Codec.default()


# -- helpers --------------------------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


# -- 1. the pure core -----------------------------------------------------------------------

T0 = 1_700_000_000_000  # the core never reads a clock: any epoch ms will do


def core_wait(n: int, types: int, opened_at: int) -> WaitOpened:
    return WaitOpened(f"exec-{n}", "wait", f"bench.type{n % types}", {"user_id": f"u-{n}"}, opened_at, None)


def core_event(i: int, waits: int, types: int) -> ExternalEvent:
    """Even i: the event wait (i/2 mod W) waits for; odd i: one of a waited-for type
    that no wait's filter matches."""
    if i % 2 == 0:
        n = (i // 2) % waits
        return ExternalEvent(f"ev-{i}", f"bench.type{n % types}", {"user_id": f"u-{n}"}, T0, "bench")
    return ExternalEvent(f"ev-{i}", f"bench.type{i % types}", {"user_id": f"nobody-{i}"}, T0, "bench")


def timed(items: list[Any], apply: Callable[[int, Any], int], budget: float) -> tuple[int, float, int]:
    """Apply to items until done or `budget` seconds spent: (items done, seconds, deliveries)."""
    done = deliveries = 0
    began = time.perf_counter()
    for done, item in enumerate(items, 1):
        deliveries += apply(done - 1, item)
        if done % 16 == 0 and time.perf_counter() - began > budget:
            break
    return done, time.perf_counter() - began, deliveries


def bench_core(waits: int, events: int, buffer: int, types: int, partitions: int, budget: float) -> None:
    buffer_ms = 3_600_000
    # events/s: W open waits, E events arriving after they opened
    arrivals = Correlation(buffer_ms)
    for n in range(waits):
        arrivals.open_wait(core_wait(n, types, T0))
    arriving = [core_event(i, waits, types) for i in range(events)]
    gc.collect()
    done, seconds, delivered = timed(
        arriving, lambda i, e: len(arrivals.event_arrived(e, i % partitions, T0 + 1 + i)), budget)
    cut = "" if done == events else f", stopped after {done} of {events} at the {budget:g} s budget"
    print(f"core event_arrived, {waits} open waits over {types} event types: {done / seconds:,.0f} events/s "
          f"= {seconds / done * 1e6:,.0f} us/event ({done} events in {seconds:.2f} s, {delivered} deliveries{cut})")

    # waits/s: W waits opening against B buffered events (arrived before they opened)
    openings = Correlation(buffer_ms)
    for i in range(buffer):
        openings.event_arrived(core_event(i, waits, types), i % partitions, T0 + i, deliver=False)
    opening = [core_wait(n, types, T0 + buffer) for n in range(waits)]
    gc.collect()
    done, seconds, delivered = timed(opening, lambda i, w: len(openings.open_wait(w)), budget)
    cut = "" if done == waits else f", stopped after {done} of {waits} at the {budget:g} s budget"
    print(f"core open_wait, against {buffer} buffered events over {types} types: {done / seconds:,.0f} waits/s "
          f"= {seconds / done * 1e6:,.0f} us/wait ({done} waits in {seconds:.2f} s, {delivered} deliveries{cut})")

    # memory: the objects are made inside the traced region, as decoding makes them
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    held = Correlation(buffer_ms)
    for n in range(waits):
        held.open_wait(core_wait(n, types, T0))
    gc.collect()
    with_waits = tracemalloc.get_traced_memory()[0]
    for i in range(buffer):
        held.event_arrived(core_event(i, waits, types), i % partitions, T0 + i, deliver=False)
    gc.collect()
    with_events = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    w_bytes, e_bytes = with_waits - base, with_events - with_waits
    print(f"core memory (tracemalloc): {waits} open waits {w_bytes / 2**20:.1f} MiB ({w_bytes / waits:,.0f} B/wait), "
          f"{buffer} buffered events {e_bytes / 2**20:.1f} MiB ({e_bytes / max(buffer, 1):,.0f} B/event)")


# -- 2. end to end --------------------------------------------------------------------------


class Role:
    """`python -m orchestrator run ROLE` (= `orchestrator run ROLE`) with the bench's
    environment; its JSON log lines go to a file."""

    def __init__(self, role: str, env: dict[str, str], logs: Path, tag: str = "") -> None:
        self.role = role
        self.log = logs / f"{role}{tag}.log"
        self.started = time.monotonic()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", role], env=env, cwd=REPO,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self, event: str) -> list[dict[str, Any]]:
        found = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("event") == event:
                found.append(line)
        return found

    def wait_for_assignment(self, partitions: int, timeout: float = 90) -> list[dict[str, Any]]:
        """The `partitions_assigned` lines, once they cover every partition."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.lines("partitions_assigned")
            if len({p for line in lines for p in line.get("partitions", [])}) >= partitions:
                return lines
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"{self.role} did not get its partitions (exit code {self.proc.poll()}); "
                         f"last lines of {self.log}:\n{tail}")

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class Watcher:
    """Follows wf.events from its beginning: when each execution started waiting and ended."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(consumer_config(settings, f"{settings.topics.prefix}bench-watcher"))
        topic = settings.topics.events
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.partitions)])
        self.waiting: dict[str, int] = {}
        self.completed: dict[str, int] = {}
        self.failed: set[str] = set()

    def drain(self, until: float) -> None:
        for msg in self.consumer.consume(1000, max(0.0, min(0.2, until - time.monotonic()))):
            if msg.error():
                continue
            r = codec.decode(msg.value(), expect="events")
            if isinstance(r.event, StepWaiting):
                self.waiting[r.execution_id] = r.recorded_at
            elif isinstance(r.event, WorkflowCompleted):
                self.completed[r.execution_id] = r.recorded_at
            elif isinstance(r.event, (WorkflowFailed, WorkflowCancelled)):
                self.failed.add(r.execution_id)

    def wait(self, ids: list[str], seen: dict[str, int], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(e in seen or e in self.failed for e in ids):
                return
            self.drain(deadline)
        missing = sum(e not in seen for e in ids)
        raise SystemExit(f"{missing} of {len(ids)} executions not {what} after {timeout:g} s")

    def close(self) -> None:
        self.consumer.close()


class Bench:
    def __init__(self, settings: Settings, pids: dict[str, int]) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.producer = Producer(producer_config(settings, role="bench"))
        self.watcher = Watcher(settings)
        self.pids = {**pids, "bench": os.getpid()}
        if (broker := kafka_pid()) is not None:
            self.pids["kafka broker"] = broker
        self.tag = uuid.uuid4().hex[:6]

    def produce(self, topic: str, key: str, message: Any) -> None:
        try:
            self.producer.produce(topic, codec.encode(message), key.encode())
        except BufferError:
            self.producer.poll(1)
            self.producer.produce(topic, codec.encode(message), key.encode())
        self.producer.poll(0)

    def start(self, ids: list[str], keys: list[str]) -> list[int]:
        """StartWorkflow for each; the time (epoch ms) each was published."""
        sent = []
        for eid, key in zip(ids, keys):
            sent.append(now_ms())
            self.produce(self.topics.commands, eid, StartWorkflow(eid, WORKFLOW, "1", {"key": key}))
        self.producer.flush(30)
        return sent

    def publish(self, keys: list[str], prefix: str) -> list[int]:
        """An ExternalEvent matching each key; the time (epoch ms) each was published."""
        sent = []
        for n, key in enumerate(keys):
            at = now_ms()
            sent.append(at)
            event_id = f"ev-{prefix}-{self.tag}-{n}"
            self.produce(self.topics.external_events, event_id,
                         ExternalEvent(event_id, EVENT_TYPE, {"key": key}, at, "bench"))
        self.producer.flush(30)
        return sent

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def cpu_line(self, before: dict[str, float], per: int, unit: str) -> str:
        after = self.cpu()
        return f"  CPU per {unit}: " + ", ".join(
            f"{name} {(after[name] - before[name]) / per * 1e6:,.0f} us" for name in self.pids)

    def correlator_caught_up(self, timeout: float) -> None:
        """The correlator group committed the end of every external-events partition."""
        topic = self.topics.external_events
        probe = Consumer(consumer_config(self.settings, self.settings.group_id("correlator")))
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                parts = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
                committed = {tp.partition: tp.offset for tp in probe.committed(parts, timeout=10)}
                if all(committed[p] >= probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                                    cached=False)[1] for p in committed):
                    return
                time.sleep(0.05)
            raise SystemExit(f"the correlator did not consume the events within {timeout:g} s")
        finally:
            probe.close()

    def warm_up(self) -> None:
        ids = [f"warm-{self.tag}-{n}" for n in range(5)]
        keys = [f"warm-{self.tag}-{n}" for n in range(5)]
        self.start(ids, keys)
        self.watcher.wait(ids, self.watcher.waiting, 60, "waiting")
        self.publish(keys, "warm")
        self.watcher.wait(ids, self.watcher.completed, 60, "completed")

    def waits_first(self, n: int) -> None:
        ids = [f"a-{self.tag}-{i}" for i in range(n)]
        keys = [f"a-{self.tag}-{i}" for i in range(n)]
        timeout = 60 + n / 10
        started = self.start(ids, keys)
        self.watcher.wait(ids, self.watcher.waiting, timeout, "waiting")
        to_wait = [self.watcher.waiting[e] - s for e, s in zip(ids, started)]
        opened = (max(self.watcher.waiting[e] for e in ids) - started[0]) / 1000
        time.sleep(1)  # let the correlator read the waits, so the CPU below is the deliveries'
        before = self.cpu()
        published = self.publish(keys, "a")
        self.watcher.wait(ids, self.watcher.completed, timeout, "completed")
        cpu = self.cpu_line(before, n, "delivery")
        done = [e for e in ids if e in self.watcher.completed]
        latency = [self.watcher.completed[e] - p for e, p in zip(ids, published) if e in self.watcher.completed]
        seconds = (max(self.watcher.completed[e] for e in done) - published[0]) / 1000
        failed = sum(e in self.watcher.failed for e in ids)
        print(f"end to end, waits first: {n} executions started and waiting in {opened:.2f} s "
              f"(start to StepWaiting p50 {percentile(to_wait, 0.5):.0f} ms, p99 {percentile(to_wait, 0.99):.0f} ms); "
              f"{n} events published in {(published[-1] - published[0]) / 1000:.2f} s")
        print(f"  {len(done)} deliveries completed in {seconds:.2f} s = {len(done) / seconds:,.0f} deliveries/s "
              f"({failed} failed); publish to WorkflowCompleted p50 {percentile(latency, 0.5):.0f} ms, "
              f"p99 {percentile(latency, 0.99):.0f} ms, max {max(latency):.0f} ms")
        print(cpu)

    def events_first(self, n: int) -> None:
        ids = [f"b-{self.tag}-{i}" for i in range(n)]
        keys = [f"b-{self.tag}-{i}" for i in range(n)]
        timeout = 60 + n / 10
        began = time.monotonic()
        self.publish(keys, "b")
        self.correlator_caught_up(timeout)
        buffered = time.monotonic() - began
        time.sleep(1)
        before = self.cpu()
        started = self.start(ids, keys)
        self.watcher.wait(ids, self.watcher.completed, timeout, "completed")
        cpu = self.cpu_line(before, n, "execution")
        done = [e for e in ids if e in self.watcher.completed]
        latency = [self.watcher.completed[e] - s for e, s in zip(ids, started) if e in self.watcher.completed]
        seconds = (max(self.watcher.completed[e] for e in done) - started[0]) / 1000
        failed = sum(e in self.watcher.failed for e in ids)
        print(f"end to end, events first (buffered): {n} events published and consumed by the correlator in "
              f"{buffered:.2f} s; then {len(done)} executions started and completed in {seconds:.2f} s "
              f"= {len(done) / seconds:,.0f} executions/s ({failed} failed)")
        print(f"  start to WorkflowCompleted p50 {percentile(latency, 0.5):.0f} ms, "
              f"p99 {percentile(latency, 0.99):.0f} ms, max {max(latency):.0f} ms")
        print(cpu)

    def close(self) -> None:
        self.watcher.close()
        self.producer.flush(10)


def restore_line(role: Role, partitions: int, what: str) -> None:
    lines = role.wait_for_assignment(partitions)
    first = time.monotonic() - role.started  # an upper bound on when the last line was written
    events = sum(line.get("events", 0) for line in lines)
    seconds = sum(line.get("seconds", 0.0) for line in lines)
    extra = f", {sum(line.get('executions', 0) for line in lines)} executions" if role.role == "decider" else \
        f", {lines[-1].get('open_waits', 0)} open waits, {sum(line.get('deliveries', 0) for line in lines)} deliveries"
    print(f"restore, fresh {role.role}: partitions_assigned seconds {seconds:g}, events {events}{extra} "
          f"({len(lines)} line{'s' * (len(lines) != 1)}; {first:.1f} s from process start, {what})")


def bench_end_to_end(base: Settings, executions: int, keep: bool) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    settings = dataclasses.replace(base, topics=Topics(prefix))
    env = {**os.environ, "ORCH_TOPIC_PREFIX": prefix, "ORCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "ORCH_PARTITIONS": str(settings.partitions), "ORCH_LOG_FORMAT": "json", "ORCH_LOG_LEVEL": "info"}
    logs = Path(tempfile.mkdtemp(prefix="bench-waits-"))
    ensure_topics(settings)
    roles: list[Role] = []
    try:
        defn = load_definition_source(DEFINITION, file="bench-waits.yaml")
        producer = Producer(producer_config(settings, role="bench"))
        reg = DefinitionRegistered(defn.name, defn.version, DEFINITION, "yaml", canonical_digest(defn), now_ms())
        producer.produce(settings.topics.definitions, codec.encode(reg), defn.key.encode())
        producer.flush(10)

        decider, correlator = Role("decider", env, logs), Role("correlator", env, logs)
        roles += [decider, correlator]
        decider.wait_for_assignment(settings.partitions)
        correlator.wait_for_assignment(settings.partitions)
        bench = Bench(settings, {"decider": decider.pid, "correlator": correlator.pid})
        try:
            bench.warm_up()
            bench.waits_first(executions)
            bench.events_first(executions)
        finally:
            bench.close()
        codes = {r.role: r.stop() for r in roles}
        if any(codes.values()):
            print(f"  (roles exited with {codes}; logs in {logs})")

        decider = Role("decider", env, logs, "-restore")
        roles.append(decider)
        restore_line(decider, settings.partitions, f"{2 * executions + 5} executions on {settings.partitions} partitions")
        decider.stop()
        correlator = Role("correlator", env, logs, "-restore")
        roles.append(correlator)
        restore_line(correlator, settings.partitions, "its buffer of external events")
        correlator.stop()
    finally:
        for role in roles:
            role.stop()
        if not keep:
            cleanup(settings)
            shutil.rmtree(logs, ignore_errors=True)
        else:
            print(f"kept topics {prefix}* and logs in {logs}")


def cleanup(settings: Settings) -> None:
    """Delete the bench's topics and its consumer groups (all named by its prefix)."""
    admin = admin_client(settings, **{"log_level": 3})  # no notice about its purged queue at exit
    for future in admin.delete_topics(list(topic_configs(settings)), operation_timeout=30).values():
        try:
            future.result()
        except Exception:
            pass
    prefix = settings.topics.prefix
    try:
        listed = admin.list_consumer_groups(request_timeout=10).result()
        groups = [g.group_id for g in listed.valid if g.group_id.startswith(prefix)]
        if groups:
            for future in admin.delete_consumer_groups(groups, request_timeout=10).values():
                try:
                    future.result()
                except Exception:
                    pass
    except Exception:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waits", type=int, default=10_000, help="core: open waits (W)")
    parser.add_argument("--events", type=int, default=20_000, help="core: arriving events (E), half matching")
    parser.add_argument("--buffer", type=int, default=20_000, help="core: buffered events (B)")
    parser.add_argument("--types", type=int, default=4, help="core: event types the waits are spread over")
    parser.add_argument("--core-budget", type=float, default=8.0, metavar="SECONDS",
                        help="core: cut each rate measurement short after this long")
    parser.add_argument("--executions", type=int, default=1000, help="end to end: executions per variant (N)")
    parser.add_argument("--skip-core", action="store_true")
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the topics, groups and role logs")
    args = parser.parse_args()

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # no topic_created lines
    base = load_settings()
    if not args.skip_core:
        bench_core(args.waits, args.events, args.buffer, args.types, base.partitions, args.core_budget)
    if not args.skip_engine:
        bench_end_to_end(base, args.executions, args.keep)


if __name__ == "__main__":
    main()
