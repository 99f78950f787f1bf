"""Analytics over the projection: throughput, success rate, durations, slow steps, failure reasons.

Everything is bounded by a time window (default the last 24 h, at most 31
days) read through indexes on `created_at` and `finished_at`
(migrations 0001 and 0006). Per-step figures come from the steps of the most
recent executions that ended in the window (at most STEP_SAMPLE of them, reached
through the step table's primary key), so a busy day never turns into a scan
of tens of millions of step rows; the answer says when it sampled.

Definitions used by the console and the docs:
- started: executions created in the bucket; finished: executions that ended in it, by status;
- success rate: completed / (completed + failed) of the executions that ended in the window
  (cancelled ones are an operator's choice, counted apart);
- durations: finished_at - started_at (created_at for a rejected start), in milliseconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from fastapi import APIRouter, Depends, Query
from psycopg import sql

from .auth import READER, ApiKey
from .console_models import Analytics as AnalyticsAnswer
from .context import ApiContext, context
from .errors import ERROR_RESPONSES, ApiError

__all__ = ["router", "analytics", "analytics_snapshot", "Window", "window", "bucket_for", "STEP_SAMPLE", "MAX_RANGE"]

MAX_RANGE = timedelta(days=31)
DEFAULT_RANGE = timedelta(hours=24)
STEP_SAMPLE = 10_000  # most recent ended executions whose steps the step figures read
TOP = 10
STATEMENT_TIMEOUT = "20s"
_BUCKETS = [timedelta(minutes=m) for m in (1, 5, 15, 30, 60, 180, 360, 720, 1440)]
_MAX_BUCKETS = 60


class Window:
    def __init__(self, since: datetime, until: datetime, bucket: timedelta) -> None:
        self.since, self.until, self.bucket = since, until, bucket


def bucket_for(span: timedelta) -> timedelta:
    """The smallest round bucket that cuts `span` into at most 60 bars."""
    for bucket in _BUCKETS:
        if span / bucket <= _MAX_BUCKETS:
            return bucket
    return _BUCKETS[-1]


def window(since: datetime | None, until: datetime | None, now: datetime) -> Window:
    """The window asked for, defaulted and checked; raises ValueError naming the parameter."""
    until = _aware(until) if until is not None else now
    try:
        since = _aware(since) if since is not None else until - DEFAULT_RANGE
    except OverflowError:  # until near year 1
        raise ValueError("until is too early") from None
    if since >= until:
        raise ValueError("since must be before until")
    if until - since > MAX_RANGE:
        raise ValueError(f"the window from since to until may span at most {MAX_RANGE.days} days")
    return Window(since, until, bucket_for(until - since))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


_DURATION_MS = "extract(epoch FROM (e.finished_at - coalesce(e.started_at, e.created_at))) * 1000"
_STEP_MS = "extract(epoch FROM (s.finished_at - s.started_at)) * 1000"
_LEAF = r"regexp_replace(s.step_name, '^.*\.', '')"  # pay_all[3].charge -> charge: one row per step of the definition


def analytics(conn: Any, win: Window, workflow: str | None = None) -> dict[str, Any]:
    """The figures of the window, as the API returns them (times ISO 8601, durations in ms)."""
    only = sql.SQL("AND e.workflow_name = %(workflow)s") if workflow else sql.SQL("")
    params = {"since": win.since, "until": win.until, "bucket": win.bucket, "workflow": workflow,
              "origin": datetime(2000, 1, 1, tzinfo=timezone.utc), "sample": STEP_SAMPLE, "top": TOP}

    def rows(query: str) -> list[dict[str, Any]]:
        cursor = conn.execute(sql.SQL(query).format(only=only), params)
        names = [c.name for c in cursor.description]
        return [row if isinstance(row, dict) else dict(zip(names, row)) for row in cursor.fetchall()]

    started = rows("""
        SELECT date_bin(%(bucket)s, e.created_at, %(origin)s) AS t, count(*) AS n
        FROM workflow_executions e
        WHERE e.created_at >= %(since)s AND e.created_at < %(until)s {only}
        GROUP BY 1""")
    finished = rows("""
        SELECT date_bin(%(bucket)s, e.finished_at, %(origin)s) AS t, e.status, count(*) AS n
        FROM workflow_executions e
        WHERE e.finished_at >= %(since)s AND e.finished_at < %(until)s {only}
        GROUP BY 1, 2""")
    in_flight = rows("""
        SELECT e.status, count(*) AS n FROM workflow_executions e
        WHERE e.status IN ('pending', 'running', 'compensating', 'paused') {only}
        GROUP BY 1""")
    workflows = rows(f"""
        SELECT e.workflow_name AS workflow, count(*) AS ended,
               count(*) FILTER (WHERE e.status = 'completed') AS completed,
               count(*) FILTER (WHERE e.status = 'failed') AS failed,
               count(*) FILTER (WHERE e.status = 'cancelled') AS cancelled,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY {_DURATION_MS}) AS p50_ms,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY {_DURATION_MS}) AS p95_ms,
               max({_DURATION_MS}) AS max_ms
        FROM workflow_executions e
        WHERE e.finished_at >= %(since)s AND e.finished_at < %(until)s {{only}}
        GROUP BY 1 ORDER BY ended DESC, workflow LIMIT 100""")
    # Each recent execution's steps through the primary key (execution_id, step_name): a
    # nested loop. OFFSET 0 keeps the planner from flattening the lateral subquery into a hash
    # join, which it prefers on its estimates and which reads the whole step table. The step
    # figures and the slowest runs come from one pass over the sample (`runs`, used twice, is
    # computed once), as two JSON arrays.
    sample = rows(f"""
        WITH recent AS (
            SELECT e.id, e.workflow_name FROM workflow_executions e
            WHERE e.finished_at >= %(since)s AND e.finished_at < %(until)s {{only}}
            ORDER BY e.finished_at DESC LIMIT %(sample)s),
        runs AS MATERIALIZED (
            SELECT r.workflow_name AS workflow, s.*
            FROM recent r CROSS JOIN LATERAL (
                SELECT s.execution_id, s.step_name, {_LEAF} AS step, s.phase, s.status, s.attempts,
                       s.started_at, {_STEP_MS} AS ms
                FROM step_executions s
                WHERE s.execution_id = r.id AND s.started_at IS NOT NULL AND s.finished_at IS NOT NULL
                OFFSET 0) s)
        SELECT
            (SELECT coalesce(json_agg(a), '[]') FROM (
                SELECT workflow, step, phase, count(*) AS runs,
                       count(*) FILTER (WHERE status = 'failed') AS failed,
                       sum(greatest(attempts - 1, 0)) AS retries,
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50_ms,
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95_ms,
                       max(ms) AS max_ms
                FROM runs GROUP BY 1, 2, 3 ORDER BY p95_ms DESC, workflow, step LIMIT 100) a) AS steps,
            (SELECT coalesce(json_agg(b), '[]') FROM (
                SELECT workflow, execution_id, step_name AS step, status, attempts,
                       to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS started_at,
                       ms AS duration_ms
                FROM runs ORDER BY ms DESC LIMIT %(top)s) b) AS slowest""")[0]
    steps, slowest = _json(sample["steps"]), _json(sample["slowest"])
    sampled = rows("""
        SELECT count(*) AS n FROM (SELECT 1 FROM workflow_executions e
            WHERE e.finished_at >= %(since)s AND e.finished_at < %(until)s {only} LIMIT %(sample)s + 1) x""")[0]["n"]
    failures = rows(r"""
        SELECT e.workflow_name AS workflow, regexp_replace(coalesce(e.failed_step, ''), '^.*\.', '') AS step,
               regexp_replace(left(coalesce(e.error, '(no error recorded)'), 300),
                              '[0-9a-fA-F-]{{16,}}|\d{{6,}}', '…', 'g') AS reason,  -- ids and numbers vary: one reason
               count(*) AS count, max(e.finished_at) AS last_seen,
               (array_agg(e.id ORDER BY e.finished_at DESC))[1] AS example_execution_id
        FROM workflow_executions e
        WHERE e.status = 'failed' AND e.finished_at >= %(since)s AND e.finished_at < %(until)s {only}
        GROUP BY 1, 2, 3 ORDER BY count DESC, last_seen DESC LIMIT %(top)s""")
    return _shape(win, workflow, started, finished, in_flight, workflows, steps, slowest, failures,
                  sampled > STEP_SAMPLE)


def _shape(win: Window, workflow: str | None, started: list, finished: list, in_flight: list, workflows: list,
           steps: list, slowest: list, failures: list, sampled: bool) -> dict[str, Any]:
    buckets: dict[datetime, dict[str, Any]] = {}
    t = _floor(win.since, win.bucket)
    while t < win.until:  # every bucket, empty ones included: the chart's x axis is time
        buckets[t] = {"t": t, "started": 0, "finished": 0, "completed": 0, "failed": 0, "cancelled": 0}
        t += win.bucket
    for row in started:
        buckets.setdefault(row["t"], _empty(row["t"]))["started"] += row["n"]
    totals = {"completed": 0, "failed": 0, "cancelled": 0}
    for row in finished:
        bucket = buckets.setdefault(row["t"], _empty(row["t"]))
        bucket["finished"] += row["n"]
        if row["status"] in totals:
            bucket[row["status"]] += row["n"]
            totals[row["status"]] += row["n"]
    decided = totals["completed"] + totals["failed"]
    for row in workflows:
        row["success_rate"] = _rate(row["completed"], row["completed"] + row["failed"])
    return {
        "workflow": workflow,
        "since": _iso(win.since),
        "until": _iso(win.until),
        "bucket_seconds": int(win.bucket.total_seconds()),
        "throughput": [{**b, "t": _iso(b["t"])} for _, b in sorted(buckets.items())],
        "totals": {"started": sum(r["n"] for r in started), "ended": sum(r["n"] for r in finished), **totals,
                   "success_rate": _rate(totals["completed"], decided),
                   "in_flight": {r["status"]: r["n"] for r in in_flight}},
        "workflows": [_numbers(r) for r in workflows],
        "steps": [_numbers(r) for r in steps],
        "slowest_steps": [_numbers(r) for r in slowest],
        "failure_reasons": [{**r, "last_seen": _iso(r["last_seen"])} for r in failures],
        "step_sample": {"executions": STEP_SAMPLE, "sampled": sampled},
    }


def _json(value: Any) -> list[dict[str, Any]]:
    """A json column: psycopg parses it; text when a caller's connection leaves it as text."""
    return json.loads(value) if isinstance(value, str) else list(value)


