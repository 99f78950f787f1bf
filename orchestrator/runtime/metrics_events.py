"""What one decision's recorded events say for the metrics: pure functions.

`observations(before, after, recorded)` turns the events the decider recorded
for one input (with the execution's state before and after the decision) into
`(metric, labels, value)` triples; `metrics.py` adds them to Prometheus
counters and histograms once the batch's transaction has committed.
`timer_changes` says how the execution's armed timers changed, by kind.

Labels stay bounded: the workflow's name and the step's name in the
definition (a step of an iteration, `pay_all[3].charge`, counts as
`charge`), never an execution id. Events are matched by class name, so an
event this module does not know yet is simply not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.keys import leaf
from ..core.state import ExecutionState

__all__ = ["Observation", "observations", "timer_changes", "timer_kind", "TIMER_KINDS"]

Observation = tuple[str, tuple[str, ...], float]  # (metric key, label values, amount or observed value)

# Timer id prefix (core/evolve.py) -> the `kind` label.
_TIMER_KINDS = {"timeout": "attempt_deadline", "retry": "retry_backoff", "wait": "wait_timeout",
                "execution-timeout": "execution_timeout"}
TIMER_KINDS = (*_TIMER_KINDS.values(), "other")
_OPERATOR_ACTIONS = {"ExecutionPaused": "pause", "ExecutionResumed": "resume", "ExecutionRetried": "retry"}
_ENDED = {"WorkflowCompleted": "completed", "WorkflowFailed": "failed", "WorkflowCancelled": "cancelled"}


def timer_kind(timer_id: str) -> str:
    return _TIMER_KINDS.get(timer_id.partition(":")[0], "other")


def timer_changes(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Armed timers after minus before, by kind (a kind may show 0: one went, one came)."""
    delta: dict[str, int] = {}
    for timer_id in before:
        if timer_id not in after:
            kind = _TIMER_KINDS.get(timer_id.partition(":")[0], "other")
            delta[kind] = delta.get(kind, 0) - 1
    for timer_id in after:
        if timer_id not in before:
            kind = _TIMER_KINDS.get(timer_id.partition(":")[0], "other")
            delta[kind] = delta.get(kind, 0) + 1
    return delta


class _Decision:
    __slots__ = ("before", "after", "workflow", "out", "started")

    def __init__(self, before: ExecutionState, after: ExecutionState) -> None:
        self.before, self.after = before, after
        self.workflow = before.workflow_name or after.workflow_name
        self.out: list[Observation] = []
        self.started: dict[str, int] = {}  # steps started by this decision -> recorded_at

    def step_seconds(self, key: str, at: int) -> float | None:
        """How long the step took: from its first attempt (or its wait, or its block) to `at`."""
        step = self.before.steps.get(key)
        started = step.started_at if step is not None else None
        if started is None:
            started = self.started.get(key)
        if started is None:
            step = self.after.steps.get(key)
            started = step.started_at if step is not None else None
        return None if started is None else max(0, at - started) / 1000


def _workflow_started(d: _Decision, e: Any, at: int) -> None:
    d.workflow = e.workflow_name
    d.out.append(("executions_started", (d.workflow,), 1))


def _start_rejected(d: _Decision, e: Any, at: int) -> None:
    d.workflow = e.workflow_name
    d.out.append(("executions_rejected", (d.workflow,), 1))


def _ended(status: str) -> Callable[[_Decision, Any, int], None]:
    def ended(d: _Decision, e: Any, at: int) -> None:
        d.out.append((f"executions_{status}", (d.workflow,), 1))
        started = d.after.started_at if d.after.started_at is not None else d.before.started_at
        if started is not None:
            d.out.append(("execution_duration_seconds", (d.workflow, status), max(0, at - started) / 1000))
    return ended


def _compensation_started(d: _Decision, e: Any, at: int) -> None:
    d.out.append(("compensations_started", (d.workflow, e.trigger), 1))


