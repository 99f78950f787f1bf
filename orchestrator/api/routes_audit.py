"""What the command line reads from Kafka itself, over HTTP: the replay audit of one
execution (`orchestrator replay ID`) and the active triggers (`orchestrator triggers list`).

Both read Kafka, not the projection, so they are slower than the other reads:
an execution's history is read from its partition of the events topic.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ..cli.common import CliError
from .auth import READER, ApiKey
from .context import ApiContext, context
from .errors import ERROR_RESPONSES, ApiError, error_doc

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)


class ReplayReport(BaseModel):
    """The history folded through the core, compared with the projection."""

    model_config = ConfigDict(extra="allow")
    execution_id: str
    events: int
    consistent: bool = Field(description="No difference and no history problem")
    differences: list[dict[str, Any]]
    history_problems: list[str]
    final: dict[str, Any] = Field(description="The state the events fold to")
    states: list[dict[str, Any]] | None = Field(None, description="The state after each event (?states=true)")


class TriggerList(BaseModel):
    triggers: list[dict[str, Any]]


@router.get("/executions/{execution_id}/replay", response_model=ReplayReport, tags=["executions"],
            responses={404: error_doc("No events of this execution on Kafka (code not_found)")},
            summary="Audit one execution: fold its history from Kafka and compare it with the projection")
def replay(execution_id: str = Path(max_length=500), states: bool = Query(False, description="Include the state "
           "after each event"), ctx: ApiContext = Depends(context), key: ApiKey = Depends(READER)) -> Any:
    from ..cli.audit import UnknownExecution, audit_execution

    with ctx.connection() as conn:
        try:
            doc, _, _ = audit_execution(ctx.settings, conn, execution_id)
        except UnknownExecution as exc:
            raise ApiError(404, "not_found", exc.message) from None
        except CliError as exc:  # Kafka out of reach, the topic missing
            raise ApiError(503, "unavailable", exc.message) from None
    if not states:
        doc["states"] = None
    return doc


@router.get("/triggers", response_model=TriggerList, tags=["definitions"],
            summary="The active event and schedule triggers, with their next fire times")
def list_triggers(ctx: ApiContext = Depends(context), key: ApiKey = Depends(READER)) -> Any:
    from ..cli.triggers import active_triggers

    try:
        return {"triggers": active_triggers(ctx.settings)}
    except CliError as exc:
        raise ApiError(503, "unavailable", exc.message) from None
