"""The projector against real Kafka and PostgreSQL: rows, restarts, rebuild.

Each test has its own topic prefix (`kafka_settings`) and PostgreSQL schema
(`pg_schema`). Events are the decider's real output for a few executions
(tests/projection_histories.py), Avro-encoded and written in Kafka
transactions like the decider does, so the topics carry transaction markers.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from orchestrator.codec import Codec
from orchestrator.config import Settings
from orchestrator.core.events import RecordedEvent
from orchestrator.runtime.kafka import DeadLetters, consumer_config, producer_config
from projections import Projector, connect, migrate, snapshot
from projections.migrate import migrations
from projections.batch import Message, OffsetsMoved, ProjectionWriter
from projections.definitions import Definitions, read_definitions_topic
from projections.rebuild import rebuild, reset
from tests.projection_histories import histories, pipeline_registered

pytestmark = pytest.mark.integration
CODEC = Codec.default()


# -- helpers -----------------------------------------------------------------------


def produce(settings: Settings, items: list[tuple[str, str, Any]], *, per_transaction: int = 20) -> None:
    """Write (topic, key, value) in transactions of `per_transaction` messages;
    values are encoded unless they already are bytes."""
    producer = Producer(producer_config(settings, transactional_id=f"test-{uuid.uuid4().hex[:8]}"))
    producer.init_transactions(30)
    for start in range(0, len(items), per_transaction):
        producer.begin_transaction()
        for topic, key, value in items[start:start + per_transaction]:
            data = value if isinstance(value, (bytes, type(None))) else CODEC.encode(value)
            producer.produce(topic, key=key.encode(), value=data)
        producer.commit_transaction(30)


def interleaved(settings: Settings, hist: dict[str, list[RecordedEvent]]) -> list[tuple[str, str, Any]]:
    """The executions' events interleaved round-robin, each execution in order."""
    queues = [list(h) for h in hist.values()]
    out = []
    while any(queues):
        for q in queues:
            if q:
                r = q.pop(0)
                out.append((settings.topics.events, r.execution_id, r))
    return out


def seed(settings: Settings, prefix: str = "exec") -> dict[str, list[RecordedEvent]]:
    hist = histories(prefix)
    definition = pipeline_registered()
    produce(settings, [(settings.topics.definitions, "pipeline@1", definition)])
    produce(settings, interleaved(settings, hist))
    return hist


def project(settings: Settings, schema: str, **options: Any) -> None:
    with Projector(settings, schema, **options) as projector:
        projector.run_until_caught_up(timeout_s=60)


def rows(settings: Settings, schema: str, include_offsets: bool = False) -> dict[str, list[dict[str, Any]]]:
    with connect(settings.database_url, schema) as conn:
        return snapshot(conn, include_offsets=include_offsets)


def by_id(snap: dict[str, list[dict[str, Any]]], table: str, key: str = "id") -> dict[Any, dict[str, Any]]:
    return {r[key]: r for r in snap[table]}


# -- tests ------------------------------------------------------------------------------


ALL_VERSIONS = list(range(1, len(migrations()) + 1))  # numbered 1, 2, 3, ... without gaps


def test_migrations_are_idempotent_and_versioned(database_url, pg_schema):
    with connect(database_url, pg_schema, autocommit=True) as conn:
        first = migrate(conn, pg_schema)
        assert [m.version for m in first] == ALL_VERSIONS
        assert migrate(conn, pg_schema) == []
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (pg_schema,))}
    assert tables >= {"schema_migrations", "workflow_executions", "step_executions", "execution_events",
                      "workflow_definitions", "projection_offsets"}


def test_concurrent_migrations_do_not_race(database_url, pg_schema):
    errors: list[BaseException] = []
    applied: list[int] = []

    def run() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                applied.extend(m.version for m in migrate(conn, pg_schema))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(applied) == ALL_VERSIONS  # each file applied once, by whichever process got the lock


