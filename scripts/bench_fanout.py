"""Benchmark: for_each fan-out, in the pure core and end to end.

Prints:
  1. the core alone (decide + evolve, no I/O): a for_each over N items with a
     concurrency limit, every call answered as soon as it is scheduled:
     items/s, events and encoded Avro bytes per item, the largest number of
     step states the execution held at once, and tracemalloc's peak;
  2. end to end on the local stack (scripts/stack-up): the decider and the
     executor in their own processes against a local no-op HTTP service, one
     execution fanning out over --items items with --concurrency, then
     --parallel such executions at once: items/s and the CPU each process
     used per item.
A measurement, not a test: it asserts nothing.

    .venv/bin/python scripts/bench_fanout.py [--items 1000] [--core-items 1000,10000] [--concurrency 20]
        [--parallel 4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench_steps import Watcher, _noop_service, _role  # scripts/ is on sys.path when run as a script
from benchlib import cpu_seconds, kafka_pid
from orchestrator.codec import Codec
from orchestrator.config import Settings, Topics, load_settings
from orchestrator.core.decide import handle
from orchestrator.core.events import StepScheduled
from orchestrator.core.evolve import initial_state
from orchestrator.core.loading import canonical_digest, load_definition_source
from orchestrator.core.messages import DefinitionRegistered, StartWorkflow, TaskSucceeded
from orchestrator.runtime.kafka import ensure_topics, producer_config

codec = Codec.default()


def definition_source(concurrency: int) -> str:
    return (
        "apiVersion: workflow/v1\nkind: Workflow\nmetadata: {name: fanout, version: '1'}\n"
        "spec:\n  config: {timeout: 30s}\n  input:\n    schema: {type: object, properties: {items: {type: array}}}\n"
        "  steps:\n    - name: each\n      type: for_each\n      config:\n"
        "        items: '{{ input.items }}'\n"
        f"        concurrency: {concurrency}\n"
        "        step: {name: call, type: service_call, config: {service: noop-service, endpoint: /noop, "
        "payload: {n: '{{ item }}'}}}\n"
    )


def bench_core(items: int, concurrency: int) -> None:
    seconds, _, _, _ = _drive(items, concurrency, trace=False)
    _, state, history, most_steps = _drive(items, concurrency, trace=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    sizes = [len(codec.encode(r)) for r in history]
    print(f"core, {items} items, concurrency {concurrency}: {items / seconds:,.0f} items/s "
          f"({seconds:.2f} s, status {state.status}); {len(history) / items:.1f} events and "
          f"{(sum(sizes) - max(sizes) - sizes[1]) / items:.0f} bytes per item, plus the items list "
          f"({sizes[1]:,} B) and the collected outputs ({max(sizes):,} B) once; "
          f"at most {most_steps} step states held; tracemalloc peak {peak / 2**20:.1f} MiB")


def _drive(items: int, concurrency: int, trace: bool) -> tuple[float, Any, list, int]:
    """Start one execution and answer every call at once, oldest first."""
    defn = load_definition_source(definition_source(concurrency), file="fanout.yaml")
    if trace:
        tracemalloc.start()
    began = time.perf_counter()
    state, recorded = handle(initial_state("x"), StartWorkflow("x", "fanout", "1", {"items": list(range(items))}),
                             defn, 0)
    history = list(recorded)
    pending = [r.event for r in recorded if isinstance(r.event, StepScheduled)]
    most_steps = len(state.steps)
    while pending:
        scheduled = pending.pop(0)
        state, recorded = handle(state, TaskSucceeded("x", scheduled.step, 1, {"ok": True}, 0, 0), defn, 0)
        history += recorded
        pending += [r.event for r in recorded if isinstance(r.event, StepScheduled)]
        most_steps = max(most_steps, len(state.steps))
    return time.perf_counter() - began, state, history, most_steps


def bench_engine(settings: Settings, items: int, concurrency: int, parallel: int, pids: dict[str, int]) -> None:
    producer = Producer(producer_config(settings))
    source = definition_source(concurrency)
    defn = load_definition_source(source, file="fanout.yaml")
    reg = DefinitionRegistered(defn.name, defn.version, source, "yaml", canonical_digest(defn), 0)
    producer.produce(settings.topics.definitions, codec.encode(reg), defn.key.encode())
    producer.flush(10)
    watcher = Watcher(settings)
    watcher.ready()
    if (broker := kafka_pid()) is not None:
        pids = {**pids, "kafka broker": broker}
    for count in (1, parallel):
        ids = {f"fan-{uuid.uuid4().hex[:8]}" for _ in range(count)}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        began = time.monotonic()
        for eid in ids:
            cmd = StartWorkflow(eid, "fanout", "1", {"items": list(range(items))})
            producer.produce(settings.topics.commands, codec.encode(cmd), eid.encode())
        producer.flush(10)
        done = watcher.wait(ids, 600)
        seconds = time.monotonic() - began
        total = items * count
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        print(f"engine, {count} execution(s) x {items} items, concurrency {concurrency}: {seconds:.2f} s = "
              f"{total / seconds:,.0f} items/s ({'all finished' if done else 'NOT all finished'}, "
              f"{watcher.failed} failed)")
        print("  CPU per item: " + ", ".join(f"{name} {s / total * 1e6:.0f} us" for name, s in cpu.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--core-items", default="1000,10000")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--port", type=int, default=8792)
    parser.add_argument("--core-only", action="store_true")
    args = parser.parse_args()
    for n in (int(x) for x in args.core_items.split(",")):
        bench_core(n, args.concurrency)
    if args.core_only:
        return
    base = load_settings()
    services = Path(tempfile.mkdtemp()) / "services.yaml"
    services.write_text(f"services:\n  noop-service:\n    base_url: http://127.0.0.1:{args.port}\n    timeout: 5s\n")
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
        bench_engine(settings, args.items, args.concurrency, args.parallel,
                     {"noop service": procs[0].pid, "decider": procs[1].pid, "executor": procs[2].pid})
    finally:
        stop.set()
        for p in procs[1:]:
            p.join(15)
        procs[0].terminate()
        os.environ.pop("BENCH_PROFILE_DIR", None)


if __name__ == "__main__":
    main()
