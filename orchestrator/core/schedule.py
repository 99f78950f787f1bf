"""Cron schedules in a time zone: which nominal times are due, and which of them fire.

A schedule trigger names *nominal times*: the instants a five-field cron
expression (`minute hour day-of-month month day-of-week`) matches on the wall
clock of its IANA time zone. Pure: the caller passes `now` (epoch ms).

Daylight saving time follows cron (cronsim, Debian cron's rules):
- an expression with a fixed minute and hour (`30 2 * * *`, `0 9-17 * * 1-5`)
  runs once per matching wall-clock time and day: a time that the clock
  skips (spring forward) runs at the first instant after the gap (03:00), a
  time the clock passes twice (fall back) runs on its first pass only;
- an expression with `*` or `*/n` in the minute or hour field follows the
  wall clock as it is: skipped times do not exist, repeated ones run twice
  (real time passed in between).

`due()` splits the nominal times in `(since, now]` into *on time* (less than
`grace_ms` old: normal running) and *missed* (older: the scheduler was down
or stalled), and applies the trigger's catch-up policy to the missed ones:
`skip` fires none of them, `latest` only the most recent, `all` each of them
(at most `max_catch_up`, the most recent ones, oldest first). On-time times
always fire. The work is bounded by what fires, not by the length of the
downtime.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = [
    "MISFIRE_GRACE_MS",
    "Due",
    "ScheduleError",
    "due",
    "next_time",
    "nominal_times",
    "iso_time",
    "utc_stamp",
    "zone",
]

MISFIRE_GRACE_MS = 60_000  # a nominal time older than this when it is first seen counts as missed
_HOUR_MS = 3_600_000
_UTC = timezone.utc


class ScheduleError(ValueError):
    """An unknown time zone or an invalid cron expression."""


@dataclass(frozen=True)
class Due:
    """What one look at a schedule decided."""

    fire: tuple[int, ...]  # nominal times to fire now, oldest first (epoch ms)
    missed: tuple[int, ...]  # missed times the catch-up policy fired (a subset of `fire`)
    skipped_from: int | None  # the oldest due time the policy did not fire (None: none skipped)
    next_at: int | None  # the first nominal time after `now` (None: the expression never matches again)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown time zone {name!r}") from None


@lru_cache(maxsize=256)
def _checked(expression: str, timezone_name: str) -> ZoneInfo:
    """The zone, once the expression is known to be a valid five-field cron expression."""
    tz = zone(timezone_name)
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError(f"a cron expression has five fields, {expression!r} has {len(fields)}")
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=tz))
    except (CronSimError, ValueError) as exc:
        raise ScheduleError(f"invalid cron expression {expression!r}: {exc}") from None
    return tz


def _moment(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=_UTC).astimezone(tz)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000  # nominal times are whole seconds


def nominal_times(expression: str, timezone_name: str, after: int, until: int | None = None) -> Iterator[int]:
    """The nominal times strictly after `after` (and at or before `until`), ascending (epoch ms)."""
    tz = _checked(expression, timezone_name)
    # cronsim drops sub-second parts and yields times strictly after the second it starts at
    start = _moment(after - after % 1000, tz)
    previous = after
    try:
        for moment in CronSim(expression, start):
            t = _ms(moment)
            if t <= previous:  # never repeat or go back (a guard: cronsim is monotonic)
                continue
            if until is not None and t > until:
                return
            previous = t
            yield t
    except StopIteration:  # no match within cronsim's 50-year horizon
        return


def next_time(expression: str, timezone_name: str, after: int) -> int | None:
    """The first nominal time strictly after `after`, or None."""
    return next(nominal_times(expression, timezone_name, after), None)


def _recent(expression: str, timezone_name: str, after: int, until: int, count: int) -> tuple[list[int], int | None]:
    """The `count` most recent nominal times in (after, until], oldest first, and the
    oldest time in (after, until] (None when there is none). Looks back over a window
    that doubles until it holds `count` times or reaches `after`, so the work follows
    `count`, not the length of (after, until]."""
    oldest = next_time(expression, timezone_name, after)
    if oldest is None or oldest > until:
        return [], None
    if count <= 0:
        return [], oldest
    window = _HOUR_MS
    while True:
        start = max(after, until - window)
        found: deque[int] = deque(nominal_times(expression, timezone_name, start, until), maxlen=count)
        if len(found) >= count or start == after:
            return list(found), oldest
        window *= 2


def due(expression: str, timezone_name: str, since: int | None, now: int, catch_up: str, max_catch_up: int,
        *, grace_ms: int = MISFIRE_GRACE_MS) -> Due:
    """The nominal times to fire at `now`, given that every nominal time at or before
    `since` was handled (fired, or left by the catch-up policy). `since` None means the
    trigger is new: nothing in the past fires, only times after `now` will.

    Raises ScheduleError for an unknown zone or an invalid expression."""
    upcoming = next_time(expression, timezone_name, now)
    if since is None or since >= now:
        return Due((), (), None, upcoming)
    cutoff = max(since, now - grace_ms)  # due times after it are on time
    on_time = tuple(nominal_times(expression, timezone_name, cutoff, now))
    wanted = {"skip": 0, "latest": 1, "all": max_catch_up}.get(catch_up)
    if wanted is None:
        raise ScheduleError(f"unknown catch-up policy {catch_up!r} (skip, latest or all)")
    if cutoff == since:  # nothing can be missed
        return Due(on_time, (), None, upcoming)
    if catch_up == "latest" and on_time:
        wanted = 0  # the most recent due time is on time: it is the one to fire
    missed, oldest = _recent(expression, timezone_name, since, cutoff, max(wanted, 0))
    skipped_from = oldest if oldest is not None and (not missed or oldest < missed[0]) else None
    return Due((*missed, *on_time), tuple(missed), skipped_from, upcoming)


def iso_time(ms: int, timezone_name: str) -> str:
    """ISO-8601 with the zone's offset at that instant: `2026-11-27T02:00:00+01:00`."""
    return _moment(ms, zone(timezone_name)).isoformat()


def utc_stamp(ms: int) -> str:
    """A compact UTC stamp for ids: `20261127T010000Z` (milliseconds only when not zero)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=_UTC)
    text = moment.strftime("%Y%m%dT%H%M%S")
    return f"{text}{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"
