"""Cron schedules in a time zone (pure): nominal times, DST, and the catch-up policies."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.schedule import (
    MISFIRE_GRACE_MS,
    ScheduleError,
    due,
    iso_time,
    next_time,
    nominal_times,
    utc_stamp,
)

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def isos(times, zone: str = "Europe/Berlin") -> list[str]:
    return [iso_time(t, zone) for t in times]


# -- nominal times and time zones ---------------------------------------------------------


def test_nominal_times_are_wall_clock_times_in_the_zone():
    times = nominal_times("0 2 * * *", "America/New_York", ms("2026-07-01T00:00:00-04:00"),
                          ms("2026-07-03T00:00:00-04:00"))
    assert isos(times, "America/New_York") == ["2026-07-01T02:00:00-04:00", "2026-07-02T02:00:00-04:00"]


def test_a_time_skipped_by_spring_forward_runs_once_at_the_end_of_the_gap():
    # Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 02:30 does not exist that day
    times = nominal_times("30 2 * * *", "Europe/Berlin", ms("2026-03-27T12:00:00+01:00"),
                          ms("2026-03-31T12:00:00+02:00"))
    assert isos(times) == ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00",
                           "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_a_time_repeated_by_fall_back_runs_once_on_its_first_pass():
    # Berlin: 2026-10-25 03:00 CEST -> 02:00 CET; 02:30 happens twice
    times = list(nominal_times("30 2 * * *", "Europe/Berlin", ms("2026-10-24T12:00:00+02:00"),
                               ms("2026-10-26T12:00:00+01:00")))
    assert isos(times) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    assert times[1] - times[0] == DAY + HOUR  # a 25-hour day


def test_an_hourly_schedule_follows_the_clock_through_both_changes():
    def per_day(day: str, zone: str = "Europe/Berlin") -> int:
        start = ms(f"{day}T00:00:00+00:00") - 3 * HOUR  # the zone's midnight is before UTC's
        start = next_time("0 0 * * *", zone, start) - 1  # just before local midnight
        end = next_time("0 0 * * *", zone, start + 1)
        return len(list(nominal_times("0 * * * *", zone, start, end - 1)))

    assert per_day("2026-03-29") == 23  # spring forward: 02:00 does not exist
    assert per_day("2026-10-25") == 25  # fall back: 02:00 happens twice
    assert per_day("2026-06-01") == 24


def test_next_time_is_strictly_after_and_ids_use_utc():
    t = ms("2026-11-27T02:00:00+01:00")
    assert next_time("0 2 * * *", "Europe/Berlin", t - 1) == t
    assert next_time("0 2 * * *", "Europe/Berlin", t) == t + DAY
    assert utc_stamp(t) == "20261127T010000Z"
    assert iso_time(t, "Europe/Berlin") == "2026-11-27T02:00:00+01:00"
    assert iso_time(t, "UTC") == "2026-11-27T01:00:00+00:00"


@pytest.mark.parametrize("expression, zone, message", [
    ("0 2 * * *", "Mars/Olympus", "unknown time zone"),
    ("0 2 * *", "UTC", "five fields"),
    ("0 0 2 * * *", "UTC", "five fields"),
    ("61 2 * * *", "UTC", "invalid cron expression"),
])
def test_bad_zones_and_expressions_are_schedule_errors(expression, zone, message):
    with pytest.raises(ScheduleError, match=message):
        next_time(expression, zone, 0)
    with pytest.raises(ScheduleError, match=message):
        due(expression, zone, 0, HOUR, "all", 10)


def test_an_unknown_catch_up_policy_is_an_error():
    with pytest.raises(ScheduleError, match="catch-up policy"):
        due("* * * * *", "UTC", 0, HOUR, "sometimes", 10)


# -- due: first seen, on time, missed -------------------------------------------------------


def test_a_trigger_seen_for_the_first_time_fires_nothing_in_the_past():
    now = ms("2026-11-27T02:00:00+01:00")  # exactly a nominal time
    d = due("0 2 * * *", "Europe/Berlin", None, now, "all", 100)
    assert d.fire == () and d.skipped_from is None
    assert d.next_at == now + DAY


def test_a_time_reached_while_running_fires_once():
    t = ms("2026-11-27T02:00:00+01:00")
    assert due("0 2 * * *", "Europe/Berlin", t - 900, t - 100, "skip", 1).fire == ()
    d = due("0 2 * * *", "Europe/Berlin", t - 100, t + 300, "skip", 1)
    assert d.fire == (t,) and d.missed == () and d.next_at == t + DAY
    assert due("0 2 * * *", "Europe/Berlin", t + 300, t + 1300, "skip", 1).fire == ()


DOWN_FROM = ms("2026-03-25T12:00:00+01:00")  # last fired: 2026-03-25 02:00; down until 03-31 12:00
LAST = ms("2026-03-25T02:00:00+01:00")
BACK = ms("2026-03-31T12:00:00+02:00")
MISSED = ["2026-03-26T02:00:00+01:00", "2026-03-27T02:00:00+01:00", "2026-03-28T02:00:00+01:00",
          "2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00", "2026-03-31T02:00:00+02:00"]


def test_catch_up_skip_fires_none_of_the_missed_times():
    d = due("0 2 * * *", "Europe/Berlin", LAST, BACK, "skip", 100)
    assert d.fire == () and iso_time(d.skipped_from, "Europe/Berlin") == MISSED[0]
    assert iso_time(d.next_at, "Europe/Berlin") == "2026-04-01T02:00:00+02:00"


def test_catch_up_latest_fires_only_the_most_recent_missed_time():
    d = due("0 2 * * *", "Europe/Berlin", LAST, BACK, "latest", 100)
    assert isos(d.fire) == MISSED[-1:] and d.missed == d.fire
    assert iso_time(d.skipped_from, "Europe/Berlin") == MISSED[0]


def test_catch_up_all_fires_each_missed_time_oldest_first_up_to_max_catch_up():
    d = due("0 2 * * *", "Europe/Berlin", LAST, BACK, "all", 100)
    assert isos(d.fire) == MISSED and d.skipped_from is None  # the DST day's 02:00 ran at 03:00
    d = due("0 2 * * *", "Europe/Berlin", LAST, BACK, "all", 2)
    assert isos(d.fire) == MISSED[-2:] and iso_time(d.skipped_from, "Europe/Berlin") == MISSED[0]


def test_an_on_time_nominal_time_fires_whatever_the_policy_and_latest_fires_only_it():
    since = ms("2026-01-01T00:00:00+00:00")
    now = ms("2026-01-01T05:00:20+00:00")  # 05:00 is 20 s old: on time; 01:00-04:00 were missed
    assert isos(due("0 * * * *", "UTC", since, now, "skip", 10).fire, "UTC") == ["2026-01-01T05:00:00+00:00"]
    assert isos(due("0 * * * *", "UTC", since, now, "latest", 10).fire, "UTC") == ["2026-01-01T05:00:00+00:00"]
    d = due("0 * * * *", "UTC", since, now, "all", 2)
    assert isos(d.fire, "UTC") == ["2026-01-01T03:00:00+00:00", "2026-01-01T04:00:00+00:00",
                                   "2026-01-01T05:00:00+00:00"]
    assert isos(d.missed, "UTC") == ["2026-01-01T03:00:00+00:00", "2026-01-01T04:00:00+00:00"]


@pytest.mark.timeout(10)
def test_the_work_follows_what_fires_not_the_length_of_the_downtime():
    since, now = ms("2016-01-01T00:00:30+00:00"), ms("2026-01-01T00:00:30+00:00")  # ten years, each minute
    d = due("* * * * *", "UTC", since, now, "all", 3)
    assert isos(d.fire, "UTC") == ["2025-12-31T23:57:00+00:00", "2025-12-31T23:58:00+00:00",
                                   "2025-12-31T23:59:00+00:00", "2026-01-01T00:00:00+00:00"]  # 3 missed, 1 on time
    assert d.skipped_from == since + 30_000
    assert due("* * * * *", "UTC", since, now, "latest", 3).fire == (now - 30_000,)


# -- properties ---------------------------------------------------------------------------

EXPRESSIONS = ["* * * * *", "*/7 * * * *", "0 * * * *", "30 2 * * *", "0 2 * * *", "15 1,2,3 * * *",
               "0 */2 * * *", "*/20 2 * * *", "45 23 * * 0", "0 0 1 * *"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "Australia/Lord_Howe"]
# the 2026 clock changes (UTC) in Europe, the USA, Australia and on Lord Howe Island (30 minutes)
CHANGES = [ms("2026-03-08T07:00:00+00:00"), ms("2026-03-29T01:00:00+00:00"), ms("2026-04-05T15:00:00+00:00"),
           ms("2026-04-05T16:00:00+00:00"), ms("2026-10-04T15:30:00+00:00"), ms("2026-10-04T16:00:00+00:00"),
           ms("2026-10-25T01:00:00+00:00"), ms("2026-11-01T06:00:00+00:00")]
STARTS = [t - 3 * HOUR for t in CHANGES]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(EXPRESSIONS), st.sampled_from(ZONES), st.sampled_from(STARTS),
       st.integers(0, HOUR), st.sampled_from(["skip", "latest", "all"]),
       st.lists(st.integers(15_000, MISFIRE_GRACE_MS - 1), min_size=1, max_size=50))
def test_ticking_within_the_grace_fires_every_nominal_time_once_in_order(expression, zone, start, offset, policy,
                                                                        steps):
    since = start + offset
    now = since
    fired: list[int] = []
    for step in steps * (1 + (5 * HOUR) // sum(steps)):  # about five hours of ticks across a clock change
        now += step
        d = due(expression, zone, since, now, policy, 5)
        assert d.missed == () and d.skipped_from is None
        assert d.next_at is None or d.next_at > now
        fired += d.fire
        since = now
    assert fired == list(nominal_times(expression, zone, start + offset, now))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(EXPRESSIONS), st.sampled_from(ZONES), st.sampled_from(STARTS),
       st.integers(0, 2 * DAY), st.integers(0, 3 * DAY), st.integers(1, 50))
def test_after_a_downtime_each_policy_fires_its_share_of_the_due_times(expression, zone, start, down, back,
                                                                       max_catch_up):
    since, now = start + down, start + down + back
    every = list(nominal_times(expression, zone, since, now))
    on_time = [t for t in every if t > now - MISFIRE_GRACE_MS]
    missed = [t for t in every if t <= now - MISFIRE_GRACE_MS]
    assert due(expression, zone, since, now, "skip", max_catch_up).fire == tuple(on_time)
    assert due(expression, zone, since, now, "latest", max_catch_up).fire == tuple(on_time or missed[-1:])
    d = due(expression, zone, since, now, "all", max_catch_up)
    assert d.fire == tuple(missed[-max_catch_up:] + on_time) and d.missed == tuple(missed[-max_catch_up:])
    assert d.skipped_from == (missed[0] if len(missed) > max_catch_up else None)
    assert list(d.fire) == sorted(set(d.fire))