def test_projects_executions_steps_history_and_definitions(projection_settings, pg_schema):
    settings = projection_settings
    hist = seed(settings)
    project(settings, pg_schema)
    snap = rows(settings, pg_schema, include_offsets=True)

    executions = by_id(snap, "workflow_executions")
    assert {k: v["status"] for k, v in executions.items()} == {
        "exec-ok": "completed", "exec-fail": "failed", "exec-rejected": "failed",
        "exec-unknown": "failed", "exec-cancel": "cancelled", "exec-running": "running",
    }
    ok = executions["exec-ok"]
    assert ok["input"] == {"email": "a@example.com", "password": "***"}
    assert ok["output"] == {"user_id": "u-1"}
    assert ok["requested_by"] == "alice"
    assert ok["last_sequence"] == len(hist["exec-ok"])
    assert int(ok["finished_at"].timestamp() * 1000) == hist["exec-ok"][-1].recorded_at
    assert executions["exec-fail"]["error"] == "C broke: HTTP 503"
    assert executions["exec-fail"]["failed_step"] == "c"
    assert executions["exec-rejected"]["error"].startswith("rejected: email:")
    assert executions["exec-unknown"]["workflow_version"] is None
    assert executions["exec-cancel"]["error"] == "changed my mind"

    steps = {(s["execution_id"], s["step_name"]): s for s in snap["step_executions"]}
    assert {n: (s["status"], s["attempts"], s["step_type"]) for (e, n), s in steps.items() if e == "exec-ok"} == {
        "a": ("completed", 2, "service_call"), "b": ("failed", 1, "validation"),
        "c": ("completed", 1, "service_call"), "d": ("completed", 1, "service_call"),
    }
    assert steps[("exec-ok", "a")]["output"] == {"user_id": "u-1", "token": "***"}
    assert steps[("exec-fail", "c")]["status"] == "failed" and steps[("exec-fail", "c")]["attempts"] == 3
    assert steps[("exec-fail", "d")]["status"] == "pending"
    assert steps[("exec-running", "a")]["status"] == "retrying"
    assert steps[("exec-running", "a")]["error"] == "HTTP 503"
    assert not any(e == "exec-rejected" for e, _ in steps)

    history = snap["execution_events"]
    assert len(history) == sum(len(h) for h in hist.values())
    assert len({(h["kafka_partition"], h["kafka_offset"]) for h in history}) == len(history)
    started = next(h for h in history if h["execution_id"] == "exec-ok" and h["sequence"] == 1)
    assert started["event_type"] == "WorkflowStarted"
    assert started["payload"]["input"]["password"] == "***"
    assert started["cause"] == "command:StartWorkflow"

    [definition] = snap["workflow_definitions"]
    assert (definition["name"], definition["version"], definition["step_count"]) == ("pipeline", "1", 4)
    assert definition["source"] == pipeline_registered().source

    offsets = {(o["topic"], o["partition"]): o["next_offset"] for o in snap["projection_offsets"]}
    assert {t for t, _ in offsets} == {settings.topics.events, settings.topics.definitions}
    with psycopg.connect(settings.database_url) as conn:
        text = conn.execute(
            f"SELECT string_agg(t::text, ' ') FROM {pg_schema}.workflow_executions t").fetchone()[0]
        text += conn.execute(
            f"SELECT string_agg(t::text, ' ') FROM {pg_schema}.execution_events t").fetchone()[0]
    assert "sealed-token" not in text, "a secret reached Postgres"


def test_restarts_between_batches_and_crashes_before_commit_change_nothing(projection_settings, pg_schema,
                                                                           database_url):
    settings = projection_settings
    seed(settings)
    reference_schema = f"{pg_schema}_ref"
    try:
        project(settings, reference_schema)
        expected = rows(settings, reference_schema)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {reference_schema} CASCADE")

    # Stopped between batches, three times.
    for _ in range(3):
        with Projector(settings, pg_schema, batch_size=5) as projector:
            written = 0
            deadline = time.monotonic() + 30
            while written < 2 and time.monotonic() < deadline:
                written += projector.poll_once() is not None

    # A crash after the rows were written but before the commit.
    crashed = Projector(settings, pg_schema, batch_size=5).open()
    original = ProjectionWriter._write_events

    def write_then_die(self: ProjectionWriter, *args: Any) -> None:
        original(self, *args)
        raise RuntimeError("power cut")

    ProjectionWriter._write_events = write_then_die  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="power cut"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                crashed.poll_once()
    finally:
        ProjectionWriter._write_events = original  # type: ignore[method-assign]
        crashed.close()

    project(settings, pg_schema)
    assert rows(settings, pg_schema) == expected


