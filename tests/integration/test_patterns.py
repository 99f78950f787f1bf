"""The workflow-pattern examples (examples/patterns/, docs/patterns.md) on the real
engine: each runs to the outcome docs/patterns.md states, read from the projection
(and from the history where the order of events is the point).

The executions that need nothing from outside start together (the `runs` fixture)
and run concurrently in one engine; the tests that send an event, a signal or a
cancel start their own. The task service (orchestrator.demo.services) counts the
calls in flight per task name, which the 1,000-item fan-out is checked against.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PATTERNS = Path(__file__).resolve().parents[2] / "examples" / "patterns"


def example_input(name: str) -> dict[str, Any]:
    path = PATTERNS / f"{name}.input.json"
    return json.loads(path.read_text("utf-8")) if path.exists() else {}


# -- the engine: an executor wider than the fan-out's limit -------------------------------------


@pytest.fixture(scope="module")
def wide_executor() -> Any:
    """The shared `engine` fixture runs its executor with 16 calls at once, which would hide
    a for_each limit of 20: for this module it gets 64 (the product's default)."""
    from orchestrator.runtime import executor

    run_executor = executor.run_executor

    def wide(settings: Any, stop: Any) -> None:
        run_executor(dataclasses.replace(settings, executor_concurrency=64), stop)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(executor, "run_executor", wide)
        yield


@pytest.fixture(scope="module")
def engine(wide_executor: Any, engine: Any) -> Any:  # the conftest engine, started with the patch in place
    return engine


def publish_all(engine: Any, messages: list[tuple[str, str, Any]]) -> None:
    """(topic, key, message) through one producer (a producer per message costs a connection each)."""
    from confluent_kafka import Producer

    from orchestrator.runtime.kafka import producer_config

    from .helpers import codec

    producer = Producer(producer_config(engine.settings))
    for topic, key, message in messages:
        producer.produce(topic, codec.encode(message), key.encode())
    assert producer.flush(10) == 0


@pytest.fixture(scope="module")
def patterns(engine: Any) -> Any:
    """The engine with every example of examples/patterns/ registered (what `definitions apply` does)."""
    from orchestrator.core.loading import canonical_digest, load_definition_source
    from orchestrator.core.messages import DefinitionRegistered

    registered = []
    for path in sorted(PATTERNS.glob("*.yaml")):
        source = path.read_text("utf-8")
        defn = load_definition_source(source, file=str(path))
        registered.append((engine.settings.topics.definitions, defn.key, DefinitionRegistered(
            defn.name, defn.version, source, "yaml", canonical_digest(defn), 0)))
    publish_all(engine, registered)
    return engine


# What runs without help from outside: started at once, awaited by each test.
# key -> (workflow, input)
UNATTENDED: dict[str, tuple[str, dict[str, Any]]] = {
    "fan-out-limit": ("fan-out-limit", example_input("fan-out-limit")),
    "wcp01": ("wcp01-sequence", example_input("wcp01-sequence")),
    "wcp02": ("wcp02-parallel-split", {}),
    "wcp03": ("wcp03-synchronization", {}),
    **{f"wcp04-{amount}": ("wcp04-exclusive-choice", {"amount": amount}) for amount in (5000, 50, 0)},
    **{f"wcp05-{channel}": ("wcp05-simple-merge", {"channel": channel}) for channel in ("email", "sms")},
    "wcp06": ("wcp06-multi-choice", example_input("wcp06-multi-choice")),
    "wcp07": ("wcp07-structured-synchronizing-merge", example_input("wcp07-structured-synchronizing-merge")),
    "wcp09": ("wcp09-structured-discriminator", {}),
    "wcp11": ("wcp11-implicit-termination", {}),
    "wcp12": ("wcp12-mi-without-synchronization", example_input("wcp12-mi-without-synchronization")),
    "wcp13": ("wcp13-mi-design-time", {}),
    "wcp14": ("wcp14-mi-run-time", example_input("wcp14-mi-run-time")),
    "wcp16-timer": ("wcp16-deferred-choice", {"order_id": f"ord-{uuid.uuid4().hex[:8]}"}),
    "wcp17": ("wcp17-interleaved-parallel-routing", {}),
    "wcp21": ("wcp21-structured-loop", example_input("wcp21-structured-loop")),
    "subworkflow": ("subworkflow", example_input("subworkflow")),
    "loop-without-exit": ("loop-without-exit", {}),
}


@pytest.fixture(scope="module")
def runs(patterns: Any) -> dict[str, str]:
    """key -> execution id of every UNATTENDED execution, all started before the first test."""
    from orchestrator.core.messages import StartWorkflow

    ids = {key: f"pattern-{key}-{uuid.uuid4().hex[:8]}" for key in UNATTENDED}
    patterns.execution_ids.extend(ids.values())
    commands = patterns.settings.topics.commands
    publish_all(patterns, [(commands, ids[key], StartWorkflow(ids[key], workflow, None, data, "test"))
                           for key, (workflow, data) in UNATTENDED.items()])
    return ids


@dataclasses.dataclass
class Outcome:
    status: str
    output: Any
    error: str | None
    row: dict[str, Any]
    steps: dict[str, dict[str, Any]]  # step key -> its step_executions row
    events: list  # the history, from Kafka

    def step(self, name: str) -> dict[str, Any]:
        assert name in self.steps, f"no step {name!r} in the projection: {sorted(self.steps)}"
        return self.steps[name]

    def status_of(self, *names: str) -> list[str]:
        return [self.step(name)["status"] for name in names]

    def kinds(self) -> list[str]:
        return [type(r.event).__name__ for r in self.events]


def outcome(engine: Any, eid: str, timeout: float = 60.0) -> Outcome:
    """The execution once it ended, as the projection shows it (up to its last event)."""
    events = engine.wait_ended(eid, timeout)
    row = engine.wait_projected(eid, events[-1].sequence)
    steps = {r["step_name"]: r for r in engine.rows("SELECT * FROM step_executions WHERE execution_id = %s",
                                                    (eid,))}
    return Outcome(row["status"], row["output"], row["error"], row, steps, events)


def task_calls(engine: Any, eid: str) -> list[dict[str, Any]]:
    """The calls this execution made to the task service, in the order they arrived."""
    return sorted(engine.requests(execution_id=eid, path_prefix="/task-service"), key=lambda r: r["at"])


def tasks_called(engine: Any, eid: str) -> list[str]:
    return [r["path"].rsplit("/", 1)[-1] for r in task_calls(engine, eid)]


def task_stats(engine: Any) -> dict[str, Any]:
    import httpx

    return httpx.get(f"{engine.demo.url}/task-service/api/stats", timeout=10).json()


def completed(engine: Any, eid: str, timeout: float = 60.0) -> Outcome:
    result = outcome(engine, eid, timeout)
    assert result.status == "completed", (result.status, result.error, result.kinds())
    return result


def ends_before_starts(first: dict[str, Any], then: dict[str, Any]) -> bool:
    return first["finished_at"] <= then["started_at"]


# -- WCP1-3: sequence, parallel split, synchronization -------------------------------------------


def test_wcp01_sequence_runs_each_step_after_the_one_before(engine, runs):
    result = completed(engine, runs["wcp01"])
    assert result.output == {"order_id": "ord-1001", "trail": ["receive_order", "pack", "ship"]}
    receive, pack, ship = (result.step(n) for n in ("receive_order", "pack", "ship"))
    assert ends_before_starts(receive, pack) and ends_before_starts(pack, ship)
    assert tasks_called(engine, runs["wcp01"]) == ["receive_order", "pack", "ship"]


def test_wcp02_parallel_split_runs_the_branches_at_the_same_time(engine, runs):
    result = completed(engine, runs["wcp02"])
    branches = [result.step(n) for n in ("charge_card", "reserve_stock", "notify_warehouse")]
    for branch in branches:
        assert ends_before_starts(result.step("receive_order"), branch)
        assert all(branch["started_at"] < other["finished_at"] for other in branches), "branches did not overlap"


def test_wcp03_synchronization_starts_the_next_step_once_every_branch_ended(engine, runs):
    result = completed(engine, runs["wcp03"])
    confirm = result.step("confirm_order")
    assert all(ends_before_starts(result.step(n), confirm) for n in ("charge_card", "reserve_stock", "quote_shipping"))
    assert confirm["output"]["input"] == {"paid": True, "reserved": True, "quoted": True}
    assert tasks_called(engine, runs["wcp03"]).count("confirm_order") == 1


# -- WCP4-7: choices and merges ----------------------------------------------------------------------


@pytest.mark.parametrize("amount,case,ran", [
    (5000, "large", ["manager_review", "manager_approve"]),
    (50, "small", ["auto_approve"]),
    (0, "default", ["reject"]),
])
def test_wcp04_exclusive_choice_runs_exactly_one_case(engine, runs, amount, case, ran):
    eid = runs[f"wcp04-{amount}"]
    result = completed(engine, eid)
    assert result.output == {"case": case, "ran": ran}
    assert result.step("route")["status"] == "completed" and result.step("route")["branch"] == case
    assert result.status_of(*ran) == ["completed"] * len(ran)
    assert tasks_called(engine, eid) == ran  # the other cases' steps never ran


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_wcp05_simple_merge_runs_the_step_after_the_switch_once_whichever_case_ran(engine, runs, channel):
    eid = runs[f"wcp05-{channel}"]
    result = completed(engine, eid)
    logged = result.step("log_delivery")["output"]["input"]
    assert logged["via"] == channel and list(logged["results"]) == [f"send_{channel}"]
    assert tasks_called(engine, eid) == [f"send_{channel}", "log_delivery"]


def test_wcp06_multi_choice_runs_every_branch_whose_condition_holds(engine, runs):
    eid = runs["wcp06"]
    result = completed(engine, eid)
    assert result.status_of("notify_email", "notify_sms", "notify_post") == ["completed", "skipped", "completed"]
    assert "condition is false" in result.step("notify_sms")["status_reason"]
    assert sorted(tasks_called(engine, eid)) == ["notify_email", "notify_post"]


def test_wcp07_synchronizing_merge_waits_for_the_branches_that_ran_and_runs_once(engine, runs):
    eid = runs["wcp07"]
    result = completed(engine, eid)
    record = result.step("record_notification")
    assert record["output"]["input"] == {"email": "completed", "sms": "skipped", "post": "completed"}
    assert ends_before_starts(result.step("notify_post"), record)  # the slowest branch that ran
    assert tasks_called(engine, eid).count("record_notification") == 1


# -- WCP9: discriminator; WCP11: implicit termination -------------------------------------------------


def test_wcp09_discriminator_goes_on_with_the_first_and_lets_the_others_finish(engine, runs):
    result = completed(engine, runs["wcp09"])
    first, a, b, c = (result.step(n) for n in ("use_first_answer", "ask_mirror_a", "ask_mirror_b", "ask_mirror_c"))
    assert first["output"]["input"] == {"a": True, "b": False, "c": False}
    assert ends_before_starts(a, first)
    assert first["started_at"] < b["finished_at"] and first["started_at"] < c["finished_at"]
    assert b["status"] == c["status"] == "completed"  # ignored, not cancelled
    assert result.row["finished_at"] >= c["finished_at"]


def test_wcp11_implicit_termination_completes_when_no_step_remains(engine, runs):
    result = completed(engine, runs["wcp11"])
    assert set(result.output) == {"bill", "send_invoice", "archive"}  # every step's output by name
    assert result.step("send_invoice")["finished_at"] < result.step("archive")["finished_at"]
    assert result.row["finished_at"] >= result.step("archive")["finished_at"]


# -- WCP12-14, 17: multiple instances -------------------------------------------------------------------


def test_wcp12_instances_without_synchronization_do_not_hold_up_the_steps_after(engine, runs):
    eid = runs["wcp12"]
    result = completed(engine, eid)
    tell, close = result.step("tell_subscribers"), result.step("close_release")
    assert close["finished_at"] < tell["finished_at"], "close_release waited for the instances"
    assert [o["input"]["subscriber"] for o in tell["output"]] == ["ann", "bob", "cy"]
    assert tasks_called(engine, eid).count("tell_subscriber") == 3
    assert result.row["finished_at"] >= tell["finished_at"]


def test_wcp13_instances_known_at_design_time_collect_outputs_in_item_order(engine, runs):
    result = completed(engine, runs["wcp13"])
    regions = ["eu-west", "us-east", "ap-south"]
    deployed = result.step("deploy_everywhere")["output"]
    assert [o["input"] for o in deployed] == [{"region": r, "n": i} for i, r in enumerate(regions)]
    assert result.step("announce")["output"]["input"]["regions"] == regions


def test_wcp14_instances_known_at_run_time_collect_outputs_in_item_order(engine, runs):
    result = completed(engine, runs["wcp14"])
    assert result.output == {"checked": ["A-1", "B-2", "C-3", "D-4"]}
    step = result.step("check_lines")
    assert (step["items_total"], step["iterations_completed"]) == (4, 4)
    # they finished in the reverse order (shorter delays), yet the list is in item order
    finished = [r.event.index for r in result.events if type(r.event).__name__ == "IterationFinished"]
    assert finished == [3, 2, 1, 0]


def test_wcp17_interleaved_routing_runs_one_activity_at_a_time_in_list_order(engine, runs):
    eid = runs["wcp17"]
    result = completed(engine, eid)
    order = ["audit_books", "audit_stock", "audit_access"]
    assert result.step("audits")["output"] == order
    calls = task_calls(engine, eid)
    assert [c["path"].rsplit("/", 1)[-1] for c in calls] == order
    # each took 300 ms: the next arrived only after the one before had answered
    assert all(later["at"] - earlier["at"] >= 0.3 for earlier, later in zip(calls, calls[1:]))


def test_a_fan_out_of_1000_items_keeps_20_in_flight_in_item_order_and_finishes(engine, runs):
    result = completed(engine, runs["fan-out-limit"], timeout=150)
    assert result.output == {"results": list(range(1000))}
    stats = task_stats(engine)["tasks"]["fan-out"]
    assert stats["calls"] == 1000
    assert 1 < stats["max_in_flight"] <= 20, stats
    step = result.step("fan_out")
    assert (step["items_total"], step["iterations_completed"], step["iterations_failed"]) == (1000, 1000, 0)


# -- WCP16: deferred choice -------------------------------------------------------------------------


def test_wcp16_deferred_choice_an_event_before_the_timer_wins(patterns):
    engine = patterns
    order_id = f"ord-{uuid.uuid4().hex[:8]}"
    eid = engine.start("wcp16-deferred-choice", {"order_id": order_id})
    engine.wait(lambda: any(type(r.event).__name__ == "StepWaiting" and r.event.step == "payment_received"
                            for r in engine.events(eid)), 30, "the wait did not open")
    published = engine.cli("events", "publish", "payment.received", "--data", json.dumps({"order_id": order_id}))
    assert published.exit_code == 0, published.output
    result = completed(engine, eid)
    assert result.output == {"action": "ship", "paid": True}
    assert result.status_of("payment_received", "reminder_due", "follow_up") == ["completed", "cancelled", "completed"]


def test_wcp16_deferred_choice_the_timer_wins_without_an_event(engine, runs):
    result = completed(engine, runs["wcp16-timer"])
    assert result.output == {"action": "remind", "paid": False}
    assert result.status_of("payment_received", "reminder_due", "follow_up") == ["cancelled", "completed", "completed"]
    assert result.step("follow_up")["started_at"] - result.row["started_at"] >= timedelta(seconds=4)


# -- WCP19, 20: cancel an activity, cancel the case ------------------------------------------------------


@pytest.mark.parametrize("how", ["signal", "cancel --step"])
def test_wcp19_cancel_activity_withdraws_the_step_and_the_execution_goes_on(patterns, how):
    engine = patterns
    eid = engine.start("wcp19-cancel-activity", {})
    [call] = engine.wait(lambda: engine.requests(idempotency_key=f"{eid}/review"), 30, "the review was not called")
    if how == "signal":
        sent = engine.cli("signal", eid, "skip_review")
    else:
        sent = engine.cli("cancel", eid, "--step", "review", "--reason", "reviewed by phone")
    assert sent.exit_code == 0, sent.output
    result = completed(engine, eid)
    assert result.status_of("review", "ship") == ["cancelled", "completed"]
    assert result.step("ship")["output"]["input"] == {"reviewed": False, "review_status": "cancelled"}
    assert result.events[-1].recorded_at < call["at"] * 1000 + 5000, "completed only after the review answered"
    [cancelled] = [r.event for r in result.events if type(r.event).__name__ == "StepCancelled"]
    assert cancelled.reason == ("signal 'skip_review'" if how == "signal" else "reviewed by phone")


def test_wcp20_cancel_case_ends_the_execution_cancelled(patterns):
    engine = patterns
    eid = engine.start("wcp20-cancel-case", {})
    engine.wait(lambda: any(type(r.event).__name__ == "StepWaiting" for r in engine.events(eid)), 30,
                "the delay did not start")
    sent = engine.cli("cancel", eid, "--reason", "order withdrawn")
    assert sent.exit_code == 0, sent.output
    result = outcome(engine, eid)
    assert result.status == "cancelled", (result.status, result.kinds())
    assert result.step("prepare")["status"] == "completed"
    [abandoned] = [r.event for r in result.events if type(r.event).__name__ == "StepFailed"]
    assert (abandoned.step, abandoned.action) == ("wait_for_goods", "abandoned")  # its timer will fire into nothing
    assert result.events[-1].event.reason == "order withdrawn"
    assert "deliver" not in tasks_called(engine, eid)


# -- structured loop, loop without exit, sub-workflow -----------------------------------------------------


def test_wcp21_structured_loop_polls_until_done(engine, runs):
    result = completed(engine, runs["wcp21"])
    assert result.output == {"polls": 3, "calls": 3}
    loop = result.step("wait_until_done")
    assert (loop["iterations_started"], loop["iterations_completed"]) == (3, 3)
    assert loop["output"]["check_job"] == {"calls": 3, "done": True}


def test_a_loop_without_exit_fails_at_its_limit_naming_the_step_and_the_limit(engine, runs):
    eid = runs["loop-without-exit"]
    result = outcome(engine, eid)
    assert result.status == "failed"
    assert "loop 'poll_forever' reached its limit of 5 iterations (max_iterations)" in result.error
    assert result.step("poll_forever")["status"] == "failed"
    assert tasks_called(engine, eid) == ["check"] * 5


def test_a_workflow_step_runs_another_example_as_a_child_execution(engine, runs):
    eid = runs["subworkflow"]
    result = completed(engine, eid)
    trail = ["receive_order", "pack", "ship"]
    assert result.output == {"fulfilled": {"order_id": "ord-2001", "trail": trail}, "invoiced": "done"}
    child_id = f"{eid}.fulfil"
    assert result.step("fulfil")["child_execution_id"] == child_id
    [child] = engine.rows("SELECT * FROM workflow_executions WHERE id = %s", (child_id,))
    assert (child["workflow_name"], child["status"], child["parent_execution_id"]) == (
        "wcp01-sequence", "completed", eid)
    assert tasks_called(engine, child_id) == trail


SLOW_CHILD = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: slow-child, version: "1"}
spec:
  steps:
    - {name: hold, type: delay, config: {duration: 1h}}
