"""The state of one execution, as folded from its events. Immutable values."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterator, Mapping

__all__ = [
    "ExecutionState",
    "StepState",
    "Wait",
    "Compensation",
    "Block",
    "EXECUTION_TERMINAL",
    "STEP_DONE",
    "STEP_ACTIVE",
    "step_view",
]

# Execution statuses: new (nothing recorded yet, never shown), pending, running,
# paused (held by an operator), compensating, completed, failed, cancelled.
EXECUTION_TERMINAL = frozenset({"completed", "failed", "cancelled"})
# A step in one of these no longer holds back its dependents.
STEP_DONE = frozenset({"completed", "failed", "skipped", "cancelled"})
STEP_ACTIVE = frozenset({"running", "retrying", "waiting"})

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Wait:
    """What a waiting step waits for: an event type with a resolved filter, or a signal."""

    event_type: str | None
    signal: str | None
    filter: Any
    timeout_at: int | None


@dataclass(frozen=True)
class Compensation:
    """An execution that is ending and undoing its work (status `compensating`)."""

    trigger: str  # failed | cancelled: how the execution ends afterwards
    error: str  # why it is ending
    step: str | None  # the step whose failure started it
    workflow: str | None  # a compensation workflow instead of spec.compensation.steps
    requested_by: str | None = None
    child_execution_id: str | None = None  # the compensation workflow's execution
    outcome: str | None = None  # completed | failed, once finished
    outcome_error: str | None = None


class Outputs(Mapping[int, Any]):
    """Iteration index -> output, immutable. Stored in chunks of 64 so that adding
    one output copies a chunk and the chunk table, not every output so far: a
    for_each over 10,000 items would otherwise copy 50 million entries."""

    __slots__ = ("_chunks", "_count")
    _CHUNK = 64

    def __init__(self, chunks: Mapping[int, Mapping[int, Any]] = _EMPTY, count: int = 0) -> None:
        self._chunks, self._count = chunks, count

    def with_output(self, index: int, output: Any) -> "Outputs":
        number = index // self._CHUNK
        chunk = self._chunks.get(number, _EMPTY)
        added = 0 if index in chunk else 1
        chunks = {**self._chunks, number: MappingProxyType({**chunk, index: output})}
        return Outputs(MappingProxyType(chunks), self._count + added)

    def __getitem__(self, index: int) -> Any:
        return self._chunks.get(index // self._CHUNK, _EMPTY)[index]

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for number in sorted(self._chunks):
            yield from sorted(self._chunks[number])

    def __repr__(self) -> str:
        return f"Outputs({dict(self)!r})"


@dataclass(frozen=True)
class Block:
    """What a running switch, loop or for_each knows about the blocks it runs.

    Iteration outputs are kept (they are addressable); the states of the
    steps of a finished iteration are not, so memory grows by one output
    per iteration or item.
    """

    kind: str  # switch | loop | for_each
    case: str | None = None  # switch: the chosen case
    items: tuple[Any, ...] | None = None  # for_each: the resolved items
    started: int = 0  # iterations or items started
    active: frozenset[int] = frozenset()  # started and not finished
    outputs: Outputs = field(default_factory=Outputs)  # index -> output, completed ones
    failed: Mapping[int, str] = field(default_factory=lambda: _EMPTY)  # index -> error

    @property
    def iterations(self) -> list[Any]:
        return [self.outputs.get(i) for i in range(self.started) if i not in self.active]


@dataclass(frozen=True)
class StepState:
    status: str = "pending"
    attempt: int = 0  # attempts started so far; the current one while running
    attempt_base: int = 0  # attempts made before an operator's retry reset the step
    output: Any = None
    error: str | None = None
    started_at: int | None = None
    finished_at: int | None = None
    finished_seq: int | None = None  # sequence of the event that ended the step
    wait: Wait | None = None  # while a wait_for_event step is waiting
    failure_action: str | None = None  # the StepFailed action, once failed
    child_execution_id: str | None = None  # a workflow step's child execution
    block: Block | None = None  # a switch, loop or for_each step's progress


@dataclass(frozen=True)
class ExecutionState:
    execution_id: str
    status: str = "new"
    workflow_name: str = ""
    workflow_version: str = ""
    input: Any = None
    requested_by: str | None = None
    steps: Mapping[str, StepState] = field(default_factory=lambda: _EMPTY)
    timers: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # timer id -> fire_at (epoch ms)
    output: Any = None
    error: str | None = None
    failed_step: str | None = None
    started_at: int | None = None
    finished_at: int | None = None
    sequence: int = 0  # of the last recorded event
    parent_execution_id: str | None = None  # the execution that started this one
    parent_relation: str | None = None  # why: "compensation"
    pending_signals: tuple[tuple[str, Any], ...] = ()  # (name, data) received, not yet consumed by a wait
    received_events: frozenset[str] = frozenset()  # external event ids already delivered
    compensation: Compensation | None = None

    @property
    def started(self) -> bool:
        return self.status != "new"

    @property
    def terminal(self) -> bool:
        return self.status in EXECUTION_TERMINAL

    def step(self, name: str) -> StepState:
        return self.steps.get(name) or StepState()

    def template_scope(self, step_names: tuple[str, ...] = ()) -> dict[str, Any]:
        """What `{{ ... }}` sees: input (sensitive values sealed), steps, execution.

        `step_names` adds steps that have not run yet, so `steps.x.completed`
        is false rather than undefined. Steps of loop iterations and for_each
        items are not here: see `scope.instance_scope`.
        """
        names = dict.fromkeys((*step_names, *(k for k in self.steps if "[" not in k)))
        return {
            "input": self.input,
            "steps": {name: step_view(self.step(name)) for name in names},
            "execution": {
                "id": self.execution_id,
                "workflow": self.workflow_name,
                "version": self.workflow_version,
                "started_at": self.started_at,
                "status": self.status,
                # why it is ending, for compensation steps
                "error": self.compensation.error if self.compensation else self.error,
                "failed_step": self.compensation.step if self.compensation else self.failed_step,
            },
        }


def step_view(step: StepState) -> dict[str, Any]:
    """What templates see of one step as `steps.<name>`."""
    view = {
        "output": step.output,
        "status": step.status,
        "completed": step.status == "completed",
        "error": step.error,
        "attempts": step.attempt,
    }
    if step.block is not None and step.block.kind == "loop":
        view["iterations"] = step.block.iterations
    return view
