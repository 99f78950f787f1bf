"""`orchestrator status ID` (`--follow`: follow.py) and `orchestrator list`: the PostgreSQL projection."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from projections.step_order import STEPS_SQL, definition_order, in_definition_order

from .common import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    STATUS_STYLES,
    CliError,
    console,
    echo_json,
    get_settings,
    iso,
    short,
    styled_status,
    warn,
)
from .pg import connect, query
from .render import execution_panel, from_rows

__all__ = ["status", "list_executions", "load_projection", "parent_step"]

STATUSES = ("pending", "running", "paused", "compensating", "completed", "failed", "cancelled")


def _definition_order(conn: Any, name: str, version: str | None) -> list[str]:
    """Step names in the order the definition lists them (projections/step_order.py)."""
    if version is None:
        return []
    rows = query(conn, "SELECT source FROM workflow_definitions WHERE name = %s AND version = %s", (name, version))
    return definition_order(rows[0]["source"]) if rows else []


def load_projection(conn: Any, execution_id: str, *, orders: dict[Any, list[str]] | None = None,
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The execution's row and its step rows (in definition order), or None.
    `orders`: a cache of definition orders by (name, version), for callers that poll."""
    rows = query(conn, "SELECT * FROM workflow_executions WHERE id = %s", (execution_id,))
    if not rows:
        return None
    row = rows[0]
    steps = query(conn, STEPS_SQL, (execution_id,))
    key = (row["workflow_name"], row["workflow_version"])
    names = orders.get(key) if orders is not None else None
    if names is None:
        names = _definition_order(conn, *key)
        if orders is not None and names:  # an unknown definition may be projected later
            orders[key] = names
    return row, in_definition_order(steps, names)  # stable: unknown ones keep time order


def load_children(conn: Any, execution_id: str) -> list[dict[str, Any]]:
    """The executions this one started (a compensation workflow), oldest first."""
    rows = query(conn, "SELECT id, parent_relation, workflow_name, workflow_version, status "
                       "FROM workflow_executions WHERE parent_execution_id = %s ORDER BY created_at, id",
                 (execution_id,))
    return [{"execution_id": r["id"], "relation": r["parent_relation"], "workflow_name": r["workflow_name"],
             "workflow_version": r["workflow_version"], "status": r["status"]} for r in rows]


def _until_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from .follow import parse_until

    if value is None:
        return None
    try:
        return parse_until(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _since_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from .follow import parse_since

    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-11-27T08:28:33.500Z)") from None


def parent_step(conn: Any, row: dict[str, Any]) -> str | None:
    """The parent's workflow step that started this execution (relation subworkflow)."""
    if row.get("parent_relation") != "subworkflow" or not row.get("parent_execution_id"):
        return None
    found = query(conn, "SELECT step_name FROM step_executions WHERE child_execution_id = %s "
                        "AND execution_id = %s", (row["id"], row["parent_execution_id"]))
    return found[0]["step_name"] if found else None


def _document(conn: Any, found: tuple[dict[str, Any], list[dict[str, Any]]], execution_id: str) -> dict[str, Any]:
    doc = from_rows(*found)
    doc["parent_step"] = parent_step(conn, found[0])
    doc["children"] = load_children(conn, execution_id)
    return doc


@click.command()
@click.argument("execution_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True,
              help="Print each change of the execution's or a step's status until --until holds.")