def test_two_projectors_in_one_group_share_the_work(projection_settings, pg_schema):
    settings = projection_settings
    seed(settings)
    first = Projector(settings, pg_schema, batch_size=3).open()
    second = Projector(settings, pg_schema, batch_size=3).open()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            first.poll_once()
            second.poll_once()
            assigned = len(first.stream.expected) + len(second.stream.expected)  # type: ignore[union-attr]
            if assigned == 2 * settings.partitions and first.caught_up() and second.caught_up():
                break
        else:
            pytest.fail("two projectors did not catch up")
    finally:
        first.close()
        second.close()
    live = rows(settings, pg_schema)
    rebuild(settings, schema=pg_schema)
    assert rows(settings, pg_schema) == live
    assert len(live["workflow_executions"]) == 6


def test_a_stale_writer_is_fenced_off(projection_settings, pg_schema):
    settings = projection_settings
    with connect(settings.database_url, pg_schema, autocommit=True) as conn:
        migrate(conn, pg_schema)
    events = settings.topics.events
    recorded = histories()["exec-cancel"]
    with connect(settings.database_url, pg_schema) as a, connect(settings.database_url, pg_schema) as b:
        writer_a = ProjectionWriter(a, settings.topics, Definitions())
        writer_b = ProjectionWriter(b, settings.topics, Definitions())
        msgs = [Message(events, 0, i, r) for i, r in enumerate(recorded)]
        writer_a.write(msgs[:2], {(events, 0): 2}, {(events, 0): 0})
        with pytest.raises(OffsetsMoved) as moved:
            writer_b.write(msgs[:3], {(events, 0): 3}, {(events, 0): 0})  # b still thinks 0
        assert moved.value.stored == {(events, 0): 2}
        writer_b.write(msgs[2:], {(events, 0): len(msgs)}, {(events, 0): 2})
    snap = rows(settings, pg_schema)
    assert [h["sequence"] for h in snap["execution_events"]] == [r.sequence for r in recorded]
    assert snap["workflow_executions"][0]["status"] == "cancelled"


def test_a_start_whose_definition_was_not_projected_yet_reads_the_topic(projection_settings, pg_schema):
    settings = projection_settings
    produce(settings, [(settings.topics.definitions, "pipeline@1", pipeline_registered())])
    with connect(settings.database_url, pg_schema, autocommit=True) as conn:
        migrate(conn, pg_schema)
    recorded = histories()["exec-running"]
    events = settings.topics.events
    with connect(settings.database_url, pg_schema) as conn:
        writer = ProjectionWriter(conn, settings.topics,
                                  Definitions(lambda keys: read_definitions_topic(settings, keys)))
        writer.write([Message(events, 1, i, r) for i, r in enumerate(recorded)],
                     {(events, 1): len(recorded)}, {})
    snap = rows(settings, pg_schema)
    assert sorted((s["step_name"], s["status"]) for s in snap["step_executions"]) == [
        ("a", "retrying"), ("b", "pending"), ("c", "pending"), ("d", "pending")]
    assert [d["name"] for d in snap["workflow_definitions"]] == ["pipeline"]


