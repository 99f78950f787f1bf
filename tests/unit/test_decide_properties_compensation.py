"""Properties over random definitions with waits (events and signals, with or
without a timeout) and compensation (steps with conditions, or a workflow),
driven by random inputs: results, timers, deliveries, signals, cancels, the
end of a compensation child, and stale news.

Every execution ends once every timer fires and everything it waits for
reports; compensation runs only when no main step is in flight, in listed
order, each step at most once per attempt chain; steps never leave a done
status; the log folds to the live state after every input; the same inputs
decide the same events; an ended execution records nothing more but the
rejections of Cancel and Signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.decide import handle
from orchestrator.core.definition import WorkflowDefinition
from orchestrator.core.ending import compensation_execution_id
from orchestrator.core.events import (
    ChildExecutionRequested,
    CommandRejected,
    RecordedEvent,
    SignalReceived,
    StepFailed,
    StepScheduled,
    StepSkipped,
    StepWaiting,
    WaitSatisfied,
)
from orchestrator.core.evolve import evolve, initial_state
from orchestrator.core.messages import (
    CancelWorkflow,
    ChildExecutionEnded,
    DeliverEvent,
    FireTimer,
    Input,
    SignalWorkflow,
    StartWorkflow,
    TaskFailed,
    TaskSucceeded,
)
from orchestrator.core.state import STEP_DONE, ExecutionState
from orchestrator.core.validation import check_definition

from .scenario import definition

EID = "x"
T0 = 1_000_000
SIGNALS = ("go", "stop")
EVENT = "order.paid"
INPUT = {"order": "o-1"}
CONDITIONS = (None, "{{ steps.s0.completed }}", "{{ steps.s0.status == 'failed' }}",
              "{{ not steps.LAST.completed }}", "{{ execution.failed_step == 's0' }}")


# -- random definitions --------------------------------------------------------

def compensation_step(draw: st.DrawFn, j: int, count: int) -> dict[str, Any]:
    """A call, or a wait (with a timeout, so that every execution can end)."""
    step: dict[str, Any] = {"name": f"c{j}"}
    condition = draw(st.sampled_from(CONDITIONS))
    if condition:
        step["condition"] = condition.replace("LAST", f"s{count - 1}")
    kind = draw(st.sampled_from(["call", "call", "call", "wait"]))
    if kind == "call":
        step.update(type="service_call", config={"service": "undo"},
                    on_failure={"max_attempts": draw(st.integers(1, 3))})
    else:
        config = draw(st.sampled_from([{"signal": "go"}, {"event_type": EVENT, "filter": {"order": "o-1"}}]))
        step.update(type="wait_for_event", config={**config, "timeout": "20s"})
    return step


@st.composite
def definitions(draw: st.DrawFn) -> WorkflowDefinition:
    plan = draw(st.sampled_from(["none", "steps", "steps", "workflow"]))
    compensate = ["compensate"] if plan != "none" else []
    count = draw(st.integers(1, 5))
    steps = []
    for i in range(count):
        kind = draw(st.sampled_from(["call", "call", "event", "signal"]))
        step: dict[str, Any] = {"name": f"s{i}"}
        if kind == "call":
            action = draw(st.sampled_from(["terminate", "continue", "retry", *compensate, "compensate"]))
            on_failure: dict[str, Any] = {"action": action, "max_attempts": draw(st.integers(1, 3))}
            if action == "compensate" and (not compensate or draw(st.booleans())):
                on_failure["compensation_workflow"] = "other-cleanup"
            step.update(type="service_call", config={"service": "svc"}, on_failure=on_failure)
        else:
            config: dict[str, Any] = ({"event_type": EVENT, "filter": {"order": "{{ input.order }}"}}
                                      if kind == "event" else {"signal": draw(st.sampled_from(SIGNALS))})
            step.update(type="wait_for_event", config=config)
            if draw(st.booleans()):
                config["timeout"] = "20s"
                step["on_timeout"] = {"action": draw(st.sampled_from(["continue", "terminate", "fail", *compensate]))}
        shape = draw(st.sampled_from(["implicit", "explicit", "parallel"]))
        if shape == "explicit" and i:
            step["depends_on"] = draw(st.lists(st.sampled_from([f"s{j}" for j in range(i)]), unique=True))
        elif shape == "parallel":
            step["parallel"] = True
        steps.append(step)
    spec: dict[str, Any] = {
        "config": {"timeout": "30s", "retry_policy": {"initial_delay": "1s", "jitter": 0.5}},
        "steps": steps,
    }
    if draw(st.booleans()):
        spec["config"]["execution_timeout"] = draw(st.sampled_from(["45s", "5m"]))
    if plan == "steps":
        spec["compensation"] = {"steps": [compensation_step(draw, j, count) for j in range(draw(st.integers(1, 3)))]}
    elif plan == "workflow":
        spec["compensation"] = {"workflow": "cleanup"}
    defn = WorkflowDefinition.model_validate({"apiVersion": "workflow/v1", "kind": "Workflow",
                                              "metadata": {"name": "random", "version": "1"}, "spec": spec})
    assert check_definition(defn, file="random.yaml") == []
    return defn


# -- one execution, checked after every input -----------------------------------

@dataclass
class Run:
    """An execution driven input by input; checks the log after each."""

    definition: WorkflowDefinition
    state: ExecutionState = field(default_factory=lambda: initial_state(EID))
    folded: ExecutionState = field(default_factory=lambda: initial_state(EID))
    now: int = T0
    inputs: list[tuple[int, Input]] = field(default_factory=list)
    history: list[RecordedEvent] = field(default_factory=list)

    def feed(self, command: Input, at: int | None = None) -> list[Any]:
        self.now = at if at is not None else self.now + 10
        self.inputs.append((self.now, command))
        self.state, recorded = handle(self.state, command, self.definition, self.now)
        for r in recorded:
            self._check_event(self.folded, r)
            self.folded = evolve(self.folded, r)
        assert self.folded == self.state, f"folding the log differs from the live state after {command}"
        self.history.extend(recorded)
        return [r.event for r in recorded]

    def _check_event(self, before: ExecutionState, r: RecordedEvent) -> None:
        """Each event against the state it applies to."""
        defn, e = self.definition, r.event
        after = evolve(before, r)
        for name, step in before.steps.items():
            if step.status in STEP_DONE:
                assert after.step(name).status == step.status, f"{name} left {step.status} on {e}"
        main = defn.steps_by_name
        in_flight = [n for n in main if before.step(n).status == "running"]
        comp = [s.name for s in defn.compensation_steps]
        step = getattr(e, "step", None)
        if isinstance(e, StepScheduled) and step in main:
            assert before.status == "running", f"main step {step} scheduled while {before.status}"
            if e.attempt == 1:
                assert all(before.step(d).status in STEP_DONE for d in defn.dependencies[step]), \
                    f"{step} ran before its dependencies"
        if isinstance(e, StepWaiting) and step in main:
            assert before.status == "running", f"main step {step} opened a wait while {before.status}"
        if step in comp and isinstance(e, (StepScheduled, StepSkipped, StepFailed, StepWaiting)):
            assert before.status == "compensating", f"compensation step {step} on {e} while {before.status}"
            assert not in_flight, f"compensation step {step} began while {in_flight} were running"
            assert before.step(step).status not in STEP_DONE, f"{step} ran again"
            earlier = comp[:comp.index(step)]
            assert all(before.step(n).status in STEP_DONE for n in earlier), f"{step} began before {earlier} ended"
            if isinstance(e, StepScheduled):
                assert e.attempt == before.step(step).attempt + 1, f"{step}: attempt {e.attempt} out of order"
        if isinstance(e, ChildExecutionRequested):
            assert before.status == "compensating" and not in_flight
            assert before.compensation is not None and before.compensation.child_execution_id is None, \
                "a second compensation workflow"


# -- random inputs ----------------------------------------------------------------

def _waiting(state: ExecutionState) -> list[tuple[str, Any]]:
    return sorted((n, s.wait) for n, s in state.steps.items() if s.status == "waiting" and s.wait is not None)


def _child(run: Run) -> str | None:
    c = run.state.compensation
    return c.child_execution_id if c is not None and c.outcome is None else None


def _report(run: Run, data: st.DataObject, name: str, attempt: int) -> None:
    outcome = data.draw(st.sampled_from(["ok", "transient", "permanent"]))
    if outcome == "ok":
        run.feed(TaskSucceeded(EID, name, attempt, {"n": attempt}, run.now, run.now))
    else:
        run.feed(TaskFailed(EID, name, attempt, outcome, outcome == "transient", None, run.now, run.now))


def _deliver(run: Run, step: str, matching: bool, event_id: str) -> None:
    data = {"order": INPUT["order"] if matching else "o-other"}
    run.feed(DeliverEvent(EID, step, event_id, EVENT, data, run.now, "shop"))


def random_input(run: Run, data: st.DataObject) -> None:
    s = run.state
    progress: list[tuple] = [("result", n, st_.attempt) for n, st_ in sorted(s.steps.items())
                             if st_.status == "running"]
    progress += [("timer", t) for t in sorted(s.timers)]
    if _child(run):
        progress.append(("child",))
    noise: list[tuple] = [("signal", name) for name in (*SIGNALS, "noise")]
    noise += [("event", n) for n, w in _waiting(s) if w.event_type] + [("cancel",), ("stale",), ("stray-child",)]
    choice = data.draw(st.sampled_from(progress if progress and data.draw(st.integers(0, 3)) else noise))
    match choice:
        case ("result", name, attempt):
            _report(run, data, name, attempt)
        case ("timer", timer_id):
            run.feed(FireTimer(EID, timer_id), at=max(run.now, s.timers[timer_id]))
        case ("child",):
            run.feed(ChildExecutionEnded(EID, _child(run), "compensation",
                                         data.draw(st.sampled_from(["completed", "failed", "cancelled"])), None, "x"))
        case ("signal", name):
            run.feed(SignalWorkflow(EID, name, {"by": "someone"}))
        case ("event", step):
            _deliver(run, step, data.draw(st.booleans()), data.draw(st.sampled_from(["e1", "e2", "e3"])))
        case ("cancel",):
            run.feed(CancelWorkflow(EID, "asked", "ops"))
        case ("stale",):
            name = data.draw(st.sampled_from(sorted(run.definition.all_steps_by_name)))
            attempt = data.draw(st.integers(1, 3))
            run.feed(TaskSucceeded(EID, name, attempt, {"stale": True}, run.now, run.now))
        case ("stray-child",):
            run.feed(ChildExecutionEnded(EID, "someone-else", "compensation", "completed"))


def drain(run: Run, data: st.DataObject) -> None:
    """Everything reports: tasks, the child, waits without a timer; then the next timer fires."""
    for _ in range(300):
        s = run.state
        if s.terminal:
            return
        running = [(n, st_.attempt) for n, st_ in sorted(s.steps.items()) if st_.status == "running"]
        untimed = [(n, w) for n, w in _waiting(s) if w.timeout_at is None]
        if running:
            _report(run, data, *running[0])
        elif _child(run):
            run.feed(ChildExecutionEnded(EID, _child(run), "compensation", "completed", {}))
        elif untimed:
            name, wait = untimed[0]
            if wait.event_type:
                _deliver(run, name, True, f"drain-{name}")
            else:
                run.feed(SignalWorkflow(EID, wait.signal))
        elif s.timers:
            timer_id = min(s.timers, key=lambda t: (s.timers[t], t))
            run.feed(FireTimer(EID, timer_id), at=max(run.now, s.timers[timer_id]))
        else:
            pytest.fail(f"stuck while {s.status}: nothing runs, waits or is due; steps "
                        f"{ {n: st_.status for n, st_ in s.steps.items()} }")
    pytest.fail("did not end within 300 inputs")


def start(defn: WorkflowDefinition) -> Run:
    run = Run(defn)
    run.feed(StartWorkflow(EID, "random", "1", INPUT))
    return run


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(defn=definitions(), data=st.data())
def test_random_inputs_end_every_execution_and_keep_the_invariants(defn, data):
    run = start(defn)
    for _ in range(data.draw(st.integers(0, 25))):
        if run.state.terminal:
            break
        random_input(run, data)
    drain(run, data)
    assert run.state.terminal, "every execution ends"

    # compensation steps: each attempt chain 1, 2, ... once; in listed order
    comp = [s.name for s in defn.compensation_steps]
    for name in comp:
        attempts = [r.event.attempt for r in run.history
                    if isinstance(r.event, StepScheduled) and r.event.step == name]
        assert attempts == list(range(1, len(attempts) + 1)), f"{name} attempts {attempts}"
    begun = [r.event.step for r in run.history
             if isinstance(r.event, (StepScheduled, StepSkipped, StepFailed, StepWaiting)) and r.event.step in comp]
    assert list(dict.fromkeys(begun)) == [n for n in comp if n in begun], f"compensation order {begun}"
    assert [r.sequence for r in run.history] == list(range(1, len(run.history) + 1))

    # the same inputs, the same events
    again = Run(defn)
    for now, command in run.inputs:
        again.feed(command, at=now)
    assert again.history == run.history

    # an ended execution: nothing more, but the rejection of Cancel and Signal
    after = [CancelWorkflow(EID, "late"), SignalWorkflow(EID, "go"), StartWorkflow(EID, "random", "1", INPUT),
             TaskSucceeded(EID, "s0", 1, {}, 0, 0), TaskFailed(EID, "s0", 1, "x", True, None, 0, 0),
             FireTimer(EID, "execution-timeout"), FireTimer(EID, "wait:s0"),
             DeliverEvent(EID, "s0", "late", EVENT, INPUT, 0),
             ChildExecutionEnded(EID, compensation_execution_id(EID), "compensation", "completed")]
    for command in data.draw(st.lists(st.sampled_from(after), max_size=4)):
        events = run.feed(command)
        if isinstance(command, (CancelWorkflow, SignalWorkflow)):
            assert len(events) == 1 and isinstance(events[0], CommandRejected), events
        else:
            assert events == [], f"{command} after the end recorded {events}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(defn=definitions(), data=st.data())
def test_signals_are_kept_until_a_wait_consumes_them_and_each_satisfies_one_wait(defn, data):
    """Signals sent at random times: every WaitSatisfied of a signal consumes one received signal."""
    run = start(defn)
    for _ in range(data.draw(st.integers(0, 25))):
        if run.state.terminal:
            break
        if data.draw(st.booleans()):
            run.feed(SignalWorkflow(EID, data.draw(st.sampled_from(SIGNALS))))
        else:
            random_input(run, data)
    drain(run, data)
    for name in SIGNALS:
        received = sum(1 for r in run.history if isinstance(r.event, SignalReceived) and r.event.name == name)
        consumed = sum(1 for r in run.history if isinstance(r.event, WaitSatisfied) and r.event.kind == "signal"
                       and r.event.name == name)
        pending = sum(1 for n, _ in run.state.pending_signals if n == name)
        assert consumed + pending == received, f"signal {name}: {received} received, {consumed} consumed, " \
                                               f"{pending} pending"


# -- what the properties found ----------------------------------------------------

def _compensating_with_an_open_wait(wait_config: str) -> Run:
    """Step b fails after a completed: compensation starts with a step that waits."""
    defn = definition(f"""
        apiVersion: workflow/v1
        kind: Workflow
        metadata: {{name: w, version: "1"}}
        spec:
          steps:
            - name: a
              type: service_call
              config: {{service: s}}
            - name: b
              type: service_call
              config: {{service: s}}
          compensation:
            steps:
              - name: undo
                type: wait_for_event
                config: {wait_config}
    """)
    assert check_definition(defn, file="w.yaml") == []  # validation accepts it
    run = Run(defn)
    run.feed(StartWorkflow(EID, "w", "1", INPUT))
    run.feed(TaskSucceeded(EID, "a", 1, {}, T0, T0))
    run.feed(TaskFailed(EID, "b", 1, "HTTP 400", False, 400, T0, T0))
    assert run.state.status == "compensating" and run.state.step("undo").status == "waiting"
    return run


def test_a_signal_satisfies_a_waiting_compensation_step():
    run = _compensating_with_an_open_wait("{signal: undone}")
    events = run.feed(SignalWorkflow(EID, "undone", {"by": "ops"}))
    assert [type(e).__name__ for e in events] == [
        "SignalReceived", "WaitSatisfied", "StepCompleted", "CompensationFinished", "WorkflowFailed"]


def test_an_event_satisfies_a_waiting_compensation_step():
    run = _compensating_with_an_open_wait('{event_type: refund.done, filter: {order: "{{ input.order }}"}}')
    events = run.feed(DeliverEvent(EID, "undo", "evt-1", "refund.done", INPUT, T0, "shop"))
    assert [type(e).__name__ for e in events] == [
        "WaitSatisfied", "StepCompleted", "CompensationFinished", "WorkflowFailed"]
