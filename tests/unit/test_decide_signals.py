"""Signals and waits for them; a wait's output mapping; a wait without a limit."""

from __future__ import annotations

from orchestrator.core.events import (
    SignalReceived,
    StepCompleted,
    StepFailed,
    StepWaiting,
    WaitSatisfied,
    WorkflowCompleted,
)
from orchestrator.core.messages import DeliverEvent, FireTimer, SignalWorkflow, StartWorkflow, TaskSucceeded
from orchestrator.core.outbox import outbox

from .scenario import Scenario, definition

T0 = 1_000_000

APPROVAL = definition("""
    apiVersion: workflow/v1
    kind: Workflow
    metadata: {name: approval, version: "1"}
    spec:
      steps:
        - name: request
          type: service_call
          config: {service: s}
        - name: approved
          type: wait_for_event
          config: {signal: approve, timeout: 1h}
          output: {by: "{{ event.by }}", amount: "{{ input.amount }}"}
          on_timeout: {action: continue}
        - name: book
          type: service_call
          config: {service: s}
""")


def started() -> Scenario:
    s = Scenario(APPROVAL)
    s.when(StartWorkflow("exec-1", "approval", "1", {"amount": 5}))
    return s


def ok(step: str) -> TaskSucceeded:
    return TaskSucceeded("exec-1", step, 1, {}, T0, T0)


def test_a_signal_completes_the_wait_with_the_mapped_output():
    s = started()
    before = s.state
    events = s.when(ok("request"))
    assert events[-1] == StepWaiting("approved", None, "approve", {}, T0 + 3_600_000)
    assert [o.topic for o in outbox(before, s.state, APPROVAL, s.history[-len(events):])] == []  # no correlator
    events = s.when(SignalWorkflow("exec-1", "approve", {"by": "bob"}, "bob"))
    assert events[:3] == [
        SignalReceived("approve", {"by": "bob"}, "bob"),
        WaitSatisfied("approved", "signal", "approve", None, {"by": "bob"}),
        StepCompleted("approved", 1, {"by": "bob", "amount": 5}),
    ]
    assert s.state.pending_signals == ()


def test_a_signal_sent_before_the_wait_opens_is_kept_for_it():
    s = started()
    s.when(SignalWorkflow("exec-1", "approve", {"by": "early"}))
    events = s.when(ok("request"))
    assert [type(e).__name__ for e in events][-3:] == ["WaitSatisfied", "StepCompleted", "StepScheduled"]
    assert s.state.step("approved").output == {"by": "early", "amount": 5}


def test_a_wait_timeout_with_continue_goes_on():
    s = started()
    s.when(ok("request"))
    events = s.at(T0 + 3_600_000).when(FireTimer("exec-1", "wait:approved"))
    assert events[1] == StepFailed("approved", 1, "no signal 'approve' within 1h", "continue")
    assert events[2].step == "book"
    assert isinstance(s.when(ok("book"))[-1], WorkflowCompleted)


def test_an_event_delivery_to_a_signal_wait_is_ignored():
    s = started()
    s.when(ok("request"))
    assert s.when(DeliverEvent("exec-1", "approved", "e1", "approve", {}, T0)) == []


UNLIMITED = definition("""
    apiVersion: workflow/v1
    kind: Workflow
    metadata: {name: unlimited, version: "1"}
    spec:
      steps:
        - name: paid
          type: wait_for_event
          config:
            event_type: payment.settled
            filter: {order.id: "{{ input.order }}", currency: EUR}
""")


def test_a_wait_without_timeout_arms_no_timer_and_matches_nested_fields():
    s = Scenario(UNLIMITED)
    events = s.when(StartWorkflow("exec-1", "unlimited", "1", {"order": 42}))
    assert events[-1] == StepWaiting("paid", "payment.settled", None, {"order.id": 42, "currency": "EUR"}, None)
    assert s.state.timers == {}
    assert s.when(DeliverEvent("exec-1", "paid", "e1", "payment.settled", {"order": {"id": 43}, "currency": "EUR"},
                               T0)) == []
    events = s.when(DeliverEvent("exec-1", "paid", "e2", "payment.settled",
                                 {"order": {"id": 42.0}, "currency": "EUR"}, T0))
    assert isinstance(events[-1], WorkflowCompleted)
