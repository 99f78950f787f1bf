"""Definition loading and whole-definition checks: every problem names file, step and field."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from orchestrator.core.definition import WorkflowDefinition
from orchestrator.core.loading import DefinitionError, canonical_digest, load_definition_source, parse_definition
from orchestrator.core.validation import Problem, check_definition
from orchestrator.definitions_io import load_definition_file

from tests.seed import SEED
SERVICES = {"user-service", "profile-service", "notification-service"}

HEAD = """\
apiVersion: workflow/v1
kind: Workflow
metadata: {name: wf, version: "1"}
spec:
  input:
    schema:
      type: object
      properties: {username: {type: string}, email: {type: string}}
"""


def problems(body: str, *, services: set[str] | None = None, file: str = "wf.yaml") -> list[Problem]:
    """Problems of HEAD + `body` (indented under spec); [] when it loads."""
    text = HEAD + textwrap.indent(textwrap.dedent(body), "  ")
    try:
        load_definition_source(text, file=file, known_services=services)
    except DefinitionError as exc:
        assert exc.problems, "a DefinitionError always lists its problems"
        return exc.problems
    return []


def only(body: str, **kwargs: object) -> Problem:
    found = problems(body, **kwargs)  # type: ignore[arg-type]
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def call(name: str, extra: str = "", service: str = "svc", payload: str = "{}") -> str:
    text = f"  - name: {name}\n    type: service_call\n    config: {{service: {service}, endpoint: /x, payload: {payload}}}\n"
    return text + (textwrap.indent(textwrap.dedent(extra).strip(), "    ") + "\n" if extra else "")


def test_seed_validates_cleanly() -> None:
    text = SEED.read_text()
    defn = load_definition_source(text, file=SEED.name, known_services=SERVICES)
    assert check_definition(defn, file=SEED.name, known_services=SERVICES) == []
    assert check_definition(defn, file=SEED.name) == []
    assert defn.key == "user-registration-workflow@1.2.0"
    assert load_definition_file(SEED, known_services=SERVICES) == defn


def test_problem_str_names_file_step_field() -> None:
    p = only("steps:\n" + call("create_user_account", service="x"), services={"svc"})
    assert (p.file, p.step, p.field) == ("wf.yaml", "create_user_account", "config.service")
    assert p.line == 12
    assert str(p) == "wf.yaml:12: step 'create_user_account': config.service: unknown service 'x'"
    assert str(Problem("user.yaml", "s", "f", "m")) == "user.yaml: step 's': f: m"


def test_parse_errors_name_the_step() -> None:
    body = "steps:\n" + call("a") + "  - name: b\n    type: servce_call\n    config: {nonsense: 1}\n"
    p = only(body)
    assert (p.step, p.field) == ("b", "type")
    assert p.message == "unknown step type 'servce_call' (expected one of service_call, validation, wait_for_event, delay, switch, loop, for_each, workflow)"
    p = only("steps:\n" + call("a", "depend_on: [x]"))
    assert (p.step, p.field, p.message) == ("a", "depend_on", "unknown field 'depend_on' (did you mean 'depends_on'?)")
    found = {(q.step, q.field, q.message) for q in problems("steps:\n  - name: a\n    type: service_call\n    config: {endpont: /x}\n")}
    assert found == {
        ("a", "config.service", "missing required field 'service'"),
        ("a", "config.endpont", "unknown field 'endpont' (did you mean 'endpoint'?)"),
    }
    p = only("config: {timeout: soon}\nsteps:\n" + call("a"))
    assert (p.step, p.field) == (None, "spec.config.timeout") and "not a duration" in p.message


def test_parse_definition_converts_locations() -> None:
    data = yaml.safe_load(SEED.read_text())
    data["spec"]["steps"][1]["config"]["service"] = 5
    with pytest.raises(DefinitionError) as info:
        parse_definition(data, file="user.yaml")
    (p,) = info.value.problems
    assert (p.file, p.step, p.field) == ("user.yaml", "create_user_account", "config.service")
    with pytest.raises(DefinitionError, match="must be a mapping"):
        parse_definition([], file="x")  # type: ignore[arg-type]


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(DefinitionError) as info:
        load_definition_source("apiVersion: workflow/v1\nkind: [Workflow\nspec: 1\n", file="bad.yaml")
    (p,) = info.value.problems
    assert p.line == 3 and p.message.startswith("invalid YAML") and str(p).startswith("bad.yaml:3: ")


def test_a_control_character_is_a_yaml_problem_not_a_crash() -> None:
    with pytest.raises(DefinitionError) as info:
        load_definition_source("apiVersion: workflow/v1\nkind: Work\x07flow\n", file="bell.yaml")
    (p,) = info.value.problems
    assert p.message.startswith("invalid YAML: unacceptable character #x0007") and "\n" not in p.message


def test_duplicate_yaml_keys_and_version_text() -> None:
    p = only("steps:\n" + call("a", "name: b"))
    assert (p.step, p.field, p.message) == ("b", "name", "duplicate key 'name'")
    defn = load_definition_source(HEAD.replace('version: "1"', "version: 1.10") + "  steps:\n" + call("a"), file="f")
    assert defn.version == "1.10"


def test_duplicate_step_names() -> None:
    body = "steps:\n" + call("a") + call("a") + "compensation:\n  steps:\n" + call("c") + call("c") + call("a")
    found = {(p.step, p.message) for p in problems(body)}
    assert found == {
        ("a", "duplicate step name 'a'"),
        ("c", "duplicate compensation step name 'c'"),
        ("a", "compensation step name 'a' is also a main step"),
    }


def test_unknown_dependency_and_cycles() -> None:
    p = only("steps:\n" + call("a", "depends_on: [b]") + call("bb", "depends_on: []"))
    assert (p.step, p.field, p.message) == ("a", "depends_on", "unknown step 'b' (did you mean 'bb'?)")
    body = "steps:\n" + call("a", "depends_on: [c]") + call("b", "depends_on: [a]") + call("c", "depends_on: [b]")
    p = only(body)
    assert p.field == "depends_on" and "dependency cycle: a -> c -> b -> a" in p.message


def test_template_step_references() -> None:
    out = "output: {id: '{{ response.id }}'}"
    ref_a = "'{{ steps.a.output.id }}'"
    # b and c both follow a (parallel run); c reads b, which may not have run yet.
    body = "steps:\n" + call("a", out) + call("b", "parallel: true") + call("c", "parallel: true", payload="{x: '{{ steps.b.output.id }}'}")
    p = only(body)
    assert (p.step, p.field) == ("c", "config.payload.x")
    assert "step 'b' is not upstream of 'c'" in p.message
    assert problems("steps:\n" + call("a", out) + call("b", payload=f"{{x: {ref_a}}}")) == []
    p = only("steps:\n" + call("a", payload="{x: '{{ steps.ghost.output }}'}"))
    assert "unknown step 'ghost'" in p.message
    p = only("steps:\n" + call("a") + call("b", "condition: steps.a.outptu"))
    assert (p.field, p.message.split(" (")[0]) == ("condition", "steps.a has no field 'outptu'")


def test_compensation_and_wait_filters_may_reference_upstream_steps() -> None:
    body = (
        "steps:\n" + call("a", "output: {id: '{{ response.id }}'}")
        + "  - name: w\n    type: wait_for_event\n    config: {event_type: e, timeout: 1h, filter: {id: '{{ steps.a.output.id }}'}}\n"
        + "    output: {v: '{{ event.v }}'}\n"
        + call("z", "depends_on: []")
        + "compensation:\n  steps:\n"
        + call("undo_a", "condition: '{{ steps.a.completed and steps.z.completed }}'")
        + call("undo_b", payload="{x: '{{ steps.undo_a.status }}'}")
    )
    assert problems(body) == []
    bad = "steps:\n" + call("a") + "compensation:\n  steps:\n" + call("u1", payload="{x: '{{ steps.u2.status }}'}") + call("u2")
    assert "has not run yet" in only(bad).message


def test_input_response_secrets_functions() -> None:
    p = only("steps:\n" + call("a", payload="{u: '{{ input.usernme }}'}"))
    assert p.message == "input has no property 'usernme' (did you mean 'username'?)"
    p = only("steps:\n" + call("a", payload="{u: '{{ response.id }}'}"))
    assert p.message == "'response' is only available in a step's output mapping"
    p = only("steps:\n" + call("a", "condition: '{{ secrets.TOKEN }}'"))
    assert "'secrets' are only available" in p.message and p.field == "condition"
    assert problems("steps:\n" + call("a", payload="{h: '{{ hash(input.username) }}', t: '{{ secrets.T }}'}")) == []
    p = only("steps:\n" + call("a", "output: {h: '{{ hash(response.x) }}'}"))
    assert p.field == "output.h" and p.message.startswith("hash() is only available")
    p = only("steps:\n" + call("a", payload="{h: '{{ hsah(input.username) }}'}"))
    assert p.message.startswith("unknown function 'hsah' (did you mean 'hash'?)")
    p = only("steps:\n" + call("a", payload="{h: '{{ inptu.username }}'}"))
    assert p.message.startswith("unknown name 'inptu' (did you mean 'input'?)")
    p = only("output:\n  mapping: {id: '{{ response.id }}'}\nsteps:\n" + call("a"))
    assert (p.step, p.field) == (None, "spec.output.mapping.id")


def test_template_syntax_errors() -> None:
    p = only("steps:\n" + call("a", payload="{x: '{{ input.username '}"))
    assert (p.step, p.field) == ("a", "config.payload.x") and p.message.startswith("syntax error")
    p = only("steps:\n" + call("a", payload="{x: '{% for i in range(3) %}{% endfor %}'}"))
    assert "not allowed" in p.message


def test_invalid_json_schemas() -> None:
    text = HEAD.replace("{type: string}, email", "{type: strin}, email") + "  steps:\n" + call("a")
    with pytest.raises(DefinitionError) as info:
        load_definition_source(text, file="s.yaml")
    (p,) = info.value.problems
    assert p.field == "spec.input.schema.properties.username.type" and "invalid JSON Schema" in p.message
    p = only("output:\n  schema: {type: object, required: id}\nsteps:\n" + call("a"))
    assert p.field == "spec.output.schema.required"


def test_validation_rules() -> None:
    def step(rules: str) -> str:
        return f"steps:\n  - name: v\n    type: validation\n    config:\n      validation_rules: {rules}\n"

    assert problems(step("[{field: email, rule: email}, {field: username, rule: min_length, value: 3}]")) == []
    assert problems(step("[{field: email, rule: unique_email, service: users}]"), services={"users"}) == []
    p = only(step("[{field: email, rule: unique_email}]"))
    assert p.field == "config.validation_rules[0].rule" and "unknown rule 'unique_email'" in p.message
    p = only(step("[{field: email, rule: regex, value: '[a-'}]"))
    assert p.field == "config.validation_rules[0].value" and "invalid regular expression" in p.message
    p = only(step("[{field: email, rule: unique_email, service: usrs}]"), services={"users"})
    assert p.message == "unknown service 'usrs' (did you mean 'users'?)"
    p = only(step("[{field: mail, rule: email}]"))
    assert p.field == "config.validation_rules[0].field"


def test_wait_for_event_and_actions() -> None:
    p = only("steps:\n  - name: w\n    type: wait_for_event\n    config: {timeout: 1h}\n")
    assert (p.step, p.field) == ("w", "config") and "event_type or a signal" in p.message
    p = only("steps:\n  - name: w\n    type: wait_for_event\n    config: {event_type: e, signal: s}\n")
    assert (p.step, p.field) == ("w", "config") and "not both" in p.message
    p = only("steps:\n  - name: w\n    type: wait_for_event\n    config: {signal: s, filter: {a: 1}}\n")
    assert p.field == "config.filter" and "signal wait has no filter" in p.message
    p = only("steps:\n" + call("a", "on_failure: {action: compensate}"))
    assert p.field == "on_failure.action" and "no compensation" in p.message
    assert problems("steps:\n" + call("a", "on_failure: {action: compensate, compensation_workflow: undo}")) == []
    body = "steps:\n" + call("a", "on_failure: {action: compensate}") + "compensation:\n  steps:\n" + call("u")
    assert problems(body) == []


def test_all_problems_at_once() -> None:
    body = "steps:\n" + call("a", "depends_on: [nope]", service="x") + call("a", payload="{x: '{{ input.zz }}'}")
    assert len(problems(body, services={"svc"})) == 4


def test_canonical_digest_ignores_formatting() -> None:
    defn = load_definition_source(SEED.read_text(), file="s.yaml")
    as_json = json.dumps(yaml.safe_load(SEED.read_text()), indent=1)
    again = load_definition_source(as_json, file="s.json")
    assert canonical_digest(again) == canonical_digest(defn)
    dumped = defn.model_dump(mode="json", by_alias=True)
    assert dumped["spec"]["config"]["timeout"] == "30m"  # durations round-trip in the language's form
    assert WorkflowDefinition.model_validate(dumped) == defn
    changed = load_definition_source(SEED.read_text().replace('timeout: "30m"', 'timeout: "31m"'), file="s.yaml")
    assert canonical_digest(changed) != canonical_digest(defn)


def test_model_copy_refreshes_cached_properties() -> None:
    defn = load_definition_source(SEED.read_text(), file="s.yaml")
    assert len(defn.dependencies) == 7
    fewer = defn.model_copy(update={"spec": defn.spec.model_copy(update={"steps": defn.spec.steps[:2]})})
    assert list(fewer.dependencies) == ["validate_input", "create_user_account"]
    assert set(fewer.steps_by_name) == {"validate_input", "create_user_account"}


def test_load_definition_file_reports_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError) as info:
        load_definition_file(tmp_path / "missing.yaml")
    assert str(info.value).startswith(str(tmp_path / "missing.yaml") + ": cannot read the file")


def test_hostile_or_odd_sources() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcde", "bcdef")
    )
    with pytest.raises(DefinitionError, match="expands to more than"):
        load_definition_source(bomb, file="bomb.yaml")
    with pytest.raises(DefinitionError, match="the document is empty"):
        load_definition_source("# nothing\n", file="e.yaml")
    seed_json = json.dumps(yaml.safe_load(SEED.read_text()))
    with pytest.raises(DefinitionError) as info:
        load_definition_source(seed_json.replace('"kind": "Workflow"', '"kind": "Workflow", "kind": "Workflow"'), file="s.json")
    assert [str(p) for p in info.value.problems] == ["s.json: kind: duplicate key 'kind'"]
    p = only("output:\n  schema: {$schema: 'http://example.com/s', type: object}\nsteps:\n" + call("a"))
    assert p.field == "spec.output.schema.$schema" and "unknown JSON Schema dialect" in p.message


def test_the_repositorys_seed_is_the_shared_one_as_written():
    from tests.seed import SHARED_SEED

    if not SHARED_SEED.exists():
        pytest.skip("shared/ is not beside this checkout")
    assert SEED.read_bytes() == SHARED_SEED.read_bytes()
