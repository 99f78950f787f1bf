"""One shape for an execution, whether folded from Kafka or read from Postgres.

`from_state` and `from_rows` build the same JSON document (stable keys,
ISO 8601 UTC times, sensitive input values as "***"); `execution_panel`
renders it as rich tables for people: steps inside switch, loop and for_each
blocks indented under their composite (`parent_step`), with the composite's
progress (chosen branch, items or iteration) and a workflow step's child.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

from rich.console import Group
from rich.markup import escape
from rich.table import Table

from ..core.keys import frames, parent_step, prefix_of
from ..core.sensitive import redact
from ..core.state import ExecutionState, StepState
from .common import duration_text, epoch_ms, iso, json_ready, short, styled_status

__all__ = ["from_state", "from_rows", "execution_panel", "steps_table", "step_order", "COMPENSATION_KEYS",
           "compensation_of_state", "compensation_of_row", "state_waiting_for", "block_of_state",
           "progress_text", "step_tree"]

# The block columns of a step (the projection's columns, `block_of_state` from a folded state).
BLOCK_KEYS = ("branch", "items_total", "iterations_started", "iterations_completed", "iterations_failed")
# At most this many steps are listed under one composite; the rest are counted.
INNER_ROWS = 20
ACTIVE = ("running", "retrying", "waiting")

# The `compensation` object of an execution document; the projection's columns
# are `compensation_<key>`.
COMPENSATION_KEYS = ("status", "trigger", "reason", "error", "execution_id")


def compensation_of_state(state: ExecutionState) -> dict[str, Any] | None:
    """None, or status (running | completed | failed), trigger (failed | cancelled),
    reason (why the execution is ending), error (why compensation failed) and the
    compensation workflow's execution id."""
    c = state.compensation
    if c is None:
        return None
    return {
        "status": "running" if c.outcome is None else c.outcome,
        "trigger": c.trigger,
        "reason": c.error,
        "error": c.outcome_error,
        "execution_id": c.child_execution_id,
    }


def compensation_of_row(row: dict[str, Any]) -> dict[str, Any] | None:
    """The same object from a `workflow_executions` row (None when every column is null)."""
    found = {key: row.get(f"compensation_{key}") for key in COMPENSATION_KEYS}
    return None if all(v is None for v in found.values()) else found


def state_waiting_for(step: StepState) -> str | None:
    """What a waiting step waits for, as the projection's `waiting_for` column has it
    (the event type, or "signal:<name>"; projections.apply.waiting_for)."""
    wait = step.wait
    if wait is None:
        return None
    return f"signal:{wait.signal}" if wait.signal is not None else wait.event_type


def block_of_state(step: StepState) -> dict[str, Any]:
    """A switch's, loop's or for_each's progress as the projection's columns have it
    (`branch`, `items_total`, `iterations_*`; None where the step has no such thing)."""
    found: dict[str, Any] = dict.fromkeys(BLOCK_KEYS)
    block = getattr(step, "block", None)
    if block is None:
        return found
    if block.kind == "switch":
        found["branch"] = block.case
        return found
    if block.kind == "for_each":
        found["items_total"] = len(block.items) if block.items is not None else None
    found["iterations_started"] = block.started
    found["iterations_completed"] = len(block.outputs)
    found["iterations_failed"] = len(block.failed)
    return found


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


