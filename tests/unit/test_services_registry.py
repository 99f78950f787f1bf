"""The service registry (ORCH_SERVICES) and its circuit breaker."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.runtime.services import (
    BreakerConfig,
    CircuitBreaker,
    ServiceRegistry,
    ServiceRegistryError,
    UnknownServiceError,
    load_registry,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "services.yaml"
    path.write_text(text)
    return path


def test_loads_services_with_durations_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, """
services:
  user-service:
    base_url: http://127.0.0.1:8700/user-service/
    timeout: 10s
    connect_timeout: 500ms
    headers: {X-Team: core, Authorization: "Bearer {{ secrets.USER_TOKEN }}"}
    max_concurrency: 8
    breaker: {failure_threshold: 3, window: 1m, open_for: 5s, half_open_probes: 2}
  mail:
    base_url: https://mail.example.com
""")
    registry = ServiceRegistry.from_file(path)
    user = registry.get("user-service")
    assert user.base_url == "http://127.0.0.1:8700/user-service"
    assert (user.timeout_ms, user.connect_timeout_ms, user.max_concurrency) == (10_000, 500, 8)
    assert user.breaker == BreakerConfig(failure_threshold=3, window="1m", open_for="5s", half_open_probes=2)
    assert user.url("/api/users") == "http://127.0.0.1:8700/user-service/api/users"
    assert user.url("api/users") == "http://127.0.0.1:8700/user-service/api/users"
    mail = registry.get("mail")
    assert (mail.timeout_ms, mail.connect_timeout_ms, mail.headers, mail.breaker) == (30_000, 5_000, {}, None)
    assert registry.names() == ["mail", "user-service"]
    assert "mail" in registry and "nope" not in registry


def test_unregistered_service_is_a_clear_error() -> None:
    registry = ServiceRegistry.from_mapping({"services": {}})
    with pytest.raises(UnknownServiceError) as info:
        registry.get("billing")
    assert str(info.value) == "service 'billing' is not registered"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  a:\n    timeout: 10s\n", "service 'a': base_url: Field required"),
        ("  a:\n    base_url: ftp://x\n", "service 'a': base_url: Value error, base_url must be an http(s) URL"),
        ("  a:\n    base_url: http://x\n    timeout: 10 parsecs\n",
         "service 'a': timeout: Value error, not a duration"),
        ("  a:\n    base_url: http://x\n    retries: 3\n", "service 'a': retries: Extra inputs are not permitted"),
        ("  a:\n    base_url: http://x\n    breaker: {window: 0s}\n", "service 'a': breaker.window"),
        ("  a:\n    base_url: http://x\n    headers: {X-User: '{{ input.user }}'}\n",
         "service 'a': headers: Value error, header 'X-User': only {{ secrets.NAME }} templates are allowed"),
        ("  a: http://x\n", "service 'a': expected a mapping with base_url"),
    ],
)
def test_invalid_entries_name_the_file_and_the_service(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, "services:\n" + body)
    with pytest.raises(ServiceRegistryError) as info:
        ServiceRegistry.from_file(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_missing_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ServiceRegistryError, match=r"nope\.yaml: cannot read the service registry"):
        ServiceRegistry.from_file(tmp_path / "nope.yaml")
    with pytest.raises(ServiceRegistryError, match="not valid YAML"):
        ServiceRegistry.from_file(write(tmp_path, "services: [unclosed"))
    with pytest.raises(ServiceRegistryError, match="expected a mapping with a 'services' mapping"):
        ServiceRegistry.from_file(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ServiceRegistryError, match="unknown top-level keys"):
        ServiceRegistry.from_file(write(tmp_path, "services: {}\nextra: 1\n"))


def test_load_registry_from_settings(tmp_path: Path) -> None:
    assert load_registry(Settings()).names() == []
    path = write(tmp_path, "services:\n  a:\n    base_url: http://x\n")
    assert load_registry(Settings(services_file=path)).names() == ["a"]


def test_example_registry_loads() -> None:
    registry = ServiceRegistry.from_file(REPO / "examples" / "services.yaml")
    assert {"user-service", "profile-service", "notification-service", "noop-service"} <= set(registry.names())
    assert registry.get("user-service").base_url == "http://127.0.0.1:8700/user-service"


def test_runtime_guards_exist_only_when_configured() -> None:
    registry = ServiceRegistry.from_mapping({"services": {
        "a": {"base_url": "http://a", "max_concurrency": 2, "breaker": {"failure_threshold": 2}},
        "b": {"base_url": "http://b"},
    }})
    assert registry.limiter("b") is None and registry.breaker("b") is None
    assert registry.limiter("a") is registry.limiter("a")
    assert registry.breaker("a") is registry.breaker("a")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=3, window="10s", open_for="5s", half_open_probes=1),
                             clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record(False)
    clock.now += 11  # the first failures left the window
    breaker.record(False)
    assert breaker.state == "closed"
    breaker.record(False)
    breaker.record(False)
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 5
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.record(False)  # the probe failed: open again
    assert breaker.state == "open"
    clock.now += 5
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state == "closed" and breaker.allow()


def test_breaker_probe_without_verdict_is_released() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, open_for="1s"), clock)
    breaker.record(False)
    clock.now += 1
    assert breaker.allow() and not breaker.allow()
    breaker.release_probe()
    assert breaker.allow()
