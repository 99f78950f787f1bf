"""The workflow language (`apiVersion: workflow/v1`) as typed, immutable models.

Parsing checks shapes and types; `orchestrator.core.validation` checks what
spans the whole definition (names, cycles, templates, schemas).
"""

from __future__ import annotations

from functools import cached_property
from collections.abc import Mapping
from typing import Any, Literal, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from .durations import format_duration_ms, parse_duration_ms

__all__ = [
    "RetryPolicy",
    "OnFailure",
    "OnTimeout",
    "ServiceCallConfig",
    "ValidationRule",
    "ValidationConfig",
    "WaitForEventConfig",
    "DelayConfig",
    "SwitchCase",
    "SwitchConfig",
    "LoopConfig",
    "ForEachConfig",
    "SubWorkflowConfig",
    "Join",
    "Trigger",
    "Step",
    "WorkflowDefinition",
    "STEP_TYPES",
    "CONFIG_MODELS",
    "COMPOSITE_TYPES",
    "block_dependencies",
]

STEP_TYPES = ("service_call", "validation", "wait_for_event", "delay", "switch", "loop", "for_each", "workflow")
# Steps that run blocks of other steps; the decider runs them, never an executor.
COMPOSITE_TYPES = frozenset({"switch", "loop", "for_each"})
# Steps the decider performs itself (no task for an executor).
DECIDER_TYPES = frozenset({"wait_for_event", "delay", "workflow", *COMPOSITE_TYPES})
_NAME = r"^[A-Za-z_][A-Za-z0-9_-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: Any) -> int | None:
    return None if value is None else parse_duration_ms(value)


def _version_as_text(value: Any) -> Any:
    # YAML reads `version: 1.2` as a float; the author meant text.
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _duration_text(value: int | None) -> str | None:
    # Dump durations in the language's own form ("30m"): a bare number would
    # read back as *seconds*, so dumping milliseconds would not round-trip.
    return None if value is None else format_duration_ms(value)


class RetryPolicy(_Model):
    max_attempts: int = Field(3, ge=1, le=1000)
    backoff: Literal["exponential", "fixed", "linear"] = "exponential"
    initial_delay_ms: int = Field(1000, alias="initial_delay", ge=0)
    max_delay_ms: int = Field(60_000, alias="max_delay", ge=0)
    multiplier: float = Field(2.0, ge=1.0)
    jitter: float = Field(0.1, ge=0.0, le=1.0)  # +/- fraction of each delay

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("initial_delay_ms", "max_delay_ms", mode="before")
    @classmethod
    def _parse_delay(cls, value: Any) -> int | None:
        return _duration(value)

    @field_serializer("initial_delay_ms", "max_delay_ms")
    def _dump_delay(self, value: int) -> str | None:
        return _duration_text(value)

    @field_validator("jitter", mode="before")
    @classmethod
    def _parse_jitter(cls, value: Any) -> Any:
        if value is True:
            return 0.1
        if value is False:
            return 0.0
        return value


class OnFailure(_Model):
    action: Literal["terminate", "continue", "retry", "compensate"] = "terminate"
    message: str | None = None
    max_attempts: int | None = Field(None, ge=1, le=1000)
    compensation_workflow: str | None = None


class OnTimeout(_Model):
    action: Literal["terminate", "fail", "continue", "compensate"] = "terminate"
    message: str | None = None
    compensation_workflow: str | None = None


class ServiceCallConfig(_Model):
    service: str
    endpoint: str = "/"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    payload: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Any] = Field(default_factory=dict)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ValidationRule(_Model):
    field: str
    rule: str
    service: str | None = None
    message: str | None = None
    value: Any = None  # the rule's argument: a regex, a length...


class ValidationConfig(_Model):
    validation_rules: tuple[ValidationRule, ...] = Field(min_length=1)


