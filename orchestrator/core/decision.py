"""One decision in progress: the events an input leads to, applied as they are emitted."""

from __future__ import annotations

from .definition import WorkflowDefinition
from .events import Event, RecordedEvent
from .evolve import evolve
from .state import ExecutionState

__all__ = ["Decision", "require", "is_current_attempt"]


class Decision:
    """Collects the events of one input, evolving the state as it goes, so later
    decisions of the same input see their effect exactly as a replay will."""

    def __init__(self, state: ExecutionState, now: int, cause: str) -> None:
        self.state = state
        self.now = now
        self.cause = cause
        self.recorded: list[RecordedEvent] = []
        # Blocks normally move only the items this decision's events touched; a
        # resume moves every item, since what happened while paused moved none.
        self.advance_every_item = False

    def emit(self, event: Event) -> None:
        recorded = RecordedEvent(self.state.execution_id, self.state.sequence + 1, self.now, self.cause, event)
        self.state = evolve(self.state, recorded)
        self.recorded.append(recorded)


def require(definition: WorkflowDefinition | None, state: ExecutionState) -> WorkflowDefinition:
    if definition is None:
        raise LookupError(f"definition {state.workflow_name}@{state.workflow_version} is not loaded")
    return definition


def is_current_attempt(state: ExecutionState, step: str, attempt: int) -> bool:
    current = state.steps.get(step)
    return current is not None and current.status == "running" and current.attempt == attempt