def from_state(state: ExecutionState, definition: Any = None,
               phases: dict[str, str] | None = None) -> dict[str, Any]:
    """The execution document of a state folded from events (`phases`: each
    step's phase as a replay saw it; else the definition's compensation steps)."""
    compensation_steps = set(definition.compensation) if definition is not None else set()
    steps = []
    for name in step_order(state.steps, definition):
        s = state.step(name)
        phase = (phases or {}).get(name) or ("compensation" if name in compensation_steps else "main")
        steps.append({
            "name": name,
            "phase": phase,
            "parent_step": parent_step(name, {}),  # the iteration's composite; switch cases need the definition
            "status": s.status,
            "attempts": s.attempt,
            "output": redact(s.output),
            "error": s.error,
            "started_at": iso(s.started_at),
            "finished_at": iso(s.finished_at),
            "duration_ms": _duration_ms(s.started_at, s.finished_at),
            "waiting_for": state_waiting_for(s),
            "wait_until": iso(s.wait.timeout_at) if s.wait is not None else None,
            "child_execution_id": getattr(s, "child_execution_id", None),
            **block_of_state(s),
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
        "parent_execution_id": state.parent_execution_id,
        "parent_relation": state.parent_relation,
        "parent_step": None,  # the parent's workflow step: known to the projection (`status`)
        "compensation": compensation_of_state(state),
        "steps": steps,
    }


def from_rows(row: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The execution document of a `workflow_executions` row and its `step_executions` rows
    (in the order given; `execution_panel` nests steps under their `parent_step`)."""
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
        "parent_execution_id": row.get("parent_execution_id"),
        "parent_relation": row.get("parent_relation"),
        "parent_step": row.get("parent_step"),  # the parent's workflow step, when the caller looked it up
        "compensation": compensation_of_row(row),
        "steps": [
            {
                "name": s["step_name"],
                "phase": s.get("phase") or "main",
                "type": s["step_type"],
                "status": s["status"],
                "attempts": s["attempts"],
                "output": s["output"],
                "error": s["error"],
                "status_reason": s["status_reason"],
                "started_at": iso(s["started_at"]),
                "finished_at": iso(s["finished_at"]),
                "duration_ms": _duration_ms(ms("started_at", s), ms("finished_at", s)),
                "waiting_for": s.get("waiting_for"),
                "wait_until": iso(s.get("wait_until")),
                "breaker": s.get("breaker"),
                "parent_step": s.get("parent_step"),
                "child_execution_id": s.get("child_execution_id"),
                **{key: s.get(key) for key in BLOCK_KEYS},
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


def progress_text(s: dict[str, Any]) -> str | None:
    """A composite's progress (`branch big`, `412/1000 items, 3 failed, 10 running`,
    `iteration 4`) or a workflow step's child (`child abc.charge`); None for other steps."""
    if s.get("branch") is not None:
        return f"branch {s['branch']}"
    started, total = s.get("iterations_started"), s.get("items_total")
    if started is None and total is None:
        return f"child {s['child_execution_id']}" if s.get("child_execution_id") else None
    completed, failed = s.get("iterations_completed") or 0, s.get("iterations_failed") or 0
    if total is None:  # a loop
        return f"iteration {started}" + (f", {failed} failed" if failed else "")
    running = (started or 0) - completed - failed if s["status"] in ACTIVE else 0
    return ", ".join([f"{completed + failed}/{total} items", *([f"{failed} failed"] if failed else []),
                      *([f"{running} running"] if running > 0 else [])])


def _step_detail(s: dict[str, Any]) -> str | None:
    progress = progress_text(s)
    if s["status"] == "waiting" and s.get("waiting_for"):
        return f"waiting for {s['waiting_for']}"
    if s["status"] == "waiting" and s.get("wait_until"):  # a delay
        return f"until {s['wait_until']}"
    detail = s.get("error") or (s.get("status_reason") if s["status"] == "skipped" else None)
    if detail is None and s["status"] == "completed" and s.get("output") is not None and (
            progress is None or s.get("child_execution_id")):  # a block's output is its steps'
        detail = short(s["output"])
    if s.get("breaker") in ("open", "half_open") and s["status"] in ("running", "retrying", "failed"):
        detail = f"{detail} (breaker {s['breaker']})" if detail else f"breaker {s['breaker']}"
    return "; ".join(x for x in (progress, detail) if x) or None


def step_tree(steps: list[dict[str, Any]], limit: int | None = INNER_ROWS) -> list[tuple[int, dict[str, Any] | str]]:
    """(depth, step) in display order: each step followed by the steps its blocks ran
    (`parent_step`), in the order given (a loop's or for_each's by iteration). Under a composite with more than `limit`
    steps, active and unsuccessful ones are kept first, then the latest others, and
    an item `(depth, "… N more: ...")` counts what is left out."""
    names = {s["name"] for s in steps}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in steps:
        parent = s.get("parent_step")
        children.setdefault(parent if parent in names else None, []).append(s)
    for parent, rows in children.items():
        if parent is not None:  # iterations in index order; within one, as given
            rows.sort(key=lambda s: _iteration_index(s["name"]))
    out: list[tuple[int, dict[str, Any] | str]] = []

    def visit(parent: str | None, depth: int) -> None:
        rows, hidden = children.get(parent, []), []
        if limit is not None and parent is not None:
            rows, hidden = _some_rows(rows, limit)
        for s in rows:
            out.append((depth, s))
            visit(s["name"], depth + 1)
        if hidden:
            counts: dict[str, int] = {}
            for s in hidden:
                counts[s["status"]] = counts.get(s["status"], 0) + 1
            out.append((depth, f"… {len(hidden)} more: " + ", ".join(f"{n} {st}" for st, n in counts.items())))

    visit(None, 0)
    return out


def _iteration_index(key: str) -> int:
    prefix = prefix_of(key)
    return frames(prefix)[-1][1] if prefix else -1


def _some_rows(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(listed, left out) of more than `limit` rows: active and unsuccessful ones first,
    then the last others, in their order."""
    if len(rows) <= limit:
        return rows, []
    notable = [i for i, s in enumerate(rows) if s["status"] not in ("completed", "skipped", "pending")][:limit]
    others = sorted(set(range(len(rows))) - set(notable))
    keep = set(notable) | set(others[len(others) - (limit - len(notable)):])
    return ([s for i, s in enumerate(rows) if i in keep], [s for i, s in enumerate(rows) if i not in keep])


def _step_status(status: str) -> str:
    # A withdrawn step is set aside like a skipped one, not an error.
    return "[dim]cancelled[/dim]" if status == "cancelled" else styled_status(status)


def steps_table(doc: dict[str, Any], *, live: bool = False) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    tree = step_tree(doc["steps"])
    widest = max((2 * depth + len(s["name"]) for depth, s in tree if isinstance(s, dict)), default=4)
    phases = any(s.get("phase") == "compensation" for s in doc["steps"])
    table.add_column("step", no_wrap=True, min_width=min(widest, 40))
    if phases:
        table.add_column("phase", no_wrap=True)
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("attempts", no_wrap=True)
    table.add_column("duration", no_wrap=True)
    table.add_column("detail", ratio=1)
    for depth, s in tree:
        indent = "  " * depth
        if isinstance(s, str):  # steps left out under a large block
            table.add_row(f"[dim]{escape(indent + s)}[/dim]", *([""] if phases else []), "", "", "", "")
            continue
        active = s["status"] in ACTIVE
        detail = _step_detail(s)
        table.add_row(
            escape(indent + s["name"]),
            *(["[yellow]compensation[/yellow]" if s.get("phase") == "compensation" else "main"] if phases else []),
            _step_status(s["status"]),
            str(s["attempts"] or ""),
            _live_duration(s["started_at"], s["finished_at"], live and active),
            escape(short(detail, 80)) if detail else "",
        )
    return table


def _compensation_text(c: dict[str, Any]) -> str:
    trigger = {"failed": "the execution failed", "cancelled": "the execution was cancelled"}.get(
        c.get("trigger") or "", c.get("trigger") or "")
    text = styled_status(c.get("status"))
    if trigger or c.get("reason"):
        text += escape(" (" + ": ".join(x for x in (trigger, c.get("reason")) if x) + ")")
    if c.get("execution_id"):
        text += escape(f"; workflow execution {c['execution_id']}")
    if c.get("error"):
        text += f"; [red]{escape(c['error'])}[/red]"
    return text


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
    if doc.get("parent_execution_id"):
        why = ", ".join(x for x in (doc.get("parent_relation"),
                                    f"step {doc['parent_step']}" if doc.get("parent_step") else None) if x)
        head.add_row("started by", escape(doc["parent_execution_id"] + (f" ({why})" if why else "")))
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
    if doc.get("compensation"):
        head.add_row("compensation", _compensation_text(doc["compensation"]))
    for child in doc.get("children") or ():
        if child.get("relation") == "subworkflow":
            continue  # shown on its workflow step's row
        head.add_row("started", escape(f"{child['execution_id']} ({child.get('relation') or 'child'}, ")
                     + styled_status(child.get("status")) + ")")
    if doc.get("output") is not None:
        head.add_row("output", escape(json.dumps(json_ready(doc["output"]), ensure_ascii=False, indent=2)))
    parts: list[Any] = [head]
    if doc["steps"]:
        parts += ["", steps_table(doc, live=live)]
    return Group(*parts)
