"""Triggers: which registered definitions an external event or a schedule starts.

A definition's `spec.triggers` start executions of *that* definition. Only the
latest registered version of each workflow (by `version_key`) has active
triggers; the StartWorkflow pins the version that declared the trigger.

- **Event triggers** fire on an `ExternalEvent` whose type equals `event` and
  whose data matches every `filter` field (`matching.filter_matches`). The
  execution id is `<workflow>-<trigger>-<event id>`, so the same event
  delivered twice starts one execution: the decider ignores a repeated
  StartWorkflow of an id it knows.
- **Schedule triggers** fire once per nominal time (see `schedule`); the id
  is `<workflow>-<trigger>-<nominal time in UTC>` (`...-20261127T020000Z`).

The input is the trigger's `input` rendered against `{"event": {id, type,
data, occurred_at, source}}` or `{"schedule": {trigger, nominal_time,
nominal_time_ms}}` (no `input` mapping: `{}`). A mapping that cannot be
rendered yields a `TriggerError` naming the workflow, the trigger and the
field, never an exception. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from .definition import Trigger, WorkflowDefinition
from .matching import filter_matches
from .messages import ExternalEvent, StartWorkflow
from .schedule import ScheduleError, iso_time, utc_stamp
from .templates import TemplateError, render_value
from .versions import version_key

__all__ = [
    "ActiveTrigger",
    "EventOutcome",
    "TriggerError",
    "TriggerIndex",
    "event_execution_id",
    "event_scope",
    "requested_by",
    "schedule_execution_id",
    "schedule_key",
    "schedule_scope",
    "start_for_event",
    "start_for_schedule",
]

# Event ids used as they are in execution ids; any other is replaced by a digest.
_SAFE_EVENT_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$")
_DIGEST_PREFIX = "sha-"


@dataclass(frozen=True)
class ActiveTrigger:
    """A trigger of the latest registered version of its workflow."""

    workflow: str
    version: str
    index: int  # position in spec.triggers
    trigger: Trigger

    @property
    def name(self) -> str:
        return self.trigger.name

    @property
    def key(self) -> str:
        return schedule_key(self.workflow, self.trigger.name)


@dataclass(frozen=True)
class TriggerError:
    """A trigger that matched but could not start its execution."""

    workflow: str
    version: str
    trigger: str
    where: str  # the field: `input.customer`
    message: str

    @property
    def reason(self) -> str:
        where = f"{self.where}: " if self.where else ""
        return (f"workflow '{self.workflow}' version '{self.version}' trigger '{self.trigger}': "
                f"cannot start an execution: {where}{self.message}")


Started = Union[StartWorkflow, TriggerError]


@dataclass(frozen=True)
class EventOutcome:
    """What one external event starts (one StartWorkflow per matching trigger) and the
    matching triggers that failed."""

    starts: tuple[StartWorkflow, ...] = ()
    errors: tuple[TriggerError, ...] = ()

    @property
    def matched(self) -> int:
        return len(self.starts) + len(self.errors)


def requested_by(trigger: str) -> str:
    return f"trigger:{trigger}"


def schedule_key(workflow: str, trigger: str) -> str:
    """The key of a schedule trigger's progress on the schedules topic."""
    return f"{workflow}/{trigger}"


def _safe_event_id(event_id: str) -> str:
    if _SAFE_EVENT_ID.match(event_id) and not event_id.startswith(_DIGEST_PREFIX):
        return event_id
    return _DIGEST_PREFIX + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def event_execution_id(workflow: str, trigger: str, event_id: str) -> str:
    """`<workflow>-<trigger>-<event id>`; an event id that is long or has characters other
    than letters, digits, `_ . : -` is replaced by `sha-<32 hex digits of its SHA-256>`."""
    return f"{workflow}-{trigger}-{_safe_event_id(event_id)}"


def schedule_execution_id(workflow: str, trigger: str, nominal_time: int) -> str:
    """`<workflow>-<trigger>-<nominal time in UTC>`, e.g. `nightly-report-nightly-20261127T020000Z`."""
    return f"{workflow}-{trigger}-{utc_stamp(nominal_time)}"


