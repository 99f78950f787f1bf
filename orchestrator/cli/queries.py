"""`orchestrator status ID` and `orchestrator list`: the PostgreSQL projection."""

from __future__ import annotations

from typing import Any

import click
import yaml
from rich.markup import escape
from rich.table import Table

from .common import CliError, console, echo_json, get_settings, iso, short, styled_status
from .pg import connect, query
from .render import execution_panel, from_rows

__all__ = ["status", "list_executions", "load_projection"]

STATUSES = ("pending", "running", "compensating", "completed", "failed", "cancelled")


def _definition_order(conn: Any, name: str, version: str | None) -> list[str]:
    """Step names in the order the definition lists them (main steps, then compensation)."""
    if version is None:
        return []
    rows = query(conn, "SELECT source FROM workflow_definitions WHERE name = %s AND version = %s", (name, version))
    if not rows:
        return []
    try:
        spec = (yaml.safe_load(rows[0]["source"]) or {}).get("spec") or {}
        names = [s.get("name") for s in spec.get("steps") or ()]
        names += [s.get("name") for s in (spec.get("compensation") or {}).get("steps") or ()]
    except (yaml.YAMLError, AttributeError, TypeError):
        return []
    return [n for n in names if isinstance(n, str)]


def load_projection(conn: Any, execution_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The execution's row and its step rows (in definition order), or None."""
    rows = query(conn, "SELECT * FROM workflow_executions WHERE id = %s", (execution_id,))
    if not rows:
        return None
    row = rows[0]
    steps = query(conn, "SELECT * FROM step_executions WHERE execution_id = %s "
                        "ORDER BY started_at NULLS LAST, step_name", (execution_id,))
    order = {name: i for i, name in enumerate(_definition_order(conn, row["workflow_name"],
                                                                  row["workflow_version"]))}
    steps.sort(key=lambda s: order.get(s["step_name"], len(order)))  # stable: unknown ones keep time order
    return row, steps


def load_children(conn: Any, execution_id: str) -> list[dict[str, Any]]:
    """The executions this one started (a compensation workflow), oldest first."""
    rows = query(conn, "SELECT id, parent_relation, workflow_name, workflow_version, status "
                       "FROM workflow_executions WHERE parent_execution_id = %s ORDER BY created_at, id",
                 (execution_id,))
    return [{"execution_id": r["id"], "relation": r["parent_relation"], "workflow_name": r["workflow_name"],
             "workflow_version": r["workflow_version"], "status": r["status"]} for r in rows]


@click.command()
@click.argument("execution_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(execution_id: str, as_json: bool) -> None:
    """Show execution ID and its steps, as projected in PostgreSQL."""
    settings = get_settings()
    with connect(settings) as conn:
        found = load_projection(conn, execution_id)
        children = load_children(conn, execution_id) if found is not None else []
    if found is None:
        raise CliError(f"execution {execution_id} not found in the projection (not started, or not "
                       f"projected yet: `orchestrator history {execution_id}` reads Kafka)")
    doc = from_rows(*found)
    doc["children"] = children
    if as_json:
        echo_json(doc)
    else:
        console().print(execution_panel(doc))


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
           + " ORDER BY created_at DESC, id LIMIT %s")
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
