"""Small helpers shared by the integration tests: publish definitions and
messages, read a key's messages back, wait with a bound."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from confluent_kafka import Producer

from orchestrator.codec import Codec
from orchestrator.core.loading import canonical_digest, load_definition_source
from orchestrator.core.messages import DefinitionRegistered
from orchestrator.runtime.kafka import partition_for, producer_config, read_partition_to_end

__all__ = ["codec", "register", "send", "read_all", "wait_for"]

codec = Codec.default()


def register(settings, source: str) -> None:
    """Publish a DefinitionRegistered for a YAML definition (what `definitions apply` does)."""
    defn = load_definition_source(source, file="test.yaml")
    producer = Producer(producer_config(settings))
    message = DefinitionRegistered(defn.name, defn.version, source, "yaml", canonical_digest(defn), 0)
    producer.produce(settings.topics.definitions, codec.encode(message), defn.key.encode())
    assert producer.flush(10) == 0


def send(settings, topic: str, message) -> None:
    """Publish a message keyed by its execution id."""
    producer = Producer(producer_config(settings))
    producer.produce(topic, codec.encode(message), message.execution_id.encode())
    assert producer.flush(10) == 0


def read_all(settings, topic: str, key: str) -> list:
    """The decoded messages of `key` on its partition of `topic`, in offset order."""
    p = partition_for(key, settings.partitions)
    return [codec.decode(m.value()) for m in read_partition_to_end(settings, topic, p)
            if m.key() == key.encode()]


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2,
             message: str = "condition not met in time") -> Any:
    """The first truthy value of `predicate()`, polled until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (after {timeout:g}s)")
        time.sleep(interval)


# -- the whole engine in threads (the `engine` fixture) ------------------------------------

TERMINAL_EVENTS = ("WorkflowCompleted", "WorkflowFailed", "WorkflowCancelled")



class Running:
    """A role (decider, correlator, triggers...) in a thread; `stop()` ends it and fails on the
    error it died of."""

    def __init__(self, name: str, role: Any) -> None:
        self.name = name
        self.role = role
        self.halt = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.role.run(self.halt)
        except BaseException as exc:
            self.errors.append(exc)

    def wait(self, predicate: Any, timeout: float = 20, message: str = "condition not met") -> Any:
        def checked() -> Any:
            assert not self.errors, f"the {self.name} died: {self.errors[0]!r}"
            return predicate()
        return wait_for(checked, timeout, message=message)

    def stop(self) -> None:
        self.halt.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), f"the {self.name} did not stop"
        assert not self.errors, f"the {self.name} died: {self.errors[0]!r}"

