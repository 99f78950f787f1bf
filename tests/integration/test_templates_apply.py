"""`orchestrator definitions apply` with step templates, against the real broker: the
registered source is the expanded definition, and a template changed later does not change
what was registered (re-applying with it is a conflict of content)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.cli.kafka_io import read_definitions
from orchestrator.core.loading import canonical_digest, load_definition_source

pytestmark = pytest.mark.integration

TEMPLATE = textwrap.dedent("""\
    apiVersion: workflow/v1
    kind: StepTemplate
    metadata: {name: user-call, description: a call to the user service}
    spec:
      type: service_call
      config: {service: user-service, method: POST}
      retry_policy: {max_attempts: 4, backoff: fixed, initial_delay: 1s}
    """)

WORKFLOW = textwrap.dedent("""\
    # the author's comment
    apiVersion: workflow/v1
    kind: Workflow
    metadata: {name: templated-apply, version: "1"}
    spec:
      steps:
        - name: create
          template: user-call
          config: {endpoint: /api/users, payload: {username: ada, email: ada@example.com}}
    """)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_apply_registers_the_expanded_source_and_a_later_template_change_conflicts(cli_env, tmp_path: Path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "user-call.yaml").write_text(TEMPLATE)
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)

    first = invoke("definitions", "apply", "--json", "--templates", str(templates), str(workflow))
    assert first.exit_code == 0, first.output
    [row] = json.loads(first.stdout)["definitions"]
    assert (row["name"], row["result"], row["step_templates"]) == ("templated-apply", "registered", ["user-call"])

    [registered] = [d for d, _ in read_definitions(cli_env)]
    assert registered.source_format == "yaml" and registered.digest == row["digest"]
    assert registered.source != WORKFLOW and "template:" not in registered.source
    assert f"user-call: {templates / 'user-call.yaml'}" in registered.source.split("apiVersion")[0]
    step = yaml.safe_load(registered.source)["spec"]["steps"][0]
    assert step["config"] == {"service": "user-service", "method": "POST", "endpoint": "/api/users",
                              "payload": {"username": "ada", "email": "ada@example.com"}}
    defn = load_definition_source(registered.source, file="registered")  # no template needed to read it
    assert canonical_digest(defn) == registered.digest

    again = invoke("definitions", "apply", "--json", "--templates", str(templates), str(workflow))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["definitions"][0]["result"] == "unchanged"

    # The team changes the template: what was registered stays as it was, and re-applying the
    # same name@version with the new expansion is refused as other content.
    (templates / "user-call.yaml").write_text(TEMPLATE.replace("max_attempts: 4", "max_attempts: 9"))
    refused = invoke("definitions", "apply", "--templates", str(templates), str(workflow))
    assert refused.exit_code == 1
    assert "templated-apply@1 is already registered with other content" in refused.stderr
    [still] = [d for d, _ in read_definitions(cli_env)]
    assert still.source == registered.source and still.digest == registered.digest
    assert load_definition_source(still.source, file="r").spec.steps[0].retry_policy.max_attempts == 4


def test_a_definition_without_templates_is_registered_as_written(cli_env, tmp_path: Path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "user-call.yaml").write_text(TEMPLATE)
    plain = tmp_path / "plain.yaml"
    plain.write_text(WORKFLOW.replace("      template: user-call\n", "      type: service_call\n")
                     .replace("config: {endpoint", "config: {service: user-service, endpoint"))
    result = invoke("definitions", "apply", "--json", "--templates", str(templates), str(plain))
    assert result.exit_code == 0, result.output
    assert "step_templates" not in json.loads(result.stdout)["definitions"][0]
    [registered] = [d for d, _ in read_definitions(cli_env)]
    assert registered.source == plain.read_text()