def _empty(t: datetime) -> dict[str, Any]:
    return {"t": t, "started": 0, "finished": 0, "completed": 0, "failed": 0, "cancelled": 0}


def _floor(t: datetime, bucket: timedelta) -> datetime:
    origin = datetime(2000, 1, 1, tzinfo=timezone.utc)  # the same origin as date_bin above
    return origin + ((t - origin) // bucket) * bucket


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    """Durations as whole milliseconds (percentile_cont gives floats, extract gives Decimals)."""
    return {k: (round(float(v)) if k.endswith("_ms") and v is not None else v) for k, v in row.items()}


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value is not None else None


def analytics_snapshot(conn: Any, win: Window, workflow: str | None = None) -> dict[str, Any]:
    """`analytics` in one read-only snapshot (every figure agrees with the others), with the
    session settings its queries want; `conn` is in autocommit mode, outside a transaction."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # A runaway window is stopped rather than left to load the database.
        conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        # Percentiles sort every duration of the window: in memory, not on disk.
        conn.execute("SET LOCAL work_mem = '64MB'")
        # The step sample's cost estimate is far above what the nested loop costs: compiling
        # it (JIT) takes longer than running it.
        conn.execute("SET LOCAL jit = off")
        return analytics(conn, win, workflow)


# -- the route ------------------------------------------------------------------------------------

router = APIRouter(prefix="/api/v1", tags=["analytics"], responses=ERROR_RESPONSES)
_CACHE: OrderedDict[tuple, tuple[float, dict[str, Any]]] = OrderedDict()  # params -> (expires, answer)
_CACHE_LOCK = threading.Lock()  # routes run in a thread pool
# Consoles poll every few seconds; those asking the same window share one answer. A window of
# days changes little in a minute and costs more: it is kept longer.
_CACHE_SECONDS, _CACHE_SECONDS_LONG = 5.0, 30.0
_CACHE_SIZE = 64


@router.get("/analytics", response_model=AnalyticsAnswer,
            summary="Throughput, success rate, durations and failures of a time window",
            description="Executions started and ended per time bucket (at most 60 buckets), the success rate "
                        "(completed / (completed + failed)), p50/p95/max durations per workflow and per step "
                        "(steps of the most recent 10,000 executions that ended in the window), the slowest "
                        "step runs and the most frequent failure reasons. `since`/`until` are ISO 8601; the "
                        "default window is the last 24 hours, the longest 31 days.")
def get_analytics(workflow: str | None = Query(None, max_length=300, description="only this workflow"),
                  since: datetime | None = Query(None, description="start of the window (default: until - 24 h)"),
                  until: datetime | None = Query(None, description="end of the window (default: now)"),
                  ctx: ApiContext = Depends(context), key: ApiKey = Depends(READER)) -> Any:
    try:
        win = window(since, until, datetime.now(timezone.utc))
    except ValueError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    cache_key = (ctx.settings.database_url, ctx.schema, workflow or None, win.since, win.until)
    with _CACHE_LOCK:
        cached = _CACHE.get(cache_key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    with ctx.connection() as conn:
        try:
            answer = analytics_snapshot(conn, win, workflow or None)
        except psycopg.errors.QueryCanceled:
            raise ApiError(503, "unavailable", f"the analytics queries took longer than {STATEMENT_TIMEOUT}: "
                                               "choose a shorter window or one workflow") from None
    with _CACHE_LOCK:
        keep = _CACHE_SECONDS if win.until - win.since <= timedelta(days=1) else _CACHE_SECONDS_LONG
        _CACHE[cache_key] = (time.monotonic() + keep, answer)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return answer