class WaitForEventConfig(_Model):
    event_type: str | None = None
    signal: str | None = None
    timeout_ms: int | None = Field(None, alias="timeout")
    filter: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("timeout_ms", mode="before")
    @classmethod
    def _parse_timeout(cls, value: Any) -> int | None:
        return _duration(value)

    @field_serializer("timeout_ms")
    def _dump_timeout(self, value: int | None) -> str | None:
        return _duration_text(value)


class DelayConfig(_Model):
    """Sleep for `duration`, or until `until` (a template giving epoch ms or an ISO-8601 time)."""

    duration_ms: int | None = Field(None, alias="duration")
    until: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("duration_ms", mode="before")
    @classmethod
    def _parse_duration(cls, value: Any) -> int | None:
        return _duration(value)

    @field_serializer("duration_ms")
    def _dump_duration(self, value: int | None) -> str | None:
        return _duration_text(value)


class SwitchCase(_Model):
    name: str | None = Field(None, pattern=_NAME)
    when: str
    steps: tuple[Step, ...] = ()

    def label(self, index: int) -> str:
        return self.name or f"case{index}"


class SwitchConfig(_Model):
    """Exclusive choice: the first case whose `when` holds runs, else `default`."""

    cases: tuple[SwitchCase, ...] = ()
    default: tuple[Step, ...] = ()


class LoopConfig(_Model):
    """Repeat `steps` while `while` holds (checked before each iteration) or until
    `until` holds (checked after each); `max_iterations` bounds it."""

    steps: tuple[Step, ...] = ()
    while_: str | None = Field(None, alias="while")
    until: str | None = None
    max_iterations: int | None = Field(None, ge=1, le=100_000)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ForEachConfig(_Model):
    """Run `step` (or the block `steps`) once per element of `items`, at most
    `concurrency` at a time; outputs are collected in item order."""

    items: Any = None  # a template resolving to a list, or a literal list
    step: Step | None = None
    steps: tuple[Step, ...] = ()
    concurrency: int = Field(10, ge=1, le=10_000)
    on_item_failure: Literal["fail_fast", "collect"] = "fail_fast"
    tolerated_failures: int = Field(0, ge=0)

    @property
    def block(self) -> tuple[Step, ...]:
        return (self.step,) if self.step is not None else self.steps


class SubWorkflowConfig(_Model):
    """Start a registered workflow as a child execution and wait for its end."""

    workflow: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str | None = None  # None or "latest": the latest registered version
    input: Any = None  # rendered by the decider when the step starts

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        value = _version_as_text(value)
        return None if value == "latest" else value


CONFIG_MODELS: dict[str, type[_Model]] = {
    "service_call": ServiceCallConfig,
    "validation": ValidationConfig,
    "wait_for_event": WaitForEventConfig,
    "delay": DelayConfig,
    "switch": SwitchConfig,
    "loop": LoopConfig,
    "for_each": ForEachConfig,
    "workflow": SubWorkflowConfig,
}

StepConfig = Union[ServiceCallConfig, ValidationConfig, WaitForEventConfig, DelayConfig, SwitchConfig,
                   LoopConfig, ForEachConfig, SubWorkflowConfig]


class Join(_Model):
    """When a step with several dependencies starts.

    `all` (default): once every dependency has ended, whatever its outcome.
    `all_completed`: once every dependency completed; skipped when one ended otherwise.
    `first`: once `count` dependencies completed; the others still pending or
    active are cancelled (`rest: cancel`) or left to finish unheeded (`rest: ignore`).
    """

    mode: Literal["all", "all_completed", "first"] = "all"
    count: int = Field(1, ge=1)
    rest: Literal["cancel", "ignore"] = "cancel"

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, value: Any) -> Any:
        # `join: any` / `join: first` / `join: {first: 2, rest: ignore}`
        if isinstance(value, str):
            return {"mode": "first" if value in ("any", "first") else value}
        if isinstance(value, dict) and "first" in value:
            rest = {k: v for k, v in value.items() if k != "first"}
            return {"mode": "first", "count": value["first"], **rest}
        return value


