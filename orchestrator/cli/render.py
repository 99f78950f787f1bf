"""One shape for an execution, whether folded from Kafka or read from Postgres.

`from_state` and `from_rows` build the same JSON document (stable keys,
ISO 8601 UTC times, sensitive input values as "***"); `execution_panel`
renders it as rich tables for people.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

from rich.console import Group
from rich.markup import escape
from rich.table import Table

from ..core.sensitive import redact
from ..core.state import ExecutionState
from .common import duration_text, epoch_ms, iso, json_ready, short, styled_status

__all__ = ["from_state", "from_rows", "execution_panel", "steps_table", "step_order"]


def _duration_ms(start: int | None, end: int | None) -> int | None:
    return None if start is None or end is None else max(0, end - start)


def step_order(state_steps: Iterable[str], definition: Any = None) -> list[str]:
    """Steps of the definition in listed order (compensation after), then any others."""
    state_steps = list(state_steps)
    names: list[str] = []
    if definition is not None:  # a DefinitionInfo
        names += definition.steps
        names += [n for n in definition.compensation if n in state_steps]
    return list(dict.fromkeys([*names, *state_steps]))


def from_state(state: ExecutionState, definition: Any = None) -> dict[str, Any]:
    """The execution document of a state folded from events."""
    steps = []
    for name in step_order(state.steps, definition):
        s = state.step(name)
        steps.append({
            "name": name,
            "status": s.status,
            "attempts": s.attempt,
            "output": redact(s.output),
            "error": s.error,
            "started_at": iso(s.started_at),
            "finished_at": iso(s.finished_at),
            "duration_ms": _duration_ms(s.started_at, s.finished_at),
        })
    return {
        "execution_id": state.execution_id,
        "workflow_name": state.workflow_name or None,
        "workflow_version": state.workflow_version or None,
        "status": "pending" if state.status == "new" else state.status,  # nothing recorded yet
        "input": redact(state.input),
        "output": redact(state.output),
        "error": state.error,
        "failed_step": state.failed_step,
        "requested_by": state.requested_by,
        "started_at": iso(state.started_at),
        "finished_at": iso(state.finished_at),
        "duration_ms": _duration_ms(state.started_at, state.finished_at),
        "sequence": state.sequence,
        "steps": steps,
    }


def from_rows(row: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The execution document of a `workflow_executions` row and its `step_executions` rows."""
    def ms(name: str, r: dict[str, Any]) -> int | None:
        return epoch_ms(r.get(name))

    return {
        "execution_id": row["id"],
        "workflow_name": row["workflow_name"],
        "workflow_version": row["workflow_version"],
        "status": row["status"],
        "input": row["input"],
        "output": row["output"],
        "error": row["error"],
        "failed_step": row["failed_step"],
        "requested_by": row["requested_by"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "updated_at": iso(row["updated_at"]),
        "duration_ms": _duration_ms(ms("started_at", row), ms("finished_at", row)),
        "sequence": row["last_sequence"],
        "steps": [
            {
                "name": s["step_name"],
                "type": s["step_type"],
                "status": s["status"],
                "attempts": s["attempts"],
                "output": s["output"],
                "error": s["error"],
                "status_reason": s["status_reason"],
                "started_at": iso(s["started_at"]),
                "finished_at": iso(s["finished_at"]),
                "duration_ms": _duration_ms(ms("started_at", s), ms("finished_at", s)),
            }
            for s in steps
        ],
    }


def _parse_iso_ms(text: str | None) -> int | None:
    if text is None:
        return None
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _live_duration(start: str | None, end: str | None, running: bool) -> str:
    start_ms = _parse_iso_ms(start)
    end_ms = _parse_iso_ms(end)
    if end_ms is None and running:
        end_ms = int(time.time() * 1000)
    return duration_text(start_ms, end_ms)


def steps_table(doc: dict[str, Any], *, live: bool = False) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    widest = max((len(s["name"]) for s in doc["steps"]), default=4)
    table.add_column("step", no_wrap=True, min_width=min(widest, 40))
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("attempts", no_wrap=True)
    table.add_column("duration", no_wrap=True)
    table.add_column("detail", ratio=1)
    for s in doc["steps"]:
        active = s["status"] in ("running", "retrying", "waiting")
        detail = s.get("error") or (s.get("status_reason") if s["status"] == "skipped" else None)
        if detail is None and s["status"] == "completed" and s.get("output") is not None:
            detail = short(s["output"])
        table.add_row(
            escape(s["name"]),
            styled_status(s["status"]),
            str(s["attempts"] or ""),
            _live_duration(s["started_at"], s["finished_at"], live and active),
            escape(short(detail, 80)) if detail else "",
        )
    return table


def execution_panel(doc: dict[str, Any], *, live: bool = False, waited_s: float | None = None) -> Group:
    """Header lines, the output or error, and the steps table (`waited_s`: the live view's clock)."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("execution", escape(doc["execution_id"]))
    workflow = doc.get("workflow_name") or "?"
    if doc.get("workflow_version"):
        workflow += f"@{doc['workflow_version']}"
    head.add_row("workflow", escape(workflow))
    head.add_row("status", styled_status(doc["status"]))
    if doc.get("started_at"):
        timing = doc["started_at"]
        if doc.get("finished_at"):
            timing += f" → {doc['finished_at']}"
        running = live and doc["status"] not in ("completed", "failed", "cancelled")
        elapsed = _live_duration(doc["started_at"], doc.get("finished_at"), running)
        head.add_row("time", f"{timing} ({elapsed})" if elapsed else timing)
    if waited_s is not None:
        head.add_row("waiting", f"{duration_text(0, waited_s * 1000)} [dim](Ctrl-C stops waiting, "
                                "not the execution)[/dim]")
    if doc.get("error"):
        failed = f" (step {doc['failed_step']})" if doc.get("failed_step") else ""
        head.add_row("error", f"[red]{escape(doc['error'])}[/red]{escape(failed)}")
    if doc.get("output") is not None:
        head.add_row("output", escape(json.dumps(json_ready(doc["output"]), ensure_ascii=False, indent=2)))
    parts: list[Any] = [head]
    if doc["steps"]:
        parts += ["", steps_table(doc, live=live)]
    return Group(*parts)
