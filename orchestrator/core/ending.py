"""How an execution ends when it does not complete: failure, cancel, compensation.

An execution that fails or is cancelled after some of its steps completed
(or whose failure action says `compensate`) enters `compensating` when the
definition has a compensation plan. Calls still in flight are let finish or
time out first (their outcome is recorded, so compensation sees it); waits
and pending retries are abandoned at once. Then `spec.compensation.steps`
run one by one in listed order, each with its condition and retries, or the
named compensation workflow runs as a child execution. The execution ends
`failed` (or `cancelled`) once compensation is done, and `failed` whatever
the trigger when compensation itself failed.
"""

from __future__ import annotations

from typing import Any

from .decision import Decision
from .definition import OnFailure, OnTimeout, Step, SubWorkflowConfig, WorkflowDefinition
from .keys import leaf, prefix_of
from .scope import instance_scope
from .templates import TemplateError, render_value
from .events import (
    StepCompleted,
    ChildExecutionRequested,
    CommandRejected,
    CompensationFinished,
    CompensationStarted,
    StepFailed,
    WorkflowCancelled,
    WorkflowFailed,
)
from .messages import CancelWorkflow, ChildExecutionEnded
from .state import STEP_ACTIVE, STEP_DONE, ExecutionState
from .steps import begin_step

__all__ = ["fail_step", "end_failed", "cancel", "advance_compensation", "child_ended",
           "compensation_context", "compensation_execution_id"]


def compensation_execution_id(execution_id: str) -> str:
    return f"{execution_id}-compensation"


def fail_step(d: Decision, definition: WorkflowDefinition, step: Step, attempts: int, error: str,
              reaction: OnFailure | OnTimeout | None = None, key: str | None = None) -> None:
    """The step failed for good: record it and apply its failure (or timeout) action.

    Inside a block, an action other than `continue` fails the block: the
    switch, loop or for_each around it applies its own policy next."""
    key = key or step.name
    if d.state.status == "compensating":
        # A compensation step's failure is recorded and the next one still runs;
        # a main step that was still in flight no longer decides anything.
        is_main = step.name in definition.steps_by_name
        d.emit(StepFailed(key, attempts, error, "abandoned" if is_main else "continue"))
        return
    reaction = reaction or step.on_failure
    action = {"retry": "terminate", "fail": "terminate"}.get(reaction.action, reaction.action)
    d.emit(StepFailed(key, attempts, error, action))
    if action == "continue" or step.name in definition.parents:
        return
    reason = f"{reaction.message}: {error}" if reaction.message else f"step '{step.name}' failed: {error}"
    end_failed(d, definition, reason, step.name, compensate=action == "compensate",
               workflow=reaction.compensation_workflow)


def end_failed(d: Decision, definition: WorkflowDefinition, error: str, step: str | None = None, *,
               compensate: bool = False, workflow: str | None = None) -> None:
    workflow = workflow or _planned_workflow(definition)
    if _compensates(d.state, definition, compensate, workflow):
        _abandon(d, definition, ("retrying", "waiting"), "abandoned: the execution is compensating", keep_calls=True)
        d.emit(CompensationStarted("failed", error, step, workflow))
    else:
        _abandon(d, definition, STEP_ACTIVE, "abandoned: the execution failed")
        d.emit(WorkflowFailed(error, step))


def cancel(d: Decision, definition: WorkflowDefinition | None, cmd: CancelWorkflow) -> None:
    state = d.state
    if not state.started:
        d.emit(CommandRejected("CancelWorkflow", "no such execution", cmd.requested_by))
    elif state.terminal:
        d.emit(CommandRejected("CancelWorkflow", f"execution already {state.status}", cmd.requested_by))
    elif state.status == "compensating":
        d.emit(CommandRejected("CancelWorkflow", "execution is already compensating", cmd.requested_by))
    elif definition is not None and _compensates(state, definition, False, _planned_workflow(definition)):
        _abandon(d, definition, ("retrying", "waiting"), "abandoned: the execution is compensating", keep_calls=True)
        d.emit(CompensationStarted("cancelled", cmd.reason, None, _planned_workflow(definition), cmd.requested_by))
    else:
        if definition is not None:
            _abandon(d, definition, STEP_ACTIVE, "abandoned: the execution was cancelled")
        d.emit(WorkflowCancelled(cmd.reason, cmd.requested_by))


