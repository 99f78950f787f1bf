"""The executor role: `wf.tasks` in, HTTP calls out, `wf.results` back.

One asyncio loop owns everything: the consumer (`consume(timeout=0)` while
calls are in flight; a blocking poll only when nothing is), the producer
(`poll(0)` serves delivery reports), one shared HTTP client (aiohttp; see
http_transport.py), and the tasks performing steps
(at most `executor_concurrency` at once; partitions are paused while
`max_in_flight` tasks are unfinished).

At-least-once: a task's offset is committed only after its result was
delivered, and per partition only up to the highest contiguous completed
offset (tasks finish out of order). Tasks still running at shutdown or a
crash are not committed and run again; their `Idempotency-Key` makes that
safe for the service, and the decider ignores duplicate results.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import httpx
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from ..codec import Codec, DecodeError, EncodeError
from ..config import Settings
from ..core.durations import format_duration_ms
from ..core.keys import leaf
from ..core.messages import ExecuteStep, TaskFailed, TaskResult
from .http_transport import AiohttpClient, HttpClient, HttpxClient
from .executor_offsets import OffsetTracker
from .executor_steps import perform, wall_clock_ms
from .kafka import DeadLetters, close_group_consumer, consumer_config, producer_config
from . import metrics
from .secrets import Sealer, secrets_from_env
from .services import BreakerTransition, ServiceRegistry, load_registry

__all__ = ["Executor", "run_executor", "log_breaker_change"]

log = structlog.get_logger("orchestrator.executor")

MAX_RESULT_BYTES = 900_000  # below the broker's default 1 MB message limit
COMMIT_EVERY_S = 0.2
IDLE_SLEEP_MAX_S = 0.005
IDLE_POLL_S = 0.05  # blocking wait for tasks while nothing is in flight
DELIVERY_TRIES = 5
PAUSE_AFTER_S = 1.0  # full for this long: pause the partitions (see _loop)


class Executor:
    def __init__(self, settings: Settings, *, registry: ServiceRegistry | None = None,
                 sealer: Sealer | None = None, secrets_env: Mapping[str, str] | None = None,
                 codec: Codec | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 max_in_flight: int | None = None, shutdown_grace_s: float = 2.0) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else load_registry(settings)
        self.registry.observe_breakers(_breaker_changed)
        metrics.breakers_known(self.registry)
        self.sealer = sealer or Sealer.from_settings(settings)
        self.secrets_env = dict(secrets_from_env() if secrets_env is None else secrets_env)
        self.codec = codec or Codec.default()
        self.transport = transport
        self.concurrency = max(1, settings.executor_concurrency)
        self.max_in_flight = max_in_flight or 2 * self.concurrency
        self.shutdown_grace_s = shutdown_grace_s
        self.offsets = OffsetTracker()
        self.in_flight = 0
        self.completed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused = False
        self._repause = False
        self._fatal: BaseException | None = None
        self._stopping = False
        self.consumer: Any = None
        self.producer: Any = None
        metrics.expose("executor")
        metrics.TASKS_IN_FLIGHT.set_function(lambda: self.in_flight)  # read at scrape time

    # -- Kafka plumbing -----------------------------------------------------

    def _open(self) -> None:
        self.consumer = Consumer(consumer_config(
            self.settings, self.settings.group_id("executor"),
            role="executor", **{"on_commit": self._on_commit,
                                # one topic: no co-partitioning needed, so move partitions incrementally
                                "partition.assignment.strategy": "cooperative-sticky"},
            **metrics.consumer_lag_config("executor")))
        self.producer = Producer(producer_config(self.settings, role="executor"))
        self.dead_letters = DeadLetters(self.producer, self.settings)
        self.consumer.subscribe([self.settings.topics.tasks], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("partitions_assigned", partitions=[p.partition for p in partitions])
        self._repause = self._paused  # pause the new ones once they are assigned

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._commit(self.offsets.committable(tps), asynchronous=False)
        self.offsets.forget(tps)
        log.info("partitions_revoked", partitions=[p.partition for p in partitions])

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.offsets.forget([(p.topic, p.partition) for p in partitions])
        log.warning("partitions_lost", partitions=[p.partition for p in partitions])

    def _on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            log.warning("commit_failed", error=str(err))

    def _commit(self, offsets: list[tuple[str, int, int]], *, asynchronous: bool = True) -> None:
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for t, p, o in offsets],
                                 asynchronous=asynchronous)
        except KafkaException as exc:  # e.g. during a rebalance; the next commit covers it
            log.warning("commit_failed", error=str(exc))

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused and not (paused and self._repause):
            return
        self._repause = False
        assignment = self.consumer.assignment()
        if assignment:
            (self.consumer.pause if paused else self.consumer.resume)(assignment)
        self._paused = paused

    # -- one task -------------------------------------------------------------

    def _accept(self, msg: Any, http: HttpClient) -> None:
        tp, offset = (msg.topic(), msg.partition()), msg.offset()
        self.offsets.start(tp, offset)
        try:
            task = self.codec.decode(msg.value(), expect="tasks")
            if not isinstance(task, ExecuteStep):
                raise DecodeError(f"expected ExecuteStep, got {type(task).__name__}")
        except DecodeError as exc:
            log.error("task_undecodable", partition=tp[1], offset=offset, error=str(exc))
            # Rare: wait for the dead letter (a short flush) so its offset is safe to commit.
            self.dead_letters.send(msg, f"executor cannot decode the task: {exc}", "executor", wait=True,
                                   kind="undecodable")
            self.offsets.done(tp, offset)
            return
        self.in_flight += 1
        job = asyncio.create_task(self._work(task, tp, offset, http))
        self._tasks.add(job)
        job.add_done_callback(self._tasks.discard)

    async def _work(self, task: ExecuteStep, tp: tuple[str, int], offset: int, http: HttpClient) -> None:
        try:
            async with self._sem:
                began = time.monotonic()
                result = await perform(task, http=http, registry=self.registry, sealer=self.sealer,
                                       secrets_env=self.secrets_env, now_ms=wall_clock_ms)
        except BaseException:
            self.in_flight -= 1  # cancelled at shutdown: not committed, runs again
            raise
        seconds = time.monotonic() - began
        _log_result(task, result, seconds)
        labels = (task.workflow_name, leaf(task.step_name), _outcome(result))
        metrics.child(metrics.CALL_DURATION, labels).observe(seconds)
        await self._publish(result, tp, offset, tries=1)

    async def _publish(self, result: TaskResult, tp: tuple[str, int], offset: int, tries: int) -> None:
        try:
            value = self.codec.encode(result)
            problem = None
            if len(value) > MAX_RESULT_BYTES:
                problem = f"{len(value)} bytes encoded (limit {MAX_RESULT_BYTES})"
        except EncodeError as exc:
            problem = f"cannot encode: {exc}"
        if problem is not None:
            result = TaskFailed(
                execution_id=result.execution_id, step=result.step, attempt=result.attempt,
                error=f"step result not publishable: {problem}", transient=False, status_code=None,
                started_at=result.started_at, finished_at=result.finished_at,
                breaker=getattr(result, "breaker", None))
            value = self.codec.encode(result)
        while True:
            try:
                self.producer.produce(self.settings.topics.results, key=result.execution_id.encode(),
                                      value=value, on_delivery=partial(self._delivered, result, tp, offset, tries))
                return
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0)
                await asyncio.sleep(0.005)

    def _delivered(self, result: TaskResult, tp: tuple[str, int], offset: int, tries: int,
                   err: Any, msg: Any) -> None:
        if err is None:
            self.in_flight -= 1
            self.completed += 1
            self.offsets.done(tp, offset)
            metrics.child(metrics.RESULTS_PUBLISHED, (_outcome(result),)).inc()
            return
        metrics.RESULTS_UNDELIVERED.inc()
        log.error("result_not_delivered", execution_id=result.execution_id, step=result.step,
                  attempt=result.attempt, error=str(err), tries=tries)
        if tries < DELIVERY_TRIES and not self._stopping and not err.fatal():
            job = asyncio.get_running_loop().create_task(self._publish(result, tp, offset, tries + 1))
            self._tasks.add(job)
            job.add_done_callback(self._tasks.discard)
        else:  # never committed: the task runs again after a restart
            self.in_flight -= 1
            self._fatal = self._fatal or KafkaException(err)

    # -- the loop -------------------------------------------------------------

    async def run(self, should_stop: Callable[[], bool]) -> None:
        self._sem = asyncio.Semaphore(self.concurrency)
        self._open()
        http: HttpClient
        if self.transport is not None:  # tests: an httpx transport (MockTransport, ASGITransport)
            http = HttpxClient(httpx.AsyncClient(transport=self.transport, follow_redirects=False, trust_env=False))
        else:
            http = AiohttpClient(max_connections=self.concurrency)
        log.info("executor_started", topic=self.settings.topics.tasks, concurrency=self.concurrency,
                 services=self.registry.names())
        try:
            await self._loop(http, should_stop)
        finally:
            await self._shutdown(http)
        if self._fatal is not None:
            raise self._fatal

    async def _loop(self, http: HttpClient, should_stop: Callable[[], bool]) -> None:
        idle = 0.0
        last_commit = time.monotonic()
        full_since: float | None = None
        while not should_stop() and self._fatal is None:
            self.producer.poll(0)
            now = time.monotonic()
            room = self.max_in_flight - self.in_flight
            if room > 0:  # take at most `room`; the rest waits in librdkafka's fetch queue
                full_since = None
                self._set_paused(False)
                msgs = self._take(min(500, room))
            else:
                # Full. Briefly, just stop taking messages (pause/resume costs a fetch
                # restart, about a second); when it lasts, pause the partitions and keep
                # polling so rebalances are served.
                full_since = full_since or now
                msgs = []
                if now - full_since >= PAUSE_AFTER_S:
                    self._set_paused(True)
                    msgs = self.consumer.consume(num_messages=1, timeout=0)
            for msg in msgs:
                err = msg.error()
                if err is None:
                    self._accept(msg, http)
                elif err.fatal():
                    raise KafkaException(err)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer_error", error=str(err))
            if now - last_commit >= COMMIT_EVERY_S:
                self._commit(self.offsets.committable())
                last_commit = now
            if msgs:
                idle = 0.0
                await asyncio.sleep(0)
            else:
                idle = min(IDLE_SLEEP_MAX_S, idle * 2 or 0.0005)
                await asyncio.sleep(idle)

    def _take(self, limit: int) -> list[Any]:
        if self.in_flight or self._tasks:
            return self.consumer.consume(num_messages=limit, timeout=0)
        # Nothing for the event loop to do: wait inside librdkafka, which wakes the
        # moment a task arrives (a sleep instead would add to every step's latency).
        first = self.consumer.poll(IDLE_POLL_S)
        if first is None:
            return []
        return [first, *self.consumer.consume(num_messages=limit - 1, timeout=0)] if limit > 1 else [first]

    async def _shutdown(self, http: HttpClient) -> None:
        running = [t for t in self._tasks if not t.done()]
        if running and self.shutdown_grace_s > 0:
            deadline = time.monotonic() + self.shutdown_grace_s
            while self.in_flight > 0 and time.monotonic() < deadline and self._fatal is None:
                self.producer.poll(0)
                await asyncio.sleep(0.01)
        self._stopping = True
        for job in list(self._tasks):
            job.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await http.aclose()
        remaining = self.producer.flush(10)  # delivers queued results and dead letters, runs callbacks
        if remaining:
            log.error("results_not_flushed", count=remaining)
        else:
            self._commit(self.offsets.committable(force=True), asynchronous=False)
        close_group_consumer(self.consumer, "executor")
        log.info("executor_stopped", completed=self.completed, abandoned=self.in_flight)


def _outcome(result: TaskResult) -> str:
    if not isinstance(result, TaskFailed):
        return "succeeded"
    return "failed_transient" if result.transient else "failed_permanent"


def _breaker_changed(change: BreakerTransition) -> None:
    log_breaker_change(change)
    metrics.breaker_changed(change)


def _log_result(task: ExecuteStep, result: TaskResult, seconds: float) -> None:
    fields = dict(execution_id=task.execution_id, step=task.step_name, attempt=task.attempt,
                  duration_ms=round(seconds * 1000, 1))
    if isinstance(result, TaskFailed):
        log.warning("step_attempt_failed", outcome="failed", transient=result.transient,
                    status_code=result.status_code, error=result.error, breaker=result.breaker, **fields)
    else:
        log.info("step_attempt_succeeded", outcome="succeeded", **fields)


def log_breaker_change(change: BreakerTransition) -> None:
    """One log line per circuit breaker state change (the registry's breakers call this)."""
    if change.new == "open" and change.old == "closed":
        log.warning("breaker_opened", service=change.service, failures=change.failures,
                    window=format_duration_ms(change.window_ms), open_for=format_duration_ms(change.open_for_ms))
    elif change.new == "open":
        log.warning("breaker_reopened", service=change.service, open_for=format_duration_ms(change.open_for_ms))
    elif change.new == "half_open":
        log.info("breaker_half_open", service=change.service)
    else:
        log.info("breaker_closed", service=change.service)


def run_executor(settings: Settings, stop_event: threading.Event | None = None, **options: Any) -> None:
    """Run the executor until `stop_event` is set (or forever). Blocks the calling thread."""
    stop = stop_event or threading.Event()
    asyncio.run(Executor(settings, **options).run(stop.is_set))
