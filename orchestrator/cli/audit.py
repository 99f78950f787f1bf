"""`orchestrator history ID` and `orchestrator replay ID|--all`: the truth on Kafka.

Both read the execution's partition of the events topic from the beginning,
keeping only its key. `replay` folds the events through the core's `evolve`
and compares the result with the PostgreSQL projection: the audit tool.
`replay --all` checks every execution in one pass over the events topic, up
to the offsets the projection has stored (what it has seen), so a projector
that lags behind is not a difference.
Values at sensitive places (sealed inputs, secret-named fields) print as "***".
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ..codec import Codec, DecodeError
from ..core.events import RecordedEvent
from ..core.evolve import evolve, initial_state
from ..core.sensitive import redact
from ..core.state import ExecutionState, StepState
from ..runtime.kafka import partition_for
from .common import CliError, console, echo_json, get_settings, iso, json_ready, short, styled_status
from .kafka_io import read_key, read_partitions, require_topics
from .render import COMPENSATION_KEYS, compensation_of_row, compensation_of_state, from_state, state_waiting_for

__all__ = ["history", "replay", "HistoryEntry", "Fold", "AuditReport", "audit_all", "read_history", "compare"]


@dataclass
class HistoryEntry:
    partition: int
    offset: int
    recorded: RecordedEvent | None
    error: str | None = None  # why the record could not be decoded

    @property
    def event_type(self) -> str | None:
        return type(self.recorded.event).__name__ if self.recorded else None

    def fields(self) -> dict[str, Any]:
        """The event's fields: sensitive values as "***", epoch-ms `*_at` times as ISO 8601."""
        if self.recorded is None:
            return {}
        fields = redact(dataclasses.asdict(self.recorded.event))
        return {k: iso(v) if k.endswith("_at") and isinstance(v, int) and not isinstance(v, bool) else v
                for k, v in fields.items()}

    def as_json(self) -> dict[str, Any]:
        r = self.recorded
        return {
            "execution_id": r.execution_id if r else None,
            "sequence": r.sequence if r else None,
            "recorded_at": iso(r.recorded_at) if r else None,
            "cause": r.cause if r else None,
            "event_type": self.event_type,
            "partition": self.partition,
            "offset": self.offset,
            "event": json_ready(self.fields()) if r else None,
            "error": self.error,
        }


def decode_entry(codec: Codec, msg: Any) -> HistoryEntry:
    try:
        return HistoryEntry(msg.partition(), msg.offset(), codec.decode(msg.value(), expect="events"))
    except DecodeError as exc:
        return HistoryEntry(msg.partition(), msg.offset(), None, str(exc))


def read_history(execution_id: str) -> list[HistoryEntry]:
    """Every record of the execution on the events topic, in offset order."""
    settings = get_settings()
    topic = settings.topics.events
    require_topics(settings, topic)
    partition = partition_for(execution_id, settings.partitions)
    codec = Codec.default()
    entries = [decode_entry(codec, msg) for msg in read_key(settings, topic, partition, execution_id)]
    if not entries:
        raise CliError(f"execution {execution_id}: no events on {topic} (partition {partition}); "
                       "unknown execution id?")
    return entries


def summary(entry: HistoryEntry, limit: int = 100) -> str:
    if entry.recorded is None:
        return f"undecodable: {entry.error}"
    parts = [f"{k}={short(v, 40)}" for k, v in entry.fields().items() if v not in (None, "", [], (), {})]
    return short(", ".join(parts), limit)


@click.command()
@click.argument("execution_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per event (JSON Lines).")
def history(execution_id: str, as_json: bool) -> None:
    """The recorded events of execution ID, read from Kafka."""
    entries = read_history(execution_id)
    if as_json:
        for entry in entries:
            echo_json(entry.as_json(), lines=True)
        return
    table = Table("seq", "recorded at", "event", "cause", "partition/offset", "summary", box=None,
                  pad_edge=False, header_style="bold")
    for e in entries:
        r = e.recorded
        table.add_row(str(r.sequence) if r else "?", iso(r.recorded_at) if r else "",
                      e.event_type or "[red](undecodable)[/red]", escape(r.cause) if r else "",
                      f"{e.partition}/{e.offset}", escape(summary(e)))
    console().print(table)


# -- replay --------------------------------------------------------------------


def _shown(value: Any) -> str:
    return "(none)" if value is None else short(value, 50)


def _norm(value: Any) -> Any:
    """Compare values as the projection stores them: redacted JSON."""
    return json.loads(json.dumps(json_ready(redact(value)), sort_keys=True))


