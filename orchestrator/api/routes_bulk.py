"""POST /api/v1/bulk/{cancel|retry|pause|resume}: one action over every execution a filter matches.

`operations.bulk.bulk_action` does the work (the CLI's `orchestrator bulk`
uses it too): a dry run counts and samples; a real run sends one command per
execution, paced, and reports each one's decision. The request holds its
thread until the last decision or timeout: max_items / rate_per_second
seconds of sending plus up to decision_timeout_s.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path

from ..operations.bulk import bulk_action
from . import reads
from .auth import OPERATOR, ApiKey
from .context import ApiContext, context
from .errors import ERROR_RESPONSES, ApiError
from .models import BulkDryRun, BulkRequest, BulkRun

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/bulk", tags=["bulk"], responses=ERROR_RESPONSES)
MAX_SENDING_S = 300.0  # one request sends for at most this long (max_items / rate_per_second)


@router.post("/{action}", response_model=BulkDryRun | BulkRun, summary="Cancel, retry, pause or resume many "
             "executions", description="`dry_run: true` returns how many executions match and a sample of their "
             "ids. Otherwise one command per matching execution (newest first, at most max_items) is sent at "
             "most rate_per_second, and each item reports the decider's decision: accepted, rejected (with the "
             "reason), pending (none within decision_timeout_s; it will still be decided) or failed_to_send. "
             "A real run needs a non-empty filter, and may send for at most 300 s (max_items / rate_per_second).")
def bulk(body: BulkRequest, action: Literal["cancel", "retry", "pause", "resume"] = Path(),
         ctx: ApiContext = Depends(context), key: ApiKey = Depends(OPERATOR)) -> Any:
    try:
        f = reads.parse_filter(body.filter)
        report = bulk_action(action, f, connect=ctx.connection, send=ctx.send, settings=ctx.settings,
                             requested_by=key.who, reason=body.reason, dry_run=body.dry_run,
                             rate_per_second=body.rate_per_second, max_items=body.max_items,
                             decision_timeout_s=body.decision_timeout_s, max_sending_s=MAX_SENDING_S)
    except ValueError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    return report.as_json()
