"""One Postgres transaction per batch of Kafka messages: rows and offsets together.

`ProjectionWriter.write` locks the `projection_offsets` rows of the batch's
partitions (FOR UPDATE), drops messages below the stored offsets (another
projector instance, or a rebuild, got there first), upserts definitions,
folds the events into the current rows of their executions, writes back what
changed with `executemany` (pipelined), advances the offsets and commits.
Either all of it lands or none of it: exactly-once projection without Kafka
offset commits.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Union

import psycopg
import structlog

from orchestrator.config import Topics
from orchestrator.core.events import RecordedEvent, WorkflowStarted
from orchestrator.core.messages import DefinitionRegistered

from .apply import ExecutionRow, ExecutionView, HistoryRow, StepRow, apply_event
from .definitions import UPSERT_DEFINITION, DefinitionRecord, Definitions

__all__ = ["BatchResult", "Message", "OffsetsMoved", "ProjectionWriter", "PROJECTION", "Tombstone"]

log = structlog.get_logger("projections.batch")

PROJECTION = "projector"  # the `projection` column of projection_offsets

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class Tombstone:
    """A null value on the definitions topic: the definition `key` was removed."""

    key: str


@dataclass(frozen=True)
class Message:
    """A decoded Kafka message of the events or definitions topic."""

    topic: str
    partition: int
    offset: int
    value: Union[RecordedEvent, DefinitionRegistered, Tombstone]


@dataclass
class BatchResult:
    events: int = 0  # event messages applied (history rows offered)
    definitions: int = 0
    stale: int = 0  # messages below the stored offset, skipped
    executions_written: int = 0
    steps_written: int = 0
    problems: list[tuple[str, int, str]] = field(default_factory=list)  # (execution id, sequence, what)


class OffsetsMoved(Exception):
    """The stored offsets are not where this writer left them: another
    projector instance or a rebuild wrote meanwhile. Nothing was written;
    re-seek to `stored` and go on from there."""

    def __init__(self, stored: dict[TopicPartitionKey, int], expected: Mapping[TopicPartitionKey, int]):
        moved = {k: (expected.get(k, 0), v) for k, v in stored.items() if v != expected.get(k, 0)}
        super().__init__(f"projection offsets moved (expected -> stored): {moved}")
        self.stored = stored


def _json(value: Any) -> str | None:
    if value is None:
        return None
    # json.dumps writes a NUL as the escape \u0000, which jsonb refuses like text refuses NUL.
    return storable(json.dumps(value, ensure_ascii=False, separators=(",", ":"))).replace("\\u0000", "\\ufffd")


def storable(value: Any) -> Any:
    """A string PostgreSQL can store: NUL and lone surrogates (which a service's error body
    or a client's JSON may carry) become U+FFFD. Kafka keeps the original; without this
    one such value would stop the projector for good."""
    if not isinstance(value, str):
        return value
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return value


# Column types for the set-based writes below: each batch writes a table with
# ONE statement over arrays (unnest), not one statement per row.
EXECUTION_TYPES = {
    "id": "text", "workflow_name": "text", "workflow_version": "text", "status": "text",
    "input": "jsonb", "output": "jsonb", "error": "text", "failed_step": "text", "requested_by": "text",
    "created_at": "timestamptz", "started_at": "timestamptz", "finished_at": "timestamptz",
    "updated_at": "timestamptz", "last_sequence": "int", "parent_execution_id": "text", "parent_relation": "text",
    "compensation_execution_id": "text", "compensation_status": "text", "compensation_error": "text",
    "compensation_trigger": "text", "compensation_reason": "text",
}
STEP_TYPES = {
    "execution_id": "text", "step_name": "text", "step_type": "text", "status": "text", "attempts": "int",
    "output": "jsonb", "error": "text", "status_reason": "text", "started_at": "timestamptz",
    "finished_at": "timestamptz", "updated_at": "timestamptz", "phase": "text", "waiting_for": "text",
    "breaker": "text", "parent_step": "text", "child_execution_id": "text", "branch": "text",
    "items_total": "int", "iterations_started": "int", "iterations_completed": "int",
    "iterations_failed": "int", "wait_until": "timestamptz",
}
HISTORY_TYPES = {
    "execution_id": "text", "sequence": "int", "event_type": "text", "recorded_at": "timestamptz",
    "cause": "text", "payload": "jsonb", "kafka_partition": "int", "kafka_offset": "bigint",
}
assert tuple(EXECUTION_TYPES) == ExecutionRow.COLUMNS
assert tuple(STEP_TYPES) == StepRow.COLUMNS
assert tuple(HISTORY_TYPES) == HistoryRow.COLUMNS


def _insert_unnest(table: str, types: dict[str, str], conflict: str) -> str:
    """INSERT ... SELECT FROM unnest(one array per column): JSON travels as text."""
    arrays = ", ".join(f"%b::{'text' if t == 'jsonb' else t}[]" for t in types.values())
    values = ", ".join(f"u.{c}::jsonb" if t == "jsonb" else f"u.{c}" for c, t in types.items())
    return (f"INSERT INTO {table} ({', '.join(types)}) SELECT {values} "
            f"FROM unnest({arrays}) AS u({', '.join(types)}) {conflict}")


def _do_update(key: tuple[str, ...], columns: Iterable[str]) -> str:
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    return f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}, projected_at = now()"


UPSERT_EXECUTIONS = _insert_unnest("workflow_executions", EXECUTION_TYPES, _do_update(("id",), EXECUTION_TYPES))
UPSERT_STEPS = _insert_unnest("step_executions", STEP_TYPES,
                              _do_update(("execution_id", "step_name"), STEP_TYPES))
INSERT_HISTORY = _insert_unnest("execution_events", HISTORY_TYPES, "ON CONFLICT DO NOTHING")
SELECT_EXECUTIONS = f"SELECT {', '.join(ExecutionRow.COLUMNS)} FROM workflow_executions WHERE id = ANY(%s)"
SELECT_STEPS = f"SELECT {', '.join(StepRow.COLUMNS)} FROM step_executions WHERE execution_id = ANY(%s)"


def _arrays(rows: list[Any], types: dict[str, str]) -> list[list[Any]]:
    """Column arrays of dataclass rows; JSON columns as JSON text."""
    out = []
    for column, type_ in types.items():
        values = [getattr(r, column) for r in rows]
        out.append([_json(v) for v in values] if type_ == "jsonb" else
                   [storable(v) for v in values] if type_ == "text" else values)
    return out


_TERMINAL = frozenset({"completed", "failed", "cancelled"})


class ProjectionWriter:
    """Applies decoded batches to Postgres through one connection (not autocommit).

    Keeps the rows of recently active executions in memory (`cache_size`
    executions, ended ones dropped): they are exactly what this writer last
    committed, and valid as long as nobody else wrote their partitions, which
    the offset check of every batch proves. Any failure, moved offset or
    reassignment empties the cache (`invalidate`).
    """

    def __init__(self, conn: psycopg.Connection, topics: Topics, definitions: Definitions,
                 projection: str = PROJECTION, *, cache_size: int = 20_000):
        self.conn = conn
        self.topics = topics
        self.definitions = definitions
        self.projection = projection
        self.cache_size = cache_size
        self._views: OrderedDict[str, ExecutionView] = OrderedDict()

    def invalidate(self) -> None:
        """Forget the cached rows (someone else may have written them)."""
        self._views.clear()

    # -- offsets ---------------------------------------------------------------

    def stored_offsets(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """The next offsets stored for these topic-partitions (absent: none stored)."""
        wanted = list(partitions)
        if not wanted:
            return {}
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(
                """
                SELECT o.topic, o.partition, o.next_offset FROM projection_offsets o
                JOIN unnest(%s::text[], %s::int[]) AS k(topic, partition) USING (topic, partition)
                WHERE o.projection = %s
                """,
                ([t for t, _ in wanted], [p for _, p in wanted], self.projection),
            )
            return {(t, p): o for t, p, o in cur.fetchall()}

    def _lock_offsets(self, cur: psycopg.Cursor, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        topics = [t for t, _ in keys]
        parts = [p for _, p in keys]
        cur.execute(
            """
            INSERT INTO projection_offsets (projection, topic, partition, next_offset)
            SELECT %s, k.topic, k.partition, 0 FROM unnest(%s::text[], %s::int[]) AS k(topic, partition)
            ON CONFLICT DO NOTHING
            """,
            (self.projection, topics, parts),
        )
        cur.execute(
            """
            SELECT o.topic, o.partition, o.next_offset FROM projection_offsets o
            JOIN unnest(%s::text[], %s::int[]) AS k(topic, partition) USING (topic, partition)
            WHERE o.projection = %s
            ORDER BY o.topic, o.partition
            FOR UPDATE OF o
            """,
            (topics, parts, self.projection),
        )
        return {(t, p): o for t, p, o in cur.fetchall()}

    # -- the batch ---------------------------------------------------------------

    def write(self, messages: list[Message], next_offsets: Mapping[TopicPartitionKey, int],
              expected: Mapping[TopicPartitionKey, int],
              before_commit: Callable[[], None] | None = None) -> BatchResult:
        """Apply `messages` (in Kafka order per partition) and store `next_offsets`
        (which may cover messages that were not applied, e.g. dead letters), in
        one transaction.

        `expected` is where this writer believes each partition's stored offset
        is (0 when none is stored): if any differs, nothing is written and
        OffsetsMoved is raised. Database errors roll back and propagate.
        `before_commit` runs last inside the transaction (dead letters are sent
        there: only when the batch is really going to commit)."""
        result = BatchResult()
        keys = sorted(set(next_offsets) | {(m.topic, m.partition) for m in messages})
        if not keys:
            return result
        try:
            views = self._write(messages, next_offsets, expected, before_commit, keys, result)
        except BaseException:
            self.invalidate()  # rolled back: cached views may hold uncommitted changes
            raise
        self._remember(views)
        return result

    def _write(self, messages: list[Message], next_offsets: Mapping[TopicPartitionKey, int],
               expected: Mapping[TopicPartitionKey, int], before_commit: Callable[[], None] | None,
               keys: list[TopicPartitionKey], result: BatchResult) -> dict[str, ExecutionView]:
        views: dict[str, ExecutionView] = {}
        with self.conn.transaction(), self.conn.cursor() as cur:
            stored = self._lock_offsets(cur, keys)
            if any(stored.get(k, 0) != expected.get(k, 0) for k in keys):
                raise OffsetsMoved(stored, expected)
            fresh = [m for m in messages if m.offset >= stored.get((m.topic, m.partition), 0)]
            result.stale = len(messages) - len(fresh)
            definitions = [m for m in fresh if m.topic == self.topics.definitions]
            events = [m for m in fresh if m.topic == self.topics.events]
            result.definitions = self._write_definitions(cur, definitions)
            if events:
                views = self._write_events(cur, events, result)
            cur.executemany(
                "UPDATE projection_offsets SET next_offset = %s, updated_at = now() "
                "WHERE projection = %s AND topic = %s AND partition = %s",
                [(next_offsets.get(k, stored.get(k, 0)), self.projection, k[0], k[1]) for k in keys],
            )
            if before_commit is not None:
                before_commit()
        return views

    def _remember(self, views: dict[str, ExecutionView]) -> None:
        cache = self._views
        for execution_id, view in views.items():
            view.execution_changed = False
            view.steps_changed.clear()
            view.dropped.clear()
            if view.execution is None or view.execution.status in _TERMINAL:
                cache.pop(execution_id, None)
            else:
                cache[execution_id] = view
                cache.move_to_end(execution_id)
        while len(cache) > self.cache_size:
            cache.popitem(last=False)

    def _write_definitions(self, cur: psycopg.Cursor, messages: list[Message]) -> int:
        rows = []
        for m in messages:
            if isinstance(m.value, Tombstone):
                name, _, version = m.value.key.rpartition("@")
                cur.execute("DELETE FROM workflow_definitions WHERE name = %s AND version = %s "
                            "AND kafka_offset <= %s", (name, version, m.offset))
                self.definitions.forget((name, version))
            elif isinstance(m.value, DefinitionRegistered):
                rows.append(self.definitions.row(DefinitionRecord(m.value, m.partition, m.offset)))
        if rows:
            cur.executemany(UPSERT_DEFINITION, rows)
        return len(messages)

    def _write_events(self, cur: psycopg.Cursor, messages: list[Message],
                      result: BatchResult) -> dict[str, ExecutionView]:
        recorded: list[tuple[Message, RecordedEvent]] = [
            (m, m.value) for m in messages if isinstance(m.value, RecordedEvent)
        ]
        needed = {(r.event.workflow_name, r.event.workflow_version)
                  for _, r in recorded if isinstance(r.event, WorkflowStarted)}
        from_topic = self.definitions.ensure(cur, needed)
        if from_topic:
            cur.executemany(UPSERT_DEFINITION, [self.definitions.row(d) for d in from_topic])
        views = self._views_for(cur, [r for _, r in recorded])
        shapes = self.definitions.shape
        history: list[HistoryRow] = []
        for m, r in recorded:
            try:
                applied = apply_event(views[r.execution_id], r, m.partition, m.offset, shapes)
            except Exception:
                log.exception("event_apply_failed", execution_id=r.execution_id, sequence=r.sequence,
                              event_type=type(r.event).__name__, partition=m.partition, offset=m.offset)
                raise
            h = applied.history
            history.append(h)
            if applied.problem is not None:
                result.problems.append((r.execution_id, r.sequence, applied.problem))
                if applied.problem != "duplicate":
                    log.warning("event_" + applied.problem.replace(" ", "_"), execution_id=r.execution_id,
                                sequence=r.sequence, event_type=h.event_type,
                                partition=m.partition, offset=m.offset)
        result.events = len(recorded)
        cur.execute(INSERT_HISTORY, _arrays(history, HISTORY_TYPES))
        executions = [v.execution for v in views.values() if v.execution_changed and v.execution is not None]
        steps = [v.steps[name] for v in views.values() for name in sorted(v.steps_changed)]
        if executions:
            cur.execute(UPSERT_EXECUTIONS, _arrays(executions, EXECUTION_TYPES))
        dropped = [(v.execution_id, name) for v in views.values() for name in sorted(v.dropped)]
        if dropped:
            cur.executemany("DELETE FROM step_executions WHERE execution_id = %s AND step_name = %s", dropped)
        if steps:
            cur.execute(UPSERT_STEPS, _arrays(steps, STEP_TYPES))
        result.executions_written = len(executions)
        result.steps_written = len(steps)
        return views

    def _views_for(self, cur: psycopg.Cursor, recorded: list[RecordedEvent]) -> dict[str, ExecutionView]:
        """The current rows of the batch's executions: from the cache, else from Postgres."""
        views: dict[str, ExecutionView] = {}
        load: set[str] = set()
        for r in recorded:
            execution_id = r.execution_id
            if execution_id in views:
                continue
            cached = self._views.get(execution_id)
            if cached is not None:
                views[execution_id] = cached
            else:
                views[execution_id] = ExecutionView(execution_id)
                load.add(execution_id)
        if load:
            self._load_views(cur, load, views)
        return views

    def _load_views(self, cur: psycopg.Cursor, ids: set[str], views: dict[str, ExecutionView]) -> None:
        id_list = sorted(ids)
        cur.execute(SELECT_EXECUTIONS, (id_list,))
        for values in cur.fetchall():
            views[values[0]].execution = ExecutionRow(*values)
        cur.execute(SELECT_STEPS, (id_list,))
        for values in cur.fetchall():
            step = StepRow(*values)
            views[step.execution_id].steps[step.step_name] = step
