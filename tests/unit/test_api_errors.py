"""The API's error documents, its OpenAPI document and the offline definition checks,
without Kafka or PostgreSQL (their addresses point at port 1: nothing listens)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.api.auth import ApiKey, KeyRing, hash_key
from orchestrator.cli import cli
from orchestrator.config import Settings

from tests.seed import SEED

DEAD = Settings(kafka_bootstrap="127.0.0.1:1", database_url="postgresql://nobody:nothing@127.0.0.1:1/nowhere")
OPS = {"X-API-Key": "op-key"}

TEMPLATE = textwrap.dedent("""\
    apiVersion: workflow/v1
    kind: StepTemplate
    metadata: {name: notify-user}
    spec:
      type: service_call
      config: {service: notification-service, endpoint: /api/emails/send, method: POST}
    """)
USES_TEMPLATE = textwrap.dedent("""\
    apiVersion: workflow/v1
    kind: Workflow
    metadata: {name: templated, version: "1"}
    spec:
      steps:
        - name: welcome
          template: notify-user
          config: {payload: {to: someone}}
        - name: goodbye
          template: notify-usr
    """)


@pytest.fixture(scope="module")
def app():
    return create_app(DEAD, KeyRing([ApiKey("ops", "operator", hash_key("op-key"))]), pool_wait_s=0.5,
                      kafka_timeout_s=1)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app)


def test_validation_errors_list_each_field_location(client: TestClient) -> None:
    response = client.post("/api/v1/executions", headers=OPS, json={"version": 3, "execution_id": "a b"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["message"].startswith("invalid request: ")
    locations = {tuple(d["location"]) for d in error["details"]}
    assert {("body", "workflow"), ("body", "version"), ("body", "execution_id")} <= locations
    assert client.get("/api/v1/executions", headers=OPS, params={"limit": 0}).json()["error"]["details"][0][
        "location"] == ["query", "limit"]
    not_json = client.post("/api/v1/events", headers={**OPS, "Content-Type": "application/json"}, content=b"{oops")
    assert not_json.status_code == 422 and not_json.json()["error"]["code"] == "invalid"


def test_unknown_routes_and_methods(client: TestClient) -> None:
    assert client.get("/api/v1/nothing", headers=OPS).json() == {
        "error": {"code": "not_found", "message": "no such route: GET /api/v1/nothing"}}
    response = client.put("/api/v1/executions", headers=OPS)
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_postgres_out_of_reach_is_503(client: TestClient) -> None:
    for path in ("/api/v1/executions", "/api/v1/executions/x", "/api/v1/definitions"):
        response = client.get(path, headers=OPS)
        assert response.status_code == 503, path
        assert response.json()["error"]["code"] == "unavailable"
        assert "PostgreSQL" in response.json()["error"]["message"]


def test_kafka_out_of_reach_is_503(client: TestClient) -> None:
    response = client.post("/api/v1/events", headers=OPS, json={"type": "user.created", "data": {"id": 1}})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "unavailable" and error["message"].startswith("Kafka: ")


def test_an_unexpected_exception_is_a_500_without_a_traceback_and_is_logged(app) -> None:
    from structlog.testing import capture_logs

    @app.get("/boom-for-test", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("secret internals at line 42")

    with capture_logs() as logs:
        response = TestClient(app).get("/boom-for-test")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal"
    assert "secret internals" not in error["message"] and "Traceback" not in error["message"]
    [logged] = [entry for entry in logs if entry["event"] == "api_internal_error"]
    assert logged["path"] == "/boom-for-test" and isinstance(logged["exc_info"], RuntimeError)
    assert logged["reference"] in error["message"]


def test_the_openapi_document_describes_security_and_errors(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "`X-API-Key: <key>`"}}
    operations = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()
                  if path.startswith("/api/v1/")]
    assert len(operations) >= 18
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert op.get("summary"), where
        assert op["security"] == [{"bearer": []}, {"apiKey": []}], where
        for status in ("401", "403", "422", "500", "503"):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (where, status)
        ok = [s for s in op["responses"] if s.startswith("2")]
        assert ok and all("content" in op["responses"][s] for s in ok), where
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "security" not in doc["paths"]["/healthz"]["get"]


def test_validate_answers_what_the_cli_prints(client: TestClient, tmp_path: Path) -> None:
    files = {"seed.yaml": SEED.read_text(), "notify.yaml": TEMPLATE, "templated.yaml": USES_TEMPLATE}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    response = client.post("/api/v1/definitions/validate", headers=OPS,
                           json={"files": [{"name": name, "text": text} for name, text in files.items()]})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["ok"] is False
    seed, templated = doc["definitions"]
    assert (seed["name"], seed["valid"], seed["problems"]) == ("user-registration-workflow", True, [])
    assert templated["valid"] is False
    [problem] = templated["problems"]
    assert (problem["file"], problem["step"], problem["field"]) == ("templated.yaml", "goodbye", "template")
    assert "did you mean 'notify-user'" in problem["message"]
    assert [t["name"] for t in doc["templates"]] == ["notify-user"]

    result = CliRunner().invoke(cli, ["definitions", "validate", "--json", *(str(tmp_path / n) for n in files)])
    printed = json.loads(result.stdout)
    strip = lambda rows: [{**r, "file": Path(r["file"]).name,  # noqa: E731
                           "problems": [{**p, "file": Path(p["file"]).name} for p in r["problems"]]} for r in rows]
    assert strip(printed["files"]) == doc["definitions"]
    assert strip(printed["templates"]) == doc["templates"]


def test_apply_of_an_invalid_definition_is_422_with_every_problem(client: TestClient) -> None:
    response = client.post("/api/v1/definitions", headers=OPS,
                           json={"files": [{"name": "templated.yaml", "text": USES_TEMPLATE}]})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["message"].startswith("nothing applied: 2 problems")  # both steps name an unknown template
    assert {p["step"] for p in error["details"]} == {"welcome", "goodbye"}
    twice = client.post("/api/v1/definitions/validate", headers=OPS,
                        json={"files": [{"name": "a.yaml", "text": "x"}, {"name": "a.yaml", "text": "y"}]})
    assert twice.status_code == 422 and "given twice: a.yaml" in twice.json()["error"]["message"]


@pytest.mark.parametrize("body, where", [
    ({"type": "t", "data": {"name": "a\u0000b"}}, "body.data.name: contains a NUL character"),
    ({"type": "t", "data": {"\ud800": {"x": "\u0000"}}}, "body.data.\\ud800.x: contains a NUL character"),
    ({"type": "t", "data": ["ok", "\udc00"]}, "body.data[1]: not valid Unicode"),
    ({"type": "t", "data": {"n": float("nan")}}, "body.data.n: not a finite number"),
])
def test_text_the_projection_cannot_store_is_refused_before_anything_is_sent(client: TestClient, body: dict,
                                                                             where: str) -> None:
    import json as json_module

    raw = json_module.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    response = client.post("/api/v1/events", headers={**OPS, "Content-Type": "application/json"}, content=raw)
    assert response.status_code == 422, response.text  # not 503: Kafka (out of reach here) was never asked
    assert response.json()["error"]["message"].startswith(where)
    assert client.get("/api/v1/executions/a%00b", headers=OPS).status_code == 422
