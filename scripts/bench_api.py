#!/usr/bin/env python3
"""Read latency of the HTTP API on a million executions.

    .venv/bin/python scripts/bench_api.py [--executions 1000000] [--requests 300] [--reseed] [--explain]
        [--database orch_bench] [--no-http]

Needs the local stack's PostgreSQL (scripts/stack-up). Works in a database of
its own (`orch_bench` on the ORCH_DATABASE_URL cluster, created when missing;
never the test or demo schemas): migrates it, and seeds it by SQL
(scripts/bench_api_seed.py: executions, ~5 step rows and ~12 events each)
unless it already holds that many executions (--reseed forces it). Prints the
seeding time, table and index sizes, then p50/p95/p99 latency of each query:
  - directly through orchestrator/api/reads.py on one connection, and
  - over HTTP: the real app (`orchestrator api`, uvicorn) in a subprocess on
    a free port with a throwaway key, measured with httpx (skipped when the
    app is not importable, or with --no-http). A bulk dry run (POST
    /api/v1/bulk/cancel, dry_run: true) counts and samples; it sends nothing.
Each request draws its parameters at random (workflow, status, time window,
customer, cursor position, execution id). --explain prints EXPLAIN ANALYZE of
one request of each list query: the plan's nodes and indexes.
The target: p95 < 200 ms for list and detail pages.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from psycopg import conninfo, sql  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from bench_api_seed import WORKFLOWS, seed  # noqa: E402  # scripts/ is on sys.path when run as a script
from benchlib import percentile  # noqa: E402
from orchestrator.api import reads  # noqa: E402
from orchestrator.api.reads_filter import encode_cursor  # noqa: E402
from orchestrator.config import load_settings  # noqa: E402
from projections import migrate  # noqa: E402

Case = Callable[[random.Random], tuple[str, dict[str, Any]]]  # rng -> (kind, parameters)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300, help="per query")
    parser.add_argument("--database", default="orch_bench")
    parser.add_argument("--reseed", action="store_true", help="seed again even when already seeded")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each list query")
    parser.add_argument("--no-http", action="store_true", help="measure the reads functions only")
    args = parser.parse_args()

    url = _bench_database(load_settings().database_url, args.database)
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        applied = migrate(conn)
        if applied:
            print(f"migrated {args.database}: {', '.join(f'{m.version:04d}_{m.name}' for m in applied)} "
                  f"in {time.perf_counter() - started:.1f}s")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_seed (executions integer, seconds float8, "
                     "seeded_at timestamptz DEFAULT now())")
        seeded = conn.execute("SELECT executions, seconds, seeded_at FROM bench_seed").fetchone()
    if args.reseed or seeded is None or seeded[0] != args.executions:
        print(f"seeding {args.executions:,} executions into {args.database} ...")
        started = time.perf_counter()
        seed(lambda: psycopg.connect(url), args.executions, say=print)
        elapsed = time.perf_counter() - started
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM bench_seed")
            conn.execute("INSERT INTO bench_seed (executions, seconds) VALUES (%s, %s)", (args.executions, elapsed))
        print(f"seeded in {elapsed:.0f}s")
    else:
        print(f"reusing {args.database}: {seeded[0]:,} executions seeded {seeded[2]:%Y-%m-%d %H:%M} "
              f"in {seeded[1]:.0f}s (--reseed to seed again)")

    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        _print_sizes(conn)
        sample = Sample(conn)
        cases = _cases(sample)
        if args.explain:
            _explain(conn, cases)
        print(f"\nreads functions on one connection, {args.requests} requests each (ms):")
        _measure(cases, args.requests, lambda kind, params: _direct(conn, kind, params))
    if args.no_http:
        return 0
    try:
        importlib.import_module("orchestrator.api.app")
    except ImportError as exc:
        print(f"\nHTTP: skipped, the API app is not importable yet ({exc})")
        return 0
    with _api_server(url) as (base, key):
        import httpx

        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            print(f"\nHTTP GET through the API ({base}), {args.requests} requests each (ms):")
            _measure(cases, args.requests, lambda kind, params: _http(client, kind, params))
    return 0


def _bench_database(url: str, name: str) -> str:
    """The URL of database `name` on the same cluster, created when missing."""
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")
    return conninfo.make_conninfo(url, dbname=name)


def _print_sizes(conn: Any) -> None:
    print("\nsizes (table = heap + TOAST; indexes each):")
    for table in ("workflow_executions", "step_executions", "execution_events"):
        row = conn.execute("SELECT (SELECT count(*) FROM " + table + ") AS n, pg_size_pretty(pg_table_size(%s)) AS "
                           "heap, pg_size_pretty(pg_indexes_size(%s)) AS idx", (table, table)).fetchone()
        print(f"  {table}: {row['n']:,} rows, {row['heap']}, indexes {row['idx']}")
        for index in conn.execute("SELECT indexrelid::regclass::text AS name, pg_size_pretty(pg_relation_size("
                                  "indexrelid)) AS size FROM pg_index WHERE indrelid = %s::regclass ORDER BY "
                                  "pg_relation_size(indexrelid) DESC", (table,)):
            print(f"      {index['size']:>8}  {index['name']}")


class Sample:
    """Existing rows to draw request parameters from."""

    def __init__(self, conn: Any) -> None:
        rows = list(conn.execute("SELECT id, workflow_name, workflow_version, created_at, "
                                 "input->>'customer_id' AS customer, output->>'order_id' AS order_id "
                                 "FROM workflow_executions TABLESAMPLE SYSTEM (0.5) REPEATABLE (7)"))
        self.rows = rows
        self.ids = [r["id"] for r in rows]
        self.customers = [r["customer"] for r in rows if r["customer"]]
        self.orders = [r["order_id"] for r in rows if r["order_id"]]
        self.versions = [(r["workflow_name"], r["workflow_version"]) for r in rows]
        self.active = [r["id"] for r in conn.execute(
            "SELECT id FROM workflow_executions TABLESAMPLE SYSTEM (5) REPEATABLE (7) "
            "WHERE status NOT IN ('completed', 'failed', 'cancelled') LIMIT 2000")]
        bounds = conn.execute("SELECT min(created_at) AS lo, max(created_at) AS hi FROM workflow_executions").fetchone()
        self.first, self.last = bounds["lo"], bounds["hi"]


def _cases(s: Sample) -> dict[str, Case]:
    def window(rng: random.Random, days: int) -> dict[str, str]:
        start = s.first + (s.last - s.first - timedelta(days=days)) * rng.random()
        return {"created_after": start.isoformat(), "created_before": (start + timedelta(days=days)).isoformat()}

    def deep(rng: random.Random) -> str:
        row = rng.choice(s.rows)
        return encode_cursor(row["created_at"], row["id"])

    return {
        "list status+workflow": lambda rng: ("list", {"status": rng.choice(["failed", "running", "cancelled"]),
                                                      "workflow": rng.choice(s.versions)[0]}),
        "list workflow+2 days": lambda rng: ("list", {"workflow": rng.choice(s.versions)[0], **window(rng, 2)}),
        "list workflow@version": lambda rng: ("list", dict(zip(("workflow", "version"), rng.choice(s.versions)))),
        "list input.customer_id": lambda rng: ("list", {"input.customer_id": rng.choice(s.customers)}),
        "list input plan+region, failed": lambda rng: ("list", {
            "input.plan": rng.choice(["free", "pro", "enterprise"]),
            "input.region": rng.choice(["eu-west", "us-east", "ap-south"]), "status": "failed"}),
        "list output.order_id": lambda rng: ("list", {"output.order_id": rng.choice(s.orders)}),
        "list status=running,paused": lambda rng: ("list", {"status": ["running", "paused"], **(
            {"workflow": rng.choice(WORKFLOWS[:8])} if rng.random() < 0.5 else {})}),
        "list deep page (cursor)": lambda rng: ("list", {"cursor": deep(rng)}),
        "list deep page, workflow": lambda rng: ("list", {"cursor": deep(rng), "workflow": rng.choice(s.versions)[0]}),
        "bulk dry run failed+workflow": lambda rng: ("bulk", {"status": "failed",
                                                              "workflow": rng.choice(s.versions)[0]}),
        "detail (any)": lambda rng: ("detail", {"id": rng.choice(s.ids)}),
        "detail (not ended)": lambda rng: ("detail", {"id": rng.choice(s.active)}),
        "history": lambda rng: ("history", {"id": rng.choice(s.ids)}),
    }


def _direct(conn: Any, kind: str, params: dict[str, Any]) -> Any:
    if kind == "list":
        filters = {k: v for k, v in params.items() if k != "cursor"}
        return reads.list_executions(conn, reads.parse_filter(filters), limit=50, cursor=params.get("cursor"))
    if kind == "bulk":  # what a bulk dry run reads: the count and a sample of ids
        f = reads.parse_filter(params)
        return reads.count_matching(conn, f), reads.matching_ids(conn, f, max_items=20)
    if kind == "detail":
        found = reads.get_execution(conn, params["id"])
        assert found is not None, params
        return found
    return reads.history(conn, params["id"])


def _http(client: Any, kind: str, params: dict[str, Any]) -> Any:
    if kind == "list":
        response = client.get("/api/v1/executions", params={**params, "limit": 50})
    elif kind == "bulk":
        response = client.post("/api/v1/bulk/cancel", json={"filter": params, "dry_run": True})
    elif kind == "detail":
        response = client.get(f"/api/v1/executions/{params['id']}")
    else:
        response = client.get(f"/api/v1/executions/{params['id']}/history")
    response.raise_for_status()
    return response.json()


def _measure(cases: dict[str, Case], requests: int, run: Callable[[str, dict[str, Any]], Any]) -> None:
    print(f"  {'query':34} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  rows (mean; bulk: matched)")
    for name, case in cases.items():
        rng = random.Random(name)
        for _ in range(5):  # warm-up: connections, caches of plans and definitions
            run(*case(rng))
        times, sizes = [], []
        for _ in range(requests):
            kind, params = case(rng)
            started = time.perf_counter()
            result = run(kind, params)
            times.append((time.perf_counter() - started) * 1000)
            sizes.append(_size(kind, result))
        ms = [percentile(times, q) for q in (0.5, 0.95, 0.99)] + [max(times)]
        print(f"  {name:34} " + " ".join(f"{v:7.1f}" for v in ms) + f"  {sum(sizes) / len(sizes):9.1f}")


def _size(kind: str, result: Any) -> float:
    if kind == "bulk":
        return float(result[0] if isinstance(result, tuple) else result["matched"])
    if isinstance(result, tuple):
        return float(len(result[0])) if isinstance(result[0], list) else 1.0
    if isinstance(result, dict):
        return float(len(result.get("items") or result.get("events") or result.get("steps") or []))
    return 1.0


class _Recorder:
    """A connection stand-in that records the statements a reads function runs."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.statements = conn, []

    def execute(self, query: str, params: Any = None, **kwargs: Any) -> Any:
        self.statements.append((query, params))
        return self.conn.execute(query, params, **kwargs)