def advance_compensation(d: Decision, definition: WorkflowDefinition) -> None:
    """Start the next compensation step (or the workflow); end when all are done."""
    c = d.state.compensation
    if d.state.status != "compensating" or c is None or c.outcome is not None:
        return
    if any(_is_call_in_flight(definition, key, step.status) for key, step in d.state.steps.items()):
        return  # calls in flight first: compensation must see what they did
    if c.workflow is not None:
        if c.child_execution_id is None:
            d.emit(ChildExecutionRequested(compensation_execution_id(d.state.execution_id), c.workflow, None,
                                           compensation_context(d.state, definition), "compensation"))
        return
    for step in definition.compensation_steps:
        status = d.state.step(step.name).status
        if status == "pending":
            error = begin_step(d, definition, step)
            if error is not None:
                fail_step(d, definition, step, d.state.step(step.name).attempt, error)
            status = d.state.step(step.name).status
        if status not in STEP_DONE:
            return
    failed = [(s.name, d.state.step(s.name).error) for s in definition.compensation_steps
              if d.state.step(s.name).status == "failed"]
    if failed:
        d.emit(CompensationFinished("failed", "; ".join(f"step '{name}': {error}" for name, error in failed)))
    else:
        d.emit(CompensationFinished("completed"))
    _end_after_compensation(d)


def child_ended(d: Decision, definition: WorkflowDefinition | None, result: ChildExecutionEnded) -> None:
    if result.relation == "subworkflow":
        _subworkflow_ended(d, definition, result)
        return
    c = d.state.compensation
    if (d.state.status != "compensating" or c is None or c.outcome is not None
            or c.child_execution_id != result.child_execution_id):
        return
    if result.status == "completed":
        d.emit(CompensationFinished("completed"))
    else:
        d.emit(CompensationFinished("failed", f"compensation workflow '{c.workflow}' "
                                    f"({result.child_execution_id}) {result.status}: {result.error}"))
    _end_after_compensation(d)


def _subworkflow_ended(d: Decision, definition: WorkflowDefinition | None, result: ChildExecutionEnded) -> None:
    key = next((k for k, s in d.state.steps.items()
                if s.child_execution_id == result.child_execution_id and s.status == "running"), None)
    if key is None or definition is None or d.state.status not in ("running", "paused"):
        return  # the step was cancelled or the execution is ending: the child's news is late
    step = definition.all_steps_by_name[leaf(key)]
    config = step.config
    assert isinstance(config, SubWorkflowConfig)
    if result.status != "completed":
        fail_step(d, definition, step, 1, f"sub-workflow '{config.workflow}' ({result.child_execution_id}) "
                  f"{result.status}: {result.error}", key=key)
        return
    output = result.output
    if step.output is not None:
        scope = {**instance_scope(d.state, definition, prefix_of(key)), "response": result.output}
        try:
            output = render_value(step.output, scope, where=f"step '{step.name}': output")
        except TemplateError as exc:
            fail_step(d, definition, step, 1, str(exc), key=key)
            return
    d.emit(StepCompleted(key, 1, output))


def compensation_context(state: ExecutionState, definition: WorkflowDefinition) -> dict[str, Any]:
    """A compensation workflow's input: what the ending execution knew."""
    c = state.compensation
    steps = state.template_scope(tuple(s.name for s in definition.spec.steps))["steps"]
    return {
        "execution_id": state.execution_id,
        "workflow": state.workflow_name,
        "version": state.workflow_version,
        "input": state.input,
        "trigger": c.trigger if c else None,
        "error": c.error if c else state.error,
        "failed_step": c.step if c else state.failed_step,
        "steps": {s.name: steps[s.name] for s in definition.spec.steps},
    }


def _planned_workflow(definition: WorkflowDefinition) -> str | None:
    comp = definition.spec.compensation
    return comp.workflow if comp is not None else None


def _compensates(state: ExecutionState, definition: WorkflowDefinition, asked: bool, workflow: str | None) -> bool:
    """A plan exists, and there is something to undo (or the action asks anyway)."""
    if workflow is None and not definition.compensation_steps:
        return False
    return asked or any(state.step(name).status == "completed" for name in definition.steps_by_name)


def _is_call_in_flight(definition: WorkflowDefinition, key: str, status: str) -> bool:
    step = definition.steps_by_name.get(leaf(key))
    return status == "running" and step is not None and step.type in ("service_call", "validation")


def _abandon(d: Decision, definition: WorkflowDefinition, statuses: Any, error: str, *,
             keep_calls: bool = False) -> None:
    """Main steps still active end `failed` (action `abandoned`). With `keep_calls`,
    calls in flight are let finish (compensation must see what they did); switches,
    loops, for_each and workflow steps are abandoned all the same."""
    for key, current in list(d.state.steps.items()):
        if leaf(key) not in definition.steps_by_name:
            continue
        if current.status in statuses or (keep_calls and current.status == "running"
                                          and not _is_call_in_flight(definition, key, current.status)):
            d.emit(StepFailed(key, current.attempt, error, "abandoned"))


def _end_after_compensation(d: Decision) -> None:
    c = d.state.compensation
    assert c is not None
    if c.outcome == "failed":
        d.emit(WorkflowFailed(f"{c.error}; compensation failed: {c.outcome_error}", c.step))
    elif c.trigger == "cancelled":
        d.emit(WorkflowCancelled(c.error, c.requested_by))
    else:
        d.emit(WorkflowFailed(c.error, c.step))