"""
PARENT = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: parent-of-slow-child, version: "1"}
spec:
  steps:
    - {name: run_child, type: workflow, config: {workflow: slow-child}}
"""


@pytest.fixture(scope="module")
def parent_and_child(patterns: Any) -> Any:
    from .helpers import register

    register(patterns.settings, SLOW_CHILD)
    register(patterns.settings, PARENT)
    return patterns


def child_waiting(engine: Any, parent: str) -> str:
    child = f"{parent}.run_child"
    engine.wait(lambda: any(type(r.event).__name__ == "StepWaiting" for r in engine.events(child)), 30,
                "the child did not start waiting")
    return child


def test_cancelling_the_parent_cancels_its_child_execution(parent_and_child):
    engine = parent_and_child
    parent = engine.start("parent-of-slow-child", {})
    child = child_waiting(engine, parent)
    assert engine.cli("cancel", parent, "--reason", "no longer needed").exit_code == 0
    assert outcome(engine, parent).status == "cancelled"
    ended = outcome(engine, child)
    assert ended.status == "cancelled"
    assert ended.events[-1].event.requested_by == f"execution:{parent}"
    assert "parent step 'run_child'" in ended.events[-1].event.reason


def test_cancelling_the_child_fails_the_parent_step(parent_and_child):
    engine = parent_and_child
    parent = engine.start("parent-of-slow-child", {})
    child = child_waiting(engine, parent)
    assert engine.cli("cancel", child, "--reason", "operator").exit_code == 0
    result = outcome(engine, parent)
    assert result.status == "failed"
    assert result.step("run_child")["status"] == "failed"
    assert f"sub-workflow 'slow-child' ({child}) cancelled: operator" in result.error


# -- the examples and the table agree ----------------------------------------------------------------------


def test_every_example_validates_and_is_linked_from_the_patterns_table():
    from click.testing import CliRunner

    from orchestrator.cli import cli

    files = sorted(PATTERNS.glob("*.yaml"))
    services = PATTERNS.parent / "services.yaml"
    result = CliRunner().invoke(cli, ["definitions", "validate", "--json", *map(str, files)],
                                env={"ORCH_SERVICES": str(services)}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["valid"] is True
    table = (PATTERNS.parents[1] / "docs" / "patterns.md").read_text("utf-8")
    assert [f.name for f in files if f"](../examples/patterns/{f.name})" not in table] == []
    for path in PATTERNS.glob("*.input.json"):  # each input belongs to an example
        assert (PATTERNS / path.name.replace(".input.json", ".yaml")).exists(), path
