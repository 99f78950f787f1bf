"""Executions: start one (or by webhook), list them, read one and its history.

A start builds the CLI's StartWorkflow (`operations.commands.start_command`):
the input is sealed with the registered definition's input schema (read from
the projection; by field name when it is not there), requested by
`api:<key name>`. An `Idempotency-Key` names the execution (UUID 5 of the
workflow and the key): when the projection already has it, nothing is sent
and the answer is 200 with `existing: true`; otherwise the start goes out
(202), and a repeat that races it is ignored by the decider.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response

from ..operations.commands import idempotent_execution_id, send_command, start_command
from . import reads
from .auth import OPERATOR, READER, WEBHOOK, ApiKey
from ..operations.lookups import definition_of, execution_head
from .context import ApiContext, context
from .errors import ERROR_RESPONSES, ApiError, error_doc
from .models import ExecutionDetail, ExecutionPage, History, StartRequest, Started

__all__ = ["router", "start"]

router = APIRouter(prefix="/api/v1", tags=["executions"], responses=ERROR_RESPONSES)
NOT_FOUND = {404: error_doc("No such execution in the projection (code not_found)")}
STARTED = {200: {"model": Started, "description": "The execution existed already (a repeated request): "
                                                  "nothing was sent"},
           409: error_doc("The execution id is used by another workflow (code conflict)")}
MAX_WAIT_S = 60.0
WAIT = Query(None, ge=0, le=MAX_WAIT_S, description="Seconds to wait for the decider's decision (as projected)")
IDEMPOTENCY_KEY = Header(None, alias="Idempotency-Key", min_length=1, max_length=300,
                         description="The same key (and workflow) names the same execution: a repeat starts nothing")


def start(ctx: ApiContext, key: ApiKey, response: Response, *, workflow: str, version: str | None, value: Any,
          execution_id: str | None, idempotency_key: str | None, wait: float | None) -> dict[str, Any]:
    """Start `workflow` as `key` (POST /executions and webhooks)."""
    if execution_id is not None and idempotency_key is not None:
        raise ApiError(422, "invalid", "execution_id and the Idempotency-Key header each name the execution: "
                                       "give one of them")
    if idempotency_key is not None:
        execution_id = idempotent_execution_id(workflow, idempotency_key)
    with ctx.connection() as conn:
        existing = execution_head(conn, execution_id) if execution_id else None
        info = None if existing else definition_of(conn, workflow, version)
    if existing is not None:
        if existing["workflow_name"] != workflow:
            raise ApiError(409, "conflict", f"execution {execution_id} exists already, of workflow "
                                            f"{existing['workflow_name']!r}")
        response.status_code = 200
        return {"execution_id": execution_id, "workflow": workflow, "version": existing["workflow_version"],
                "command": None, "existing": True, "warnings": []}
    warnings = []
    if info is None:
        what = f"'{workflow}' version '{version}'" if version else f"'{workflow}'"
        warnings.append(f"workflow {what} is not registered (in the projection): the decider will reject the "
                        "start unless it is registered first")
    command = start_command(workflow, version, value, execution_id=execution_id, requested_by=key.who,
                            input_schema=info.input_schema if info else {}, seal=ctx.seal)
    sent = send_command(ctx.send, ctx.settings, command)
    doc: dict[str, Any] = {"execution_id": command.execution_id, "workflow": workflow, "version": version,
                           "command": sent.as_json(), "existing": False, "warnings": warnings}
    if wait is not None:
        doc["outcome"], doc["reason"] = ctx.wait_decision(command.execution_id, sent.partition, sent.offset, wait)
    response.status_code = 202
    return doc


@router.post("/executions", status_code=202, response_model=Started, responses=STARTED,
             summary="Start an execution",
             description="Sends a StartWorkflow (input sealed) to the commands topic, keyed by the execution id. "
                         "The decider validates the input against the definition and may reject the start "
                         "(?wait= shows it).")
def start_execution(response: Response, body: StartRequest, idempotency_key: str | None = IDEMPOTENCY_KEY,
                    wait: float | None = WAIT, ctx: ApiContext = Depends(context),
                    key: ApiKey = Depends(OPERATOR)) -> Any:
    return start(ctx, key, response, workflow=body.workflow, version=body.version, value=body.input,
                 execution_id=body.execution_id, idempotency_key=idempotency_key, wait=wait)


@router.post("/webhooks/{workflow}", status_code=202, response_model=Started, responses=STARTED,
             summary="Start an execution from a webhook: the body is its input",
             description="For systems that can only POST a JSON document: the body becomes the input of an "
                         "execution of WORKFLOW (latest version unless ?version=). Keys with role `webhook` "
                         "may call only this route. Send an Idempotency-Key to make redeliveries harmless.")
def webhook(response: Response, workflow: str = Path(min_length=1, max_length=300),
            body: dict[str, Any] = Body(description="The execution's input"),
            version: str | None = Query(None, min_length=1, max_length=100),
            idempotency_key: str | None = IDEMPOTENCY_KEY, wait: float | None = WAIT,
            ctx: ApiContext = Depends(context), key: ApiKey = Depends(WEBHOOK)) -> Any:
    return start(ctx, key, response, workflow=workflow, version=version, value=body, execution_id=None,
                 idempotency_key=idempotency_key, wait=wait)


def _query_params(request: Request) -> dict[str, Any]:
    """The query string as parse_filter takes it: a repeated key as a list."""
    params: dict[str, Any] = {}
    for name in request.query_params:
        values = request.query_params.getlist(name)
        params[name] = values if len(values) > 1 or name == "status" else values[0]
    return params


@router.get("/executions", response_model=ExecutionPage, summary="Executions, newest first, filtered",
            description="Filters combine with AND. `input.<dotted.path>=<value>` and `output.<dotted.path>=<value>` "
                        "match executions whose input (output) contains that value at that path; the value is "
                        "read as JSON when it is valid JSON (`5`, `true`, `\"5\"`), else as a string. Pages "
                        "follow `next_cursor`.")
def list_executions(request: Request,
                    workflow: str | None = Query(None, description="Workflow name"),
                    version: str | None = Query(None, description="Workflow version"),
                    status: list[str] = Query([], description="Repeatable, or comma-separated"),
                    created_after: str | None = Query(None, description="ISO 8601, inclusive"),
                    created_before: str | None = Query(None, description="ISO 8601, exclusive"),
                    limit: int = Query(50, ge=1, le=500),
                    cursor: str | None = Query(None, description="next_cursor of the previous page"),
                    ctx: ApiContext = Depends(context), key: ApiKey = Depends(READER)) -> Any:
    try:
        f = reads.parse_filter(_query_params(request))
        with ctx.connection() as conn:
            items, next_cursor = reads.list_executions(conn, f, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    return {"items": items, "next_cursor": next_cursor}


@router.get("/executions/{execution_id}", response_model=ExecutionDetail, responses=NOT_FOUND,
            summary="One execution: its row, steps (in definition order), children, pending timers and waits")
def get_execution(execution_id: str = Path(max_length=500), ctx: ApiContext = Depends(context),
                  key: ApiKey = Depends(READER)) -> Any:
    with ctx.connection() as conn:
        found = reads.get_execution(conn, execution_id)
    if found is None:
        raise ApiError(404, "not_found", f"execution {execution_id} not found in the projection")
    return found


@router.get("/executions/{execution_id}/history", response_model=History, responses=NOT_FOUND,
            summary="An execution's recorded events, in order (from the projection)")
def get_history(execution_id: str = Path(max_length=500),
                after: int = Query(0, ge=0, le=2**31 - 1, description="Events after this sequence number"),
                limit: int = Query(500, ge=1, le=1000),
                ctx: ApiContext = Depends(context), key: ApiKey = Depends(READER)) -> Any:
    with ctx.connection() as conn:
        events, next_after = reads.history(conn, execution_id, after=after, limit=limit)
        if not events and execution_head(conn, execution_id) is None:
            raise ApiError(404, "not_found", f"execution {execution_id} not found in the projection")
    return {"events": events, "next_after": next_after}