_NO_COMPENSATION = dict.fromkeys(COMPENSATION_KEYS)


def compare(state: ExecutionState, projected: tuple[dict[str, Any], list[dict[str, Any]]] | None,
            phases: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Differences between the folded state and the projection rows.

    `phases` (from a `Fold`) also checks each step row's phase: a step first
    touched while the execution was compensating is a compensation step.
    """
    diffs: list[dict[str, Any]] = []

    def diff(what: str, kafka: Any, projection: Any) -> None:
        diffs.append({"what": what, "kafka": json_ready(kafka), "projection": json_ready(projection)})

    if projected is None:
        if state.started:
            diff("execution", f"{state.status} at sequence {state.sequence}", None)
        return diffs
    row, step_rows = projected
    if not state.started:
        diff("execution", None, f"{row['status']} at sequence {row['last_sequence']}")
        return diffs
    if row["last_sequence"] != state.sequence:
        diff("execution.sequence", state.sequence, row["last_sequence"])
    for name, kafka, pg in (
        ("status", state.status, row["status"]),
        ("output", _norm(state.output), _norm(row["output"])),
        ("error", state.error, row["error"]),
        ("failed_step", state.failed_step, row["failed_step"]),
        ("parent_execution_id", state.parent_execution_id, row.get("parent_execution_id")),
        ("parent_relation", state.parent_relation, row.get("parent_relation")),
    ):
        if kafka != pg:
            diff(f"execution.{name}", kafka, pg)
    folded = compensation_of_state(state) or _NO_COMPENSATION
    stored = compensation_of_row(row) or _NO_COMPENSATION
    for key in COMPENSATION_KEYS:
        if folded[key] != stored[key]:
            diff(f"execution.compensation_{key}", folded[key], stored[key])
    rows = {r["step_name"]: r for r in step_rows}
    for name in dict.fromkeys([*state.steps, *rows]):
        s = state.steps.get(name) or StepState()  # absent from the state: pending
        r = rows.get(name)
        if r is None:
            diff(f"step {name}", s.status, None)
            continue
        checks: list[tuple[str, Any, Any]] = [
            ("status", s.status, r["status"]),
            ("attempts", s.attempt, r["attempts"]),
            ("output", _norm(s.output), _norm(r["output"])),
            ("error", s.error, r["error"]),
        ]
        if s.wait is not None:  # the projection keeps `waiting_for` after the wait; the state does not
            checks.append(("waiting_for", state_waiting_for(s), r.get("waiting_for")))
        if phases is not None:
            checks.append(("phase", phases.get(name, "main"), r.get("phase", "main")))
        for field_name, kafka, pg in checks:
            if kafka != pg:
                diff(f"step {name}.{field_name}", kafka, pg)
    return diffs


class Fold:
    """The core's fold of one execution's history, event by event.

    Besides the state it keeps what the audit needs: each step's phase (a step
    first touched while the execution was compensating is a compensation
    step), problems (undecodable or unfoldable events) and, with
    `keep_states`, a record of the state after each event.
    """

    def __init__(self, execution_id: str, *, keep_states: bool = True) -> None:
        self.state = initial_state(execution_id)
        self.phases: dict[str, str] = {}
        self.problems: list[str] = []
        self.states: list[dict[str, Any]] = []
        self.keep_states = keep_states
        self.events = 0

    def add(self, entry: HistoryEntry) -> None:
        self.events += 1
        if entry.recorded is None:
            self.problems.append(f"offset {entry.offset}: undecodable event: {entry.error}")
            return
        before = self.state
        try:
            after = evolve(before, entry.recorded)
        except (ValueError, KeyError) as exc:
            self.problems.append(f"offset {entry.offset}: cannot fold {entry.event_type}: {exc}")
            return
        changed = [n for n, s in after.steps.items() if before.steps.get(n) is not s]
        for name in changed:
            if name not in before.steps:
                self.phases[name] = "compensation" if before.status == "compensating" else "main"
        self.state = after
        if self.keep_states:
            self.states.append(self._record(entry, after, changed))

    @staticmethod
    def _record(entry: HistoryEntry, state: ExecutionState, changed: list[str]) -> dict[str, Any]:
        assert entry.recorded is not None
        compensation = compensation_of_state(state)

        def step(s: StepState) -> dict[str, Any]:
            doc: dict[str, Any] = {"status": s.status, "attempts": s.attempt}
            if s.error is not None:
                doc["error"] = s.error
            if s.wait is not None:
                doc["waiting_for"] = state_waiting_for(s)
            return doc

        return {
            "sequence": entry.recorded.sequence,
            "event_type": entry.event_type,
            "partition": entry.partition,
            "offset": entry.offset,
            "status": state.status,
            "compensation": compensation["status"] if compensation else None,
            "changed": changed,
            "steps": {n: step(s) for n, s in state.steps.items()},
        }


def _step_text(name: str, s: dict[str, Any]) -> str:
    text = f"{name}={s['status']}" + (f"#{s['attempts']}" if s["attempts"] else "")
    if s.get("waiting_for"):
        text += f" ({s['waiting_for']})"
    return text


def _states_table(fold: Fold, entries: dict[int, HistoryEntry]) -> Table:
    """One row per event: the execution's status and the steps the event changed."""
    table = Table("seq", "event", "status", "changed", "event fields", box=None, pad_edge=False,
                  header_style="bold", title="the state after each event (folded by the core)", title_justify="left")
    for item in fold.states:
        status = styled_status(item["status"])
        if item["compensation"] and item["compensation"] != "running":
            status += f" [dim](compensation {item['compensation']})[/dim]"
        changed = ", ".join(_step_text(n, item["steps"][n]) for n in item["changed"])
        entry = entries.get(item["offset"])
        table.add_row(str(item["sequence"]), item["event_type"], status, escape(changed),
                      escape(summary(entry, 70)) if entry else "")
    return table


