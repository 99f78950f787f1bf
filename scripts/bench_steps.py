"""Benchmark: steps per second and step-to-step latency of a 10-step workflow.

Runs the decider and the executor in their own processes against the local
stack (scripts/stack-up) and a local no-op HTTP service, then prints:
  - throughput: completed steps/s with many executions in flight;
  - latency: p50/p99 between consecutive step completions at light load
    (one execution at a time), from the events' recorded times;
  - baseline: a bare confluent-kafka transactional consume-produce loop.
A measurement, not a test: it asserts nothing.

    .venv/bin/python scripts/bench_steps.py [--executions 300] [--serial 30]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from benchlib import cpu_seconds, kafka_pid, percentile  # scripts/ is on sys.path when run as a script
from orchestrator.codec import Codec
from orchestrator.config import Settings, Topics, load_settings
from orchestrator.core.events import StepCompleted, WorkflowCompleted, WorkflowFailed
from orchestrator.core.loading import canonical_digest, load_definition_source
from orchestrator.core.messages import DefinitionRegistered, StartWorkflow
from orchestrator.runtime.kafka import consumer_config, ensure_topics, producer_config

STEPS = 10
codec = Codec.default()


def definition_source() -> str:
    steps = "\n".join(
        f"    - {{name: s{i}, type: service_call, config: {{service: noop-service, endpoint: /noop, "
        f"method: POST, payload: {{n: {i}}}}}}}"
        for i in range(STEPS)
    )
    return (
        "apiVersion: workflow/v1\nkind: Workflow\nmetadata: {name: bench, version: '1'}\n"
        f"spec:\n  config: {{timeout: 30s}}\n  steps:\n{steps}\n"
    )


def _role(name: str, settings: Settings, stop: mp.Event) -> None:  # runs in a child process
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO if name == "decider" else logging.WARNING))
    flag = threading.Event()
    threading.Thread(target=lambda: (stop.wait(), flag.set()), daemon=True).start()
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")
    if profile_dir:  # --profile: write <dir>/<role>.prof for pstats / snakeviz
        import atexit
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        atexit.register(lambda: (profiler.disable(), profiler.dump_stats(f"{profile_dir}/{name}.prof")))
    if name == "decider":
        from orchestrator.runtime.decider import run_decider

        run_decider(settings, flag)
    else:
        from orchestrator.runtime.executor import run_executor

        run_executor(settings, flag)


_NOOP_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"


class _NoopProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive: answers every request with {"ok":true}, at next to no CPU,
    so the figures measure the engine rather than a demo web framework."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            if (at := head.find(b"content-length:")) >= 0:
                length = int(head[at + 15:].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(_NOOP_RESPONSE)


def _noop_service(port: int) -> None:  # runs in a child process
    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_NoopProtocol, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(serve())


class Watcher:
    """Follows wf.events and records when each execution's steps completed."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(consumer_config(settings, f"bench-{uuid.uuid4().hex[:6]}",
                                                 **{"auto.offset.reset": "latest"}))
        self.consumer.subscribe([settings.topics.events])
        self.completions: dict[str, list[int]] = {}
        self.finished: dict[str, int] = {}
        self.failed = 0

    def ready(self) -> None:
        while not self.consumer.assignment():
            self.consumer.poll(0.1)

    def drain(self, until: float) -> None:
        for msg in self.consumer.consume(1000, max(0.0, min(0.2, until - time.monotonic()))):
            if msg.error():
                continue
            r = codec.decode(msg.value(), expect="events")
            if isinstance(r.event, StepCompleted):
                self.completions.setdefault(r.execution_id, []).append(r.recorded_at)
            elif isinstance(r.event, (WorkflowCompleted, WorkflowFailed)):
                self.finished[r.execution_id] = r.recorded_at
                self.failed += isinstance(r.event, WorkflowFailed)

    def wait(self, ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not ids <= self.finished.keys() and time.monotonic() < deadline:
            self.drain(deadline)
        return ids <= self.finished.keys()


def start(producer: Producer, settings: Settings, eid: str) -> None:
    cmd = StartWorkflow(eid, "bench", "1", {})
    producer.produce(settings.topics.commands, codec.encode(cmd), eid.encode())


def bench_engine(settings: Settings, executions: int, serial: int, pids: dict[str, int]) -> None:
    producer = Producer(producer_config(settings))
    source = definition_source()
    defn = load_definition_source(source, file="bench.yaml")
    reg = DefinitionRegistered(defn.name, defn.version, source, "yaml", canonical_digest(defn), 0)
    producer.produce(settings.topics.definitions, codec.encode(reg), defn.key.encode())
    producer.flush(10)
    watcher = Watcher(settings)
    watcher.ready()

    warm = {f"warm-{uuid.uuid4().hex[:8]}" for _ in range(5)}
    for eid in warm:
        start(producer, settings, eid)
    producer.flush(10)
    if not watcher.wait(warm, 120):
        raise SystemExit("warm-up executions did not finish: is the stack up?")

    gaps: list[float] = []
    for _ in range(serial):
        eid = f"serial-{uuid.uuid4().hex[:8]}"
        start(producer, settings, eid)
        producer.flush(10)
        watcher.wait({eid}, 60)
        times = watcher.completions.get(eid, [])
        gaps += [b - a for a, b in zip(times, times[1:])]

    ids = {f"load-{uuid.uuid4().hex[:8]}" for _ in range(executions)}
    pids = {**pids, "bench (publisher+watcher)": os.getpid()}
    if (broker := kafka_pid()) is not None:
        pids["kafka broker"] = broker
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    began = time.monotonic()
    for eid in ids:
        start(producer, settings, eid)
    producer.flush(10)
    done = watcher.wait(ids, 600)
    seconds = time.monotonic() - began
    steps = sum(len(watcher.completions.get(e, [])) for e in ids)
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    print(f"engine, light load ({serial} executions one at a time): step-to-step latency "
          f"p50 {percentile(gaps, 0.5):.1f} ms, p99 {percentile(gaps, 0.99):.1f} ms, "
          f"mean {statistics.fmean(gaps):.1f} ms over {len(gaps)} gaps")
    print(f"engine, {executions} executions x {STEPS} steps in flight: {steps} steps in {seconds:.2f} s "
          f"= {steps / seconds:.0f} steps/s ({'all finished' if done else 'NOT all finished'}, "
          f"{watcher.failed} failed)")
    print("  CPU per completed step: " + ", ".join(
        f"{name} {seconds / max(steps, 1) * 1e6:.0f} us" for name, seconds in cpu.items()))


def bench_bare_loop(settings: Settings, messages: int) -> None:
    source, sink = settings.topics.prefix + "bare-in", settings.topics.prefix + "bare-out"
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for f in admin.create_topics([NewTopic(t, settings.partitions, 1) for t in (source, sink)]).values():
        f.result()
    producer = Producer(producer_config(settings))
    payload = b"x" * 300
    for i in range(messages):
        producer.produce(source, payload, str(i).encode())
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(30)
    consumer = Consumer(consumer_config(settings, settings.group_id("bare")))
    consumer.subscribe([source])
    txp = Producer(producer_config(settings, transactional_id=settings.topics.prefix + "bare"))
    txp.init_transactions()
    seen, began = 0, None
    while seen < messages:
        first = consumer.poll(1.0)
        if first is None:
            continue
        batch = [first] + consumer.consume(499, 0)
        began = began or time.monotonic()
        txp.begin_transaction()
        offsets = {}
        for msg in batch:
            txp.produce(sink, msg.value(), msg.key())
            offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
        txp.send_offsets_to_transaction([TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                        consumer.consumer_group_metadata())
        txp.commit_transaction()
        seen += len(batch)
    seconds = time.monotonic() - began
    print(f"bare confluent-kafka transactional consume-produce loop: {messages} messages in "
          f"{seconds:.2f} s = {messages / seconds:.0f} msg/s (batches of up to 500)")
    consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=300)
    parser.add_argument("--serial", type=int, default=30)
    parser.add_argument("--bare-messages", type=int, default=50_000)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--profile", metavar="DIR", help="write cProfile data of the decider and executor to DIR")
    args = parser.parse_args()

    base = load_settings()
    if args.profile:
        os.environ["BENCH_PROFILE_DIR"] = args.profile  # inherited by the spawned roles
    services = Path(tempfile.mkdtemp()) / "services.yaml"
    services.write_text(f"services:\n  noop-service:\n    base_url: http://127.0.0.1:{args.port}\n"
                        f"    timeout: 5s\n")
    settings = Settings(kafka_bootstrap=base.kafka_bootstrap, database_url=base.database_url,
                        topics=Topics(f"bench-{uuid.uuid4().hex[:6]}."), partitions=base.partitions,
                        services_file=services, secret_key_file=base.secret_key_file,
                        secret_key=base.secret_key, log_level="warning")
    ensure_topics(settings)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_noop_service, args=(args.port,), daemon=True)]
    procs += [ctx.Process(target=_role, args=(role, settings, stop), daemon=True) for role in ("decider", "executor")]
    for p in procs:
        p.start()
    try:
        bench_engine(settings, args.executions, args.serial,
                     {"noop service": procs[0].pid, "decider": procs[1].pid, "executor": procs[2].pid})
    finally:
        stop.set()
        for p in procs[1:]:
            p.join(15)
        procs[0].terminate()
    bench_bare_loop(settings, args.bare_messages)


if __name__ == "__main__":
    main()
