"""Dead letters: what a role cannot handle goes to `wf.dlq`, bytes untouched, and the role
keeps serving the messages behind it.

The roles run in threads of the test process on a unique topic prefix (and, for the
projector, a fresh PostgreSQL schema). Each poison message is published with a header of
its own; its dead letter must carry the original key, value and headers plus `dlq.reason`
(clear text), `dlq.topic`, `dlq.partition`, `dlq.offset` (where the original was) and
`dlq.role`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from psycopg import sql

from orchestrator.config import Settings
from orchestrator.core.messages import StartWorkflow
from orchestrator.runtime.kafka import DeadLetters, consumer_config, partition_for, producer_config, read_partition_to_end

from .helpers import codec, read_all, register, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WORKFLOW = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: dlq-notify, version: "1"}
spec:
  config: {timeout: 10s}
  input:
    schema: {type: object, properties: {n: {type: integer}}}
  steps:
    - name: notify
      type: service_call
      config: {service: notification-service, endpoint: /api/notifications/send, method: POST,
               payload: {n: "{{ input.n }}"}}
"""

GARBAGE = b"\x00\xffthis is not avro at all\n"


# -- helpers ------------------------------------------------------------------------------


def unknown_fingerprint_frame() -> bytes:
    """A valid StartWorkflow frame whose writer-schema fingerprint no schema has."""
    valid = codec.encode(StartWorkflow("fp-1", "dlq-notify", "1", {"n": 1}))
    fingerprint = os.urandom(8)
    while fingerprint in codec.known_fingerprints:
        fingerprint = os.urandom(8)
    return valid[:2] + fingerprint + valid[10:]


def produce(settings: Settings, topic: str, key: str | None, value: bytes | None,
            headers: list[tuple[str, bytes]] | None = None) -> tuple[int, int]:
    """Publish raw bytes; (partition, offset) where they landed."""
    landed: list[Any] = []
    producer = Producer(producer_config(settings, role="test"))
    producer.produce(topic, key=None if key is None else key.encode(), value=value, headers=headers,
                     on_delivery=lambda err, msg: landed.append((err, msg)))
    assert producer.flush(10) == 0
    [(err, msg)] = landed
    assert err is None, err
    return msg.partition(), msg.offset()


def send(settings: Settings, message: StartWorkflow) -> tuple[int, int]:
    return produce(settings, settings.topics.commands, message.execution_id, codec.encode(message))


def dead_letters(settings: Settings) -> list[Any]:
    """Every (committed) message on the dlq topic."""
    return [msg for p in range(settings.partitions)
            for msg in read_partition_to_end(settings, settings.topics.dlq, p, idle_timeout=10)]


def wait_dead_letter(settings: Settings, value: bytes | None, timeout: float = 20,
                     header: tuple[str, bytes] | None = None) -> Any:
    """The one dead letter with this value (and header, when given)."""
    def found() -> Any:
        matches = [m for m in dead_letters(settings) if m.value() == value
                   and (header is None or header in (m.headers() or []))]
        assert len(matches) <= 1, f"dead-lettered {len(matches)} times"
        return matches  # a list: a Message's truth value is its value's length (None: 0)
    [letter] = wait_for(found, timeout, message=f"no dead letter for {(value or b'')[:20]!r} {header or ''}")
    return letter


def check_dead_letter(letter: Any, *, key: str | None, value: bytes | None, topic: str, at: tuple[int, int], role: str,
                      reason: str, header: tuple[str, bytes] | None = None) -> dict[str, str]:
    """Original key, value and headers; where it came from, who sent it and why."""
    assert letter.key() == (None if key is None else key.encode()) and letter.value() == value
    headers = DeadLetters.headers_of(letter)
    assert headers["dlq.topic"] == topic
    assert (headers["dlq.partition"], headers["dlq.offset"]) == (str(at[0]), str(at[1]))
    assert headers["dlq.role"] == role
    assert reason in headers["dlq.reason"], headers["dlq.reason"]
    if header is not None:
        assert header in (letter.headers() or []), letter.headers()
    return headers


def same_partition_key(settings: Settings, eid: str, prefix: str) -> str:
    """A key (not `eid`) on `eid`'s partition."""
    wanted = partition_for(eid, settings.partitions)
    for n in range(1000):
        key = f"{prefix}-{n}"
        if partition_for(key, settings.partitions) == wanted:
            return key
    raise AssertionError("no key found")


