"""Prometheus metrics of the roles (docs/metrics.md lists every one).

Each role process serves the metrics of its process over HTTP (`serve`: port
from `--metrics-port` / ORCH_METRICS_PORT, 0 = off; host ORCH_METRICS_HOST,
default 127.0.0.1). Updates happen in the roles' hot loops, so they are kept
cheap: labelled series are looked up once (`child`, `record`), the decider counts a batch's
events only after its transaction committed (`DeciderMetrics`), gauges that
need a scan are sampled by the loop that owns the data at most once a
`SAMPLE_S`, and consumer lag comes from librdkafka's statistics, which its own
thread gathers every `LAG_INTERVAL_MS` and the role's poll hands to
`ConsumerLag` (a JSON parse of a few kB).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

from .metrics_events import TIMER_KINDS, Observation, observations, timer_changes
from .metrics_lag import CONSUMER_LAG, LAG_INTERVAL_MS, ConsumerLag, partition_lags

__all__ = ["serve", "serving", "expose", "consumer_lag_config", "ConsumerLag", "partition_lags", "CONSUMER_LAG",
           "DeciderMetrics", "Sampler", "record", "child", "SAMPLE_S", "LAG_INTERVAL_MS"]

log = structlog.get_logger("metrics")
disable_created_metrics()  # no `_created` series (Prometheus ignores them by default): half the samples

SAMPLE_S = 1.0
_STEP_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_EXECUTION_BUCKETS = (.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
_CALL_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
_LOOP_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)


def _counter(name: str, doc: str, labels: Sequence[str] = (), registry: Any = REGISTRY) -> Counter:
    return Counter(f"orchestrator_{name}", doc, labels, registry=registry)


# Metrics without labels export a sample from the start: those of one role are registered
# only by that role (`expose`), so the other roles' endpoints do not show them as zeros.
_ROLE_METRICS: dict[str, list[Any]] = {}


def _of(role: str, metric: Any) -> Any:
    _ROLE_METRICS.setdefault(role, []).append(metric)
    return metric


# -- executions and steps: derived by the decider from committed events -------------------
EXECUTIONS = {
    "executions_started": _counter("executions_started_total", "Executions started (WorkflowStarted)", ["workflow"]),
    "executions_rejected": _counter("executions_rejected_total", "Starts rejected: unknown workflow or invalid input",
                                    ["workflow"]),
    "executions_completed": _counter("executions_completed_total", "Executions that completed", ["workflow"]),
    "executions_failed": _counter("executions_failed_total", "Executions that failed", ["workflow"]),
    "executions_cancelled": _counter("executions_cancelled_total", "Executions that ended cancelled", ["workflow"]),
    "compensations_started": _counter("compensations_started_total", "Executions that entered compensating",
                                      ["workflow", "trigger"]),
    "executions_compensated": _counter("executions_compensated_total", "Compensations finished, by outcome",
                                       ["workflow", "outcome"]),
    "execution_duration_seconds": Histogram(
        "orchestrator_execution_duration_seconds", "Start to end of an execution (recorded times)",
        ["workflow", "status"], buckets=_EXECUTION_BUCKETS),
    "step_attempts": _counter("step_attempts_total", "Step attempts scheduled (StepScheduled)", ["workflow", "step"]),
    "step_attempt_failures": _counter("step_attempt_failures_total", "Step attempts that failed",
                                      ["workflow", "step", "kind"]),
    "step_retries": _counter("step_retries_total", "Failed attempts that will be retried", ["workflow", "step"]),
    "steps_finished": _counter("steps_finished_total", "Steps that ended, by status", ["workflow", "step", "status"]),
    "step_duration_seconds": Histogram(
        "orchestrator_step_duration_seconds", "First attempt (or wait) to the step's end, retries included",
        ["workflow", "step", "status"], buckets=_STEP_BUCKETS),
    "waits_opened": _counter("waits_opened_total", "wait_for_event steps that began waiting", ["workflow", "kind"]),
    "waits_satisfied": _counter("waits_satisfied_total", "Waits ended by their event or signal", ["workflow", "kind"]),
    "timers_scheduled": _counter("timers_scheduled_total", "Durable timers scheduled (TimerScheduled)",
                                 ["workflow", "kind"]),
    "timers_fired": _counter("timers_fired_total", "Durable timers fired (TimerFired)", ["workflow", "kind"]),
    "commands_rejected": _counter("commands_rejected_total", "Commands refused (CommandRejected)",
                                  ["workflow", "command"]),
    "operator_actions": _counter("operator_actions_total", "Pauses, resumes, retries and skips by operators",
                                 ["workflow", "action"]),
}
TIMERS_PENDING = Gauge("orchestrator_timers_pending", "Durable timers armed in the decider's executions",
                       ["partition", "kind"])
DECIDER_INPUTS = _of("decider", _counter("decider_inputs_total",
                                         "Inputs (commands, results, due timers) in committed batches", registry=None))
DECIDER_TRANSACTION = _of("decider", Histogram("orchestrator_decider_transaction_seconds",
                                               "One batch: its Kafka transaction", buckets=_LOOP_BUCKETS,
                                               registry=None))
DECIDER_ABORTED = _of("decider", _counter("decider_transactions_aborted_total",
                                          "Batches whose transaction was aborted", registry=None))
DECIDER_RESTORE = _of("decider", Histogram("orchestrator_decider_restore_seconds",
                                           "Rebuilding the state of an assigned partition", buckets=_LOOP_BUCKETS,
                                           registry=None))

# -- executor -----------------------------------------------------------------------------
TASKS_IN_FLIGHT = _of("executor", Gauge("orchestrator_executor_tasks_in_flight", "Tasks taken and not yet answered",
                                        registry=None))
CALL_DURATION = Histogram("orchestrator_executor_call_duration_seconds", "One attempt of a step in the executor",
                          ["workflow", "step", "outcome"], buckets=_CALL_BUCKETS)
RESULTS_PUBLISHED = _counter("executor_results_published_total", "Results delivered to the results topic",
                             ["outcome"])
RESULTS_UNDELIVERED = _of("executor", _counter("executor_results_undelivered_total", "Failed deliveries of a result",
                                               registry=None))
BREAKER_STATE = Gauge("orchestrator_circuit_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                      ["service"])
BREAKER_TRANSITIONS = _counter("circuit_breaker_transitions_total", "Circuit breaker state changes",
                               ["service", "state"])
_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}

# -- every role -----------------------------------------------------------------------------
DLQ_MESSAGES = _counter("dlq_messages_total", "Messages delivered to the dead-letter topic",
                        ["role", "topic", "reason"])

# -- correlator, triggers, projector --------------------------------------------------------
CORRELATOR_EVENTS = _of("correlator", _counter("correlator_events_total",
                                                "External events consumed by the correlator", registry=None))
CORRELATOR_DELIVERIES = _of("correlator", _counter("correlator_deliveries_total",
                                                    "Events matched to a wait (DeliverEvent sent)", registry=None))
CORRELATOR_WAITS = _of("correlator", Gauge("orchestrator_correlator_waits_open", "Open waits the correlator knows",
                                           registry=None))
CORRELATOR_BUFFERED = _of("correlator", Gauge("orchestrator_correlator_events_buffered",
                                              "External events kept for waits to come", registry=None))
TRIGGER_EVENTS = _of("triggers", _counter("triggers_events_total", "External events consumed by the triggers role",
                                          registry=None))
TRIGGER_STARTS = _counter("trigger_starts_total", "StartWorkflow commands sent by triggers", ["workflow", "kind"])
SCHEDULER_FENCED = _of("triggers", Gauge("orchestrator_scheduler_fenced",
                                         "1 when another instance took the schedules over", registry=None))
PROJECTOR_EVENTS = _of("projector", _counter("projector_events_total", "Events written to the projection",
                                             registry=None))
PROJECTOR_BATCH = _of("projector", Histogram("orchestrator_projector_batch_seconds", "Writing one batch to PostgreSQL",
                                             buckets=_LOOP_BUCKETS, registry=None))

_serving: str | None = None  # the URL this process serves, once `serve` ran
_exposed: set[str] = set()


def expose(role: str) -> None:
    """Register the metrics only `role` has (once per process; roles call it when built)."""
    if role in _exposed:
        return
    _exposed.add(role)
    for metric in _ROLE_METRICS.get(role, ()):
        try:
            REGISTRY.register(metric)
        except ValueError:  # registered meanwhile by another thread building the same role
            pass


# -- updating -----------------------------------------------------------------------------

_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, labels: tuple[str, ...]) -> Any:
    """`metric.labels(*labels)`, cached: the hot loops skip prometheus_client's checks and lock.
    Only for series that are never removed (counters, histograms)."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