class Step(_Model):
    name: str = Field(pattern=_NAME)
    type: Literal["service_call", "validation", "wait_for_event", "delay", "switch", "loop", "for_each",
                  "workflow"]
    description: str | None = None
    depends_on: tuple[str, ...] | None = None
    parallel: bool = False
    join: Join = Join()
    condition: str | None = Field(None, validation_alias=AliasChoices("condition", "when"))
    cancel_on_signal: str | None = None  # a signal of this name cancels the step while it is active
    config: StepConfig
    output: Any = None  # mapping rendered with `response` in scope
    timeout_ms: int | None = Field(None, alias="timeout")
    retry_policy: RetryPolicy | None = None
    on_failure: OnFailure = OnFailure()
    on_timeout: OnTimeout | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _one_condition(cls, value: Any) -> Any:
        if isinstance(value, dict) and "when" in value and "condition" in value:
            raise ValueError("give either condition or when, not both")
        return value

    @property
    def inner_blocks(self) -> tuple[tuple[Step, ...], ...]:
        """The blocks of steps a composite step runs (switch: each case, then default)."""
        config = self.config
        if isinstance(config, SwitchConfig):
            return (*(case.steps for case in config.cases), config.default)
        if isinstance(config, LoopConfig):
            return (config.steps,)
        if isinstance(config, ForEachConfig):
            return (config.block,)
        return ()

    @field_validator("config", mode="before")
    @classmethod
    def _typed_config(cls, value: Any, info: Any) -> Any:
        model = CONFIG_MODELS.get(info.data.get("type", ""))
        if model is None or isinstance(value, model):
            return value
        return model.model_validate(value if value is not None else {})

    @field_validator("timeout_ms", mode="before")
    @classmethod
    def _parse_timeout(cls, value: Any) -> int | None:
        return _duration(value)

    @field_serializer("timeout_ms")
    def _dump_timeout(self, value: int | None) -> str | None:
        return _duration_text(value)


SwitchCase.model_rebuild()
SwitchConfig.model_rebuild()
LoopConfig.model_rebuild()
ForEachConfig.model_rebuild()


def block_dependencies(steps: tuple[Step, ...]) -> dict[str, tuple[str, ...]]:
    """Each step's prerequisites within its block, after the ordering rules of the language.

    Explicit `depends_on` wins (`[]` makes a root). Otherwise a step follows
    the step listed before it; a run of consecutive `parallel: true` steps
    all follow the step before the run, and the step after such a run
    joins the whole run.
    """
    deps: dict[str, tuple[str, ...]] = {}
    before_run: tuple[str, ...] = ()  # what the current parallel run follows
    previous: tuple[str, ...] = ()  # what a step without depends_on follows
    run: list[str] = []
    for step in steps:
        if step.parallel:
            if not run:
                before_run = previous
            run.append(step.name)
            implicit = before_run
        else:
            if run:
                previous = tuple(run)
                run = []
            implicit = previous
        deps[step.name] = step.depends_on if step.depends_on is not None else implicit
        if not step.parallel:
            previous = (step.name,)
    return deps


def _walk(steps: tuple[Step, ...]) -> Any:
    for step in steps:
        yield step
        for block in step.inner_blocks:
            yield from _walk(block)


class Trigger(_Model):
    """Start an execution on an external event (`event`) or on a schedule (`schedule`, cron)."""

    name: str = Field(pattern=_NAME)
    event: str | None = None  # event type
    filter: dict[str, Any] = Field(default_factory=dict)  # literal values the event data must match
    schedule: str | None = None  # five-field cron expression
    timezone: str = "UTC"
    catch_up: Literal["skip", "latest", "all"] = "latest"  # nominal times missed while nothing ran
    max_catch_up: int = Field(100, ge=1)  # at most this many missed times with catch_up: all
    input: Any = None  # mapping rendered with `event` or `schedule` in scope


