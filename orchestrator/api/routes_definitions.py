"""Definitions: validate and apply texts (as `orchestrator definitions validate|apply`), list and read them.

Validate and apply run the CLI's own checks (`operations.definitions`) on the
files of the request body instead of paths; files of `kind: StepTemplate`
among them are step templates for the others, as are the server's
ORCH_TEMPLATES directory's. Apply compares with the compacted definitions
topic (the truth) and registers as `api:<key name>`; reads come from the
projection.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from fastapi import APIRouter, Depends, Path

from ..cli.common import iso
from ..operations.definitions import (
    applied_rows,
    check_sources,
    known_services,
    plan_apply,
    problem_json,
    read_registered,
    registration_records,
    validation_json,
)
from . import reads
from .auth import OPERATOR, READER, ApiKey
from .context import ApiContext, context
from .errors import ERROR_RESPONSES, ApiError, error_doc
from .models import Applied, DefinitionFiles, DefinitionList, DefinitionVersion, DefinitionVersions, ValidationResult

__all__ = ["router"]

log = structlog.get_logger("orchestrator.api")
router = APIRouter(prefix="/api/v1/definitions", tags=["definitions"], responses=ERROR_RESPONSES)
NOT_FOUND = {404: error_doc("No such definition (code not_found)")}


def _check(ctx: ApiContext, body: DefinitionFiles) -> Any:
    names = [f.name for f in body.files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ApiError(422, "invalid", f"files: each file needs its own name; given twice: {', '.join(twice)}")
    services = known_services(ctx.settings, lambda message: log.warning("services_registry_unusable",
                                                                        message=message))
    return check_sources([(f.name, f.text, None) for f in body.files], templates_dir=ctx.templates_dir,
                         known_services=services)


@router.post("/validate", response_model=ValidationResult, response_model_exclude_unset=True,
             summary="Check definitions without registering them",
             description="As `orchestrator definitions validate --json`: every file's problems, naming the "
                         "file, the step and the field. Step templates (`kind: StepTemplate`) may be among "
                         "the files.")
def validate(body: DefinitionFiles, ctx: ApiContext = Depends(context), key: ApiKey = Depends(OPERATOR)) -> Any:
    doc = validation_json(_check(ctx, body))
    return {"ok": doc["valid"], "definitions": doc["files"], "templates": doc["templates"]}


@router.post("", response_model=Applied, response_model_exclude_unset=True,
             summary="Register definitions (all or nothing)",
             responses={409: error_doc("A name@version is registered with other content (code conflict)")},
             description="As `orchestrator definitions apply --json`: the same content under a name@version is "
                         "`unchanged`, new ones are `registered` (by `api:<key name>`); an invalid definition "
                         "(422) or other content under a registered version (409) registers nothing.")
def apply(body: DefinitionFiles, ctx: ApiContext = Depends(context), key: ApiKey = Depends(OPERATOR)) -> Any:
    checked = _check(ctx, body)
    if not checked.ok:
        problems = [problem_json(p) for p in checked.problems]
        raise ApiError(422, "invalid", f"nothing applied: {len(problems)} problem{'s' if len(problems) != 1 else ''} "
                                       "in the definitions", problems)
    plan = plan_apply(checked, read_registered(ctx.settings), when=iso)
    if plan.conflicts:
        raise ApiError(409, "conflict", f"nothing applied: {len(plan.conflicts)} conflicting definition"
                                        f"{'s' if len(plan.conflicts) != 1 else ''}", plan.conflicts)
    records = registration_records(plan, ctx.settings.topics.definitions, int(time.time() * 1000), key.who)
    published = {p.key: p for p in ctx.send(records)} if records else {}
    return {"definitions": applied_rows(plan, published)}


@router.get("", response_model=DefinitionList, summary="Registered definitions, one item per name",
            description="From the projection: each name's latest version (by version order), how many versions, "
                        "and the latest's registration and description.")
def list_definitions(ctx: ApiContext = Depends(context), key: ApiKey = Depends(READER)) -> Any:
    with ctx.connection() as conn:
        return {"items": reads.list_definitions(conn)}


@router.get("/{name}", response_model=DefinitionVersions, summary="A definition's versions",
            responses=NOT_FOUND)
def get_definition(name: str = Path(max_length=300), ctx: ApiContext = Depends(context),
                   key: ApiKey = Depends(READER)) -> Any:
    with ctx.connection() as conn:
        found = reads.get_definition(conn, name)
    if found is None:
        raise ApiError(404, "not_found", f"definition {name!r} is not registered (in the projection)")
    return found


@router.get("/{name}/versions/{version}", response_model=DefinitionVersion,
            summary="One version of a definition, with its source", responses=NOT_FOUND)
def get_definition_version(name: str = Path(max_length=300), version: str = Path(max_length=100),
                           ctx: ApiContext = Depends(context), key: ApiKey = Depends(READER)) -> Any:
    with ctx.connection() as conn:
        found = reads.get_definition_version(conn, name, version)
    if found is None:
        raise ApiError(404, "not_found", f"definition {name!r} version {version!r} is not registered "
                                         "(in the projection)")
    return found
