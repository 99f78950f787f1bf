"""Schemathesis against the API's own OpenAPI document: generated requests (valid and not) to
every operation, with an operator key, on the app wired to the real Kafka and PostgreSQL of the
`engine` fixture (decider, executor, projector running). No response may be a server error, and
every response must match the document (status code documented, body schema)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from orchestrator.api.app import create_app
from orchestrator.api.auth import ApiKey, KeyRing, hash_key
from orchestrator.api.context import ApiContext
from orchestrator.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

OPS = {"X-API-Key": "fuzz-key"}
WAITING = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: fuzz-wait, version: "1"}
spec:
  steps:
    - name: approved
      type: wait_for_event
      config: {signal: approve, timeout: 10m}
"""


KEYS = KeyRing([ApiKey("fuzz", "operator", hash_key("fuzz-key"))])
# The document does not depend on where the app sends and reads: load it now (schemathesis parametrizes
# at collection; its lazy `from_fixture` relies on a pytest internal that pytest 9 removed), and wire
# the app to the engine's Kafka topics and PostgreSQL schema in the fixture below.
app = create_app(Settings(), KEYS)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def wired(engine):
    from fastapi.testclient import TestClient

    app.state.context = ApiContext(engine.settings, KEYS, schema=engine.schema)
    client = TestClient(app)
    assert client.post("/api/v1/definitions", headers=OPS,
                       json={"files": [{"name": "w.yaml", "text": WAITING}]}).status_code == 200
    for i in range(3):  # something to list, filter and act on
        response = client.post("/api/v1/executions", headers=OPS, json={"workflow": "fuzz-wait", "input": {"n": i}})
        assert response.status_code == 202, response.text
        engine.execution_ids.append(response.json()["execution_id"])
    yield
    app.state.context.close()


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors_and_responses_match_the_document(case) -> None:
    case.call_and_validate(headers=OPS, checks=[not_a_server_error, status_code_conformance,
                                                response_schema_conformance])
