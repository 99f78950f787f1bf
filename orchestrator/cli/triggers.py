"""`orchestrator triggers list`: the active triggers of the registered definitions.

A workflow's active triggers are those of its latest registered version (the
`triggers` role starts executions from them). Schedule triggers show their
next nominal time (in their time zone) and the last one fired, as the
scheduler recorded it on the compacted schedules topic.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import yaml
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from ..core.definition import Trigger
from ..core.messages import DefinitionRegistered, ScheduleFired
from ..core.versions import version_key
from .common import console, echo_json, get_settings, iso

__all__ = ["triggers", "trigger_rows"]


def _declared(registered: DefinitionRegistered) -> list[Trigger | str]:
    """The triggers a definition's source declares (a text for one that does not parse)."""
    try:
        data = yaml.safe_load(registered.source)  # JSON is YAML too
    except yaml.YAMLError:
        return []
    spec = data.get("spec") if isinstance(data, dict) else None
    listed = spec.get("triggers") if isinstance(spec, dict) else None
    out: list[Trigger | str] = []
    for item in listed if isinstance(listed, list) else ():
        try:
            out.append(Trigger.model_validate(item))
        except ValidationError:
            out.append(str(item.get("name")) if isinstance(item, dict) else "?")
    return out


def trigger_rows(found: list[DefinitionRegistered], now: int,
                 progress: dict[str, ScheduleFired] | None = None) -> list[dict[str, Any]]:
    """One row per trigger of the latest version of each workflow, by workflow and trigger order."""
    from ..core.schedule import ScheduleError, iso_time, next_time
    from ..core.triggers import schedule_key

    latest: dict[str, DefinitionRegistered] = {}
    for d in found:
        if d.name not in latest or version_key(d.version) > version_key(latest[d.name].version):
            latest[d.name] = d
    rows: list[dict[str, Any]] = []
    for name in sorted(latest):
        d = latest[name]
        for trigger in _declared(d):
            row: dict[str, Any] = {"workflow": d.name, "version": d.version}
            if isinstance(trigger, str):
                rows.append({**row, "trigger": trigger, "kind": "invalid"})
                continue
            row["trigger"] = trigger.name
            if trigger.event is not None:
                rows.append({**row, "kind": "event", "event": trigger.event, "filter": trigger.filter})
                continue
            row.update(kind="schedule", schedule=trigger.schedule, timezone=trigger.timezone,
                       catch_up=trigger.catch_up, max_catch_up=trigger.max_catch_up)
            try:
                upcoming = next_time(trigger.schedule or "", trigger.timezone, now)
                row["next_fire_time"] = iso_time(upcoming, trigger.timezone) if upcoming is not None else None
            except ScheduleError as exc:
                row.update(kind="invalid", problem=str(exc))
            fired = (progress or {}).get(schedule_key(d.name, trigger.name))
            if fired is not None:
                row["last_fired"] = {"nominal_time": iso(fired.nominal_time), "execution_id": fired.execution_id,
                                     "fired_at": iso(fired.fired_at)}
            rows.append(row)
    return rows


def _progress(settings: Any, topics: dict[str, Any]) -> dict[str, ScheduleFired]:
    from ..codec import Codec, DecodeError
    from .kafka_io import read_partitions

    topic = settings.topics.schedules
    meta = topics.get(topic)
    if meta is None or meta.error is not None:
        return {}
    codec = Codec.default()
    latest: dict[str, ScheduleFired] = {}
    for msg in read_partitions(settings, topic, sorted(meta.partitions)):
        key = (msg.key() or b"").decode("utf-8", "replace")
        if msg.value() is None:
            latest.pop(key, None)
            continue
        try:
            fired = codec.decode(msg.value(), expect="schedules")
        except DecodeError:
            continue
        if isinstance(fired, ScheduleFired):
            latest[key] = fired
    return latest


@click.group()
def triggers() -> None:
    """Executions started by external events and cron schedules (`spec.triggers`)."""


def active_triggers(settings: Any) -> list[dict[str, Any]]:
    """`orchestrator triggers list` as rows (also `GET /api/v1/triggers`)."""
    from .kafka_io import read_definitions, require_kafka

    topics = require_kafka(settings)
    found = [d for d, _ in read_definitions(settings, topics=topics)]
    return trigger_rows(found, int(time.time() * 1000), _progress(settings, topics))


@triggers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_triggers(as_json: bool) -> None:
    """The active triggers: those of the latest registered version of each workflow."""
    settings = get_settings()
    rows = active_triggers(settings)
    if as_json:
        echo_json({"triggers": rows})
        return
    if not rows:
        click.echo(f"no triggers in the definitions registered on {settings.topics.definitions}")
        return
    table = Table("workflow", "version", "trigger", "kind", "event / schedule", "timezone", "catch-up",
                  "next fire time", "last fired", box=None, pad_edge=False)
    for row in rows:
        if row["kind"] == "event":
            what = row["event"] + (" " + json.dumps(row["filter"], ensure_ascii=False) if row["filter"] else "")
        else:
            what = row.get("schedule") or row.get("problem") or ""
        catch_up = row.get("catch_up") or ""
        if catch_up == "all":
            catch_up += f" (max {row['max_catch_up']})"
        last = row.get("last_fired") or {}
        table.add_row(escape(row["workflow"]), escape(row["version"]), escape(row["trigger"]), row["kind"],
                      escape(what), row.get("timezone") or "", catch_up, row.get("next_fire_time") or "",
                      last.get("nominal_time") or "")
    console().print(table)
