"""Given/when/then over the control-flow steps: joins, switch, loop, for_each,
workflow steps, delays and cancelling a step."""

from __future__ import annotations

from orchestrator.core.events import (
    BranchChosen,
    ChildExecutionRequested,
    ItemsResolved,
    IterationFinished,
    IterationStarted,
    StepCancelled,
    StepCompleted,
    StepFailed,
    StepScheduled,
    StepSkipped,
    StepWaiting,
    WorkflowCompleted,
    WorkflowFailed,
)
from orchestrator.core.evolve import fold as fold_history
from orchestrator.core.messages import (
    CancelStep,
    ChildExecutionEnded,
    FireTimer,
    SignalWorkflow,
    StartWorkflow,
    TaskFailed,
    TaskSucceeded,
)
from orchestrator.core.outbox import outbox
from orchestrator.core.tasks import tasks_for

from .scenario import Scenario, definition

HEAD = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: flow, version: "1"}
spec:
  config: {retry_policy: {max_attempts: 1}}
"""


def flow(steps: str, input_schema: str = "") -> Scenario:
    return Scenario(definition(HEAD + input_schema + "  steps:\n" + steps))


def start(s: Scenario, data=None) -> list:
    return s.when(StartWorkflow(s.state.execution_id, "flow", "1", data or {}))


def ok(s: Scenario, key: str, output=None, attempt: int = 1) -> list:
    return s.when(TaskSucceeded(s.state.execution_id, key, attempt, output, 0, 0))


def bad(s: Scenario, key: str, attempt: int = 1) -> list:
    return s.when(TaskFailed(s.state.execution_id, key, attempt, "HTTP 400", False, 400, 0, 0))


def scheduled(events: list) -> list[str]:
    return [e.step for e in events if isinstance(e, StepScheduled)]


# -- conditions and joins ---------------------------------------------------------

def test_multi_choice_then_synchronizing_merge_waits_only_for_branches_that_ran():
    s = flow("""
    - {name: a, type: service_call, config: {service: svc}, parallel: true, when: "{{ input.a }}"}
    - {name: b, type: service_call, config: {service: svc}, parallel: true, when: "{{ input.b }}"}
    - {name: merge, type: service_call, config: {service: svc}}
""")
    events = start(s, {"a": True, "b": False})
    assert scheduled(events) == ["a"]
    assert StepSkipped("b", 'condition is false: {{ input.b }}') in events
    assert scheduled(ok(s, "a")) == ["merge"]


def test_all_completed_join_skips_when_a_dependency_was_skipped():
    s = flow("""
    - {name: a, type: service_call, config: {service: svc}, when: "{{ false }}"}
    - {name: b, type: service_call, config: {service: svc}, join: all_completed, depends_on: [a]}
    - {name: c, type: service_call, config: {service: svc}, depends_on: [b]}
""")
    events = start(s)
    assert StepSkipped("b", "dependency 'a' did not complete") in events
    assert scheduled(events) == ["c"]  # a skip counts as done for c's default join


def test_first_join_proceeds_on_the_first_and_cancels_the_rest():
    s = flow("""
    - {name: a, type: service_call, config: {service: svc}, depends_on: []}
    - {name: b, type: service_call, config: {service: svc}, depends_on: []}
    - {name: first, type: service_call, config: {service: svc}, depends_on: [a, b], join: any}
""")
    start(s)
    events = ok(s, "b", {"winner": "b"})
    assert StepCancelled("a", "join of 'first' needs it no more") in events
    assert scheduled(events) == ["first"]
    assert ok(s, "a") == []  # the cancelled step's late result is ignored
    assert isinstance(ok(s, "first")[-1], WorkflowCompleted)


def test_deferred_choice_between_an_event_and_a_timer():
    s = flow("""
    - {name: paid, type: wait_for_event, depends_on: [], config: {event_type: payment.received}}
    - {name: reminder_due, type: delay, depends_on: [], config: {duration: 1h}}
    - {name: next, type: service_call, config: {service: svc}, depends_on: [paid, reminder_due], join: any}