class Engine:
    """A decider, an executor and a projector running in threads of the test process on
    one Settings (own topic prefix, Postgres schema, service registry and secret key),
    calling the demo services. Built and torn down by the `engine` fixture (conftest)."""

    def __init__(self, settings, schema: str, demo, logs) -> None:
        import threading

        self.settings = settings
        self.schema = schema
        self.demo = demo
        self.logs = logs  # io.StringIO: the roles' log lines (JSON, debug level)
        self.stop = threading.Event()
        self.threads: list = []
        self.errors: list[tuple[str, BaseException]] = []
        self.execution_ids: list[str] = []

    # -- the roles -----------------------------------------------------------------

    def launch(self, name: str, target: Callable[[], None]) -> None:
        import threading

        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported by check() in every wait
                self.errors.append((name, exc))

        thread = threading.Thread(target=run, name=f"engine-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def check(self) -> None:
        """Fail at once when a role died (instead of timing out later)."""
        if self.errors:
            name, exc = self.errors[0]
            raise AssertionError(f"engine role {name} died: {type(exc).__name__}: {exc}") from exc
        if self.stop.is_set():
            raise AssertionError("the engine is stopped")

    def wait(self, predicate: Callable[[], Any], timeout: float = 30.0, message: str = "condition not met") -> Any:
        def checked() -> Any:
            self.check()
            return predicate()
        return wait_for(checked, timeout, message=message)

    def shutdown(self, timeout: float = 30.0) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout)

    # -- Kafka ---------------------------------------------------------------------

    def register(self, source: str) -> None:
        register(self.settings, source)

    def start(self, workflow: str, input: Any, *, version: str | None = None, eid: str | None = None) -> str:
        """Publish a StartWorkflow (the decider seals sensitive values) and return the id."""
        import uuid

        from orchestrator.core.messages import StartWorkflow

        eid = eid or f"e2e-{uuid.uuid4()}"
        self.execution_ids.append(eid)
        send(self.settings, self.settings.topics.commands, StartWorkflow(eid, workflow, version, input, "test"))
        return eid

    def events(self, eid: str) -> list:
        return read_all(self.settings, self.settings.topics.events, eid)

    def wait_ended(self, eid: str, timeout: float = 30.0) -> list:
        """The execution's recorded events, once one of them ends it."""
        def ended() -> list | None:
            events = self.events(eid)
            return events if any(type(r.event).__name__ in TERMINAL_EVENTS for r in events) else None
        return self.wait(ended, timeout, message=f"execution {eid} did not end")

    # -- PostgreSQL ----------------------------------------------------------------

    def connect(self):
        from psycopg.rows import dict_row

        from projections.db import connect

        conn = connect(self.settings.database_url, self.schema, autocommit=True)
        conn.row_factory = dict_row
        return conn

    def rows(self, sql: str, params: Any = None) -> list[dict]:
        with self.connect() as conn:
            return list(conn.execute(sql, params))

    def wait_projected(self, eid: str, last_sequence: int, timeout: float = 30.0) -> dict:
        """The execution's row once the projector has applied its events up to `last_sequence`."""
        def projected() -> dict | None:
            rows = self.rows("SELECT * FROM workflow_executions WHERE id = %s", (eid,))
            return rows[0] if rows and rows[0]["last_sequence"] >= last_sequence else None
        return self.wait(projected, timeout, message=f"execution {eid} not projected up to {last_sequence}")

    # -- the demo services ---------------------------------------------------------

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        response = httpx.request(method, f"{self.demo.url}/_admin/{path}", timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def fault(self, **fault: Any) -> None:
        self.admin("POST", "faults", json=fault)

    def clear_faults(self) -> None:
        self.admin("DELETE", "faults")

    def requests(self, idempotency_key: str | None = None, execution_id: str | None = None,
                 **filters: str) -> list[dict]:
        """Requests the demo services received (`filters`: path_prefix, method), optionally only
        those with an Idempotency-Key (one step of one execution) or of one execution."""
        found = self.admin("GET", "requests", params=filters)["requests"]
        if idempotency_key is not None:
            found = [r for r in found if r["headers"].get("idempotency-key") == idempotency_key]
        if execution_id is not None:
            found = [r for r in found if r["headers"].get("x-workflow-execution-id") == execution_id]
        return found

    def service_registry(self) -> str:
        return "services:\n" + "".join(
            f"  {name}:\n    base_url: {url}\n    timeout: 10s\n    connect_timeout: 2s\n"
            for name, url in self.demo.service_urls().items())

    # -- the command line ----------------------------------------------------------

    def cli_env(self) -> dict[str, str | None]:
        import os

        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ORCH_")}
        env.update({
            "ORCH_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "ORCH_DATABASE_URL": self.settings.database_url,
            "ORCH_DATABASE_SCHEMA": self.schema,
            "ORCH_TOPIC_PREFIX": self.settings.topics.prefix,
            "ORCH_PARTITIONS": str(self.settings.partitions),
            "ORCH_SECRET_KEY": self.settings.secret_key,
            "ORCH_INSTANCE": self.settings.instance + "-cli",
        })
        if self.settings.services_file is not None:
            env["ORCH_SERVICES"] = str(self.settings.services_file)
        return env

    def cli(self, *args: str) -> Any:
        """`orchestrator ARGS...` in process (click's CliRunner) with this engine's environment."""
        from click.testing import CliRunner

        from orchestrator.cli import cli

        return CliRunner().invoke(cli, list(args), env=self.cli_env(), catch_exceptions=False)

    def assert_replay_consistent(self, eid: str) -> dict:
        import json

        result = self.cli("replay", eid, "--json")
        assert result.exit_code == 0, f"replay {eid}: exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
        doc = json.loads(result.stdout)
        assert doc["consistent"] is True and doc["differences"] == [] and doc["history_problems"] == [], doc
        return doc

    def assert_all_replay_consistent(self, workflow: str | None = None) -> dict:
        """`orchestrator replay --all` for this engine's topics and schema: every execution,
        folded from Kafka up to the offsets the projection has stored, agrees with its rows.
        (The projector may still lag behind: what it has not read is not checked.)"""
        import json

        def caught_up() -> tuple | None:
            result = self.cli("replay", "--all", "--json", *(["--workflow", workflow] if workflow else []))
            assert result.exit_code in (0, 1), f"replay --all: exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
            doc = json.loads(result.stdout)
            return (result, doc) if doc["unprojected_events"] == 0 or time.monotonic() > deadline else None

        deadline = time.monotonic() + 20  # let the projector catch up; then check what it has
        result, doc = wait_for(caught_up, 30, interval=0.5)
        assert result.exit_code == 0 and doc["consistent"] is True and doc["inconsistent"] == [], (
            "the projection differs from the events:\n" + json.dumps(doc["inconsistent"], indent=2))
        return doc
