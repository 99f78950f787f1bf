"""Built-in definition templates (`orchestrator definitions new NAME --from-template T`):
each renders into a valid definition; `definitions new` and `definitions templates`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.core.definition import WorkflowDefinition
from orchestrator.core.loading import parse_definition
from orchestrator.core.validation import check_definition
from orchestrator.core.yaml_source import read_source
from orchestrator.definition_templates import PLACEHOLDER, InvalidName, UnknownTemplate, available, render

ROOT = Path(__file__).resolve().parents[2]
SERVICES = set(yaml.safe_load((ROOT / "examples" / "services.yaml").read_text())["services"])
REQUIRED = {"sequence", "saga", "approval", "fan-out", "polling-loop", "event-triggered", "scheduled"}
# Templates the validator cannot check yet (none today); name them here with the reason.
NOT_CHECKED: dict[str, str] = {}


def test_the_required_templates_are_there_with_one_line_descriptions() -> None:
    found = available()
    assert REQUIRED <= set(found)
    assert list(found) == sorted(found)
    for t in found.values():
        assert t.description and "\n" not in t.description and not t.description.startswith("#"), t.name
        assert t.text.count(PLACEHOLDER) == 1, t.name  # metadata.name only


@pytest.mark.parametrize("name", sorted(available()))
def test_every_template_renders_into_a_valid_definition(name: str) -> None:
    text = render(name, f"my-{name}")
    assert PLACEHOLDER not in text
    source = read_source(text)
    assert source.ok, source.problems
    defn = parse_definition(source.data, file=name)
    assert isinstance(defn, WorkflowDefinition)
    assert defn.name == f"my-{name}" and defn.version == "1"
    if name in NOT_CHECKED:
        pytest.skip(f"check_definition does not support {name} yet: {NOT_CHECKED[name]}")
    assert check_definition(defn, file=name, known_services=SERVICES) == []


def test_each_template_shows_what_its_name_promises() -> None:
    def steps(name: str) -> dict[str, Any]:
        source = read_source(render(name, "w"))
        return parse_definition(source.data, file=name).steps_by_name

    def defn(name: str) -> WorkflowDefinition:
        return parse_definition(read_source(render(name, "w")).data, file=name)

    assert [s.type for s in defn("sequence").spec.steps] == ["service_call", "service_call"]
    assert defn("saga").compensation_steps
    approval = steps("approval")
    assert approval["wait_for_approval"].config.signal and approval["wait_for_approval"].config.timeout_ms
    assert approval["reminder_timer"].type == "delay"
    each = defn("fan-out").spec.steps[0]
    assert each.type == "for_each" and each.config.concurrency > 1 and each.config.on_item_failure == "collect"
    loop = defn("polling-loop").spec.steps[0]
    assert loop.type == "loop" and loop.config.until and loop.config.max_iterations
    [event] = defn("event-triggered").spec.triggers
    assert event.event and event.schedule is None
    [cron] = defn("scheduled").spec.triggers
    assert cron.schedule and cron.timezone != "UTC"


def test_rendering_replaces_only_the_name_and_refuses_what_is_not_a_name() -> None:
    text = render("sequence", "orders.v2")
    assert yaml.safe_load(text)["metadata"]["name"] == "orders.v2"
    assert text == available()["sequence"].text.replace(PLACEHOLDER, "orders.v2")
    for bad in ("", "-x", "a b", "x: y", "a\nb", "x" * 201):
        with pytest.raises(InvalidName):
            render("sequence", bad)
    with pytest.raises(UnknownTemplate) as info:
        render("sequense", "x")
    assert "did you mean 'sequence'?" in str(info.value) and "available: approval, " in str(info.value)


# -- the command line (no Kafka) ----------------------------------------------------------


@pytest.fixture
def workdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("ORCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ORCH_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_templates_lists_every_template_with_its_description(workdir: Path) -> None:
    result = invoke("definitions", "templates")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(available())
    assert any(line.startswith("saga ") and available()["saga"].description in line for line in lines)
    doc = json.loads(invoke("definitions", "templates", "--json").stdout)
    assert doc["templates"][0] == {"name": "approval", "description": available()["approval"].description}


def test_new_writes_name_yaml_that_validates(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke("definitions", "new", "orders", "--from-template", "saga")
    assert result.exit_code == 0, result.output
    assert "wrote orders.yaml" in result.stdout
    assert (workdir / "orders.yaml").read_text() == render("saga", "orders")
    monkeypatch.setenv("ORCH_SERVICES", str(ROOT / "examples" / "services.yaml"))
    checked = invoke("definitions", "validate", "orders.yaml")
    assert checked.exit_code == 0, checked.output
    assert "orders@1" in checked.stdout


def test_new_refuses_to_overwrite_without_force(workdir: Path) -> None:
    target = workdir / "mine.yaml"
    target.write_text("precious\n")
    result = invoke("definitions", "new", "orders", "--from-template", "sequence", "-o", str(target))
    assert result.exit_code == 1
    assert f"{target} exists: not overwritten (pass --force to replace it)" in result.stderr
    assert target.read_text() == "precious\n"
    result = invoke("definitions", "new", "orders", "--from-template", "sequence", "-o", str(target), "--force")
    assert result.exit_code == 0, result.output
    assert target.read_text() == render("sequence", "orders")


def test_new_to_standard_output_and_its_errors(workdir: Path) -> None:
    result = invoke("definitions", "new", "x", "--from-template", "scheduled", "-o", "-")
    assert result.exit_code == 0 and result.stdout == render("scheduled", "x")
    assert list(workdir.iterdir()) == []
    result = invoke("definitions", "new", "x", "--from-template", "nope")
    assert result.exit_code == 1
    assert "error: no definition template 'nope' (available: approval, event-triggered, fan-out" in result.stderr
    result = invoke("definitions", "new", "a b", "--from-template", "saga")
    assert result.exit_code == 1 and "'a b' is not a workflow name" in result.stderr
    assert list(workdir.iterdir()) == []


# -- the templates do what they say (the pure core, virtual time) --------------------------


def scenario(template: str) -> Any:
    from .scenario import Scenario

    return Scenario(parse_definition(read_source(render(template, "w")).data, file=template))


def test_approval_goes_on_when_approved_and_skips_the_reminder() -> None:
    from orchestrator.core.events import StepCancelled, StepCompleted, StepScheduled, StepSkipped, WorkflowCompleted
    from orchestrator.core.messages import SignalWorkflow, StartWorkflow, TaskSucceeded

    s = scenario("approval")
    s.when(StartWorkflow("exec-1", "w", "1", {"approver_email": "a@example.com", "subject": "budget"}))
    s.when(TaskSucceeded("exec-1", "request_approval", 1, {"sent": True}, 0, 0))
    assert {k: v.status for k, v in s.state.steps.items()}["reminder_timer"] == "waiting"
    events = s.when(SignalWorkflow("exec-1", "approve", {"by": "bob"}, "bob"))
    assert any(isinstance(e, StepCancelled) and e.step == "reminder_timer" for e in events)
    assert any(isinstance(e, StepCompleted) and e.step == "wait_for_approval" for e in events)
    assert any(isinstance(e, StepSkipped) and e.step == "send_reminder" for e in events)
    assert [e.step for e in events if isinstance(e, StepScheduled)] == ["announce_approval"]
    events = s.when(TaskSucceeded("exec-1", "announce_approval", 1, {"sent": True}, 0, 0))
    assert isinstance(events[-1], WorkflowCompleted) and events[-1].output == {"approved_by": "bob"}


def test_approval_reminds_after_a_day() -> None:
    from orchestrator.core.events import StepScheduled
    from orchestrator.core.messages import FireTimer, StartWorkflow, TaskSucceeded

    s = scenario("approval")
    s.when(StartWorkflow("exec-1", "w", "1", {"approver_email": "a@example.com", "subject": "budget"}))
    s.when(TaskSucceeded("exec-1", "request_approval", 1, {"sent": True}, 0, 0))
    events = s.at(s.now + 24 * 3_600_000).when(FireTimer("exec-1", "wait:reminder_timer"))
    assert [e.step for e in events if isinstance(e, StepScheduled)] == ["send_reminder"]
    assert s.state.steps["wait_for_approval"].status == "waiting"


def test_polling_loop_checks_until_active() -> None:
    from orchestrator.core.events import StepScheduled, WorkflowCompleted
    from orchestrator.core.messages import FireTimer, StartWorkflow, TaskSucceeded

    s = scenario("polling-loop")
    events = s.when(StartWorkflow("exec-1", "w", "1", {"user_id": "usr_1"}))
    assert [e.step for e in events if isinstance(e, StepScheduled)] == ["wait_until_active[0].check_status"]
    s.when(TaskSucceeded("exec-1", "wait_until_active[0].check_status", 1, {"status": "pending"}, 0, 0))
    events = s.at(s.now + 30_000).when(FireTimer("exec-1", "wait:wait_until_active[0].pause"))
    assert [e.step for e in events if isinstance(e, StepScheduled)] == ["wait_until_active[1].check_status"]
    events = s.when(TaskSucceeded("exec-1", "wait_until_active[1].check_status", 1, {"status": "active"}, 0, 0))
    assert isinstance(events[-1], WorkflowCompleted)
    assert events[-1].output == {"status": "active", "checks": 2}


def test_fan_out_tolerates_a_failed_item_and_collects_in_order() -> None:
    from orchestrator.core.events import StepScheduled, WorkflowCompleted
    from orchestrator.core.messages import StartWorkflow, TaskFailed, TaskSucceeded

    s = scenario("fan-out")
    recipients = [{"email": f"{n}@example.com"} for n in "abc"]
    events = s.when(StartWorkflow("exec-1", "w", "1", {"message": "hi", "recipients": recipients}))
    assert [e.step for e in events if isinstance(e, StepScheduled)] == [
        "notify_all[0].notify_one", "notify_all[1].notify_one", "notify_all[2].notify_one"]
    s.when(TaskSucceeded("exec-1", "notify_all[2].notify_one", 1, {"sent": 2}, 0, 0))
    s.when(TaskFailed("exec-1", "notify_all[1].notify_one", 1, "HTTP 400", False, 400, 0, 0))
    events = s.when(TaskSucceeded("exec-1", "notify_all[0].notify_one", 1, {"sent": 0}, 0, 0))
    assert isinstance(events[-1], WorkflowCompleted)
    assert events[-1].output == {"results": [{"sent": 0}, None, {"sent": 2}]}
