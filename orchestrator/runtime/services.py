"""The service registry (`ORCH_SERVICES`): which services a step may call.

```yaml
services:
  user-service:
    base_url: http://127.0.0.1:8700/user-service
    timeout: 10s            # one request, default 30s (also bounded by the task's deadline)
    connect_timeout: 2s     # default 5s
    headers:
      Authorization: "Bearer {{ secrets.USER_SERVICE_TOKEN }}"   # ORCH_SECRET_USER_SERVICE_TOKEN
    max_concurrency: 16     # optional: concurrent requests from one executor
    breaker:                # optional circuit breaker, per executor process
      failure_threshold: 5  # transient failures within `window` that open it
      window: 30s
      open_for: 15s         # then half-open: `half_open_probes` trial requests
      half_open_probes: 1
```

A `service_call` (or a validation rule with `service`) can reach only the
services listed here; anything else is a permanent failure
"service 'x' is not registered". The registry also carries the executor's
per-service runtime guards (concurrency limiter, circuit breaker).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.core.durations import format_duration_ms, parse_duration_ms

__all__ = [
    "BreakerConfig",
    "ServiceConfig",
    "ServiceRegistry",
    "ServiceRegistryError",
    "UnknownServiceError",
    "CircuitBreaker",
    "BreakerTransition",
    "Permit",
    "load_registry",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SECRET_REF = re.compile(r"\{\{\s*secrets\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}")


class ServiceRegistryError(ValueError):
    """The registry file is missing or invalid; the message names the file and service."""


class UnknownServiceError(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"service {name!r} is not registered")
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _ms(value: Any) -> Any:
    return parse_duration_ms(value) if isinstance(value, (str, int, float)) else value


class BreakerConfig(_Model):
    failure_threshold: int = Field(5, ge=1)
    window_ms: int = Field(30_000, alias="window", gt=0)
    open_for_ms: int = Field(15_000, alias="open_for", gt=0)
    half_open_probes: int = Field(1, ge=1)

    @field_validator("window_ms", "open_for_ms", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return _ms(value)


class ServiceConfig(_Model):
    name: str
    base_url: str
    timeout_ms: int = Field(30_000, alias="timeout", gt=0)
    connect_timeout_ms: int = Field(5_000, alias="connect_timeout", gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int | None = Field(None, ge=1)
    breaker: BreakerConfig | None = None

    @field_validator("timeout_ms", "connect_timeout_ms", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return _ms(value)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"base_url must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            rest = _SECRET_REF.sub("", text)
            if "{{" in rest or "{%" in rest:
                raise ValueError(f"header {key!r}: only {{{{ secrets.NAME }}}} templates are allowed")
        return value

    def url(self, endpoint: str) -> str:
        return self.base_url + "/" + endpoint.lstrip("/")


@dataclass(frozen=True)
class Permit:
    """A call the breaker let through. Hand it back to `record`/`release_probe`:
    a verdict of a call admitted under an earlier state (e.g. a request that was
    in flight when the breaker opened) is ignored."""

    generation: int
    probe: bool = False


@dataclass(frozen=True)
class BreakerTransition:
    """One state change, as passed to a breaker's `on_change` callback."""

    service: str
    old: str  # closed | open | half_open
    new: str
    failures: int  # transient failures within the window that opened it (closed -> open), else 0
    window_ms: int
    open_for_ms: int