_updates: dict[tuple[str, tuple[str, ...]], Callable[[float], None]] = {}


def _update(name: str, labels: tuple[str, ...]) -> Callable[[float], None]:
    """The `inc` or `observe` of one series of EXECUTIONS, looked up once."""
    metric = EXECUTIONS[name]
    target = metric.labels(*labels)
    update = _updates[(name, labels)] = target.observe if isinstance(metric, Histogram) else target.inc
    return update


def record(observed: Iterable[Observation]) -> None:
    """Add observations (metrics_events.py) to their counters and histograms."""
    for name, labels, value in observed:
        (_updates.get((name, labels)) or _update(name, labels))(value)


class Sampler:
    """`due()` is true at most once a `seconds`: for gauges whose value takes a scan."""

    def __init__(self, seconds: float = SAMPLE_S) -> None:
        self.seconds = seconds
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.seconds
        return True


class DeciderMetrics:
    """What the decider's decisions say, counted when their transaction commits (never for
    an aborted batch, nor for the events folded while restoring a partition)."""

    def __init__(self) -> None:
        self._batch: list[tuple[Any, Any, Any, int]] = []
        self._timers: dict[tuple[int, str], Any] = {}  # (partition, kind) -> its TIMERS_PENDING series
        expose("decider")

    def decided(self, before: Any, after: Any, recorded: Any, partition: int) -> None:
        self._batch.append((before, after, recorded, partition))

    def committed(self, inputs: int, seconds: float) -> None:
        timers: dict[tuple[int, str], int] = {}
        for before, after, recorded, partition in self._batch:
            record(observations(before, after, recorded))
            if before.timers is not after.timers:
                for kind, delta in timer_changes(before.timers, after.timers).items():
                    timers[(partition, kind)] = timers.get((partition, kind), 0) + delta
        self._batch.clear()
        for key, delta in timers.items():
            if delta:
                series = self._timers.get(key)
                if series is None:
                    series = self._timers[key] = TIMERS_PENDING.labels(str(key[0]), key[1])
                series.inc(delta)
        DECIDER_INPUTS.inc(inputs)
        DECIDER_TRANSACTION.observe(seconds)

    def aborted(self) -> None:
        self._batch.clear()
        DECIDER_ABORTED.inc()

    def restored(self, partition: int, states: Iterable[Any], seconds: float) -> None:
        counts = dict.fromkeys(TIMER_KINDS, 0)
        for state in states:
            for kind, n in timer_changes({}, state.timers).items():
                counts[kind] += n
        for kind, n in counts.items():
            series = self._timers[(partition, kind)] = TIMERS_PENDING.labels(str(partition), kind)
            series.set(n)
        DECIDER_RESTORE.observe(seconds)

    def revoked(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            for kind in TIMER_KINDS:
                self._timers.pop((p, kind), None)
                _remove(TIMERS_PENDING, str(p), kind)


def _remove(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


# -- executor helpers -----------------------------------------------------------------------

def breaker_changed(change: Any) -> None:
    """A registry's breaker observer (services.BreakerTransition)."""
    BREAKER_STATE.labels(change.service).set(_BREAKER_VALUES.get(change.new, 2))
    child(BREAKER_TRANSITIONS, (change.service, change.new)).inc()


def breakers_known(registry: Any) -> None:
    """Closed breakers of the configured services, so their series exist before a change."""
    for name in registry.names():
        if registry.get(name).breaker is not None:
            BREAKER_STATE.labels(name).set(_BREAKER_VALUES.get(registry.breaker_state(name) or "closed", 0))


# -- consumer lag (metrics_lag.py) ---------------------------------------------------------------

def consumer_lag_config(role: str) -> dict[str, Any]:
    """Consumer config overrides that report the role's lag; none while metrics are off."""
    return ConsumerLag(role).config() if _serving else {}


# -- serving --------------------------------------------------------------------------------

def serving() -> str | None:
    return _serving


def serve(role: str, port: int, host: str = "127.0.0.1") -> str | None:
    """Serve this process's metrics at http://host:port/metrics (port 0: not at all); the URL."""
    global _serving
    if not port:
        return None
    httpd, _ = start_http_server(port, addr=host)
    bound = httpd.server_address[1]
    _serving = f"http://{host}:{bound}/metrics"
    log.info("metrics_serving", role=role, url=_serving)
    return _serving