def test_undecodable_messages_go_to_the_dlq_and_are_skipped(projection_settings, pg_schema):
    settings = projection_settings
    hist = seed(settings)
    produce(settings, [(settings.topics.events, "exec-garbage", b"not avro at all"),
                       (settings.topics.events, "exec-ok", b"\xc3\x01garbage!")])
    project(settings, pg_schema)
    snap = rows(settings, pg_schema)
    assert len(snap["execution_events"]) == sum(len(h) for h in hist.values())

    consumer = Consumer(consumer_config(settings, f"test-dlq-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([settings.topics.dlq])
    letters = []
    deadline = time.monotonic() + 20
    while len(letters) < 2 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            letters.append(msg)
    consumer.close()
    assert {m.value() for m in letters} == {b"\xc3\x01garbage!", b"not avro at all"}
    headers = DeadLetters.headers_of(letters[0])
    assert headers["dlq.role"] == "projector" and headers["dlq.topic"] == settings.topics.events
    # Projecting again (from the stored offsets) sends nothing twice.
    project(settings, pg_schema)
    assert rows(settings, pg_schema) == snap


def test_rebuild_equals_live_and_reports_progress(projection_settings, pg_schema):
    settings = projection_settings
    seed(settings)
    project(settings, pg_schema)
    live = rows(settings, pg_schema, include_offsets=True)
    reports: list[tuple[int, int]] = []
    result = rebuild(settings, progress=lambda done, total: reports.append((done, total)), schema=pg_schema)
    assert rows(settings, pg_schema, include_offsets=True) == live
    assert result.events == len(live["execution_events"])
    assert reports[0][0] == 0 and reports[-1][0] == reports[-1][1] == result.messages
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)
    # A projector started after the rebuild finds nothing left to do.
    project(settings, pg_schema)
    assert rows(settings, pg_schema, include_offsets=True) == live


def test_a_running_projector_starts_over_when_the_projection_is_reset(projection_settings, pg_schema):
    settings = projection_settings
    seed(settings)
    with Projector(settings, pg_schema, batch_size=4) as projector:
        projector.run_until_caught_up()
        expected = rows(settings, pg_schema, include_offsets=True)
        with connect(settings.database_url, pg_schema) as conn:
            reset(conn)  # what rebuild does first
        assert rows(settings, pg_schema)["execution_events"] == []
        produce(settings, [(settings.topics.events, "exec-ok", b"junk")], per_transaction=1)
        projector.run_until_caught_up()  # the junk's partition notices at once, the others on resync
    after = rows(settings, pg_schema, include_offsets=True)
    assert {k: v for k, v in after.items() if k != "projection_offsets"} == \
        {k: v for k, v in expected.items() if k != "projection_offsets"}
    moved = {(o["topic"], o["partition"]) for o in after["projection_offsets"]} ^ \
        {(o["topic"], o["partition"]) for o in expected["projection_offsets"]}
    assert not moved


def test_rebuild_while_the_live_projector_runs(projection_settings, pg_schema):
    settings = projection_settings
    hist = seed(settings)
    stop = threading.Event()
    failures: list[BaseException] = []
    projector = Projector(settings, pg_schema, batch_size=4).open()

    def live() -> None:
        try:
            projector.run(stop)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    thread = threading.Thread(target=live)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not projector.caught_up() and time.monotonic() < deadline:
            time.sleep(0.1)
        expected = rows(settings, pg_schema)
        rebuild(settings, schema=pg_schema, batch_size=3)
        more = seed(settings, prefix="more")  # the live projector keeps going afterwards
        # Wait for every event, not just the 12 executions: caught_up() reports the
        # end each partition had when last read, which may predate seed()'s last
        # Kafka transaction (the 6 starts are all in its first one).
        total = sum(len(h) for h in (*hist.values(), *more.values()))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            snap = rows(settings, pg_schema)
            if len(snap["execution_events"]) == total and projector.caught_up():
                break
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
        projector.close()
    assert not failures
    snap = rows(settings, pg_schema)
    assert [r for r in snap["workflow_executions"] if not r["id"].startswith("more-")] == \
        expected["workflow_executions"]
    assert len(snap["workflow_executions"]) == 12
    assert len(snap["execution_events"]) == total
    rebuild(settings, schema=pg_schema)
    assert rows(settings, pg_schema) == snap


def test_run_projector_stops_gracefully(projection_settings, pg_schema):
    from projections import run_projector

    settings = projection_settings
    hist = seed(settings)
    stop = threading.Event()
    thread = threading.Thread(target=run_projector, args=(settings, stop, pg_schema))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if len(rows(settings, pg_schema)["execution_events"]) == sum(len(h) for h in hist.values()):
                    break
            except psycopg.errors.UndefinedTable:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("run_projector did not project the events")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_control_flow_rows_through_kafka_and_postgres_agree_with_the_audit(projection_settings, pg_schema):
    """The decider's events of a switch, a for_each with workflow steps, a loop with
    delays and a cancelled step (event schema v3), projected by the real projector,
    then checked the way `orchestrator replay --all` and `status` read them."""
    from psycopg.rows import dict_row

    from orchestrator.cli.queries import load_projection, parent_step
    from orchestrator.cli.replay_all import audit_all
    from orchestrator.core import events as ev
    from tests.unit.test_projection_apply import flow_history, flow_registered

    settings = projection_settings
    history = flow_history()
    child = [RecordedEvent("f-1.pay_all.0.receipt", 1, history[0].recorded_at + 500, "command:StartWorkflow",
                           ev.WorkflowStarted("receipt", "1", {"order": "o1"}, "execution:f-1", "f-1", "subworkflow"))]
    produce(settings, [(settings.topics.definitions, "flow@1", flow_registered())])
    produce(settings, interleaved(settings, {"f-1": history, "child": child}))
    project(settings, pg_schema)

    snap = rows(settings, pg_schema)
    steps = {s["step_name"]: s for s in snap["step_executions"] if s["execution_id"] == "f-1"}
    assert (steps["route"]["branch"], steps["review"]["parent_step"]) == ("big", "route")
    pay = steps["pay_all"]
    assert (pay["items_total"], pay["iterations_started"], pay["iterations_completed"], pay["iterations_failed"]) == (
        3, 3, 2, 1)
    assert (steps["pay_all[2].receipt"]["child_execution_id"], steps["pay_all[2].receipt"]["parent_step"],
            steps["pay_all[2].receipt"]["step_type"]) == ("f-1.pay_all.2.receipt", "pay_all", "workflow")
    assert "pay_all[1].receipt" not in steps  # its item failed first: it never started
    assert (steps["poll"]["iterations_started"], steps["poll[1].pause"]["wait_until"] is not None) == (2, True)
    assert (steps["slow"]["status"], steps["slow"]["error"]) == ("cancelled", "signal 'stop'")

    with connect(settings.database_url, pg_schema, autocommit=True) as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        report = audit_all(settings, conn)
        assert [(a.execution_id, a.differences, a.history_problems) for a in report.inconsistent] == []
        assert {a.execution_id for a in report.executions} == {"f-1", "f-1.pay_all.0.receipt"}
        row, _ = load_projection(conn, "f-1.pay_all.0.receipt")
        assert parent_step(conn, row) == "pay_all[0].receipt"  # through step_executions_child_idx


def test_values_postgresql_cannot_store_are_replaced_not_fatal(projection_settings, pg_schema):
    """A NUL (a service's error body, a client's JSON) or a lone surrogate (a JSON escape)
    is replaced by U+FFFD in the projection; Kafka keeps the original."""
    from orchestrator.core.messages import TaskFailed
    from tests.projection_histories import Driver, pipeline_definition

    settings = projection_settings
    d = Driver("exec-nul", pipeline_definition()).start({"email": "n@example.com", "note": "a\x00b \ud800"})
    d.send(TaskFailed(d.execution_id, "a", 1, "HTTP 400: body \x00 end", False, 400, d.now, d.now))
    produce(settings, [(settings.topics.definitions, "pipeline@1", pipeline_registered())])
    produce(settings, [(settings.topics.events, r.execution_id, r) for r in d.history])
    project(settings, pg_schema)
    execution = by_id(rows(settings, pg_schema), "workflow_executions")["exec-nul"]
    assert execution["input"]["note"] == "a\ufffdb \ufffd"
    assert execution["status"] == "failed" and "body \ufffd end" in execution["error"]
