"""Commands to one execution (cancel, signal, retry, pause, resume, skip) and external events.

Each command is the CLI's (`operations.commands`), requested by `api:<key
name>`, sent to the commands topic keyed by the execution id: 202 with where
it landed. The execution must be in the projection (else 404). With
`?wait=<seconds>` the answer also says what the decider made of it, read from
the projection: accepted, rejected (with the reason) or pending.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query

from ..operations.commands import (
    cancel_command,
    external_event,
    operator_command,
    seal_input,
    send_command,
    send_event,
    signal_command,
    skip_command,
)
from .auth import OPERATOR, ApiKey
from ..operations.lookups import execution_head, input_schema_of
from .context import ApiContext, context
from .errors import ERROR_RESPONSES, ApiError, error_doc
from .models import (
    CancelRequest,
    CommandSent,
    EventRequest,
    EventSent,
    ReasonRequest,
    RetryRequest,
    SignalRequest,
    SkipRequest,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
NOT_FOUND = {404: error_doc("No such execution in the projection (code not_found)")}
EXECUTION_ID = Path(max_length=500, description="The execution's id")
WAIT = Query(None, ge=0, le=60, description="Seconds to wait for the decider's decision (as projected)")


def _send(ctx: ApiContext, execution_id: str, build: Any, wait: float | None) -> dict[str, Any]:
    """404 unless the projection knows the execution; send `build(row)`; wait for its decision if asked."""
    with ctx.connection() as conn:
        row = execution_head(conn, execution_id)
        if row is None:
            raise ApiError(404, "not_found", f"execution {execution_id} not found in the projection")
        command = build(conn, row)
    sent = send_command(ctx.send, ctx.settings, command)
    doc = {"execution_id": execution_id, "command": type(command).__name__, **sent.as_json()}
    if wait is not None:
        doc["outcome"], doc["reason"] = ctx.wait_decision(execution_id, sent.partition, sent.offset, wait)
    return doc


COMMAND = {"status_code": 202, "response_model": CommandSent, "responses": NOT_FOUND, "tags": ["commands"]}


@router.post("/executions/{execution_id}/cancel", **COMMAND, summary="Cancel an execution, or one step of it",
             description="CancelWorkflow: the execution compensates first, then ends cancelled. With `step`: "
                         "CancelStep withdraws only that step; its dependents go on.")
def cancel(body: CancelRequest | None = None, execution_id: str = EXECUTION_ID, wait: float | None = WAIT,
           ctx: ApiContext = Depends(context), key: ApiKey = Depends(OPERATOR)) -> Any:
    body = body or CancelRequest()
    return _send(ctx, execution_id, lambda conn, row: cancel_command(
        execution_id, reason=body.reason, step=body.step, requested_by=key.who), wait)


@router.post("/executions/{execution_id}/signal", **COMMAND, summary="Send a signal to an execution",
             description="SignalWorkflow: a step waiting with `config: {signal: NAME}` receives `data`.")
def signal(body: SignalRequest, execution_id: str = EXECUTION_ID, wait: float | None = WAIT,
           ctx: ApiContext = Depends(context), key: ApiKey = Depends(OPERATOR)) -> Any:
    return _send(ctx, execution_id, lambda conn, row: signal_command(
        execution_id, body.name, body.data, requested_by=key.who), wait)


@router.post("/executions/{execution_id}/retry", **COMMAND, summary="Retry a failed execution",
             description="RetryExecution: runs again from the failed step(s); completed steps keep their "
                         "outputs. `input` replaces the recorded input (sealed like a start's).")
def retry(body: RetryRequest | None = None, execution_id: str = EXECUTION_ID, wait: float | None = WAIT,
          ctx: ApiContext = Depends(context), key: ApiKey = Depends(OPERATOR)) -> Any:
    body = body or RetryRequest()

    def build(conn: Any, row: dict[str, Any]) -> Any:
        sealed = None
        if body.input is not None:
            sealed = seal_input(body.input, input_schema_of(conn, row), ctx.seal)
        return operator_command("retry", execution_id, reason=body.reason, requested_by=key.who,
                                sealed_input=sealed)

    return _send(ctx, execution_id, build, wait)


@router.post("/executions/{execution_id}/pause", **COMMAND, summary="Pause an execution",
             description="PauseExecution: no new step starts until it is resumed; calls in flight finish.")
def pause(body: ReasonRequest | None = None, execution_id: str = EXECUTION_ID, wait: float | None = WAIT,
          ctx: ApiContext = Depends(context), key: ApiKey = Depends(OPERATOR)) -> Any:
    reason = body.reason if body else None
    return _send(ctx, execution_id, lambda conn, row: operator_command(
        "pause", execution_id, reason=reason, requested_by=key.who), wait)


@router.post("/executions/{execution_id}/resume", **COMMAND, summary="Resume a paused execution")
def resume(body: ReasonRequest | None = None, execution_id: str = EXECUTION_ID, wait: float | None = WAIT,
           ctx: ApiContext = Depends(context), key: ApiKey = Depends(OPERATOR)) -> Any:
    reason = body.reason if body else None
    return _send(ctx, execution_id, lambda conn, row: operator_command(
        "resume", execution_id, reason=reason, requested_by=key.who), wait)


@router.post("/executions/{execution_id}/steps/{step}/skip", **COMMAND, summary="Skip a step",
             description="SkipStep: a step that has not finished ends skipped, with `output` for its dependents.")
def skip(body: SkipRequest | None = None, execution_id: str = EXECUTION_ID,
         step: str = Path(max_length=500, description="A step name, or a key like pay_all[3].charge"),
         wait: float | None = WAIT, ctx: ApiContext = Depends(context), key: ApiKey = Depends(OPERATOR)) -> Any:
    body = body or SkipRequest()
    return _send(ctx, execution_id, lambda conn, row: skip_command(
        execution_id, step, output=body.output, reason=body.reason, requested_by=key.who), wait)


@router.post("/events", status_code=202, response_model=EventSent, tags=["events"],
             summary="Publish an external (business) event",
             description="As `orchestrator events publish`: an ExternalEvent keyed by its id on the "
                         "external-events topic, for waiting steps (and event triggers) to match.")
def publish_event(body: EventRequest, ctx: ApiContext = Depends(context), key: ApiKey = Depends(OPERATOR)) -> Any:
    event = external_event(body.type, body.data, event_id=body.id, source=body.source or key.who)
    sent = send_event(ctx.send, ctx.settings, event)
    return {"event_id": event.event_id, "event_type": event.event_type, **sent.as_json()}
