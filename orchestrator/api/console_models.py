"""Response bodies of the console's routes (definition graphs, analytics): the OpenAPI document's promise.

Models allow extra fields, so the answers can grow without breaking clients.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class GraphNode(_Open):
    id: str = Field(description="The step name; `<switch>::<case>` for a switch's case group")
    type: str = Field(description="The step type, or `case`")
    label: str
    detail: str = Field(description="One line on what the step does")
    description: str | None = None
    condition: str | None = Field(None, description="The step's condition (`when`), without its braces")
    parent: str | None = Field(None, description="The group drawn around this node: a composite step or a case")
    composite: str | None = Field(None, description="The composite step whose block holds this step")
    lane: Literal["main", "compensation"]
    group: bool = Field(description="Drawn as a box holding other nodes")
    layer: int = Field(description="Column within its block (dependency depth)")
    row: int = Field(description="Row within its column")
    x: int
    y: int
    width: int
    height: int


class GraphEdge(_Open):
    source: str
    target: str
    lane: Literal["main", "compensation"]
    join: str | None = Field(None, description="The target's join when it is not `all`: `first 2`, `all_completed`")


class GraphLane(_Open):
    id: Literal["main", "compensation"]
    label: str
    x: int
    y: int
    width: int
    height: int


class DefinitionGraph(_Open):
    name: str
    version: str
    width: int
    height: int
    lanes: list[GraphLane]
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    compensation_workflow: str | None = None


class Bucket(_Open):
    t: str = Field(description="Start of the bucket (ISO 8601, UTC)")
    started: int
    finished: int
    completed: int
    failed: int
    cancelled: int


class Totals(_Open):
    started: int
    ended: int
    completed: int
    failed: int
    cancelled: int
    success_rate: float | None = Field(description="completed / (completed + failed); null when neither")
    in_flight: dict[str, int] = Field(description="Executions not ended now, by status")


class WorkflowFigures(_Open):
    workflow: str
    ended: int
    completed: int
    failed: int
    cancelled: int
    success_rate: float | None
    p50_ms: int | None
    p95_ms: int | None
    max_ms: int | None


class StepFigures(_Open):
    workflow: str
    step: str
    phase: str
    runs: int
    failed: int
    retries: int
    p50_ms: int | None
    p95_ms: int | None
    max_ms: int | None


class StepRun(_Open):
    workflow: str
    execution_id: str
    step: str
    status: str
    attempts: int
    started_at: str | None
    duration_ms: int | None


class FailureReason(_Open):
    workflow: str
    step: str
    reason: str
    count: int
    last_seen: str | None
    example_execution_id: str


class StepSample(_Open):
    executions: int = Field(description="Per-step figures read the steps of at most this many executions")
    sampled: bool = Field(description="More executions ended in the window: the most recent ones were read")


class Analytics(_Open):
    workflow: str | None
    since: str
    until: str
    bucket_seconds: int
    throughput: list[Bucket]
    totals: Totals
    workflows: list[WorkflowFigures]
    steps: list[StepFigures]
    slowest_steps: list[StepRun]
    failure_reasons: list[FailureReason]
    step_sample: StepSample