def kinds(settings: Settings, eid: str) -> list[str]:
    return [type(r.event).__name__ for r in read_all(settings, settings.topics.events, eid)]


def committed(settings: Settings, group: str, topic: str, partition: int) -> int:
    consumer = Consumer(consumer_config(settings, group))
    try:
        [tp] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


class Roles:
    """Roles running in threads of this process; a role that dies fails the next `check`."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[tuple[str, BaseException]] = []

    def launch(self, name: str, target: Callable[[threading.Event], None]) -> None:
        def run() -> None:
            try:
                target(self.stop)
            except BaseException as exc:
                self.errors.append((name, exc))

        thread = threading.Thread(target=run, name=f"dlq-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def check(self) -> None:
        if self.errors:
            name, exc = self.errors[0]
            raise AssertionError(f"role {name} died: {type(exc).__name__}: {exc}") from exc
        for thread in self.threads:
            assert thread.is_alive(), f"{thread.name} stopped"

    def wait(self, predicate: Callable[[], Any], timeout: float, message: str) -> Any:
        def checked() -> Any:
            self.check()
            return predicate()
        return wait_for(checked, timeout, message=message)

    def shutdown(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


@pytest.fixture
def settings(projection_settings: Settings, demo_services, tmp_path: Path) -> Settings:
    registry = tmp_path / "services.yaml"
    registry.write_text("services:\n" + "".join(
        f"  {name}:\n    base_url: {url}\n    timeout: 10s\n    connect_timeout: 2s\n"
        for name, url in demo_services.service_urls().items()))
    s = dataclasses.replace(projection_settings, services_file=registry, executor_concurrency=8)
    register(s, WORKFLOW)
    return s


@pytest.fixture
def roles() -> Iterator[Roles]:
    r = Roles()
    yield r
    r.shutdown()
    stuck = [t.name for t in r.threads if t.is_alive()]
    assert not stuck, f"roles did not stop: {stuck}"


def run_decider(settings: Settings) -> Callable[[threading.Event], None]:
    from orchestrator.runtime.decider import Decider

    return lambda stop: Decider(settings).run(stop)


def run_executor(settings: Settings) -> Callable[[threading.Event], None]:
    from orchestrator.runtime.executor import run_executor as run

    return lambda stop: run(settings, stop)


# -- the decider --------------------------------------------------------------------------


def test_the_decider_dead_letters_undecodable_and_misaddressed_commands_and_keeps_serving(settings, roles):
    s = settings
    roles.launch("decider", run_decider(s))
    commands = s.topics.commands

    garbage_at = produce(s, commands, "dlq-garbage", GARBAGE, [("trace", b"t-garbage")])
    frame = unknown_fingerprint_frame()
    frame_at = produce(s, commands, "fp-1", frame, [("trace", b"t-fingerprint")])
    # A valid StartWorkflow whose key names another execution than its execution_id.
    misaddressed = codec.encode(StartWorkflow("dlq-mismatch", "dlq-notify", "1", {"n": 2}))
    misaddressed_at = produce(s, commands, "dlq-some-other-id", misaddressed, [("trace", b"t-key")])

    letter = wait_dead_letter(s, GARBAGE)
    check_dead_letter(letter, key="dlq-garbage", value=GARBAGE, topic=commands, at=garbage_at, role="decider",
                      reason="not Avro single-object encoding", header=("trace", b"t-garbage"))
    letter = wait_dead_letter(s, frame)
    headers = check_dead_letter(letter, key="fp-1", value=frame, topic=commands, at=frame_at, role="decider",
                                reason="unknown schema fingerprint", header=("trace", b"t-fingerprint"))
    assert f"{int.from_bytes(frame[2:10], 'little'):016x}" in headers["dlq.reason"], "the reason names the fingerprint"
    letter = wait_dead_letter(s, misaddressed)
    check_dead_letter(letter, key="dlq-some-other-id", value=misaddressed, topic=commands, at=misaddressed_at,
                      role="decider", reason="does not match execution_id", header=("trace", b"t-key"))

    # The odd ones: a tombstone (no value) and a valid start without a key.
    tombstone_at = produce(s, commands, "dlq-tombstone", None, [("trace", b"t-tombstone")])
    keyless = codec.encode(StartWorkflow("dlq-keyless", "dlq-notify", "1", {"n": 7}))
    keyless_at = produce(s, commands, None, keyless, [("trace", b"t-keyless")])
    letter = wait_dead_letter(s, None, header=("trace", b"t-tombstone"))
    check_dead_letter(letter, key="dlq-tombstone", value=None, topic=commands, at=tombstone_at, role="decider",
                      reason="no value")
    letter = wait_dead_letter(s, keyless)
    check_dead_letter(letter, key=None, value=keyless, topic=commands, at=keyless_at, role="decider",
                      reason="does not match execution_id", header=("trace", b"t-keyless"))

    # The decider keeps serving: a valid start right behind them is decided.
    send(s, StartWorkflow("dlq-ok", "dlq-notify", "1", {"n": 3}, "test"))
    roles.wait(lambda: kinds(s, "dlq-ok")[:2] == ["WorkflowStarted", "StepScheduled"], 20, "the valid start was not served")
    # ...and nothing was recorded for the poison messages.
    for eid in ("dlq-garbage", "fp-1", "dlq-mismatch", "dlq-some-other-id", "dlq-tombstone", "dlq-keyless"):
        assert kinds(s, eid) == [], eid
    assert len(dead_letters(s)) == 5
    # Their offsets were committed with the transaction: a restart does not dead-letter them again.
    group = s.group_id("decider")
    for partition, offset in (garbage_at, frame_at, misaddressed_at, tombstone_at, keyless_at):
        roles.wait(lambda: committed(s, group, commands, partition) > offset, 10, "offset not committed")


# -- the executor --------------------------------------------------------------------------


def test_the_executor_dead_letters_undecodable_tasks_and_keeps_serving(settings, roles):
    s = settings
    roles.launch("decider", run_decider(s))
    roles.launch("executor", run_executor(s))
    eid = f"dlq-exec-{uuid.uuid4().hex[:8]}"
    key = same_partition_key(s, eid, "dlq-task")  # the poison sits on the partition of the valid work

    garbage_at = produce(s, s.topics.tasks, key, GARBAGE, [("trace", b"t-task")])
    frame = unknown_fingerprint_frame()
    frame_at = produce(s, s.topics.tasks, key, frame)
    letter = wait_dead_letter(s, GARBAGE)
    check_dead_letter(letter, key=key, value=GARBAGE, topic=s.topics.tasks, at=garbage_at, role="executor",
                      reason="not Avro single-object encoding", header=("trace", b"t-task"))
    letter = wait_dead_letter(s, frame)
    check_dead_letter(letter, key=key, value=frame, topic=s.topics.tasks, at=frame_at, role="executor",
                      reason="unknown schema fingerprint")

    # The executor keeps serving: a workflow whose task lands behind the garbage completes.
    send(s, StartWorkflow(eid, "dlq-notify", "1", {"n": 4}, "test"))
    roles.wait(lambda: "WorkflowCompleted" in kinds(s, eid), 30, "the workflow did not complete")
    assert kinds(s, eid) == ["WorkflowStarted", "StepScheduled", "StepCompleted", "WorkflowCompleted"]
    [task] = read_all(s, s.topics.tasks, eid)
    assert task.step_name == "notify"
    # The poison's offsets are committed (it is not dead-lettered again after a restart).
    partition = garbage_at[0]
    roles.wait(lambda: committed(s, s.group_id("executor"), s.topics.tasks, partition) > frame_at[1], 10,
               "the executor did not commit past the dead letters")
    assert len(dead_letters(s)) == 2


# -- the projector --------------------------------------------------------------------------


def test_the_projector_dead_letters_undecodable_events_and_keeps_projecting(settings, roles, pg_schema):
    from projections import run_projector

    s = settings
    roles.launch("decider", run_decider(s))
    roles.launch("executor", run_executor(s))
    roles.launch("projector", lambda stop: run_projector(s, stop, schema=pg_schema))

    def rows(query: str, params: Any = None) -> list[tuple]:
        with psycopg.connect(s.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
            try:
                return list(conn.execute(query, params))
            except psycopg.errors.UndefinedTable:
                return []

    # One execution projected before the poison, one after it, on the same partition.
    first, second = (f"dlq-proj-{uuid.uuid4().hex[:8]}" for _ in range(2))
    while partition_for(second, s.partitions) != partition_for(first, s.partitions):
        second = f"dlq-proj-{uuid.uuid4().hex[:8]}"
    key = same_partition_key(s, first, "dlq-event")

    def projected(eid: str) -> bool:
        return rows("SELECT status FROM workflow_executions WHERE id = %s", (eid,)) == [("completed",)]

    send(s, StartWorkflow(first, "dlq-notify", "1", {"n": 5}, "test"))
    roles.wait(lambda: projected(first), 30, "the first execution was not projected")

    garbage_at = produce(s, s.topics.events, key, GARBAGE, [("trace", b"t-event")])
    frame = unknown_fingerprint_frame()
    frame_at = produce(s, s.topics.events, key, frame)
    tombstone_at = produce(s, s.topics.events, key, None, [("trace", b"t-tombstone")])
    send(s, StartWorkflow(second, "dlq-notify", "1", {"n": 6}, "test"))

    letter = wait_dead_letter(s, GARBAGE)
    check_dead_letter(letter, key=key, value=GARBAGE, topic=s.topics.events, at=garbage_at, role="projector",
                      reason="not Avro single-object encoding", header=("trace", b"t-event"))
    letter = wait_dead_letter(s, frame)
    check_dead_letter(letter, key=key, value=frame, topic=s.topics.events, at=frame_at, role="projector",
                      reason="unknown schema fingerprint")
    letter = wait_dead_letter(s, None, header=("trace", b"t-tombstone"))
    check_dead_letter(letter, key=key, value=None, topic=s.topics.events, at=tombstone_at, role="projector",
                      reason="no value")

    # The projector keeps projecting the events behind the poison...
    roles.wait(lambda: projected(second), 30, "the execution after the poison was not projected")
    events = read_all(s, s.topics.events, second)
    assert [r[0] for r in rows("SELECT sequence FROM execution_events WHERE execution_id = %s ORDER BY sequence",
                               (second,))] == [r.sequence for r in events]
    # ...skips the poison itself, and stores an offset past it (never dead-lettered twice).
    partition = garbage_at[0]
    skipped = rows("SELECT count(*) FROM execution_events WHERE kafka_partition = %s "
                   "AND kafka_offset IN (%s, %s, %s)", (partition, garbage_at[1], frame_at[1], tombstone_at[1]))
    assert skipped == [(0,)]
    [(stored,)] = rows("SELECT next_offset FROM projection_offsets WHERE topic = %s AND partition = %s",
                       (s.topics.events, partition))
    assert stored > tombstone_at[1]
    time.sleep(0.5)
    assert len(dead_letters(s)) == 3


# -- not dead letters, but poison all the same ----------------------------------------------


def test_a_flood_of_starts_naming_an_unknown_workflow_is_rejected_at_once_and_the_decider_keeps_serving(
        settings, roles):
    """Regression: the decider read `wf.definitions` to its end (>= 0.2 s) for every start
    naming an unknown workflow, inside the batch's transaction; a few hundred in one batch
    outlived the transaction timeout, the producer was fenced and the decider died, and
    again after every restart (same batch)."""
    s = settings
    count = 400
    producer = Producer(producer_config(s, role="test"))
    for n in range(count):
        eid = f"dlq-unknown-{n}"
        producer.produce(s.topics.commands, key=eid.encode(),
                         value=codec.encode(StartWorkflow(eid, "no-such-workflow", None, {"n": n})))
    assert producer.flush(10) == 0
    roles.launch("decider", run_decider(s))  # started after them: they come in big batches
    send(s, StartWorkflow("dlq-after-flood", "dlq-notify", "1", {"n": 1}, "test"))

    def rejected() -> int:
        return sum(1 for p in range(s.partitions)
                   for msg in read_partition_to_end(s, s.topics.events, p, idle_timeout=10)
                   if type(codec.decode(msg.value()).event).__name__ == "WorkflowStartRejected")

    roles.wait(lambda: rejected() == count, 20, "the starts were not all rejected")
    roles.wait(lambda: kinds(s, "dlq-after-flood")[:1] == ["WorkflowStarted"], 10, "the valid start was not served")
    [first] = read_all(s, s.topics.events, "dlq-unknown-0")
    assert "no-such-workflow" in " ".join(first.event.violations)
