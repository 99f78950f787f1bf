"""The API's projection reads (orchestrator/api/reads.py) against the real PostgreSQL.

Each test gets a fresh schema (`pg_schema`) migrated like the projector's,
with a few rows written directly: executions (some sharing one created_at),
step rows, and events whose payloads are the real events as the projector
stores them (`history_row`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from orchestrator.api import reads
from orchestrator.api.reads import ExecutionFilter, parse_filter
from orchestrator.core.decide import EXECUTION_TIMEOUT_TIMER
from orchestrator.core.events import (
    CommandRejected,
    RecordedEvent,
    StepCompleted,
    StepScheduled,
    StepWaiting,
    TimerScheduled,
    WorkflowStarted,
)
from projections import connect, migrate
from projections.rows import history_row

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
MS0 = int(T0.timestamp() * 1000)
SHOP = """apiVersion: workflow/v1
kind: Workflow
metadata: {name: shop, version: "1.10.0", description: Sells things}
spec:
  steps:
    - {name: validate, type: validation, config: {rules: []}}
    - {name: charge, type: service_call, config: {service: pay, endpoint: /c}}
    - {name: approval, type: wait_for_event, config: {event_type: approved, timeout: 1h}}
    - {name: ship, type: service_call, config: {service: ship, endpoint: /s}}