def event_scope(event: ExternalEvent) -> dict[str, Any]:
    return {"event": {"id": event.event_id, "type": event.event_type, "data": event.data,
                      "occurred_at": event.occurred_at, "source": event.source}}


def schedule_scope(trigger: Trigger, nominal_time: int) -> dict[str, Any]:
    return {"schedule": {"trigger": trigger.name, "nominal_time": iso_time(nominal_time, trigger.timezone),
                         "nominal_time_ms": nominal_time}}


def _start(active: ActiveTrigger, execution_id: str, scope: Mapping[str, Any]) -> Started:
    mapping = active.trigger.input
    try:
        value = {} if mapping is None else render_value(mapping, scope, where="input")
    except TemplateError as exc:
        return TriggerError(active.workflow, active.version, active.name, exc.where, exc.message)
    return StartWorkflow(execution_id, active.workflow, active.version, value, requested_by(active.name))


def start_for_event(active: ActiveTrigger, event: ExternalEvent) -> Started:
    """The start of `active` for `event` (which it matches), or why it cannot start."""
    eid = event_execution_id(active.workflow, active.name, event.event_id)
    return _start(active, eid, event_scope(event))


def start_for_schedule(active: ActiveTrigger, nominal_time: int) -> Started:
    """The start of schedule trigger `active` for one nominal time, or why it cannot start."""
    eid = schedule_execution_id(active.workflow, active.name, nominal_time)
    try:
        scope = schedule_scope(active.trigger, nominal_time)
    except ScheduleError as exc:
        return TriggerError(active.workflow, active.version, active.name, "timezone", str(exc))
    return _start(active, eid, scope)


def _latest(definitions: Iterable[WorkflowDefinition]) -> list[WorkflowDefinition]:
    latest: dict[str, WorkflowDefinition] = {}
    for d in definitions:
        held = latest.get(d.name)
        if held is None or version_key(d.version) > version_key(held.version):
            latest[d.name] = d
    return [latest[name] for name in sorted(latest)]


@dataclass(frozen=True)
class TriggerIndex:
    """The active triggers of a set of registered definitions, indexed for lookups."""

    by_event_type: Mapping[str, tuple[ActiveTrigger, ...]] = field(default_factory=dict)
    schedules: tuple[ActiveTrigger, ...] = ()

    @classmethod
    def of(cls, definitions: Iterable[WorkflowDefinition]) -> TriggerIndex:
        """Triggers of the latest version of each workflow name; a trigger with neither or
        both of `event` and `schedule` (validation refuses it) is left out."""
        by_type: dict[str, list[ActiveTrigger]] = {}
        schedules: list[ActiveTrigger] = []
        for d in _latest(definitions):
            for i, trigger in enumerate(d.spec.triggers):
                active = ActiveTrigger(d.name, d.version, i, trigger)
                if trigger.event is not None and trigger.schedule is None:
                    by_type.setdefault(trigger.event, []).append(active)
                elif trigger.schedule is not None and trigger.event is None:
                    schedules.append(active)
        return cls({k: tuple(v) for k, v in by_type.items()}, tuple(schedules))

    @property
    def events(self) -> tuple[ActiveTrigger, ...]:
        return tuple(a for group in self.by_event_type.values() for a in group)

    def matching(self, event: ExternalEvent) -> list[ActiveTrigger]:
        return [a for a in self.by_event_type.get(event.event_type, ())
                if filter_matches(a.trigger.filter, event.data)]

    def for_event(self, event: ExternalEvent) -> EventOutcome:
        starts: list[StartWorkflow] = []
        errors: list[TriggerError] = []
        for active in self.matching(event):
            started = start_for_event(active, event)
            (errors if isinstance(started, TriggerError) else starts).append(started)  # type: ignore[arg-type]
        return EventOutcome(tuple(starts), tuple(errors))
