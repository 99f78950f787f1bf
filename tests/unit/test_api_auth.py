"""API keys: the keys file, `orchestrator api keys new`, and who may call what (no services needed:
authentication and role checks answer before any route touches Kafka or PostgreSQL)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.api.auth import ApiKey, KeyFileError, KeyRing, hash_key, load_key_ring, new_key, read_key_file
from orchestrator.cli import cli
from orchestrator.config import Settings

DEAD = Settings(kafka_bootstrap="127.0.0.1:1", database_url="postgresql://nobody:nothing@127.0.0.1:1/nowhere")


def ring() -> KeyRing:
    return KeyRing([ApiKey("ops", "operator", hash_key("op-key")), ApiKey("viewer", "reader", hash_key("rd-key")),
                    ApiKey("hook", "webhook", hash_key("wh-key"))])


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(DEAD, ring(), pool_wait_s=0.5, kafka_timeout_s=1))


def test_a_key_is_found_by_its_hash_only() -> None:
    keys = ring()
    assert keys.authenticate("op-key").name == "ops"
    assert keys.authenticate("rd-key").who == "api:viewer"
    assert keys.authenticate("op-key ") is None and keys.authenticate("") is None


def test_keys_new_appends_a_hash_and_prints_the_key_once(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    first = CliRunner().invoke(cli, ["api", "keys", "new", "alice", "--role", "operator", "--file", str(path)])
    assert first.exit_code == 0, first.output
    key = first.stdout.strip()
    assert key.startswith("orch_") and len(key) > 40
    assert key not in path.read_text()  # only the hash is stored
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = CliRunner().invoke(cli, ["api", "keys", "new", "bob", "--role", "reader", "--file", str(path)])
    assert second.exit_code == 0
    entries = yaml.safe_load(path.read_text())["keys"]
    assert [(e["name"], e["role"]) for e in entries] == [("alice", "operator"), ("bob", "reader")]
    assert entries[0]["sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert load_key_ring({"ORCH_API_KEYS": str(path)}).authenticate(key).name == "alice"

    again = CliRunner().invoke(cli, ["api", "keys", "new", "alice", "--role", "reader", "--file", str(path)])
    assert again.exit_code == 1 and "exists already" in again.stderr
    bad_role = CliRunner().invoke(cli, ["api", "keys", "new", "carol", "--role", "admin", "--file", str(path)])
    assert bad_role.exit_code == 2


def test_the_server_refuses_to_start_without_keys_and_says_how_to_make_one(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ORCH_API_KEYS", raising=False)
    result = CliRunner().invoke(cli, ["api"])
    assert result.exit_code == 1
    assert "no API keys configured" in result.stderr and "orchestrator api keys new" in result.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text("keys: []\n")
    monkeypatch.setenv("ORCH_API_KEYS", str(empty))
    result = CliRunner().invoke(cli, ["api"])
    assert result.exit_code == 1 and "no keys in the file" in result.stderr


@pytest.mark.parametrize("text, message", [
    ("keys: {alice: 1}", "expected `keys:`"),
    ("keys: [{name: a, role: admin, sha256: " + "a" * 64 + "}]", "role: one of reader, operator, webhook"),
    ("keys: [{name: a, role: reader, sha256: abc}]", "sha256"),
    ("keys: [{name: a, role: reader, sha256: " + "a" * 64 + "}, {name: a, role: reader, sha256: " + "b" * 64 + "}]",
     "used twice"),
    ("keys: [oops", "not valid YAML"),
])
def test_a_broken_keys_file_names_the_file_and_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeyFileError, match=message) as caught:
        read_key_file(path)
    assert str(path) in str(caught.value)


def test_new_key_refuses_a_bad_name(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="name"):
        new_key(tmp_path / "k.yaml", "no spaces please", "reader")


def test_requests_without_a_known_key_are_401(client: TestClient) -> None:
    for headers in ({}, {"X-API-Key": "nope"}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic op-key"}):
        response = client.get("/api/v1/executions", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("method, path", [
    ("post", "/api/v1/executions"), ("post", "/api/v1/executions/x/cancel"), ("post", "/api/v1/executions/x/retry"),
    ("post", "/api/v1/executions/x/pause"), ("post", "/api/v1/definitions"), ("post", "/api/v1/bulk/cancel"),
    ("post", "/api/v1/events"), ("post", "/api/v1/definitions/validate"),
])
def test_a_reader_key_cannot_write(client: TestClient, method: str, path: str) -> None:
    response = client.request(method.upper(), path, headers={"X-API-Key": "rd-key"}, json={"workflow": "w"})
    assert response.status_code == 403
    assert response.json()["error"] == {"code": "forbidden",
                                        "message": "key 'viewer' has role reader; this needs operator"}


def test_a_webhook_key_may_only_call_webhooks(client: TestClient) -> None:
    for method, path in (("GET", "/api/v1/executions"), ("POST", "/api/v1/executions"),
                         ("GET", "/api/v1/definitions")):
        response = client.request(method, path, headers={"Authorization": "Bearer wh-key"}, json={"workflow": "w"})
        assert response.status_code == 403, path
    # Past the role check, the route needs PostgreSQL: which is out of reach here (503, not 403).
    response = client.post("/api/v1/webhooks/orders", headers={"Authorization": "Bearer wh-key"}, json={"a": 1})
    assert response.status_code == 503, response.text


def test_unauthenticated_routes(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/console/"
    client.get("/api/v1/executions/some-id")  # 401: counted under its route template, not its path
    metrics = client.get("/metrics", follow_redirects=False)
    assert metrics.status_code == 200
    assert ('orchestrator_api_requests_total{method="GET",route="/api/v1/executions/{execution_id}",status="401"}'
            in metrics.text)
