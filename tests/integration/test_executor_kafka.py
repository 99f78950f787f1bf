"""The executor role against a real Kafka and the demo services."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from orchestrator.codec import Codec
from orchestrator.config import Settings
from orchestrator.core.messages import ExecuteStep, TaskFailed, TaskSucceeded
from orchestrator.runtime.executor import Executor
from orchestrator.runtime.kafka import DeadLetters, consumer_config, producer_config
from orchestrator.runtime.secrets import Sealer
from orchestrator.runtime.services import ServiceRegistry

pytestmark = pytest.mark.integration
CODEC = Codec.default()


def registry_for(server: Any) -> ServiceRegistry:
    return ServiceRegistry.from_mapping({"services": {
        name: {"base_url": url, "timeout": "5s"} for name, url in server.service_urls().items()
    }})


def create_user_task(execution_id: str, attempt: int = 1, *, username: str | None = None) -> ExecuteStep:
    name = username or f"u{uuid.uuid4().hex[:8]}"
    step = {"name": "create_user_account", "type": "service_call",
            "config": {"service": "user-service", "endpoint": "/api/users", "method": "POST",
                       "payload": {"username": "{{ input.username }}", "email": "{{ input.email }}",
                                   "status": "pending"}},
            "output": {"user_id": "{{ response.id }}"}}
    return ExecuteStep(
        execution_id=execution_id, workflow_name="user-registration-workflow", workflow_version="1.2.0",
        step_name="create_user_account", step_type="service_call", attempt=attempt,
        idempotency_key=f"{execution_id}/create_user_account", step=step,
        context={"input": {"username": name, "email": f"{name}@example.com"}, "steps": {},
                 "execution": {"id": execution_id}},
        deadline_at=int(time.time() * 1000) + 60_000, timeout_ms=60_000)


class Harness:
    """An executor in a thread, a task producer and a results reader on one topic prefix."""

    def __init__(self, settings: Settings, registry: ServiceRegistry, **options: Any) -> None:
        self.settings = settings
        self.producer = Producer(producer_config(settings))
        self.results = Consumer(consumer_config(settings, f"test-results-{uuid.uuid4().hex[:6]}"))
        self.results.subscribe([settings.topics.results])
        self.registry, self.options = registry, options
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> Harness:
        self.stop_event = threading.Event()
        executor = Executor(self.settings, registry=self.registry, sealer=Sealer.from_settings(self.settings),
                            secrets_env={}, **self.options)

        def target() -> None:
            import asyncio

            try:
                asyncio.run(executor.run(self.stop_event.is_set))
            except BaseException as exc:  # surfaced by stop()
                self.error = exc

        self.thread = threading.Thread(target=target, name="executor", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(30)
            assert not self.thread.is_alive(), "executor did not stop"
        if self.error is not None:
            raise self.error

    def send(self, *tasks: ExecuteStep) -> None:
        for task in tasks:
            self.producer.produce(self.settings.topics.tasks, key=task.execution_id.encode(),
                                  value=CODEC.encode(task))
        assert self.producer.flush(10) == 0

    def send_raw(self, key: bytes, value: bytes) -> None:
        self.producer.produce(self.settings.topics.tasks, key=key, value=value)
        assert self.producer.flush(10) == 0

    def read(self, count: int, timeout: float = 30.0) -> list[TaskSucceeded | TaskFailed]:
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            for msg in self.results.consume(count - len(found), 0.2):
                assert msg.error() is None, msg.error()
                result = CODEC.decode(msg.value(), expect="results")
                assert msg.key() == result.execution_id.encode()
                found.append(result)
        assert len(found) == count, f"expected {count} results, got {found}"
        return found

    def read_all(self, execution_ids: set[str], timeout: float = 30.0) -> list[TaskSucceeded | TaskFailed]:
        """Results until every execution in `execution_ids` has one (duplicates kept)."""
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        while not execution_ids <= {r.execution_id for r in found} and time.monotonic() < deadline:
            for msg in self.results.consume(100, 0.2):
                assert msg.error() is None, msg.error()
                found.append(CODEC.decode(msg.value(), expect="results"))
        assert execution_ids <= {r.execution_id for r in found}, f"missing results: {found}"
        return found

    def close(self) -> None:
        self.results.close()


@pytest.fixture
def harness(kafka_settings: Settings, demo_services: Any) -> Iterator[Harness]:
    h = Harness(kafka_settings, registry_for(demo_services))
    yield h
    if h.thread is not None and h.thread.is_alive():
        h.stop()
    h.close()


def committed(settings: Settings) -> dict[int, int]:
    consumer = Consumer(consumer_config(settings, settings.group_id("executor")))
    try:
        parts = [TopicPartition(settings.topics.tasks, p) for p in range(settings.partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def end_offsets(settings: Settings) -> dict[int, int]:
    """End offsets of the tasks partitions; an empty one shows as never committed (-1001)."""
    consumer = Consumer(consumer_config(settings, "test-watermarks"))
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(settings.topics.tasks, p), timeout=10)[1]
                for p in range(settings.partitions)}
        return {p: end if end > 0 else -1001 for p, end in ends.items()}
    finally:
        consumer.close()


def test_tasks_become_results_and_offsets_are_committed(harness: Harness) -> None:
    tasks = [create_user_task(f"exec-{uuid.uuid4().hex[:8]}") for _ in range(5)]
    harness.start()
    harness.send(*tasks)
    results = harness.read(5)
    assert {r.execution_id for r in results} == {t.execution_id for t in tasks}
    assert all(isinstance(r, TaskSucceeded) and r.output["user_id"].startswith("usr_") for r in results)
    harness.stop()
    assert committed(harness.settings) == end_offsets(harness.settings)


def test_503_twice_then_success_keeps_one_idempotency_key(harness: Harness, demo_services: Any) -> None:
    httpx.post(demo_services.url + "/_admin/faults", json={
        "path_prefix": "/user-service/api/users", "method": "POST", "status": 503, "times": 2})
    execution_id = f"exec-{uuid.uuid4().hex[:8]}"
    harness.start()
    outcomes = []
    for attempt in (1, 2, 3):  # what the decider does after each transient failure
        harness.send(create_user_task(execution_id, attempt, username="retry_me"))
        outcomes += harness.read(1)
    assert [type(r).__name__ for r in outcomes] == ["TaskFailed", "TaskFailed", "TaskSucceeded"]
    assert all(r.transient and r.status_code == 503 and "HTTP 503" in r.error for r in outcomes[:2])
    assert [r.attempt for r in outcomes] == [1, 2, 3]
    recorded = httpx.get(demo_services.url + "/_admin/requests",
                         params={"path_prefix": "/user-service/api/users"}).json()["requests"]
    assert [r["headers"]["idempotency-key"] for r in recorded] == [f"{execution_id}/create_user_account"] * 3
    assert [r["headers"]["x-workflow-attempt"] for r in recorded] == ["1", "2", "3"]
    assert recorded[0]["at"] < recorded[1]["at"] < recorded[2]["at"]


def test_undecodable_tasks_are_dead_lettered_and_work_goes_on(harness: Harness) -> None:
    harness.start()
    harness.send_raw(b"exec-garbage", b"\x00not avro at all")
    task = create_user_task(f"exec-{uuid.uuid4().hex[:8]}")
    harness.send(task)
    [result] = harness.read(1)
    assert isinstance(result, TaskSucceeded) and result.execution_id == task.execution_id
    dlq = Consumer(consumer_config(harness.settings, f"test-dlq-{uuid.uuid4().hex[:6]}"))
    dlq.subscribe([harness.settings.topics.dlq])
    try:
        msgs: list[Any] = []
        deadline = time.monotonic() + 20
        while not msgs and time.monotonic() < deadline:
            msgs = [m for m in dlq.consume(1, 0.2) if m.error() is None]
        assert msgs, "no dead letter"
        assert msgs[0].key() == b"exec-garbage" and msgs[0].value() == b"\x00not avro at all"
        headers = DeadLetters.headers_of(msgs[0])
        assert headers["dlq.role"] == "executor" and headers["dlq.topic"] == harness.settings.topics.tasks
    finally:
        dlq.close()
    harness.stop()
    assert committed(harness.settings) == end_offsets(harness.settings)


def test_a_task_running_at_shutdown_runs_again_with_the_same_key(kafka_settings: Settings,
                                                                  demo_services: Any) -> None:
    httpx.post(demo_services.url + "/_admin/faults", json={
        "path_prefix": "/user-service/api/users", "method": "POST", "status": None, "delay_ms": 3000, "times": 1})
    first = Harness(kafka_settings, registry_for(demo_services), shutdown_grace_s=0)
    task = create_user_task(f"exec-{uuid.uuid4().hex[:8]}")
    try:
        first.start()
        first.send(task)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not httpx.get(demo_services.url + "/_admin/requests").json()["requests"]:
            time.sleep(0.05)
        first.stop()  # the call is still in flight: its offset must not be committed
        assert all(offset < 0 for offset in committed(kafka_settings).values())

        first.start()  # a restarted executor takes the task again
        results = first.read(1)
    finally:
        first.stop()
        first.close()
    assert isinstance(results[0], TaskSucceeded)
    recorded = httpx.get(demo_services.url + "/_admin/requests",
                         params={"path_prefix": "/user-service/api/users"}).json()["requests"]
    assert len(recorded) == 2
    assert {r["headers"]["idempotency-key"] for r in recorded} == {task.idempotency_key}


def test_two_executors_share_the_tasks(kafka_settings: Settings, demo_services: Any) -> None:
    first = Harness(kafka_settings, registry_for(demo_services))
    second = Harness(kafka_settings, registry_for(demo_services))
    tasks = [create_user_task(f"exec-{uuid.uuid4().hex[:8]}") for _ in range(20)]
    try:
        first.start()
        second.start()
        first.send(*tasks[:10])
        time.sleep(0.5)
        second.stop()  # leaves the group mid-stream: its partitions move to the first
        first.send(*tasks[10:])
        # Duplicates are allowed (at-least-once); losses are not.
        results = first.read_all({t.execution_id for t in tasks})
    finally:
        first.stop()
        first.close()
        second.close()
    assert {r.execution_id for r in results} == {t.execution_id for t in tasks}
    assert all(isinstance(r, TaskSucceeded) for r in results)
    assert committed(kafka_settings) == end_offsets(kafka_settings)