""")
    events = start(s)
    assert StepWaiting("reminder_due", None, None, {}, s.now + 3_600_000) in events
    events = s.at(s.now + 3_600_000).when(FireTimer(s.state.execution_id, "wait:reminder_due"))
    assert StepCompleted("reminder_due", 1, {"woke_at": s.now}) in events
    assert StepCancelled("paid", "join of 'next' needs it no more") in events
    assert scheduled(events) == ["next"]
    # the correlator is told the wait closed
    assert any(o.topic == "waits" and o.message is None for o in outbox_of(s, events))


def outbox_of(s: Scenario, events: list) -> list:
    n = len(events)
    before = fold_history(s.state.execution_id, s.history[:-n])
    return outbox(before, s.state, s.definition, s.history[-n:])


# -- switch ----------------------------------------------------------------------

SWITCH = """
    - name: route
      type: switch
      config:
        cases:
          - name: large
            when: "{{ input.amount > 1000 }}"
            steps:
              - {name: review, type: service_call, config: {service: svc}}
              - {name: approve, type: service_call, config: {service: svc}}
          - when: "{{ input.amount > 100 }}"
            steps: [{name: check, type: service_call, config: {service: svc}}]
        default: []
    - {name: after, type: service_call, config: {service: svc}}
"""


def test_switch_runs_the_first_case_that_holds_then_what_follows():
    s = flow(SWITCH)
    events = start(s, {"amount": 5000})
    assert BranchChosen("route", "large") in events and scheduled(events) == ["review"]
    assert scheduled(ok(s, "review")) == ["approve"]
    events = ok(s, "approve", {"ok": True})
    assert StepCompleted("route", 1, {"case": "large", "outputs": {"review": None, "approve": {"ok": True}}}) in events
    assert scheduled(events) == ["after"]


def test_switch_unnamed_case_and_empty_default():
    s = flow(SWITCH)
    assert BranchChosen("route", "case1") in start(s, {"amount": 500})
    s = flow(SWITCH)
    events = start(s, {"amount": 5})
    assert BranchChosen("route", "default") in events and scheduled(events) == ["after"]


def test_a_failing_case_step_fails_the_switch_which_applies_its_own_action():
    s = flow(SWITCH)
    start(s, {"amount": 500})
    events = bad(s, "check")
    assert StepFailed("check", 1, "HTTP 400", "terminate") in events
    assert StepFailed("route", 1, "case 'case1': step 'check' failed: HTTP 400", "terminate") in events
    assert isinstance(events[-1], WorkflowFailed)


# -- loop -------------------------------------------------------------------------

LOOP = """
    - name: poll
      type: loop
      config:
        max_iterations: 3
        until: "{{ steps.check.output.done }}"
        steps:
          - {name: check, type: service_call, config: {service: svc, payload: {n: "{{ index }}"}}}
    - {name: after, type: service_call, config: {service: svc, payload: {last: "{{ steps.poll.output }}",
                                                                         all: "{{ steps.poll.iterations }}"}}}
"""


def test_loop_repeats_until_its_condition_holds_and_keeps_every_iteration():
    s = flow(LOOP)
    events = start(s)
    assert IterationStarted("poll", 0) in events and scheduled(events) == ["poll[0].check"]
    (task,) = tasks_for(s.state, s.definition, s.history[-len(events):])
    assert task.step_name == "poll[0].check" and task.context["index"] == 0
    events = ok(s, "poll[0].check", {"done": False})
    assert IterationFinished("poll", 0, "completed", {"check": {"done": False}}) in events
    assert scheduled(events) == ["poll[1].check"]
    assert "poll[0].check" not in s.state.steps  # folded into the iteration's output
    events = ok(s, "poll[1].check", {"done": True})
    assert StepCompleted("poll", 1, {"check": {"done": True}}) in events
    (task,) = tasks_for(s.state, s.definition, s.history[-len(events):])
    assert task.context["steps"]["poll"]["iterations"] == [{"check": {"done": False}}, {"check": {"done": True}}]


def test_loop_without_exit_fails_at_its_limit_naming_step_and_limit():
    s = flow(LOOP)
    start(s)
    for i in range(2):
        ok(s, f"poll[{i}].check", {"done": False})
    events = ok(s, "poll[2].check", {"done": False})
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.step == "poll" and "'poll'" in failed.error and "limit of 3 iterations" in failed.error
    assert isinstance(events[-1], WorkflowFailed)


def test_while_loop_checked_before_each_iteration():
    s = flow("""
    - name: count
      type: loop
      config:
        max_iterations: 10
        while: "{{ index < input.n }}"
        steps: [{name: tick, type: service_call, config: {service: svc}}]
""")
    events = start(s, {"n": 0})
    assert events[-2:] == [StepCompleted("count", 1, None), WorkflowCompleted(events[-1].output)]
    s = flow("""
    - name: count
      type: loop
      config:
        max_iterations: 10
        while: "{{ index < input.n }}"
        steps: [{name: tick, type: service_call, config: {service: svc}}]