@click.option("--until", default=None, metavar="ended|waiting[:STEP]", callback=_until_option,
              help="With --follow: stop when the execution ended (the default; exit 0 only if it "
                   "completed), or when a step (STEP) waits for its event or signal.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="With --follow: give up after this long (exit 2).")
@click.option("--since", default=None, metavar="TIME", callback=_since_option,
              help="With --follow: leave out changes recorded before TIME (ISO 8601, UTC unless it "
                   "says otherwise), e.g. what an earlier --follow printed.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (with --follow: the last one, no lines).")
def status(execution_id: str, follow: bool, until: Any, timeout: float | None, since: float | None,
           as_json: bool) -> None:
    """Show execution ID and its steps, as projected in PostgreSQL.

    With --follow, poll the projection and print a line per change: the time
    since the execution started, the step (or "(execution)"), its status, the
    attempt when > 1, and the error, skip reason or awaited event. Exit 0
    when --until holds (for `ended`: only if the execution completed, else
    1); 1 when it can no longer hold (the execution ended, or STEP finished,
    before STEP waited); 2 when --timeout ran out first.
    """
    if not follow:
        for name, value in (("--until", until), ("--timeout", timeout), ("--since", since)):
            if value is not None:
                raise click.UsageError(f"{name} only applies with --follow")
    settings = get_settings()
    if follow:
        _follow(settings, execution_id, until, timeout, since, as_json)
        return
    with connect(settings) as conn:
        found = load_projection(conn, execution_id)
        doc = _document(conn, found, execution_id) if found is not None else None
    if doc is None:
        raise CliError(_not_found(execution_id))
    if as_json:
        echo_json(doc)
    else:
        console().print(execution_panel(doc))


def _not_found(execution_id: str, within: float | None = None) -> str:
    when = f" within the --timeout ({within:g}s)" if within is not None else ""
    return (f"execution {execution_id} not found in the projection{when} (not started, or not "
            f"projected yet: `orchestrator history {execution_id}` reads Kafka)")


def _follow(settings: Any, execution_id: str, until: Any, timeout: float | None, since: float | None,
            as_json: bool) -> None:
    import time

    from rich.text import Text

    from .follow import EXECUTION, Until, change_parts, describe_until, follow_projection

    until = until or Until("ended")
    out = console()
    styles = {"time": "dim", "subject": "bold", "detail": ""}

    def style(text: str, part: str, subject: str) -> str:
        if part != "status":
            return styles[part]
        if text == "cancelled" and subject != EXECUTION:  # a withdrawn step: set aside like a skipped one
            return STATUS_STYLES["skipped"]
        return STATUS_STYLES.get(text, "")

    def emit(change: Any, width: int) -> None:
        if as_json:
            return
        out.print(Text.assemble(*((text, style(text, part, change.subject))
                                  for text, part in change_parts(change, width))))

    def slow() -> None:
        warn(f"execution {execution_id} is not in the projection yet; still looking"
             + ("" if timeout is not None else " (Ctrl-C stops)"))

    deadline = None if timeout is None else time.monotonic() + timeout
    with connect(settings) as conn:
        try:
            result = follow_projection(conn, execution_id, until, deadline=deadline, emit=emit, since=since,
                                       on_slow=slow)
        except KeyboardInterrupt:
            raise CliError(f"stopped following; execution {execution_id} goes on", exit_code=130) from None
        doc = result.doc
        if doc is not None:
            doc["parent_step"] = parent_step(conn, {"id": execution_id, **doc})
            doc["children"] = load_children(conn, execution_id)
    if doc is None:
        raise CliError(_not_found(execution_id, timeout), exit_code=EXIT_TIMEOUT)
    if as_json:
        echo_json({**doc, "timed_out": result.timed_out})
    if result.timed_out:
        raise CliError(f"execution {execution_id}: {describe_until(until)} not reached after the --timeout "
                       f"({timeout:g}s); it is {doc['status']} and goes on", exit_code=EXIT_TIMEOUT)
    if result.problem:
        raise CliError(result.problem)
    if until.kind == "ended" and doc["status"] != "completed":
        raise SystemExit(EXIT_FAILED)


@click.command("list")
@click.option("--status", "status_", type=click.Choice(STATUSES), default=None, help="Only this status.")
@click.option("--workflow", default=None, metavar="NAME[@VERSION]", help="Only this workflow (and version).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_executions(status_: str | None, workflow: str | None, limit: int, as_json: bool) -> None:
    """Executions from the projection, newest first."""
    where: list[str] = []
    params: list[Any] = []
    if status_:
        where.append("status = %s")
        params.append(status_)
    if workflow:
        name, _, version = workflow.partition("@")
        where.append("workflow_name = %s")
        params.append(name)
        if version:
            where.append("workflow_version = %s")
            params.append(version)
    sql = ("SELECT id, workflow_name, workflow_version, status, error, created_at, started_at, finished_at, "
           "parent_execution_id, parent_relation, compensation_status "
           "FROM workflow_executions" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY created_at DESC, id DESC LIMIT %s")  # as the API lists: 0005's indexes
    params.append(limit)
    settings = get_settings()
    with connect(settings) as conn:
        rows = query(conn, sql, params)
    items = [{
        "execution_id": r["id"],
        "workflow_name": r["workflow_name"],
        "workflow_version": r["workflow_version"],
        "status": r["status"],
        "error": r["error"],
        "created_at": iso(r["created_at"]),
        "started_at": iso(r["started_at"]),
        "finished_at": iso(r["finished_at"]),
        "parent_execution_id": r["parent_execution_id"],
        "parent_relation": r["parent_relation"],
        "compensation_status": r["compensation_status"],
    } for r in rows]
    if as_json:
        echo_json({"executions": items})
        return
    if not items:
        click.echo("no executions" + (" match" if where else ""))
        return
    table = Table("id", "workflow", "status", "created", "finished", "error", box=None, pad_edge=False,
                  header_style="bold")
    for item in items:
        workflow_text = item["workflow_name"] + (f"@{item['workflow_version']}" if item["workflow_version"] else "")
        table.add_row(escape(item["execution_id"]), escape(workflow_text), styled_status(item["status"]),
                      item["created_at"] or "", item["finished_at"] or "", escape(short(item["error"], 50)))
    console().print(table)