"""


@pytest.fixture
def conn(database_url: str, pg_schema: str) -> Iterator[psycopg.Connection]:
    with connect(database_url, pg_schema, autocommit=True) as c:
        migrate(c, pg_schema)
        c.row_factory = dict_row  # type: ignore[assignment]
        yield c


def add_execution(conn: Any, execution_id: str, *, workflow: str = "shop", version: str = "1.10.0",
                  status: str = "completed", minutes: float = 0, input: Any = None, output: Any = None,
                  parent: str | None = None) -> None:
    created = T0 + timedelta(minutes=minutes)
    conn.execute(
        "INSERT INTO workflow_executions (id, workflow_name, workflow_version, status, input, output, requested_by, "
        "created_at, started_at, finished_at, updated_at, last_sequence, parent_execution_id, parent_relation) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'cli:test', %s, %s, %s, %s, 1, %s, %s)",
        (execution_id, workflow, version, status, json(input), json(output), created, created,
         created if status in ("completed", "failed", "cancelled") else None, created, parent,
         "subworkflow" if parent else None))


def json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def add_step(conn: Any, execution_id: str, name: str, status: str, *, started_min: float | None,
             attempts: int = 1, waiting_for: str | None = None, wait_until: datetime | None = None) -> None:
    started = T0 + timedelta(minutes=started_min) if started_min is not None else None
    conn.execute(
        "INSERT INTO step_executions (execution_id, step_name, status, attempts, started_at, updated_at, "
        "waiting_for, wait_until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (execution_id, name, status, attempts, started, started or T0, waiting_for, wait_until))


def add_events(conn: Any, execution_id: str, *events: tuple[Any, str]) -> None:
    """(event, cause) pairs, recorded a second apart from T0."""
    for sequence, (event, cause) in enumerate(events, start=1):
        row = history_row(RecordedEvent(execution_id, sequence, MS0 + 1000 * sequence, cause, event),
                          partition=1, offset=100 * sequence + len(execution_id))
        conn.execute("INSERT INTO execution_events (execution_id, sequence, event_type, recorded_at, cause, payload, "
                     "kafka_partition, kafka_offset) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                     (row.execution_id, row.sequence, row.event_type, row.recorded_at, row.cause,
                      Jsonb(row.payload), row.kafka_partition, row.kafka_offset))


@pytest.fixture
def executions(conn: psycopg.Connection) -> list[str]:
    """Eight executions; b, c and d share one created_at. Newest first, as lists give them."""
    add_execution(conn, "a", minutes=0, input={"customer": {"id": 7, "tier": "gold"}, "plan": "pro"})
    for execution_id in ("b", "c", "d"):
        add_execution(conn, execution_id, minutes=10, status="failed", input={"customer": {"id": 8}})
    add_execution(conn, "e", minutes=20, status="paused", version="2.0.0", input={"plan": "pro"})
    add_execution(conn, "f", minutes=30, workflow="billing", version="1", status="running",
                  output=None, input={"plan": "free"})
    add_execution(conn, "g", minutes=40, output={"total": 12.5, "ok": True}, input={"customer": {"id": 7}})
    add_execution(conn, "h", minutes=50, workflow="billing", version="1", parent="f")
    return ["h", "g", "f", "e", "d", "c", "b", "a"]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def test_filters(conn, executions):
    def matching(**params: Any) -> list[str]:
        return ids(reads.list_executions(conn, parse_filter(params), limit=100)[0])

    assert matching() == executions
    assert matching(status="failed") == ["d", "c", "b"]
    assert matching(status=["paused", "running"]) == ["f", "e"]
    assert matching(workflow="billing") == ["h", "f"]
    assert matching(workflow="shop", version="2.0.0") == ["e"]
    assert matching(created_after=(T0 + timedelta(minutes=10)).isoformat(),
                    created_before=(T0 + timedelta(minutes=30)).isoformat()) == ["e", "d", "c", "b"]
    assert matching(**{"input.customer.id": "7"}) == ["g", "a"]
    assert matching(**{"input.customer.id": "7", "input.customer.tier": "gold"}) == ["a"]
    assert matching(**{"input.customer.id": '"7"'}) == []  # the string "7" is not the number 7
    assert matching(**{"input.plan": "pro", "status": "completed"}) == ["a"]
    assert matching(**{"output.total": "12.5"}) == ["g"]
    assert matching(workflow="nope") == []


def test_items_are_json_ready_summaries(conn, executions):
    items, _ = reads.list_executions(conn, parse_filter({"workflow": "billing"}))
    assert items[0] == {
        "id": "h", "workflow_name": "billing", "workflow_version": "1", "status": "completed",
        "created_at": "2026-11-01T12:50:00.000Z", "started_at": "2026-11-01T12:50:00.000Z",
        "finished_at": "2026-11-01T12:50:00.000Z", "updated_at": "2026-11-01T12:50:00.000Z", "error": None,
        "failed_step": None, "requested_by": "cli:test", "parent_execution_id": "f"}


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 8])
def test_pages_follow_each_other_without_gaps_or_repeats_across_equal_created_at(conn, executions, limit):
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        items, cursor = reads.list_executions(conn, ExecutionFilter(), limit=limit, cursor=cursor)
        assert len(items) <= limit
        seen += ids(items)
        if cursor is None:
            break
    assert seen == executions


def test_a_filtered_page_and_a_bad_cursor(conn, executions):
    f = parse_filter({"status": "failed"})
    first, cursor = reads.list_executions(conn, f, limit=2)
    second, end = reads.list_executions(conn, f, limit=2, cursor=cursor)
    assert (ids(first), ids(second), end) == (["d", "c"], ["b"], None)
    with pytest.raises(ValueError, match="^cursor:"):
        reads.list_executions(conn, f, cursor="garbage")


def test_counting_and_the_ids_a_bulk_action_takes(conn, executions):
    f = parse_filter({"workflow": "shop"})
    assert reads.count_matching(conn, f) == 6
    assert reads.matching_ids(conn, f, max_items=4) == ["g", "e", "d", "c"]
    assert reads.count_matching(conn, ExecutionFilter()) == 8


def test_the_detail_of_a_running_execution(conn, executions):
    conn.execute("INSERT INTO workflow_definitions (name, version, digest, source, source_format, registered_at, "
                 "registered_by, step_count, kafka_partition, kafka_offset) "
                 "VALUES ('billing', '1', 'd1', %s, 'yaml', %s, 'cli:test', 4, 0, 1)",
                 (SHOP.replace("name: shop", "name: billing"), T0))
    # Time order (and name order) differ from the definition's order: validate, charge, approval, ship.
    add_step(conn, "f", "ship", "pending", started_min=None)
    add_step(conn, "f", "approval", "waiting", started_min=33, waiting_for="approved",
             wait_until=T0 + timedelta(hours=2))
    add_step(conn, "f", "charge", "completed", started_min=32)
    add_step(conn, "f", "validate", "completed", started_min=34)
    add_events(conn, "f",
               (WorkflowStarted("billing", "1", {"plan": "free"}, "cli:test"), "commands:0:5"),
               (TimerScheduled(EXECUTION_TIMEOUT_TIMER, MS0 + 3_600_000), "commands:0:5"),
               (StepScheduled("charge", 1, MS0 + 30_000), "commands:0:5"),
               (StepCompleted("charge", 1, {"ok": True}), "results:0:9"),
               (StepWaiting("approval", "approved", None, {"id": 1}, MS0 + 7_200_000), "results:0:9"))
    doc = reads.get_execution(conn, "f")
    assert doc is not None
    assert set(doc) == {"execution", "steps", "children", "timers", "waits"}
    execution = doc["execution"]
    assert (execution["id"], execution["status"], execution["input"], execution["parent_step"]) == (
        "f", "running", {"plan": "free"}, None)
    assert "projected_at" not in execution and "compensation_status" in execution  # every column but bookkeeping
    assert [s["step_name"] for s in doc["steps"]] == ["validate", "charge", "approval", "ship"]
    assert all("parent_step" in s for s in doc["steps"])
    assert [(c["id"], c["parent_relation"]) for c in doc["children"]] == [("h", "subworkflow")]
    assert doc["timers"] == [
        {"timer_id": "execution-timeout", "kind": "execution_timeout", "step": None,
         "fire_at": "2026-11-01T13:00:00.000Z"},
        {"timer_id": "wait:approval", "kind": "wait", "step": "approval", "fire_at": "2026-11-01T14:00:00.000Z"},
    ]
    assert doc["waits"] == [{"step": "approval", "waiting_for": "approved", "timeout_at": "2026-11-01T14:00:00.000Z"}]


def test_the_detail_of_an_ended_execution_and_of_none(conn, executions):
    add_step(conn, "a", "b_step", "completed", started_min=1)
    add_step(conn, "a", "a_step", "completed", started_min=2)
    doc = reads.get_execution(conn, "a")  # no definition projected: time order
    assert [s["step_name"] for s in doc["steps"]] == ["b_step", "a_step"]
    assert (doc["timers"], doc["waits"], doc["children"]) == ([], [], [])
    assert reads.get_execution(conn, "nope") is None
    with conn.transaction():  # inside the caller's transaction too
        assert reads.get_execution(conn, "a")["execution"]["id"] == "a"


def test_history_pages_by_sequence(conn, executions):
    add_events(conn, "g", *[(StepScheduled(f"s{i}", 1, MS0), f"results:0:{i}") for i in range(5)])
    events, next_after = reads.history(conn, "g", limit=2)
    assert ([e["sequence"] for e in events], next_after) == ([1, 2], 2)
    assert events[0] == {"sequence": 1, "event_type": "StepScheduled", "recorded_at": "2026-11-01T12:00:01.000Z",
                         "cause": "results:0:0", "payload": {"step": "s0", "attempt": 1, "deadline_at": MS0},
                         "kafka_partition": 1, "kafka_offset": 101}
    events, next_after = reads.history(conn, "g", after=2, limit=3)
    assert ([e["sequence"] for e in events], next_after) == ([3, 4, 5], None)
    assert reads.history(conn, "nope") == ([], None)


def test_the_decision_a_command_caused(conn, executions):
    add_events(conn, "e",
               (WorkflowStarted("shop", "2.0.0", {}, "cli:test"), "commands:1:40"),
               (CommandRejected("SignalWorkflow", "no wait for signal 'go'", "api:alice"), "commands:1:42"),
               (StepScheduled("x", 1, MS0), "commands:1:44"),
               (StepCompleted("x", 1, {}), "commands:1:44"))
    rejected = reads.decision_for(conn, "e", 1, 42)
    assert (rejected["event_type"], rejected["payload"]["reason"]) == ("CommandRejected", "no wait for signal 'go'")
    assert reads.decision_for(conn, "e", 1, 44)["sequence"] == 3  # the first event it caused
    assert reads.decision_for(conn, "e", 1, 43) is None
    assert reads.decision_for(conn, "d", 1, 42) is None  # another execution's command


def test_definitions(conn):
    for version, by in (("1.9.0", "cli:a"), ("1.10.0", "cli:b"), ("1.2.0", "cli:c")):
        conn.execute("INSERT INTO workflow_definitions (name, version, digest, source, source_format, registered_at, "
                     "registered_by, step_count, kafka_partition, kafka_offset) "
                     "VALUES ('shop', %s, %s, %s, 'yaml', %s, %s, 4, 0, 1)",
                     (version, f"digest-{version}", SHOP.replace("1.10.0", version), T0, by))
    assert reads.list_definitions(conn) == [{
        "name": "shop", "latest_version": "1.10.0", "versions": 3, "registered_at": "2026-11-01T12:00:00.000Z",
        "registered_by": "cli:b", "description": "Sells things"}]
    doc = reads.get_definition(conn, "shop")
    assert [v["version"] for v in doc["versions"]] == ["1.2.0", "1.9.0", "1.10.0"]
    assert doc["versions"][0] == {"version": "1.2.0", "digest": "digest-1.2.0", "registered_at": "2026-11-01T12:00:00.000Z",
                                  "registered_by": "cli:c", "step_count": 4}
    version = reads.get_definition_version(conn, "shop", "1.9.0")
    assert (version["source_format"], version["digest"], "1.9.0" in version["source"]) == ("yaml", "digest-1.9.0", True)
    assert reads.get_definition(conn, "nope") is None
    assert reads.get_definition_version(conn, "shop", "9") is None
