"""The analytics window: defaults, bounds, buckets; and the shaping of query rows (no database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.api.analytics import MAX_RANGE, _shape, bucket_for, window

NOW = datetime(2026, 3, 1, 12, 0, 7, tzinfo=timezone.utc)


def test_the_default_window_is_the_last_24_hours_in_half_hour_buckets() -> None:
    win = window(None, None, NOW)
    assert (win.since, win.until, win.bucket) == (NOW - timedelta(hours=24), NOW, timedelta(minutes=30))


def test_a_window_is_bounded_and_ordered() -> None:
    with pytest.raises(ValueError, match="before until"):
        window(NOW, NOW - timedelta(hours=1), NOW)
    with pytest.raises(ValueError, match="31 days"):
        window(NOW - MAX_RANGE - timedelta(seconds=1), NOW, NOW)
    naive = window(datetime(2026, 3, 1, 10), datetime(2026, 3, 1, 11), NOW)
    assert naive.since.tzinfo is not None  # a time without a zone is UTC


@pytest.mark.parametrize("span, bucket", [(timedelta(minutes=30), timedelta(minutes=1)),
                                          (timedelta(hours=1), timedelta(minutes=1)),
                                          (timedelta(hours=6), timedelta(minutes=15)),
                                          (timedelta(days=7), timedelta(hours=3)),
                                          (timedelta(days=31), timedelta(days=1))])
def test_buckets_cut_a_window_into_at_most_60_bars(span: timedelta, bucket: timedelta) -> None:
    assert bucket_for(span) == bucket
    assert span / bucket <= 60 or bucket == timedelta(days=1)


def test_rows_become_every_bucket_with_totals_and_rates() -> None:
    win = window(NOW - timedelta(hours=1), NOW, NOW)
    t = datetime(2026, 3, 1, 11, 30, tzinfo=timezone.utc)
    doc = _shape(win, None, started=[{"t": t, "n": 5}],
                 finished=[{"t": t, "status": "completed", "n": 3}, {"t": t, "status": "failed", "n": 1},
                           {"t": t, "status": "cancelled", "n": 1}],
                 in_flight=[{"status": "running", "n": 2}],
                 workflows=[{"workflow": "w", "ended": 5, "completed": 3, "failed": 1, "cancelled": 1,
                             "p50_ms": 10.4, "p95_ms": 99.6, "max_ms": None}],
                 steps=[], slowest=[], failures=[], sampled=False)
    assert len(doc["throughput"]) == 61  # 11:00:00 .. 12:00:00, minute buckets, the partial one included
    bucket = next(b for b in doc["throughput"] if b["t"] == "2026-03-01T11:30:00Z")
    assert bucket == {"t": "2026-03-01T11:30:00Z", "started": 5, "finished": 5, "completed": 3, "failed": 1,
                      "cancelled": 1}
    assert doc["totals"]["success_rate"] == 0.75  # cancelled ones count in neither
    assert doc["totals"]["in_flight"] == {"running": 2}
    assert doc["workflows"][0] | {} == {"workflow": "w", "ended": 5, "completed": 3, "failed": 1, "cancelled": 1,
                                        "p50_ms": 10, "p95_ms": 100, "max_ms": None, "success_rate": 0.75}
