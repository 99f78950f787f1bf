"""Step templates (`kind: StepTemplate`, `template: NAME` in a step): the pure expansion in
`orchestrator.core.step_templates` and its YAML in `orchestrator.core.expanded_yaml`, reading them
from files, and `definitions validate` with them."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.cli import cli
from orchestrator.core.expanded_yaml import load_with_templates, render_expanded
from orchestrator.core.loading import DefinitionError, canonical_digest, load_definition_source
from orchestrator.core.step_templates import StepTemplate, expand_steps, merge, parse_step_template, uses_templates
from orchestrator.core.yaml_source import read_source
from orchestrator.definitions_io import collect_step_templates, load_definition_file

from tests.seed import SEED

SERVICES = {"user-service", "profile-service", "notification-service"}

NOTIFY = textwrap.dedent("""\
    apiVersion: workflow/v1
    kind: StepTemplate
    metadata:
      name: notify-user
      description: An e-mail through the notification service
    spec:
      type: service_call
      config:
        service: notification-service
        endpoint: /api/emails/send
        method: POST
        headers: {X-Team: growth}
        payload: {channel: email}
      retry_policy: {max_attempts: 5, backoff: fixed, initial_delay: 1s}
      on_failure: {action: continue}
    """)

WORKFLOW = textwrap.dedent("""\
    apiVersion: workflow/v1
    kind: Workflow
    metadata:
      name: templated
      version: "1.10"
    spec:
      input:
        schema:
          type: object
          properties: {email: {type: string}}
      steps:
        - name: hello
          template: notify-user
          config:
            payload: {to: "{{ input.email }}"}
        - name: bye
          template: notify-user
          on_failure: {action: terminate, message: no bye}
          config:
            endpoint: /api/notifications/send
            headers: {X-Other: x}
    """)


def template(text: str = NOTIFY, file: str = "templates/notify.yaml") -> StepTemplate:
    source = read_source(text)
    found, problems = parse_step_template(source.data, file=file, lines=source.lines)
    assert found is not None, problems
    return found


def templates(*found: StepTemplate) -> dict[str, StepTemplate]:
    return {t.name: t for t in found}


def step_template(name: str, spec: dict[str, Any], file: str = "t.yaml") -> StepTemplate:
    return StepTemplate(name, spec, file)


def workflow(steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "workflow/v1", "kind": "Workflow", "metadata": {"name": "w", "version": "1"},
            "spec": {"steps": steps, **spec}}


CALL = {"type": "service_call", "config": {"service": "user-service", "endpoint": "/api/users"}}


# -- merge rules -------------------------------------------------------------------------


def test_mappings_merge_recursively_and_the_step_wins() -> None:
    base = {"config": {"service": "a", "headers": {"X": "1", "Y": "2"}}, "timeout": "5s"}
    over = {"config": {"headers": {"Y": "3"}, "endpoint": "/e"}, "timeout": "9s"}
    assert merge(base, over) == {"config": {"service": "a", "headers": {"X": "1", "Y": "3"}, "endpoint": "/e"},
                                 "timeout": "9s"}


def test_lists_scalars_and_null_replace_the_templates_value() -> None:
    base = {"depends_on": ["a", "b"], "rules": [{"field": "x"}], "on_failure": {"action": "continue"}, "n": 1}
    over = {"depends_on": ["c"], "rules": [], "on_failure": None, "n": "two"}
    assert merge(base, over) == over
    assert merge({"config": {"a": 1}}, {"config": "text"}) == {"config": "text"}


def test_merge_copies_and_never_changes_its_arguments() -> None:
    base = {"config": {"payload": {"a": [1]}}}
    over = {"config": {"payload": {"b": 2}}}
    merged = merge(base, over)
    merged["config"]["payload"]["a"].append(2)
    assert base == {"config": {"payload": {"a": [1]}}} and over == {"config": {"payload": {"b": 2}}}


def test_a_step_gets_the_template_with_its_own_fields_merged_over_it() -> None:
    data = read_source(WORKFLOW).data
    out = expand_steps(data, templates(template()), file="w.yaml")
    assert out.problems == []
    hello, bye = out.data["spec"]["steps"]
    assert hello == {
        "name": "hello", "type": "service_call",
        "config": {"service": "notification-service", "endpoint": "/api/emails/send", "method": "POST",
                   "headers": {"X-Team": "growth"}, "payload": {"channel": "email", "to": "{{ input.email }}"}},
        "retry_policy": {"max_attempts": 5, "backoff": "fixed", "initial_delay": "1s"},
        "on_failure": {"action": "continue"},
    }
    # name first, then the template's keys in its order
    assert list(hello) == ["name", "type", "config", "retry_policy", "on_failure"]
    assert bye["config"]["headers"] == {"X-Team": "growth", "X-Other": "x"}
    assert bye["config"]["endpoint"] == "/api/notifications/send"
    assert bye["on_failure"] == {"action": "terminate", "message": "no bye"}
    assert "template" not in hello and "template" not in bye
    assert list(out.used) == ["notify-user"]
    assert data["spec"]["steps"][0]["template"] == "notify-user"  # the input is left alone


def test_steps_in_every_kind_of_block_expand() -> None:
    t = step_template("call", CALL)
    inner = lambda n: {"name": n, "template": "call"}  # noqa: E731
    data = workflow(
        [
            {"name": "choose", "type": "switch",
             "config": {"cases": [{"when": "{{ true }}", "steps": [inner("in_case")]}],
                        "default": [inner("in_default")]}},
            {"name": "again", "type": "loop", "config": {"max_iterations": 2, "steps": [inner("in_loop")]}},
            {"name": "each", "type": "for_each", "config": {"items": [1, 2], "step": inner("in_each")}},
            {"name": "each_block", "type": "for_each", "config": {"items": [1], "steps": [inner("in_each_block")]}},
        ],
        compensation={"steps": [inner("undo")]},
    )
    assert uses_templates(data)
    out = expand_steps(data, templates(t), file="w.yaml")
    assert out.problems == []
    assert not uses_templates(out.data)
    spec = out.data["spec"]
    found = [spec["steps"][0]["config"]["cases"][0]["steps"][0], spec["steps"][0]["config"]["default"][0],
             spec["steps"][1]["config"]["steps"][0], spec["steps"][2]["config"]["step"],
             spec["steps"][3]["config"]["steps"][0], spec["compensation"]["steps"][0]]
    assert [s["name"] for s in found] == ["in_case", "in_default", "in_loop", "in_each", "in_each_block", "undo"]
    assert all(s["type"] == "service_call" and s["config"] == CALL["config"] for s in found)
    assert out.step_locs["in_each"] == ("spec", "steps", 2, "config", "step")
    assert out.step_locs["in_case"] == ("spec", "steps", 0, "config", "cases", 0, "steps", 0)


def test_a_template_may_define_a_composite_step_whose_body_the_author_gives() -> None:
    poll = step_template("poll", {"type": "loop", "config": {"max_iterations": 10, "until": "{{ false }}"}})
    call = step_template("call", CALL)
    data = workflow([{"name": "wait", "template": "poll",
                      "config": {"steps": [{"name": "check", "template": "call"}]}}])
    out = expand_steps(data, templates(poll, call), file="w.yaml")
    assert out.problems == []
    loop = out.data["spec"]["steps"][0]
    assert loop["config"]["max_iterations"] == 10 and loop["config"]["steps"][0]["type"] == "service_call"
    assert list(out.used) == ["poll", "call"]


# -- errors -------------------------------------------------------------------------------


def test_an_unknown_template_names_the_file_the_step_the_field_and_the_line() -> None:
    text = WORKFLOW.replace("template: notify-user\n      on_failure", "template: notify-usr\n      on_failure")
    with pytest.raises(DefinitionError) as info:
        load_with_templates(text, templates(template()), file="w.yaml")
    [problem] = info.value.problems
    assert (problem.file, problem.step, problem.field) == ("w.yaml", "bye", "template")
    assert problem.message == "unknown step template 'notify-usr' (did you mean 'notify-user'?)"
    assert problem.line == text.splitlines().index("      template: notify-usr") + 1
    assert str(problem).startswith(f"w.yaml:{problem.line}: step 'bye': template: unknown step template")


def test_without_any_template_the_message_says_where_templates_come_from() -> None:
    with pytest.raises(DefinitionError) as info:
        load_with_templates(WORKFLOW, {}, file="w.yaml")
    assert [p.step for p in info.value.problems] == ["hello", "bye"]
    assert "pass --templates DIR" in info.value.problems[0].message


def test_unusable_templates_and_bad_references() -> None:
    data = workflow([{"name": "a", "template": "broken"}, {"template": "x", **CALL}, {"name": "c", "template": 3}])
    out = expand_steps(data, {}, file="w.yaml", unusable={"broken": "t/broken.yaml"})
    found = [(p.step, p.field, p.message) for p in out.problems]
    assert found == [
        ("a", "template", "step template 'broken' cannot be used: t/broken.yaml has problems"),
        (None, "spec.steps[1].template", "unknown step template 'x' (no step templates were given: pass "
                                          "--templates DIR or the template files with the definition)"),
        ("c", "template", "expected the name of a step template, not a number"),
    ]


def test_problems_the_template_brings_name_the_template_and_the_authors_line() -> None:
    bad = NOTIFY.replace("service: notification-service", "service: notifcation-service")
    with pytest.raises(DefinitionError) as info:
        load_with_templates(WORKFLOW, templates(template(bad)), file="w.yaml", known_services=SERVICES)
    problems = {(p.step, p.field): p for p in info.value.problems}
    assert set(problems) == {("hello", "config.service"), ("bye", "config.service")}
    hello = problems[("hello", "config.service")]
    assert hello.message == ("unknown service 'notifcation-service' (did you mean 'notification-service'?) "
                             "(from step template 'notify-user', templates/notify.yaml)")
    lines = WORKFLOW.splitlines()
    assert hello.line == lines.index("      config:") + 1  # the nearest line the author wrote
    # a problem in the author's own fields is not blamed on the template
    own = WORKFLOW.replace("endpoint: /api/notifications/send", "endpont: /api/notifications/send")
    with pytest.raises(DefinitionError) as info:
        load_with_templates(own, templates(template()), file="w.yaml")
    [problem] = info.value.problems
    assert (problem.step, problem.field) == ("bye", "config.endpont")
    assert "from step template" not in problem.message
    assert problem.line == own.splitlines().index("        endpont: /api/notifications/send") + 1


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda d: d["spec"].update(name="x"), "spec.name", "a step template cannot set the step's name"),
        (lambda d: d["spec"].update(template="other"), "spec.template", "cannot use another template"),
        (lambda d: d["spec"].update(retry_polcy={}), "spec.retry_polcy", "did you mean 'retry_policy'?"),
        (lambda d: d.update(kind="Workflow"), "kind", "expected 'StepTemplate'"),
        (lambda d: d.update(apiVersion="v2"), "apiVersion", "expected 'workflow/v1'"),
        (lambda d: d["metadata"].pop("name"), "metadata.name", "missing required field 'name'"),
        (lambda d: d["metadata"].update(name="no spaces"), "metadata.name", "must be text matching"),
        (lambda d: d["metadata"].update(tags=[]), "metadata.tags", "unknown field 'tags'"),
        (lambda d: d.update(spec={}), "spec", "not an empty mapping"),
        (lambda d: d.update(spec=["type"]), "spec", "not a list"),
        (lambda d: d.update(steps=[]), "steps", "unknown field 'steps'"),
        (lambda d: d["spec"].update(type="loop", config={"steps": [{"name": "i", "template": "t"}]}),
         "spec.config.steps[0].template", "templates do not nest"),
    ],
)
def test_a_malformed_template_document_names_the_file_and_the_field(change: Any, field: str, message: str) -> None:
    data = yaml.safe_load(NOTIFY)
    change(data)
    found, problems = parse_step_template(data, file="t/notify.yaml")
    assert found is None
    assert any(p.file == "t/notify.yaml" and p.step is None and p.field == field and message in p.message
               for p in problems), problems


def test_template_problems_carry_the_line_of_the_template_file() -> None:
    text = NOTIFY.replace("  on_failure:", "  name: fixed\n  on_failure:")
    source = read_source(text)
    _, [problem] = parse_step_template(source.data, file="t.yaml", lines=source.lines)
    assert problem.line == text.splitlines().index("  name: fixed") + 1
    assert str(problem).startswith(f"t.yaml:{problem.line}: spec.name: ")


def test_a_template_built_in_code_that_nests_is_refused_at_expansion_too() -> None:
    nested = step_template("n", {"type": "loop", "config": {"steps": [{"name": "i", "template": "n"}]}})
    out = expand_steps(workflow([{"name": "a", "template": "n"}]), templates(nested), file="w.yaml")
    assert [(p.step, p.field) for p in out.problems] == [("a", "template")]
    assert "templates do not nest" in out.problems[0].message


# -- determinism ---------------------------------------------------------------------------


def test_the_expanded_text_is_self_contained_and_stable() -> None:
    notify = template()
    first = load_with_templates(WORKFLOW, templates(notify), file="w.yaml", known_services=SERVICES)
    second = load_with_templates(WORKFLOW, templates(template()), file="w.yaml", known_services=SERVICES)
    assert first.text == second.text and first.expanded
    assert [t.name for t in first.templates] == ["notify-user"]
    # What is registered loads alone, with no template, into the same definition and digest.
    alone = load_definition_source(first.text, file="registered", known_services=SERVICES)
    assert alone == first.definition
    assert canonical_digest(alone) == canonical_digest(first.definition)
    assert "template" not in yaml.safe_load(first.text)["spec"]["steps"][0]
    assert "&" not in first.text and "*id" not in first.text  # no YAML anchors: each use written out
    # the author's top-level key order, version text kept, a leading comment naming the templates
    assert list(yaml.safe_load(first.text)) == ["apiVersion", "kind", "metadata", "spec"]
    assert first.definition.version == "1.10"
    header = [line for line in first.text.splitlines() if line.startswith("#")]
    assert any(f"notify-user: templates/notify.yaml (sha256 {notify.digest[:12]})" in h for h in header)
    assert first.text.startswith("# Expanded from w.yaml")


_TEXT = st.text() | st.text(alphabet=" \n\t\r\x85\ufeff\u2028ab:#-|>'\"{}[]&*!%@`,?")
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT
_DATA = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(_TEXT, c, max_size=4),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_TEXT, _DATA, max_size=4))
def test_the_expanded_text_reads_back_as_the_expanded_data(data: dict[str, Any]) -> None:
    assert yaml.safe_load(render_expanded(data, {}, file="f\nnewline.yaml")) == data


def test_a_changed_template_changes_the_expansion_not_what_was_registered() -> None:
    before = load_with_templates(WORKFLOW, templates(template()), file="w.yaml")
    changed = template(NOTIFY.replace("max_attempts: 5", "max_attempts: 7"))
    after = load_with_templates(WORKFLOW, templates(changed), file="w.yaml")
    assert canonical_digest(after.definition) != canonical_digest(before.definition)
    # The registered text of `before` does not refer to the template file: it still reads as it did.
    again = load_definition_source(before.text, file="registered")
    assert again.steps_by_name["hello"].retry_policy.max_attempts == 5


def test_a_definition_without_templates_is_kept_byte_for_byte_with_its_own_lines() -> None:
    text = SEED.read_text()
    assert "template:" in text  # a payload field named `template` is not a step template
    loaded = load_with_templates(text, templates(template()), file=str(SEED))
    assert loaded.text == text and not loaded.expanded and loaded.templates == ()
    assert loaded.definition == load_definition_source(text, file=str(SEED))
    broken = text.replace('depends_on: ["validate_input"]', 'depends_on: ["nope"]', 1)
    with pytest.raises(DefinitionError) as plain:
        load_definition_source(broken, file="s.yaml")
    with pytest.raises(DefinitionError) as templated:
        load_with_templates(broken, templates(template()), file="s.yaml")
    assert templated.value.problems == plain.value.problems


# -- files --------------------------------------------------------------------------------


def test_templates_are_read_from_a_directory_and_from_files_given(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(NOTIFY.replace("name: notify-user", "name: second"))
    (tmp_path / "a.yaml").write_text(NOTIFY)
    (tmp_path / "notes.txt").write_text("not yaml: [")
    given = tmp_path / "given.yaml"
    given.write_text(NOTIFY.replace("name: notify-user", "name: given"))
    found = collect_step_templates([(str(given), given.read_text()), (str(tmp_path / "a.yaml"), NOTIFY)], tmp_path)
    assert found.problems == []
    assert list(found.by_name) == ["given", "notify-user", "second"]  # a.yaml read once
    assert [f.given for f in found.files] == [True, True, False]


def test_a_templates_directory_holds_templates_only_and_names_are_unique(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NOTIFY)
    (tmp_path / "b.yaml").write_text(NOTIFY)
    (tmp_path / "c.yaml").write_text(SEED.read_text())
    found = collect_step_templates([], tmp_path)
    problems = [(Path(p.file).name, p.field, p.message) for p in found.problems]
    assert problems == [
        ("b.yaml", "metadata.name", f"step template 'notify-user' is also defined in {tmp_path / 'a.yaml'}: "
                                    "template names must be unique"),
        ("c.yaml", "kind", "not a step template (kind: Workflow): a templates directory holds StepTemplate "
                           "documents only"),
    ]


def test_load_definition_file_expands_templates(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(WORKFLOW)
    defn = load_definition_file(path, templates=templates(template()))
    assert defn.steps_by_name["bye"].config.endpoint == "/api/notifications/send"
    with pytest.raises(DefinitionError):
        load_definition_file(path)


# -- the command line (no Kafka) --------------------------------------------------------


@pytest.fixture
def cli_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("ORCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ORCH_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "notify.yaml").write_text(NOTIFY)
    (tmp_path / "w.yaml").write_text(WORKFLOW)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_validate_with_a_templates_directory(cli_files: Path) -> None:
    result = invoke("definitions", "validate", "--templates", "templates", "w.yaml")
    assert result.exit_code == 0, result.output
    assert "ok w.yaml: templated@1.10 (2 steps; step templates: notify-user)" in result.stdout


def test_validate_with_templates_from_the_environment_or_among_the_files(
        cli_files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke("definitions", "validate", "templates/notify.yaml", "w.yaml")
    assert result.exit_code == 0, result.output
    assert "ok templates/notify.yaml: step template notify-user" in result.stdout
    monkeypatch.setenv("ORCH_TEMPLATES", "templates")
    result = invoke("definitions", "validate", "--json", "w.yaml")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["files"][0]["step_templates"] == ["notify-user"]
    assert doc["templates"] == [{"file": str(Path("templates") / "notify.yaml"), "valid": True,
                                 "name": "notify-user", "description": "An e-mail through the notification service",
                                 "problems": []}]


def test_validate_without_the_templates_names_the_step(cli_files: Path) -> None:
    result = invoke("definitions", "validate", "w.yaml")
    assert result.exit_code == 1
    assert "w.yaml:13: step 'hello': template: unknown step template 'notify-user'" in result.stderr


def test_validate_reports_a_broken_template_file(cli_files: Path) -> None:
    (cli_files / "templates" / "notify.yaml").write_text(NOTIFY.replace("  on_failure:", "  name: x\n  on_failure:"))
    result = invoke("definitions", "validate", "--templates", "templates", "w.yaml")
    assert result.exit_code == 1
    assert "templates/notify.yaml:15: spec.name: a step template cannot set the step's name" in result.stderr
    assert "step 'hello': template: step template 'notify-user' cannot be used" in result.stderr


def test_a_templates_option_that_is_not_a_directory(cli_files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke("definitions", "validate", "--templates", "nowhere", "w.yaml")
    assert result.exit_code == 1 and "--templates nowhere: not a directory" in result.stderr
    monkeypatch.setenv("ORCH_TEMPLATES", "w.yaml")
    result = invoke("definitions", "validate", "w.yaml")
    assert result.exit_code == 1 and "ORCH_TEMPLATES w.yaml: not a directory" in result.stderr


def test_a_duplicate_key_in_a_templated_definition_is_still_reported() -> None:
    text = WORKFLOW.replace("      template: notify-user\n      on_failure", "      template: notify-user\n"
                            "      name: bye\n      on_failure")
    with pytest.raises(DefinitionError) as info:
        load_with_templates(text, templates(template()), file="w.yaml")
    [problem] = info.value.problems
    assert (problem.step, problem.field, problem.message) == ("bye", "name", "duplicate key 'name'")
    assert problem.line == text.splitlines().index("      name: bye") + 1