def _replay_one(execution_id: str, as_json: bool) -> None:
    from .pg import connect
    from .queries import load_projection

    entries = read_history(execution_id)
    fold = Fold(execution_id)
    for entry in entries:
        fold.add(entry)
    state = fold.state
    settings = get_settings()
    with connect(settings) as conn:
        projected = load_projection(conn, execution_id)
    diffs = compare(state, projected, fold.phases)
    problems = fold.problems
    consistent = not diffs and not problems
    if as_json:
        echo_json({
            "execution_id": execution_id,
            "events": len(entries),
            "states": fold.states,
            "final": from_state(state, phases=fold.phases),
            "history_problems": problems,
            "differences": diffs,
            "consistent": consistent,
        })
    else:
        out = console()
        out.print(_states_table(fold, {e.offset: e for e in entries}))
        for problem in problems:
            out.print(f"[red]history problem[/red]: {escape(problem)}")
        if diffs:
            out.print(_diffs_table(diffs, f"{len(diffs)} difference(s) between the events and the projection"))
        elif not problems:
            out.print(f"[green]consistent[/green]: {len(fold.states)} events fold to {state.status}; "
                      "the projection agrees")
    if not consistent:
        raise SystemExit(1)


def _diffs_table(diffs: list[dict[str, Any]], title: str) -> Table:
    table = Table("what", "kafka (folded)", "projection", box=None, pad_edge=False, header_style="bold",
                  title=title, title_justify="left")
    for d in diffs:
        table.add_row(escape(d["what"]), escape(_shown(d["kafka"])), escape(_shown(d["projection"])))
    return table


# -- replay --all -------------------------------------------------------------


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


def _replay_all(workflow: str | None, as_json: bool) -> None:
    from .pg import connect

    settings = get_settings()
    with connect(settings) as conn:
        report = audit_all(settings, conn, workflow)
    if as_json:
        echo_json(report.as_json())
    else:
        out = console()
        for a in report.inconsistent:
            what = "; ".join(f"{d['what']}: {_shown(d['kafka'])} → {_shown(d['projection'])}"
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


@click.command()
@click.argument("execution_id", metavar="[ID]", required=False)
@click.option("--all", "all_", is_flag=True, help="Check every execution in the projection (one pass over Kafka).")
@click.option("--workflow", default=None, metavar="NAME[@VERSION]", help="With --all: only this workflow.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def replay(execution_id: str | None, all_: bool, workflow: str | None, as_json: bool) -> None:
    """Fold the history of ID through the core, show the state after each event,
    and check it against the projection.

    With --all, check every execution up to what the projection has read,
    printing one line per inconsistent execution and a total.
    Exit 1 when the projection differs from what the events say.
    """
    if all_ == (execution_id is not None):
        raise click.UsageError("give an execution ID or --all")
    if workflow is not None and not all_:
        raise click.UsageError("--workflow only applies with --all")
    if all_:
        _replay_all(workflow, as_json)
    else:
        _replay_one(execution_id, as_json)  # type: ignore[arg-type]
