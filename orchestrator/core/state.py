"""The state of one execution, as folded from its events. Immutable values."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

__all__ = [
    "ExecutionState",
    "StepState",
    "EXECUTION_TERMINAL",
    "STEP_DONE",
    "STEP_ACTIVE",
]

# Execution statuses: new (nothing recorded yet, never shown), pending, running,
# compensating, completed, failed, cancelled.
EXECUTION_TERMINAL = frozenset({"completed", "failed", "cancelled"})
# A step in one of these no longer holds back its dependents.
STEP_DONE = frozenset({"completed", "failed", "skipped"})
STEP_ACTIVE = frozenset({"running", "retrying", "waiting"})

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class StepState:
    status: str = "pending"
    attempt: int = 0  # attempts started so far; the current one while running
    output: Any = None
    error: str | None = None
    started_at: int | None = None
    finished_at: int | None = None
    finished_seq: int | None = None  # sequence of the event that ended the step


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
        is false rather than undefined.
        """
        names = dict.fromkeys((*step_names, *self.steps))
        return {
            "input": self.input,
            "steps": {
                name: {
                    "output": step.output,
                    "status": step.status,
                    "completed": step.status == "completed",
                    "error": step.error,
                    "attempts": step.attempt,
                }
                for name, step in ((n, self.step(n)) for n in names)
            },
            "execution": {
                "id": self.execution_id,
                "workflow": self.workflow_name,
                "version": self.workflow_version,
                "started_at": self.started_at,
            },
        }