""")
    start(s, {"n": 2})
    ok(s, "count[0].tick", 1)
    events = ok(s, "count[1].tick", 2)
    assert StepCompleted("count", 1, {"tick": 2}) in events


# -- for_each ---------------------------------------------------------------------

def fan_out(concurrency: int = 2, policy: str = "fail_fast", tolerated: int = 0) -> Scenario:
    return flow(f"""
    - name: each
      type: for_each
      config:
        items: "{{{{ input.items }}}}"
        concurrency: {concurrency}
        on_item_failure: {policy}
        tolerated_failures: {tolerated}
        step: {{name: charge, type: service_call, config: {{service: svc, payload: {{id: "{{{{ item.id }}}}"}}}}}}
""")


def test_for_each_respects_its_concurrency_and_collects_outputs_in_item_order():
    s = fan_out(concurrency=2)
    events = start(s, {"items": [{"id": i} for i in range(5)]})
    assert ItemsResolved("each", [{"id": i} for i in range(5)]) in events
    assert scheduled(events) == ["each[0].charge", "each[1].charge"]
    tasks = tasks_for(s.state, s.definition, s.history[-len(events):])
    assert [t.context["item"] for t in tasks] == [{"id": 0}, {"id": 1}]
    assert [t.idempotency_key for t in tasks] == ["exec-1/each[0].charge", "exec-1/each[1].charge"]
    assert scheduled(ok(s, "each[1].charge", "r1")) == ["each[2].charge"]
    for i in (0, 2, 3):
        ok(s, f"each[{i}].charge", f"r{i}")
    events = ok(s, "each[4].charge", "r4")
    assert StepCompleted("each", 1, ["r0", "r1", "r2", "r3", "r4"]) in events
    assert isinstance(events[-1], WorkflowCompleted)


def test_for_each_fail_fast_cancels_the_items_in_flight():
    s = fan_out(concurrency=3)
    start(s, {"items": [{"id": i} for i in range(5)]})
    events = bad(s, "each[1].charge")
    assert IterationFinished("each", 1, "failed", None, "step 'charge' failed: HTTP 400") in events
    assert StepCancelled("each[0].charge", "the for_each failed") in events
    assert IterationFinished("each", 2, "cancelled", None, "the for_each failed") in events
    (failed,) = [e for e in events if isinstance(e, StepFailed) and e.step == "each"]
    assert "item 1" in failed.error
    assert isinstance(events[-1], WorkflowFailed)


def test_for_each_collect_tolerates_failures_up_to_its_count():
    s = fan_out(concurrency=1, policy="collect", tolerated=1)
    start(s, {"items": [{"id": i} for i in range(3)]})
    bad(s, "each[0].charge")
    ok(s, "each[1].charge", "r1")
    events = ok(s, "each[2].charge", "r2")
    assert StepCompleted("each", 1, [None, "r1", "r2"]) in events
    s = fan_out(concurrency=1, policy="collect", tolerated=1)
    start(s, {"items": [{"id": i} for i in range(3)]})
    bad(s, "each[0].charge")
    events = bad(s, "each[1].charge")
    assert any(isinstance(e, StepFailed) and e.step == "each" and "2 item(s) failed" in e.error for e in events)


def test_for_each_over_something_that_is_not_a_list_fails_naming_the_step():
    s = fan_out()
    events = start(s, {"items": {"a": 1}})
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error == "step 'each': config.items must be a list, not dict"


def test_for_each_of_a_thousand_items_keeps_state_bounded():
    s = fan_out(concurrency=20)
    events = start(s, {"items": [{"id": i} for i in range(1000)]})
    assert len(scheduled(events)) == 20
    in_flight, done = set(scheduled(events)), 0
    while in_flight:
        key = min(in_flight, key=lambda k: int(k[5:k.index("]")]))
        in_flight.remove(key)
        events = ok(s, key, key)
        done += 1
        in_flight |= set(scheduled(events))
        assert len(in_flight) <= 20
        assert len(s.state.steps) <= 21  # the for_each and the items in flight
    assert done == 1000
    assert s.state.step("each").output == [f"each[{i}].charge" for i in range(1000)]


# -- workflow steps ----------------------------------------------------------------

SUB = """
    - name: pay
      type: workflow
      config: {workflow: payment, version: "2", input: {amount: "{{ input.amount }}"}}
      output: {paid: "{{ response.ok }}"}
    - {name: after, type: service_call, config: {service: svc}}
