"""`orchestrator history ID` and `orchestrator replay ID`: the truth on Kafka.

Both read the execution's partition of the events topic from the beginning,
keeping only its key. `replay` folds the events through the core's `evolve`
and compares the result with the PostgreSQL projection: the audit tool.
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
from ..core.events import RecordedEvent
from ..core.evolve import evolve, initial_state
from ..core.sensitive import redact
from ..core.state import ExecutionState, StepState
from ..runtime.kafka import partition_for
from .common import CliError, console, echo_json, get_settings, iso, json_ready, short, styled_status
from .kafka_io import read_key, require_topics

__all__ = ["history", "replay", "HistoryEntry", "read_history", "compare"]


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


def read_history(execution_id: str) -> list[HistoryEntry]:
    """Every record of the execution on the events topic, in offset order."""
    settings = get_settings()
    topic = settings.topics.events
    require_topics(settings, topic)
    partition = partition_for(execution_id, settings.partitions)
    codec = Codec.default()
    entries: list[HistoryEntry] = []
    for msg in read_key(settings, topic, partition, execution_id):
        try:
            recorded = codec.decode(msg.value(), expect="events")
            entries.append(HistoryEntry(msg.partition(), msg.offset(), recorded))
        except DecodeError as exc:
            entries.append(HistoryEntry(msg.partition(), msg.offset(), None, str(exc)))
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


def compare(state: ExecutionState, projected: tuple[dict[str, Any], list[dict[str, Any]]] | None) -> list[dict[str, Any]]:
    """Differences between the folded state and the projection rows."""
    diffs: list[dict[str, Any]] = []

    def diff(what: str, kafka: Any, projection: Any) -> None:
        diffs.append({"what": what, "kafka": json_ready(kafka), "projection": json_ready(projection)})

    if projected is None:
        if state.started:
            diff("execution", f"{state.status} at sequence {state.sequence}", None)
        return diffs
    row, step_rows = projected
    if row["last_sequence"] != state.sequence:
        diff("execution.sequence", state.sequence, row["last_sequence"])
    for name, kafka, pg in (
        ("status", state.status, row["status"]),
        ("output", _norm(state.output), _norm(row["output"])),
        ("error", state.error, row["error"]),
    ):
        if kafka != pg:
            diff(f"execution.{name}", kafka, pg)
    rows = {r["step_name"]: r for r in step_rows}
    for name in dict.fromkeys([*state.steps, *rows]):
        s = state.steps.get(name) or StepState()  # absent from the state: pending
        r = rows.get(name)
        if r is None:
            diff(f"step {name}", s.status, None)
            continue
        for field, kafka, pg in (
            ("status", s.status, r["status"]),
            ("attempts", s.attempt, r["attempts"]),
            ("output", _norm(s.output), _norm(r["output"])),
            ("error", s.error, r["error"]),
        ):
            if kafka != pg:
                diff(f"step {name}.{field}", kafka, pg)
    return diffs


@click.command()
@click.argument("execution_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def replay(execution_id: str, as_json: bool) -> None:
    """Fold the history of ID through the core and check it against the projection.

    Exit 1 when the projection differs from what the events say.
    """
    from .pg import connect
    from .queries import load_projection
    from .render import from_state

    entries = read_history(execution_id)
    state = initial_state(execution_id)
    steps: list[dict[str, Any]] = []
    problems: list[str] = []
    for e in entries:
        if e.recorded is None:
            problems.append(f"offset {e.offset}: undecodable event: {e.error}")
            continue
        try:
            state = evolve(state, e.recorded)
        except (ValueError, KeyError) as exc:
            problems.append(f"offset {e.offset}: cannot fold {e.event_type}: {exc}")
            continue
        steps.append({"sequence": e.recorded.sequence, "event_type": e.event_type, "offset": e.offset,
                      "status": state.status,
                      "steps": {n: {"status": s.status, "attempts": s.attempt} for n, s in state.steps.items()}})
    settings = get_settings()
    with connect(settings) as conn:
        projected = load_projection(conn, execution_id)
    diffs = compare(state, projected)
    consistent = not diffs and not problems
    if as_json:
        echo_json({
            "execution_id": execution_id,
            "events": len(entries),
            "states": steps,
            "final": from_state(state),
            "history_problems": problems,
            "differences": diffs,
            "consistent": consistent,
        })
    else:
        out = console()
        for item in steps:
            padding = " " * max(0, 12 - len(item["status"]))
            out.print(f"[bold]{item['sequence']:>4}[/bold] {item['event_type']:<22} "
                      f"{styled_status(item['status'])}{padding} "
                      + escape(" ".join(f"{n}={s['status']}" + (f"#{s['attempts']}" if s["attempts"] else "")
                                        for n, s in item["steps"].items())))
        for problem in problems:
            out.print(f"[red]history problem[/red]: {escape(problem)}")
        if diffs:
            table = Table("what", "kafka (folded)", "projection", box=None, pad_edge=False, header_style="bold",
                          title=f"{len(diffs)} difference(s) between the events and the projection")
            for d in diffs:
                table.add_row(escape(d["what"]), escape(_shown(d["kafka"])), escape(_shown(d["projection"])))
            out.print(table)
        elif not problems:
            out.print(f"[green]consistent[/green]: {len(steps)} events fold to {state.status}; "
                      "the projection agrees")
    if not consistent:
        raise SystemExit(1)