class ExecutionConfig(_Model):
    timeout_ms: int = Field(300_000, alias="timeout")  # one attempt of a step
    execution_timeout_ms: int | None = Field(None, alias="execution_timeout")
    retry_policy: RetryPolicy = RetryPolicy()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("timeout_ms", "execution_timeout_ms", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> int | None:
        return _duration(value)

    @field_serializer("timeout_ms", "execution_timeout_ms")
    def _dump(self, value: int | None) -> str | None:
        return _duration_text(value)


class InputSpec(_Model):
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Compensation(_Model):
    steps: tuple[Step, ...] = ()
    workflow: str | None = None  # a registered workflow to start instead


class OutputSpec(_Model):
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    mapping: dict[str, Any] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Spec(_Model):
    config: ExecutionConfig = ExecutionConfig()
    input: InputSpec = InputSpec()
    steps: tuple[Step, ...] = Field(min_length=1)
    compensation: Compensation | None = None
    output: OutputSpec | None = None
    triggers: tuple[Trigger, ...] = ()


class Metadata(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", max_length=100)
    description: str | None = None
    tags: tuple[str, ...] = ()

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return _version_as_text(value)


class WorkflowDefinition(_Model):
    api_version: Literal["workflow/v1"] = Field(alias="apiVersion")
    kind: Literal["Workflow"]
    metadata: Metadata
    spec: Spec

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def key(self) -> str:
        return f"{self.metadata.name}@{self.metadata.version}"

    @cached_property
    def steps_by_name(self) -> dict[str, Step]:
        """Every main step, those inside switch, loop and for_each blocks included (names are unique)."""
        return {step.name: step for step in _walk(self.spec.steps)}

    @property
    def compensation_steps(self) -> tuple[Step, ...]:
        comp = self.spec.compensation
        return comp.steps if comp is not None else ()

    @cached_property
    def all_steps_by_name(self) -> dict[str, Step]:
        """Main and compensation steps (their names never collide)."""
        return {**self.steps_by_name, **{step.name: step for step in self.compensation_steps}}

    @cached_property
    def steps_json(self) -> dict[str, Any]:
        """Each step (main and compensation) as JSON, the form tasks carry; dumped once per definition."""
        return {name: step.model_dump(mode="json", by_alias=True, exclude_none=True)
                for name, step in self.all_steps_by_name.items()}

    @cached_property
    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """Each main step's prerequisites within its own block (see `block_dependencies`)."""
        deps = block_dependencies(self.spec.steps)
        for step in _walk(self.spec.steps):
            for block in step.inner_blocks:
                deps.update(block_dependencies(block))
        return deps

    @cached_property
    def loop_names(self) -> tuple[str, ...]:
        return tuple(name for name, step in self.steps_by_name.items() if step.type == "loop")

    @cached_property
    def parents(self) -> dict[str, str]:
        """Each step inside a block -> the composite step that runs the block."""
        return {inner.name: step.name for step in _walk(self.spec.steps)
                for block in step.inner_blocks for inner in block}

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> WorkflowDefinition:
        # A copy starts from this instance's __dict__, which holds the cached
        # properties above: drop them so they follow the copy's own steps.
        copied = super().model_copy(update=update, deep=deep)
        for name in _CACHED:
            copied.__dict__.pop(name, None)
        return copied

    def retry_policy(self, step: Step) -> RetryPolicy:
        policy = step.retry_policy or self.spec.config.retry_policy
        if step.on_failure.max_attempts is not None:
            policy = policy.model_copy(update={"max_attempts": step.on_failure.max_attempts})
        return policy

    def attempt_timeout_ms(self, step: Step) -> int:
        return step.timeout_ms if step.timeout_ms is not None else self.spec.config.timeout_ms

    def wait_timeout_ms(self, step: Step) -> int | None:
        """A wait's own limit: `config.timeout`, else the step's `timeout`; None waits without one."""
        config = step.config
        if isinstance(config, WaitForEventConfig) and config.timeout_ms is not None:
            return config.timeout_ms
        return step.timeout_ms


_CACHED = ("steps_by_name", "all_steps_by_name", "steps_json", "dependencies", "parents", "loop_names")
