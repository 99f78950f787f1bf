"""wait_for_event steps: opening a wait, and the event or signal that ends it.

A wait's `filter` is resolved when it opens, against the state of that
moment, and recorded in StepWaiting: the correlator and any replay match
events against that recorded value, never against a re-rendered one.
"""

from __future__ import annotations

from typing import Any

from .keys import leaf, prefix_of
from .scope import instance_scope
from .decision import Decision
from .definition import Step, WaitForEventConfig, WorkflowDefinition
from .events import StepCompleted, StepWaiting, WaitSatisfied
from .matching import filter_matches
from .messages import DeliverEvent
from .state import StepState
from .templates import TemplateError, render_value

__all__ = ["open_wait", "satisfy", "accepts_event", "waiting_for_signal"]


def open_wait(d: Decision, definition: WorkflowDefinition, step: Step, key: str) -> str | None:
    """Record StepWaiting (consuming a signal that already arrived); an error message
    when the filter cannot be resolved."""
    config = step.config
    assert isinstance(config, WaitForEventConfig)
    scope = instance_scope(d.state, definition, prefix_of(key))
    try:
        resolved = render_value(config.filter, scope, where=f"step '{step.name}': config.filter")
    except TemplateError as exc:
        return str(exc)
    if not isinstance(resolved, dict):
        return f"step '{step.name}': config.filter must resolve to an object, not {type(resolved).__name__}"
    limit = definition.wait_timeout_ms(step)
    d.emit(StepWaiting(key, config.event_type, config.signal, resolved,
                       d.now + limit if limit is not None else None))
    if config.signal is not None:
        for name, data in d.state.pending_signals:
            if name == config.signal:
                return satisfy(d, definition, step, key, "signal", name, None, data)
    return None


def satisfy(d: Decision, definition: WorkflowDefinition, step: Step, key: str, kind: str, name: str,
            event_id: str | None, data: Any, occurred_at: int | None = None, source: str | None = None) -> str | None:
    """Record what the wait got and complete the step; an error message when the
    step's `output` mapping cannot be rendered (the caller fails the step)."""
    d.emit(WaitSatisfied(key, kind, name, event_id, data, occurred_at, source))
    output = data
    if step.output is not None:
        scope = {**instance_scope(d.state, definition, prefix_of(key)), "event": data, "response": data}
        try:
            output = render_value(step.output, scope, where=f"step '{step.name}': output")
        except TemplateError as exc:
            return str(exc)
    d.emit(StepCompleted(key, 1, output))
    return None


def accepts_event(step: StepState | None, delivery: DeliverEvent, received: frozenset[str]) -> bool:
    """Whether a delivery still applies: the step waits for this type, the recorded
    filter matches, and the execution has not had this event already."""
    if step is None or step.status != "waiting" or step.wait is None:
        return False
    return (step.wait.event_type == delivery.event_type
            and delivery.event_id not in received
            and filter_matches(step.wait.filter, delivery.data))


def waiting_for_signal(definition: WorkflowDefinition, steps: dict[str, StepState] | Any, name: str) -> str | None:
    """The key of the first step, in definition order (then by key), waiting for
    signal `name` (main steps wait only while running, compensation steps only
    while compensating: the other kind is never waiting then)."""
    order = {step_name: i for i, step_name in enumerate(definition.all_steps_by_name)}
    waiting = [(order.get(leaf(key), len(order)), key) for key, state in steps.items()
               if state.status == "waiting" and state.wait is not None and state.wait.signal == name]
    return min(waiting)[1] if waiting else None
