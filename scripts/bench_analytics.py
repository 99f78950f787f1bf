#!/usr/bin/env python3
"""Time of GET /api/v1/analytics's queries on a million executions.

    .venv/bin/python scripts/bench_analytics.py [--database orch_bench] [--runs 5] [--explain]

Reads the database scripts/bench_api.py seeds (`orch_bench`: 1,000,000
executions created evenly over 30 days, ~5 step rows each); run that first.
Only reads: it may run while bench_api.py measures. For windows of 1 hour, 24
hours, 7 and 31 days, over every workflow and over one, prints how many
executions ended in the window and the time of `analytics()` (every query of
the endpoint in one repeatable-read transaction, as the route runs them): the
fastest and the slowest of --runs runs. --explain prints the plans of the
24-hour window's queries.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from psycopg import conninfo  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from orchestrator.api.analytics import analytics, analytics_snapshot, window  # noqa: E402
from orchestrator.config import load_settings  # noqa: E402

WINDOWS = [("1h", timedelta(hours=1)), ("24h", timedelta(hours=24)), ("7d", timedelta(days=7)),
           ("31d", timedelta(days=31))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="orch_bench")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    url = conninfo.make_conninfo(load_settings().database_url, dbname=args.database)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        total = conn.execute("SELECT count(*) AS n, max(finished_at) AS last FROM workflow_executions").fetchone()
        if not total["n"]:
            print(f"{args.database} holds no executions: seed it with scripts/bench_api.py first")
            return 1
        workflow = conn.execute("SELECT workflow_name FROM workflow_executions GROUP BY 1 "
                                "ORDER BY count(*) DESC LIMIT 1").fetchone()["workflow_name"]
        print(f"{args.database}: {total['n']:,} executions; windows end at the last finish "
              f"({total['last']:%Y-%m-%d %H:%M}); one workflow = {workflow} (the busiest)\n")
        print(f"{'window':>6} {'workflow':>10} {'ended':>9} {'fastest ms':>11} {'slowest ms':>11}")
        for label, span in WINDOWS:
            for only in (None, workflow):
                win = window(total["last"] - span, total["last"], total["last"])
                times = []
                for _ in range(args.runs):
                    began = time.perf_counter()
                    doc = analytics_snapshot(conn, win, only)
                    times.append((time.perf_counter() - began) * 1000)
                print(f"{label:>6} {'one' if only else 'all':>10} {doc['totals']['ended']:>9,} "
                      f"{min(times):>11.0f} {max(times):>11.0f}")
        if args.explain:
            _explain(conn, total["last"])
    return 0


def _explain(conn: psycopg.Connection, last) -> None:
    """EXPLAIN ANALYZE of every statement analytics() runs for the 24-hour window."""
    win = window(last - timedelta(hours=24), last, last)

    class Explaining:
        def execute(self, query, params=None):
            plan = conn.execute(psycopg.sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + query, params).fetchall()
            print("\n".join(row["QUERY PLAN"] for row in plan), "\n")
            return conn.execute(query, params)

    with conn.transaction():
        conn.execute("SET LOCAL work_mem = '64MB'")
        conn.execute("SET LOCAL jit = off")
        analytics(Explaining(), win, None)


if __name__ == "__main__":
    sys.exit(main())