"""


def test_workflow_step_starts_a_child_and_takes_its_output():
    s = flow(SUB)
    events = start(s, {"amount": 10})
    assert ChildExecutionRequested("exec-1.pay", "payment", "2", {"amount": 10}, "subworkflow", "pay") in events
    (cmd,) = [o for o in outbox_of(s, events) if o.topic == "commands"]
    assert cmd.message == StartWorkflow("exec-1.pay", "payment", "2", {"amount": 10}, "execution:exec-1",
                                        "exec-1", "subworkflow")
    events = s.when(ChildExecutionEnded("exec-1", "exec-1.pay", "subworkflow", "completed", {"ok": True}))
    assert StepCompleted("pay", 1, {"paid": True}) in events and scheduled(events) == ["after"]


def test_a_failed_child_fails_the_step_and_cancelling_the_step_cancels_the_child():
    s = flow(SUB)
    start(s, {"amount": 10})
    events = s.when(ChildExecutionEnded("exec-1", "exec-1.pay", "subworkflow", "cancelled", None, "by ops"))
    assert StepFailed("pay", 1, "sub-workflow 'payment' (exec-1.pay) cancelled: by ops", "terminate") in events
    s = flow(SUB)
    start(s, {"amount": 10})
    events = s.when(CancelStep("exec-1", "pay", "not needed", "ops"))
    assert StepCancelled("pay", "not needed", "ops") in events and scheduled(events) == ["after"]
    (cancel,) = [o.message for o in outbox_of(s, events) if o.topic == "commands"]
    assert cancel.execution_id == "exec-1.pay" and cancel.requested_by == "execution:exec-1"


# -- cancel a step ----------------------------------------------------------------

def test_cancel_step_by_command_and_by_signal():
    s = flow("""
    - {name: slow, type: service_call, config: {service: svc}, cancel_on_signal: stop}
    - {name: after, type: service_call, config: {service: svc}}
""")
    start(s)
    events = s.when(SignalWorkflow("exec-1", "stop", None, "ops"))
    assert StepCancelled("slow", "signal 'stop'", "ops") in events and scheduled(events) == ["after"]
    rejected = s.when(CancelStep("exec-1", "slow"))
    assert rejected[0].reason == "step 'slow': step already cancelled"
    assert s.when(CancelStep("exec-1", "nope"))[0].reason.startswith("step 'nope': no such step")


def test_replaying_the_history_reproduces_the_state():
    s = fan_out(concurrency=2)
    start(s, {"items": [{"id": i} for i in range(4)]})
    bad(s, "each[0].charge")
    assert fold_history(s.state.execution_id, s.history) == s.state


def test_a_while_condition_reads_the_iterations_before_the_first_one():
    s = flow("""
    - name: retry
      type: loop
      config:
        max_iterations: 5
        while: "{{ steps.retry.iterations | length < 2 }}"
        steps: [{name: tick, type: service_call, config: {service: svc}}]
""")
    assert scheduled(start(s)) == ["retry[0].tick"]
    ok(s, "retry[0].tick", 1)
    events = ok(s, "retry[1].tick", 2)
    assert StepCompleted("retry", 1, {"tick": 2}) in events


def test_a_failed_item_starts_none_of_its_later_steps():
    s = flow("""
    - name: each
      type: for_each
      config:
        items: [1, 2]
        concurrency: 2
        on_item_failure: collect
        tolerated_failures: 2
        steps:
          - {name: charge, type: service_call, config: {service: svc}}
          - {name: receipt, type: service_call, config: {service: svc}}
""")
    start(s)
    events = bad(s, "each[1].charge")
    assert scheduled(events) == []
    assert IterationFinished("each", 1, "failed", None, "step 'charge' failed: HTTP 400") in events


def test_a_task_carries_only_what_its_step_reads_not_the_whole_list():
    s = fan_out(concurrency=2)
    events = start(s, {"items": [{"id": i} for i in range(500)], "other": "x" * 1000})
    task = tasks_for(s.state, s.definition, s.history[-len(events):])[0]
    assert task.context == {"execution": task.context["execution"], "item": {"id": 0}}


def test_cancel_step_names_a_running_iteration_step_only():
    s = fan_out(concurrency=1)
    start(s, {"items": [{"id": 0}, {"id": 1}, {"id": 2}]})
    ok(s, "each[0].charge", "r0")
    for key in ("each[0].charge", "each[2].charge"):  # folded away; not started yet
        (rejected,) = s.when(CancelStep("exec-1", key))
        assert rejected.reason == f"step '{key}': its iteration is not running"
    events = s.when(CancelStep("exec-1", "each[1].charge", "stuck"))
    assert StepCancelled("each[1].charge", "stuck") in events and scheduled(events) == ["each[2].charge"]
