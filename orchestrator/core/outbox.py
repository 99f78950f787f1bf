"""What the decider sends besides events, derived from a decision alone.

The outgoing messages of one input follow from the state before it, the
state after it and the events recorded: tasks for the executors, the
StartWorkflow of a child execution, the news of this execution's end for
its parent, and the open/closed event waits the correlator follows. The
decider produces them in the transaction that appends the events, so they
are sent exactly when the events are recorded, and never again on replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .definition import WorkflowDefinition
from .events import ChildExecutionRequested, RecordedEvent, StepCancelled, StepFailed, StepWaiting
from .messages import CancelWorkflow, ChildExecutionEnded, StartWorkflow, WaitOpened
from .state import ExecutionState
from .tasks import tasks_for

__all__ = ["Outgoing", "outbox", "wait_key"]


@dataclass(frozen=True)
class Outgoing:
    topic: str  # tasks | commands | results | waits
    key: str
    message: Any  # None: a tombstone (a closed wait)


def wait_key(execution_id: str, step: str) -> str:
    return f"{execution_id}/{step}"


def outbox(before: ExecutionState, after: ExecutionState, definition: WorkflowDefinition | None,
           recorded: Iterable[RecordedEvent]) -> list[Outgoing]:
    recorded = list(recorded)
    eid = after.execution_id
    out = [Outgoing("tasks", eid, task) for task in tasks_for(after, definition, recorded)]
    event_waits = {name for name, step in before.steps.items()
                   if step.status == "waiting" and step.wait is not None and step.wait.event_type}
    for r in recorded:
        e = r.event
        if isinstance(e, ChildExecutionRequested):
            out.append(Outgoing("commands", e.child_execution_id, StartWorkflow(
                e.child_execution_id, e.workflow_name, e.workflow_version, e.input,
                f"execution:{eid}", eid, e.relation)))
        elif isinstance(e, (StepCancelled, StepFailed)) and _withdraws_child(before, e):
            # A workflow step withdrawn before its child ended: the child is cancelled too.
            child = before.step(e.step).child_execution_id
            reason = e.reason if isinstance(e, StepCancelled) else e.error
            out.append(Outgoing("commands", child, CancelWorkflow(child, f"parent step '{e.step}': {reason}",
                                                                 f"execution:{eid}")))
        elif isinstance(e, StepWaiting) and e.event_type is not None:
            event_waits.add(e.step)
            out.append(Outgoing("waits", wait_key(eid, e.step),
                                WaitOpened(eid, e.step, e.event_type, e.filter, r.recorded_at, e.timeout_at)))
    for name in sorted(event_waits):
        if after.step(name).status != "waiting":
            out.append(Outgoing("waits", wait_key(eid, name), None))
    if after.terminal and not before.terminal and after.parent_execution_id:
        parent = after.parent_execution_id
        out.append(Outgoing("results", parent, ChildExecutionEnded(
            parent, eid, after.parent_relation or "", after.status,
            after.output if after.status == "completed" else None, after.error)))
    return out


def _withdraws_child(before: ExecutionState, e: StepCancelled | StepFailed) -> bool:
    step = before.step(e.step)
    if step.child_execution_id is None or step.status != "running":
        return False
    return isinstance(e, StepCancelled) or e.action == "abandoned"
