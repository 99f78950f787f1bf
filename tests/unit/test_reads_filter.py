"""The API's execution filter (query parameters or a bulk JSON filter -> ExecutionFilter -> SQL)
and its page cursor: orchestrator/api/reads_filter.py. No database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.api.reads_filter import (
    ExecutionFilter,
    decode_cursor,
    encode_cursor,
    filter_sql,
    parse_filter,
)

UTC = timezone.utc


def test_an_empty_filter_matches_everything():
    assert parse_filter({}) == ExecutionFilter()
    assert filter_sql(ExecutionFilter()) == ([], [])


def test_query_parameters_as_a_web_framework_gives_them():
    f = parse_filter({"workflow": ["orders"], "version": "1.2.0", "status": ["failed", "paused"],
                      "created_after": "2026-11-01T00:00:00Z", "created_before": "2026-11-02T12:30:00+01:00",
                      "limit": "50", "cursor": "abc"})  # page controls ride along and are left alone
    assert f == ExecutionFilter(workflow="orders", version="1.2.0", statuses=("failed", "paused"),
                                created_after=datetime(2026, 11, 1, tzinfo=UTC),
                                created_before=datetime(2026, 11, 2, 11, 30, tzinfo=UTC))


def test_statuses_repeated_comma_separated_or_single_without_duplicates():
    assert parse_filter({"status": "failed"}).statuses == ("failed",)
    assert parse_filter({"status": ["failed,cancelled", "failed"]}).statuses == ("failed", "cancelled")
    assert parse_filter({"status": "paused"}).statuses == ("paused",)


def test_a_time_without_a_zone_is_utc_and_a_date_is_its_midnight():
    assert parse_filter({"created_after": "2026-11-01"}).created_after == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_filter({"created_before": "2026-11-01T08:00:00"}).created_before == datetime(
        2026, 11, 1, 8, tzinfo=UTC)


def test_dotted_paths_become_one_nested_containment_object_with_json_values():
    f = parse_filter({"input.customer.id": "7", "input.customer.tier": "gold", "input.plan": '"7"',
                      "input.flags": '["a"]', "input.active": "true", "output.total": "12.5"})
    assert f.input_contains == {"customer": {"id": 7, "tier": "gold"}, "plan": "7", "flags": ["a"], "active": True}
    assert f.output_contains == {"total": 12.5}


def test_a_json_filter_gives_values_as_they_are_or_whole_objects():
    f = parse_filter({"status": ["failed"], "input.amount": 5, "input": {"customer": {"id": 7}},
                      "output": {"ok": True}})
    assert f.input_contains == {"amount": 5, "customer": {"id": 7}}
    assert f.output_contains == {"ok": True}


@pytest.mark.parametrize("params, field", [
    ({"colour": "red"}, "colour"),
    ({"status": "sleeping"}, "status"),
    ({"status": ""}, "status"),
    ({"status": [1]}, "status"),
    ({"workflow": ["a", "b"]}, "workflow"),
    ({"workflow": ""}, "workflow"),
    ({"version": 3}, "version"),
    ({"created_after": "yesterday"}, "created_after"),
    ({"created_before": 1700000000}, "created_before"),
    ({"input.": "x"}, "input."),
    ({"input.a..b": "x"}, "input.a..b"),
    ({"input": "x"}, "input"),
    ({"input.a": "1", "input.a.b": "2"}, "input.a.b"),
    ({"inputs.a": "1"}, "inputs.a"),
])
def test_unknown_keys_and_bad_values_name_the_field(params, field):
    with pytest.raises(ValueError) as raised:
        parse_filter(params)
    assert str(raised.value).startswith(f"{field}:")


def test_a_filter_that_is_not_an_object():
    with pytest.raises(ValueError, match="^filter:"):
        parse_filter(["status", "failed"])  # type: ignore[arg-type]


def test_the_sql_of_every_filter():
    after = datetime(2026, 11, 1, tzinfo=UTC)
    where, params = filter_sql(ExecutionFilter(workflow="w", version="1", statuses=("failed",), created_after=after,
                                               input_contains={"a": 1}))
    assert where == ["workflow_name = %s", "workflow_version = %s", "created_at >= %s", "status = %s",
                     "input @> %s"]
    assert params[:4] == ["w", "1", after, "failed"] and params[4].obj == {"a": 1}
    where, params = filter_sql(ExecutionFilter(statuses=("running", "paused"), output_contains={"b": 2}))
    assert where == ["status = ANY(%s)", "output @> %s"]
    assert params[0] == ["running", "paused"]


@pytest.mark.parametrize("at", [
    datetime(2026, 11, 27, 8, 28, 33, 500000, tzinfo=UTC),
    datetime(2026, 11, 27, 8, 28, 33, 123456, tzinfo=timezone(timedelta(hours=-5))),
])
def test_a_cursor_round_trips_exactly(at):
    cursor = encode_cursor(at, "ex-1/ü")
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")  # URL-safe
    assert decode_cursor(cursor) == (at, "ex-1/ü")


@pytest.mark.parametrize("cursor", ["", "not a cursor", "e30", "WyJ4IiwgInkiXQ", "WzEsMl0", "!!!"])
def test_a_bad_cursor_is_an_error_naming_the_cursor(cursor):
    with pytest.raises(ValueError, match="^cursor:"):
        decode_cursor(cursor)
