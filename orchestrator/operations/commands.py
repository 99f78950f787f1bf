"""The commands clients send, built the same way for the CLI and the API.

Sensitive input values are sealed here, before anything leaves the process
(a start's input, a retry's replacement input), with the input schema of the
registered definition when it is known and by field name otherwise. Commands
go to the commands topic keyed by the execution id; external events go to the
external-events topic keyed by the event id.

An `Idempotency-Key` names a start: the execution id is a UUID 5 of the
workflow and the key, so the same request made twice names the same
execution, and the decider ignores a repeated start of an execution.

A command's decision is the first event recorded with the cause
`commands:<partition>:<offset>` (`reads.decision_for`): a `CommandRejected`
(or `WorkflowStartRejected`) means rejected, anything else accepted; none yet
is pending.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..config import Settings
from ..core.messages import (
    CancelStep,
    CancelWorkflow,
    ExternalEvent,
    PauseExecution,
    ResumeExecution,
    RetryExecution,
    SignalWorkflow,
    SkipStep,
    StartWorkflow,
)
from .sending import Send

__all__ = [
    "DEFAULT_REASONS",
    "REJECTIONS",
    "cancel_command",
    "decider_cause",
    "external_event",
    "idempotent_execution_id",
    "operator_command",
    "outcome_of",
    "wait_for_decision",
    "seal_input",
    "send_command",
    "send_event",
    "signal_command",
    "skip_command",
    "start_command",
]

# Fixed forever: changing it would give every Idempotency-Key a new execution id.
IDEMPOTENCY_NAMESPACE = uuid.UUID("5d0f3a52-9b8e-4c1e-8f43-7a2d6e0c9b15")

DEFAULT_REASONS = {"cancel": "cancelled", "retry": "retried", "pause": "paused", "resume": "resumed",
                   "skip": "skipped"}
REJECTIONS = frozenset({"CommandRejected", "WorkflowStartRejected"})

Seal = Callable[[Any], str]


def idempotent_execution_id(workflow: str, key: str) -> str:
    """The execution id an Idempotency-Key names for `workflow` (UUID 5)."""
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{workflow}\n{key}"))


def seal_input(value: Any, schema: Mapping[str, Any] | None, seal: Seal) -> Any:
    """`value` with its sensitive fields (by schema, or by name) replaced by sealed tokens."""
    from ..core.sensitive import seal_values

    return seal_values(value, dict(schema or {}), seal)


def start_command(workflow: str, version: str | None, value: Any, *, execution_id: str | None,
                  requested_by: str | None, input_schema: Mapping[str, Any] | None, seal: Seal) -> StartWorkflow:
    """A StartWorkflow with its input sealed; a new UUID when no execution id is given."""
    sealed = seal_input({} if value is None else value, input_schema, seal)
    return StartWorkflow(execution_id or str(uuid.uuid4()), workflow, version, sealed, requested_by)


def cancel_command(execution_id: str, *, reason: str | None = None, step: str | None = None,
                   requested_by: str | None) -> CancelWorkflow | CancelStep:
    """Cancel the execution, or with `step` withdraw only that step."""
    reason = DEFAULT_REASONS["cancel"] if reason is None else reason
    if step is not None:
        return CancelStep(execution_id, step, reason, requested_by)
    return CancelWorkflow(execution_id, reason, requested_by)


def signal_command(execution_id: str, name: str, data: Any, *, requested_by: str | None) -> SignalWorkflow:
    return SignalWorkflow(execution_id, name, data, requested_by)


def skip_command(execution_id: str, step: str, *, output: Any = None, reason: str | None = None,
                 requested_by: str | None) -> SkipStep:
    return SkipStep(execution_id, step, output, DEFAULT_REASONS["skip"] if reason is None else reason, requested_by)


def operator_command(action: str, execution_id: str, *, reason: str | None = None, requested_by: str | None,
                     sealed_input: Any = None) -> CancelWorkflow | RetryExecution | PauseExecution | ResumeExecution:
    """The command of a whole-execution action: cancel, retry (input already sealed), pause, resume."""
    reason = DEFAULT_REASONS.get(action, action) if reason is None else reason
    if action == "cancel":
        return CancelWorkflow(execution_id, reason, requested_by)
    if action == "retry":
        return RetryExecution(execution_id, sealed_input, reason, requested_by)
    if action == "pause":
        return PauseExecution(execution_id, reason, requested_by)
    if action == "resume":
        return ResumeExecution(execution_id, reason, requested_by)
    raise ValueError(f"unknown action {action!r}: one of cancel, retry, pause, resume")


def send_command(send: Send, settings: Settings, command: Any) -> Any:
    """Publish one command keyed by its execution id; where it landed."""
    [sent] = send([(settings.topics.commands, command.execution_id, command)])
    return sent


def external_event(event_type: str, data: Any, *, event_id: str | None = None, source: str | None = None,
                   now_ms: int | None = None) -> ExternalEvent:
    return ExternalEvent(event_id or str(uuid.uuid4()), event_type, data,
                         int(time.time() * 1000) if now_ms is None else now_ms, source)


def send_event(send: Send, settings: Settings, event: ExternalEvent) -> Any:
    [sent] = send([(settings.topics.external_events, event.event_id, event)])
    return sent


def decider_cause(partition: int, offset: int) -> str:
    """The `cause` the decider records for events caused by the command at that offset."""
    return f"commands:{partition}:{offset}"


def outcome_of(event: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """(accepted | rejected | pending, reason) from a command's first recorded event (or None)."""
    if event is None:
        return "pending", None
    kind = event.get("event_type")
    if kind not in REJECTIONS:
        return "accepted", None
    payload = event.get("payload") or {}
    reason = payload.get("reason") if isinstance(payload, Mapping) else None
    if not reason and isinstance(payload, Mapping) and payload.get("violations"):
        reason = "; ".join(str(v) for v in payload["violations"])
    return "rejected", reason or str(kind)


def wait_for_decision(connect: Callable[[], Any], execution_id: str, partition: int, offset: int, seconds: float,
                      *, poll_s: float = 0.1) -> tuple[str, str | None]:
    """(accepted | rejected | pending, reason): the decider's answer to the command at
    commands:<partition>:<offset>, as the projection records it, waiting up to `seconds`.
    `connect()` gives a context manager holding a dict-row projection connection."""
    from ..api import reads

    deadline = time.monotonic() + seconds
    while True:
        with connect() as conn:
            event = reads.decision_for(conn, execution_id, partition, offset)
        if event is not None or time.monotonic() >= deadline:
            return outcome_of(event)
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