def _compensation_finished(d: _Decision, e: Any, at: int) -> None:
    d.out.append(("executions_compensated", (d.workflow, e.outcome), 1))


def _step_scheduled(d: _Decision, e: Any, at: int) -> None:
    d.started.setdefault(e.step, at)
    d.out.append(("step_attempts", (d.workflow, leaf(e.step)), 1))


def _step_waiting(d: _Decision, e: Any, at: int) -> None:
    d.started.setdefault(e.step, at)
    d.out.append(("waits_opened", (d.workflow, "signal" if e.signal else "event"), 1))


def _wait_satisfied(d: _Decision, e: Any, at: int) -> None:
    d.out.append(("waits_satisfied", (d.workflow, e.kind), 1))


def _attempt_failed(d: _Decision, e: Any, at: int) -> None:
    step = leaf(e.step)
    d.out.append(("step_attempt_failures", (d.workflow, step, "transient" if e.transient else "permanent"), 1))
    if e.will_retry:
        d.out.append(("step_retries", (d.workflow, step), 1))


def _step_finished(status: str, timed: bool) -> Callable[[_Decision, Any, int], None]:
    def finished(d: _Decision, e: Any, at: int) -> None:
        step = leaf(e.step)
        d.out.append(("steps_finished", (d.workflow, step, status), 1))
        if timed:
            seconds = d.step_seconds(e.step, at)
            if seconds is not None:
                d.out.append(("step_duration_seconds", (d.workflow, step, status), seconds))
        if status == "skipped" and getattr(e, "requested_by", None):
            d.out.append(("operator_actions", (d.workflow, "skip"), 1))
    return finished


def _timer_scheduled(d: _Decision, e: Any, at: int) -> None:
    d.out.append(("timers_scheduled", (d.workflow, timer_kind(e.timer_id)), 1))


def _timer_fired(d: _Decision, e: Any, at: int) -> None:
    d.out.append(("timers_fired", (d.workflow, timer_kind(e.timer_id)), 1))


def _command_rejected(d: _Decision, e: Any, at: int) -> None:
    d.out.append(("commands_rejected", (d.workflow, e.command), 1))


def _operator_action(action: str) -> Callable[[_Decision, Any, int], None]:
    def acted(d: _Decision, e: Any, at: int) -> None:
        d.out.append(("operator_actions", (d.workflow, action), 1))
    return acted


_HANDLERS: dict[str, Callable[[_Decision, Any, int], None]] = {
    "WorkflowStarted": _workflow_started,
    "WorkflowStartRejected": _start_rejected,
    **{name: _ended(status) for name, status in _ENDED.items()},
    "CompensationStarted": _compensation_started,
    "CompensationFinished": _compensation_finished,
    "StepScheduled": _step_scheduled,
    "StepWaiting": _step_waiting,
    "WaitSatisfied": _wait_satisfied,
    "StepAttemptFailed": _attempt_failed,
    "StepCompleted": _step_finished("completed", timed=True),
    "StepFailed": _step_finished("failed", timed=True),
    "StepCancelled": _step_finished("cancelled", timed=True),
    "StepSkipped": _step_finished("skipped", timed=False),
    "TimerScheduled": _timer_scheduled,
    "TimerFired": _timer_fired,
    "CommandRejected": _command_rejected,
    **{name: _operator_action(action) for name, action in _OPERATOR_ACTIONS.items()},
}


_BY_TYPE: dict[type, Callable[[_Decision, Any, int], None] | None] = {}  # _HANDLERS by event class, as met


def observations(before: ExecutionState, after: ExecutionState, recorded: Sequence[Any]) -> list[Observation]:
    """The metric observations of the events one decision recorded (`RecordedEvent`s)."""
    d = _Decision(before, after)
    for r in recorded:
        event = r.event
        try:
            handler = _BY_TYPE[type(event)]
        except KeyError:
            handler = _BY_TYPE[type(event)] = _HANDLERS.get(type(event).__name__)
        if handler is not None:
            handler(d, event, r.recorded_at)
    return d.out
