"""Settings from the environment (ORCH_*), read once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .core.durations import parse_duration_ms

__all__ = ["Settings", "Topics", "load_settings"]


@dataclass(frozen=True)
class Topics:
    prefix: str = "wf."

    @property
    def commands(self) -> str:
        return self.prefix + "commands"

    @property
    def results(self) -> str:
        return self.prefix + "results"

    @property
    def tasks(self) -> str:
        return self.prefix + "tasks"

    @property
    def events(self) -> str:
        return self.prefix + "events"

    @property
    def definitions(self) -> str:
        return self.prefix + "definitions"

    @property
    def external_events(self) -> str:
        return self.prefix + "external-events"

    @property
    def waits(self) -> str:
        """Open event waits (compacted; the decider writes, the correlator reads)."""
        return self.prefix + "waits"

    @property
    def schedules(self) -> str:
        """Each schedule trigger's last fired nominal time (compacted; the scheduler's own progress)."""
        return self.prefix + "schedules"

    @property
    def dlq(self) -> str:
        return self.prefix + "dlq"


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "postgresql://orchestrator:orchestrator@127.0.0.1:55432/orchestrator"
    topics: Topics = field(default_factory=Topics)
    partitions: int = 4  # of every keyed topic; all must match (co-partitioning)
    services_file: Path | None = None
    secret_key_file: Path = Path.home() / ".config" / "orchestrator" / "secret.key"
    secret_key: str | None = None  # Fernet key; wins over the file
    instance: str = "0"  # stable slot id: transactional.id and consumer names derive from it
    executor_concurrency: int = 64
    # How long the correlator keeps an external event for waits that open after it arrived.
    event_buffer_ms: int = 3_600_000
    log_level: str = "info"
    log_format: str = "console"  # console | json
    metrics_port: int = 0  # a role's Prometheus endpoint (`run all`: this + the role's index); 0 = none
    metrics_host: str = "127.0.0.1"

    def group_id(self, role: str) -> str:
        """Consumer group of a role; per topic prefix, so test stacks never share one."""
        return f"{self.topics.prefix}{role}"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    defaults = Settings()
    services = env.get("ORCH_SERVICES")
    return Settings(
        kafka_bootstrap=env.get("ORCH_KAFKA_BOOTSTRAP", defaults.kafka_bootstrap),
        database_url=env.get("ORCH_DATABASE_URL", defaults.database_url),
        topics=Topics(env.get("ORCH_TOPIC_PREFIX", defaults.topics.prefix)),
        partitions=int(env.get("ORCH_PARTITIONS", defaults.partitions)),
        services_file=Path(services) if services else None,
        secret_key_file=Path(env.get("ORCH_SECRET_KEY_FILE", str(defaults.secret_key_file))),
        secret_key=env.get("ORCH_SECRET_KEY") or None,
        instance=env.get("ORCH_INSTANCE", defaults.instance),
        executor_concurrency=int(env.get("ORCH_EXECUTOR_CONCURRENCY", defaults.executor_concurrency)),
        event_buffer_ms=parse_duration_ms(env.get("ORCH_EVENT_BUFFER", "1h")),
        log_level=env.get("ORCH_LOG_LEVEL", defaults.log_level),
        log_format=env.get("ORCH_LOG_FORMAT", defaults.log_format),
        metrics_port=_port(env, "ORCH_METRICS_PORT", defaults.metrics_port),
        metrics_host=env.get("ORCH_METRICS_HOST") or defaults.metrics_host,
    )


def _port(env: dict[str, str], name: str, default: int) -> int:
    text = env.get(name) or ""
    if not text:
        return default
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{name}: expected a TCP port number (0 = off), got {text!r}")
    return int(text)