def _explain(conn: Any, cases: dict[str, Case]) -> None:
    print("\nEXPLAIN ANALYZE of one request of each list query:")
    for name, case in cases.items():
        kind, params = case(random.Random(name))
        if kind not in ("list", "bulk"):
            continue
        recorder = _Recorder(conn)
        _direct(recorder, kind, params)
        query, values = recorder.statements[0]  # a bulk dry run's count; the page of a list
        plan = [r["QUERY PLAN"] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, values)]
        print(f"  {name}: {params}")
        for line in plan:
            text = line.strip()
            if any(word in text for word in ("Scan", "Sort", "Limit", "Append", "BitmapAnd", "BitmapOr",
                                             "Execution Time", "Rows Removed", "Index Cond", "Filter:")):
                print(f"      {line.rstrip()[:150]}")


class _api_server:
    """`orchestrator api` on a free port with a fresh key, in a subprocess. The key's role is operator
    for the bulk dry runs (which send nothing); the server listens on 127.0.0.1 only."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def __enter__(self) -> tuple[str, str]:
        import httpx

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        key = uuid.uuid4().hex
        self.tmp = tempfile.TemporaryDirectory()
        keys = Path(self.tmp.name) / "keys.yaml"
        keys.write_text(f"keys: [{{name: bench, role: operator, sha256: {hashlib.sha256(key.encode()).hexdigest()}}}]\n")
        env = {**os.environ, "ORCH_DATABASE_URL": self.database_url, "ORCH_API_KEYS": str(keys)}
        env.pop("ORCH_DATABASE_SCHEMA", None)
        self.log = open(Path(self.tmp.name) / "api.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "api", "--host", "127.0.0.1",
                                      "--port", str(port)], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the API exited ({self.proc.returncode}): "
                                 + (Path(self.tmp.name) / "api.log").read_text()[-2000:])
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code < 500:
                    return base, key
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("the API did not answer /healthz within 30s")

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
