"""`orchestrator history ID` and `orchestrator replay ID|--all`: the truth on Kafka.

Both read the execution's partition of the events topic from the beginning,
keeping only its key. `replay` folds the events through the core's `evolve`
and compares the result with the PostgreSQL projection: the audit tool.
`replay --all` checks every execution in one pass over the events topic, up
to the offsets the projection has stored (what it has seen), so a projector
that lags behind is not a difference. The core drops the states of a loop
iteration's (or for_each item's) steps when it ends; their rows stay, and are
compared only while the state still has them.
Values at sensitive places (sealed inputs, secret-named fields) print as "***".
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ..codec import Codec, DecodeError
from ..core.events import ItemsResolved, RecordedEvent
from ..core.evolve import evolve, initial_state
from ..core.keys import frames, prefix_of
from ..core.sensitive import redact
from ..core.state import ExecutionState, StepState
from ..runtime.kafka import partition_for
from .common import CliError, console, echo_json, get_settings, iso, json_ready, short, styled_status
from .kafka_io import read_key, require_topics
from .render import (
    BLOCK_KEYS,
    COMPENSATION_KEYS,
    block_of_state,
    compensation_of_row,
    compensation_of_state,
    from_state,
    state_waiting_for,
)

__all__ = ["history", "replay", "HistoryEntry", "Fold", "read_history", "compare", "audit_execution",
           "UnknownExecution"]


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


class UnknownExecution(CliError):
    """No event of the execution on the events topic."""


def read_history(execution_id: str, settings: Any = None) -> list[HistoryEntry]:
    """Every record of the execution on the events topic, in offset order."""
    settings = settings or get_settings()
    topic = settings.topics.events
    require_topics(settings, topic)
    partition = partition_for(execution_id, settings.partitions)
    codec = Codec.default()
    entries = [decode_entry(codec, msg) for msg in read_key(settings, topic, partition, execution_id)]
    if not entries:
        raise UnknownExecution(f"execution {execution_id}: no events on {topic} (partition {partition}); "
                       "unknown execution id?")
    return entries


def summary(entry: HistoryEntry, limit: int = 100) -> str:
    if entry.recorded is None:
        return f"undecodable: {entry.error}"
    fields = entry.fields()
    if isinstance(entry.recorded.event, ItemsResolved) and isinstance(fields.get("items"), list):
        count = len(fields["items"])  # the count first: a long list would be cut
        fields["items"] = f"{count} item{'' if count == 1 else 's'} {short(fields['items'], 30)}"
    parts = [f"{k}={short(v, 40)}" for k, v in fields.items() if v not in (None, "", [], (), {})]
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


def shown(value: Any) -> str:
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
        if name not in state.steps and _iteration_ended(state, name):
            continue  # the core folded the ended iteration's steps into its output; the row stays
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
            ("child_execution_id", getattr(s, "child_execution_id", None), r.get("child_execution_id")),
        ]
        if s.wait is not None:  # the projection keeps `waiting_for` after the wait; the state does not
            checks.append(("waiting_for", state_waiting_for(s), r.get("waiting_for")))
            checks.append(("wait_until", iso(s.wait.timeout_at), iso(r.get("wait_until"))))
        block = block_of_state(s)
        checks += [(key, block[key], r.get(key)) for key in BLOCK_KEYS]
        if phases is not None:
            checks.append(("phase", phases.get(name, "main"), r.get("phase", "main")))
        for field_name, kafka, pg in checks:
            if kafka != pg:
                diff(f"step {name}.{field_name}", kafka, pg)
    return diffs


def _iteration_ended(state: ExecutionState, key: str) -> bool:
    """Whether `key` is a step of a loop iteration or for_each item that has ended
    (or lies in one that has): the core keeps no state for its steps any more."""
    prefix = prefix_of(key)
    if not prefix:
        return False
    composite, index = frames(prefix)[-1]
    step = state.steps.get(composite)
    block = getattr(step, "block", None)
    return step is None or block is None or index not in block.active


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
            if getattr(s, "child_execution_id", None):
                doc["child_execution_id"] = s.child_execution_id
            doc.update((k, v) for k, v in block_of_state(s).items() if v is not None)
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
    if s.get("branch"):
        text += f" (branch {s['branch']})"
    elif s.get("iterations_started") is not None:
        text += f" ({s['iterations_started']} started)"
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


def audit_execution(settings: Any, conn: Any, execution_id: str) -> tuple[dict[str, Any], Fold, list[HistoryEntry]]:
    """`orchestrator replay ID` as a document (also `GET /api/v1/executions/{id}/replay`): the
    history read from Kafka folded through the core, and its differences from the projection."""
    from .queries import load_projection

    entries = read_history(execution_id, settings)
    fold = Fold(execution_id)
    for entry in entries:
        fold.add(entry)
    state = fold.state
    diffs = compare(state, load_projection(conn, execution_id), fold.phases)
    doc = {
        "execution_id": execution_id,
        "events": len(entries),
        "states": fold.states,
        "final": from_state(state, phases=fold.phases),
        "history_problems": fold.problems,
        "differences": diffs,
        "consistent": not diffs and not fold.problems,
    }
    return doc, fold, entries


def _replay_one(execution_id: str, as_json: bool) -> None:
    from .pg import connect

    settings = get_settings()
    with connect(settings) as conn:
        doc, fold, entries = audit_execution(settings, conn, execution_id)
    if as_json:
        echo_json(doc)
    else:
        out = console()
        out.print(_states_table(fold, {e.offset: e for e in entries}))
        for problem in doc["history_problems"]:
            out.print(f"[red]history problem[/red]: {escape(problem)}")
        diffs = doc["differences"]
        if diffs:
            out.print(_diffs_table(diffs, f"{len(diffs)} difference(s) between the events and the projection"))
        elif not doc["history_problems"]:
            out.print(f"[green]consistent[/green]: {len(fold.states)} events fold to {fold.state.status}; "
                      "the projection agrees")
    if not doc["consistent"]:
        raise SystemExit(1)


def _diffs_table(diffs: list[dict[str, Any]], title: str) -> Table:
    table = Table("what", "kafka (folded)", "projection", box=None, pad_edge=False, header_style="bold",
                  title=title, title_justify="left")
    for d in diffs:
        table.add_row(escape(d["what"]), escape(shown(d["kafka"])), escape(shown(d["projection"])))
    return table


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
        from .replay_all import replay_all  # needs this module's compare and Fold

        replay_all(workflow, as_json)
    else:
        _replay_one(execution_id, as_json)  # type: ignore[arg-type]
