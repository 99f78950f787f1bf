"""`orchestrator replay --all`: every projected execution checked in one pass over
the events topic, up to the offsets the projection has stored (what it has
seen), so a projector that lags behind is not a difference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape

from ..codec import Codec
from ..core.state import ExecutionState
from .audit import Fold, shown, compare, decode_entry
from .common import console, echo_json, get_settings, short, styled_status
from .kafka_io import read_partitions, require_topics

__all__ = ["AuditReport", "ExecutionAudit", "audit_all", "replay_all"]

@dataclass
class ExecutionAudit:
    execution_id: str
    workflow_name: str | None
    workflow_version: str | None
    status: str | None  # folded from Kafka (None: no events)
    projection_status: str | None  # None: no row
    events: int
    differences: list[dict[str, Any]]
    history_problems: list[str]

    @property
    def consistent(self) -> bool:
        return not self.differences and not self.history_problems

    def as_json(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "workflow_name": self.workflow_name,
            "workflow_version": self.workflow_version,
            "status": self.status,
            "projection_status": self.projection_status,
            "events": self.events,
            "differences": self.differences,
            "history_problems": self.history_problems,
        }


@dataclass
class AuditReport:
    """`replay --all`: every execution, folded from Kafka up to the projection's offsets."""

    workflow: str | None
    executions: list[ExecutionAudit] = field(default_factory=list)
    events: int = 0  # event records folded (of the checked executions)
    projected_offsets: dict[int, int] = field(default_factory=dict)  # partition -> the projection's next offset
    unprojected_events: int = 0  # records above the projection's offsets: not read by it yet, not checked

    @property
    def inconsistent(self) -> list[ExecutionAudit]:
        return [a for a in self.executions if not a.consistent]

    @property
    def consistent(self) -> bool:
        return not self.inconsistent

    def as_json(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "executions": len(self.executions),
            "events": self.events,
            "inconsistent": [a.as_json() for a in self.inconsistent],
            "consistent": self.consistent,
            "projected_offsets": {str(p): o for p, o in sorted(self.projected_offsets.items())},
            "unprojected_events": self.unprojected_events,
        }


def _workflow_filter(workflow: str | None) -> tuple[str, str | None] | None:
    if not workflow:
        return None
    name, _, version = workflow.partition("@")
    return name, version or None


def _projection_rows(conn: Any, topic: str, wanted: tuple[str, str | None] | None
                     ) -> tuple[dict[int, int], dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]]:
    """The projection's offsets on `topic` and its rows, from one snapshot (they are written together)."""
    from projections.batch import PROJECTION

    from .pg import query

    where, params = "", []
    if wanted is not None:
        where = " WHERE e.workflow_name = %s" + (" AND e.workflow_version = %s" if wanted[1] else "")
        params = [p for p in wanted if p]
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        offsets = {r["partition"]: r["next_offset"] for r in query(
            conn, "SELECT partition, next_offset FROM projection_offsets WHERE projection = %s AND topic = %s",
            (PROJECTION, topic))}
        rows = {r["id"]: (r, []) for r in query(conn, "SELECT * FROM workflow_executions e" + where, params)}
        for step in query(conn, "SELECT s.* FROM step_executions s JOIN workflow_executions e "
                                "ON e.id = s.execution_id" + where, params):
            rows[step["execution_id"]][1].append(step)
    return offsets, rows


def audit_all(settings: Any, conn: Any, workflow: str | None = None) -> AuditReport:
    """Fold every execution on the events topic (one pass, up to the offsets the
    projection has stored, read in the same snapshot as its rows) and compare
    each with its rows. `workflow`: NAME or NAME@VERSION."""
    topic = settings.topics.events
    require_topics(settings, topic)
    wanted = _workflow_filter(workflow)
    offsets, rows = _projection_rows(conn, topic, wanted)
    partitions = range(settings.partitions)
    report = AuditReport(workflow, projected_offsets={p: offsets.get(p, 0) for p in partitions})

    def matches(state: ExecutionState) -> bool:
        return wanted is None or (state.workflow_name == wanted[0]
                                  and wanted[1] in (None, state.workflow_version))

    codec = Codec.default()
    folds: dict[str, Fold] = {}
    others: set[str] = set()  # started executions of other workflows: not folded further
    for msg in read_partitions(settings, topic, partitions):
        if msg.offset() >= report.projected_offsets[msg.partition()]:
            report.unprojected_events += 1  # the projector has not read it yet: nothing to compare
            continue
        key = (msg.key() or b"").decode("utf-8", "replace")
        if key in others:
            continue
        fold = folds.get(key)
        if fold is None:
            fold = folds[key] = Fold(key, keep_states=False)
        fold.add(decode_entry(codec, msg))
        if wanted is not None and fold.state.started and not matches(fold.state):
            others.add(key)
            del folds[key]
    for execution_id in sorted(set(folds) | set(rows)):
        fold = folds.get(execution_id) or Fold(execution_id, keep_states=False)
        projected = rows.get(execution_id)
        if not fold.state.started and projected is None and (wanted is not None or not fold.problems):
            continue  # commands for an execution that never started: nothing projected, nothing to check
        state = fold.state
        report.events += fold.events
        report.executions.append(ExecutionAudit(
            execution_id,
            state.workflow_name or (projected[0]["workflow_name"] if projected else None),
            state.workflow_version or (projected[0]["workflow_version"] if projected else None),
            state.status if state.started else None,
            projected[0]["status"] if projected else None,
            fold.events,
            compare(state, projected, fold.phases),
            fold.problems,
        ))
    return report


def replay_all(workflow: str | None, as_json: bool) -> None:
    from .pg import connect

    settings = get_settings()
    with connect(settings) as conn:
        report = audit_all(settings, conn, workflow)
    if as_json:
        echo_json(report.as_json())
    else:
        out = console()
        for a in report.inconsistent:
            what = "; ".join(f"{d['what']}: {shown(d['kafka'])} → {shown(d['projection'])}"
                             for d in a.differences)
            problems = "; ".join(a.history_problems)
            workflow_text = (a.workflow_name or "?") + (f"@{a.workflow_version}" if a.workflow_version else "")
            count = len(a.differences) + len(a.history_problems)
            out.print(f"[red]inconsistent[/red] {escape(a.execution_id)} {escape(workflow_text)} "
                      f"{styled_status(a.status or 'new')}: {count} difference(s): "
                      + escape(short("; ".join(x for x in (what, problems) if x), 200)))
        scope = f" of {workflow}" if workflow else ""
        verdict = (f"[red]{len(report.inconsistent)} inconsistent[/red]" if report.inconsistent
                   else "[green]all consistent[/green]")
        out.print(f"{len(report.executions)} execution(s){escape(scope)} checked ({report.events} events up to "
                  f"the projection's offsets): {verdict}")
        if report.unprojected_events:
            out.print(f"[dim]{report.unprojected_events} later event(s) on {escape(settings.topics.events)} "
                      "are not projected yet: not checked[/dim]")
    if not report.consistent:
        raise SystemExit(1)


