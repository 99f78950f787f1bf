"""Request and response bodies: what the OpenAPI document promises.

Rows of the projection keep every column (models allow extra fields); the
fields named here are the ones clients can rely on. Times are ISO 8601 in UTC.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Json = Any  # any JSON value


class Open(BaseModel):
    """A projection row: the named fields and every other column."""

    model_config = ConfigDict(extra="allow")


# -- definitions ---------------------------------------------------------------------------

class DefinitionFile(BaseModel):
    name: str = Field(min_length=1, max_length=500, description="A file name, used in problems (a.yaml)")
    text: str = Field(max_length=2_000_000, description="The YAML or JSON text: a Workflow or a StepTemplate")


class DefinitionFiles(BaseModel):
    files: list[DefinitionFile] = Field(min_length=1, max_length=200)


class Problem(BaseModel):
    file: str
    line: int | None = None
    step: str | None = None
    field: str | None = None
    message: str


class FileValidation(BaseModel):
    file: str
    valid: bool
    name: str | None = None
    version: str | None = None
    digest: str | None = None
    problems: list[Problem]
    step_templates: list[str] | None = Field(None, description="Step templates the definition uses (expanded)")


class TemplateValidation(BaseModel):
    file: str
    valid: bool
    name: str | None = None
    description: str | None = None
    problems: list[Problem]


class ValidationResult(BaseModel):
    ok: bool = Field(description="Every definition and step template is valid")
    definitions: list[FileValidation]
    templates: list[TemplateValidation]


class AppliedDefinition(BaseModel):
    file: str
    name: str
    version: str
    digest: str
    result: Literal["registered", "unchanged"]
    partition: int | None = Field(None, description="Where the registration landed (registered only)")
    offset: int | None = None
    step_templates: list[str] | None = None


class Applied(BaseModel):
    definitions: list[AppliedDefinition]


class DefinitionSummary(BaseModel):
    name: str
    latest_version: str
    versions: int
    registered_at: str
    registered_by: str | None = None
    description: str | None = None


class DefinitionList(BaseModel):
    items: list[DefinitionSummary]


class DefinitionVersionSummary(Open):
    version: str
    digest: str
    registered_at: str
    registered_by: str | None = None
    step_count: int


class DefinitionVersions(BaseModel):
    name: str
    versions: list[DefinitionVersionSummary]


class DefinitionVersion(Open):
    name: str
    version: str
    source: str
    source_format: str
    digest: str
    registered_at: str
    registered_by: str | None = None


# -- executions ----------------------------------------------------------------------------

class Landed(BaseModel):
    """Where a record landed on Kafka."""

    topic: str
    key: str
    partition: int
    offset: int


class StartRequest(BaseModel):
    workflow: str = Field(min_length=1, max_length=300)
    version: str | None = Field(None, min_length=1, max_length=100, description="Default: the latest registered")
    input: Json = Field(None, description="The execution's input (sensitive fields are sealed before sending)")
    execution_id: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^\s/?#%\\]+$",
                                     description="Default: a new UUID (or one derived from Idempotency-Key)")


class Started(BaseModel):
    execution_id: str
    workflow: str
    version: str | None = Field(description="As asked (null: the latest registered version when decided); "
                                            "an existing execution's own version")
    command: Landed | None = Field(description="The StartWorkflow sent; null when the execution existed already")
    existing: bool = Field(False, description="The execution existed already (a repeated request): nothing sent")
    warnings: list[str] = Field(default_factory=list)
    outcome: Literal["accepted", "rejected", "pending"] | None = Field(None, description="With ?wait=")
    reason: str | None = None


class ExecutionSummary(Open):
    id: str
    workflow_name: str
    workflow_version: str | None = None
    status: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str
    error: str | None = None
    failed_step: str | None = None
    requested_by: str | None = None
    parent_execution_id: str | None = None


class ExecutionPage(BaseModel):
    items: list[ExecutionSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null: no more")


class ExecutionRow(ExecutionSummary):
    input: Json = Field(None, description="Sensitive values redacted")
    output: Json = None
    parent_step: str | None = None


class StepRow(Open):
    execution_id: str
    step_name: str
    status: str
    attempts: int
    parent_step: str | None = None


class Timer(BaseModel):
    timer_id: str
    kind: str
    step: str | None = None
    fire_at: str


class Wait(BaseModel):
    step: str
    waiting_for: str | None = None
    timeout_at: str | None = None


class ExecutionDetail(BaseModel):
    execution: ExecutionRow
    steps: list[StepRow] = Field(description="In definition order")
    children: list[Open] = Field(description="Executions this one started")
    timers: list[Timer]
    waits: list[Wait]


class HistoryEvent(BaseModel):
    sequence: int
    event_type: str
    recorded_at: str
    cause: str
    payload: dict[str, Json]
    kafka_partition: int
    kafka_offset: int


class History(BaseModel):
    events: list[HistoryEvent]
    next_after: int | None = Field(description="Pass as ?after= for the next page; null: no more")


# -- commands ------------------------------------------------------------------------------

class CancelRequest(BaseModel):
    reason: str | None = Field(None, max_length=2000, description='Default "cancelled"')
    step: str | None = Field(None, min_length=1, max_length=500,
                             description="Withdraw only this step (a name, or a key like pay_all[3].charge)")


class SignalRequest(BaseModel):
    name: str = Field(min_length=1, max_length=300)
    data: Json = None


class RetryRequest(BaseModel):
    input: Json = Field(None, description="Replaces the recorded input (sealed); null keeps it")
    reason: str | None = Field(None, max_length=2000)


class ReasonRequest(BaseModel):
    reason: str | None = Field(None, max_length=2000)


class SkipRequest(BaseModel):
    output: Json = Field(None, description="The output the step's dependents see")
    reason: str | None = Field(None, max_length=2000)


class CommandSent(BaseModel):
    execution_id: str
    command: str = Field(description="CancelWorkflow, CancelStep, SignalWorkflow, RetryExecution, ...")
    topic: str
    key: str
    partition: int
    offset: int
    outcome: Literal["accepted", "rejected", "pending"] | None = Field(
        None, description="With ?wait=: the decider's decision, as projected (pending: none yet)")
    reason: str | None = Field(None, description="Why it was rejected")


class EventRequest(BaseModel):
    type: str = Field(min_length=1, max_length=300)
    data: Json = None
    id: str | None = Field(None, min_length=1, max_length=300, description="Default: a new UUID; the Kafka key")
    source: str | None = Field(None, max_length=300, description='Default "api:<key name>"')


class EventSent(BaseModel):
    event_id: str
    event_type: str
    topic: str
    key: str
    partition: int
    offset: int


# -- bulk ----------------------------------------------------------------------------------

class BulkRequest(BaseModel):
    filter: dict[str, Json] = Field(default_factory=dict, description=(
        "As the list query, as JSON: workflow, version, status (list), created_after, created_before, "
        "input / output (objects, matched by containment) or input.<path> / output.<path>"))
    dry_run: bool = False
    rate_per_second: float = Field(20.0, gt=0, le=1000)
    max_items: int = Field(1000, ge=1, le=10_000)
    reason: str | None = Field(None, max_length=2000)
    decision_timeout_s: float = Field(10.0, ge=0, le=120, description="How long to wait for each decision")


class BulkItem(BaseModel):
    execution_id: str
    outcome: Literal["accepted", "rejected", "pending", "failed_to_send"]
    reason: str | None = None


class BulkDryRun(BaseModel):
    action: str
    dry_run: Literal[True]
    matched: int
    sample: list[str]


class BulkRun(BaseModel):
    action: str
    dry_run: Literal[False]
    matched: int = Field(description="How many executions match; at most max_items were acted on")
    results: list[BulkItem]


class Health(BaseModel):
    status: Literal["ok"]


class Identity(BaseModel):
    """The caller's key: its name (recorded as `api:<name>` on writes) and role."""

    name: str
    role: Literal["reader", "operator", "webhook"]