class CircuitBreaker:
    """Closed -> open after `failure_threshold` transient failures within `window`;
    open refuses calls for `open_for`; then half-open lets `half_open_probes`
    calls through: the first verdict decides (a success closes it, a failure
    opens it again for another `open_for`).

    No I/O: state changes are reported to `on_change(BreakerTransition)`, called
    once per change after the state is updated. The open -> half-open change is
    due to time alone, so it is noticed (and reported) at the next `state`,
    `allow` or `record`."""

    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic, *,
                 name: str = "", on_change: Callable[[BreakerTransition], None] | None = None) -> None:
        self.config = config
        self.name = name
        self.on_change = on_change
        self._clock = clock
        self._state = "closed"
        self._generation = 0  # bumped on every state change
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._opened_by = 0  # failures that opened it; 0 after a failed probe
        self._probes = 0  # half-open probes in flight

    # -- reading ---------------------------------------------------------------

    @property
    def state(self) -> str:
        self._refresh(self._clock())
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 unless open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.config.open_for_ms / 1000 - self._clock())

    def refusal(self) -> str:
        """Why `allow()` refused, for error texts."""
        name = self.name or "service"
        state = self.state
        if state == "half_open":
            return f"circuit open for {name}: half-open, {self._probes} probe(s) in flight"
        if state == "closed":
            return f"circuit closed for {name}"
        why = (f"{self._opened_by} failures within {format_duration_ms(self.config.window_ms)}"
               if self._opened_by else "the half-open probe failed")
        return f"circuit open for {name}: {why}; next probe in {self.retry_in():.1f}s"

    # -- calls -----------------------------------------------------------------

    def allow(self) -> Permit | None:
        """A permit for one call, or None: refuse it (open, or all probes in flight)."""
        self._refresh(self._clock())
        if self._state == "closed":
            return Permit(self._generation)
        if self._state == "open" or self._probes >= self.config.half_open_probes:
            return None
        self._probes += 1
        return Permit(self._generation, probe=True)

    def record(self, ok: bool, permit: Permit | None = None) -> None:
        """The verdict of a call: `ok=False` only for failures that say the service
        is unwell (transient). Without a permit the verdict counts for the current state."""
        now = self._clock()
        self._refresh(now)
        if permit is not None and permit.generation != self._generation:
            return  # admitted under an earlier state: says nothing about this one
        if self._state == "closed":
            if not ok:
                self._failures.append(now)
                horizon = now - self.config.window_ms / 1000
                while self._failures and self._failures[0] < horizon:
                    self._failures.popleft()
                if len(self._failures) >= self.config.failure_threshold:
                    self._open(now, len(self._failures))
        elif self._state == "half_open":
            if ok:
                self._failures.clear()
                self._change("closed", 0)
            else:
                self._open(now, 0)
        # open: no call of this generation was let through; nothing to learn

    def release_probe(self, permit: Permit | None = None) -> None:
        """A call ended without a verdict (cancelled, or failed before reaching the
        service): its half-open probe slot is free again."""
        if permit is not None and (not permit.probe or permit.generation != self._generation):
            return
        self._probes = max(0, self._probes - 1)

    # -- transitions -------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        if self._state == "open" and now - self._opened_at >= self.config.open_for_ms / 1000:
            self._change("half_open", 0)

    def _open(self, now: float, failures: int) -> None:
        self._opened_at, self._opened_by = now, failures
        self._failures.clear()
        self._change("open", failures)

    def _change(self, new: str, failures: int) -> None:
        old, self._state = self._state, new
        self._generation += 1
        self._probes = 0
        if self.on_change is not None:
            self.on_change(BreakerTransition(self.name, old, new, failures, self.config.window_ms,
                                             self.config.open_for_ms))


class ServiceRegistry:
    def __init__(self, services: Mapping[str, ServiceConfig] | None = None, *, source: str = "<registry>") -> None:
        self._services = dict(services or {})
        self.source = source
        self._limiters: dict[str, asyncio.Semaphore] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._on_breaker_change: Callable[[BreakerTransition], None] | None = None
        self.clock: Callable[[], float] = time.monotonic  # the breakers' clock (tests replace it)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "<registry>") -> ServiceRegistry:
        if not isinstance(data, Mapping) or not isinstance(data.get("services"), Mapping):
            raise ServiceRegistryError(f"{source}: expected a mapping with a 'services' mapping at the top")
        extra = set(data) - {"services"}
        if extra:
            raise ServiceRegistryError(f"{source}: unknown top-level keys {sorted(extra)} (expected 'services')")
        services: dict[str, ServiceConfig] = {}
        for name, body in data["services"].items():
            name = str(name)
            if not _NAME.match(name):
                raise ServiceRegistryError(f"{source}: service {name!r}: invalid name")
            if not isinstance(body, Mapping):
                raise ServiceRegistryError(f"{source}: service {name!r}: expected a mapping with base_url")
            try:
                services[name] = ServiceConfig.model_validate({**body, "name": name})
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
                )
                raise ServiceRegistryError(f"{source}: service {name!r}: {problems}") from None
        return cls(services, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> ServiceRegistry:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ServiceRegistryError(f"{path}: cannot read the service registry: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ServiceRegistryError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_mapping(data, source=str(path))

    def get(self, name: str) -> ServiceConfig:
        try:
            return self._services[name]
        except KeyError:
            raise UnknownServiceError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._services

    def names(self) -> list[str]:
        return sorted(self._services)

    # --- runtime guards (per executor process) ---

    def limiter(self, name: str) -> asyncio.Semaphore | None:
        service = self.get(name)
        if service.max_concurrency is None:
            return None
        if name not in self._limiters:
            self._limiters[name] = asyncio.Semaphore(service.max_concurrency)
        return self._limiters[name]

    def breaker(self, name: str) -> CircuitBreaker | None:
        service = self.get(name)
        if service.breaker is None:
            return None
        if name not in self._breakers:
            self._breakers[name] = CircuitBreaker(service.breaker, self.clock, name=name,
                                                  on_change=self._on_breaker_change)
        return self._breakers[name]

    def breaker_state(self, name: str | None) -> str | None:
        """The state of `name`'s breaker (closed | open | half_open); None without one."""
        if name is None or name not in self._services:
            return None
        breaker = self.breaker(name)
        return None if breaker is None else breaker.state

    def observe_breakers(self, on_change: Callable[[BreakerTransition], None] | None) -> None:
        """Report every breaker's state changes (this executor's) to `on_change`."""
        self._on_breaker_change = on_change
        for breaker in self._breakers.values():
            breaker.on_change = on_change


def load_registry(settings: Any) -> ServiceRegistry:
    """The registry named by `settings.services_file` (ORCH_SERVICES); empty when unset."""
    path = getattr(settings, "services_file", None)
    if path is None:
        return ServiceRegistry(source="<no ORCH_SERVICES>")
    return ServiceRegistry.from_file(path)
