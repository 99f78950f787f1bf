"""Realistic histories for the projection tests, produced by the real decider.

Each history is what `decide` records for a sequence of inputs on virtual
time, so the projection is tested against the events the system really
writes (retries with timers, a permanent failure, a rejection, a cancel).
"""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.decide import handle
from orchestrator.core.definition import WorkflowDefinition
from orchestrator.core.events import RecordedEvent
from orchestrator.core.evolve import initial_state
from orchestrator.core.loading import load_definition_source
from orchestrator.core.messages import (
    CancelWorkflow,
    DefinitionRegistered,
    FireTimer,
    SignalWorkflow,
    StartWorkflow,
    TaskFailed,
    TaskSucceeded,
)
from orchestrator.core.state import ExecutionState

T0 = 1_700_000_000_000
SECRET = {"$secret": "gAAAAAB-sealed-token"}

PIPELINE_SOURCE = textwrap.dedent("""\
    apiVersion: workflow/v1
    kind: Workflow
    metadata: {name: pipeline, version: "1"}
    spec:
      config:
        timeout: 1m
        retry_policy: {max_attempts: 3, backoff: fixed, initial_delay: 2s, jitter: 0}
      input:
        schema:
          type: object
          properties:
            email: {type: string, format: email}
            password: {type: string, writeOnly: true}
          required: [email]
      steps:
        - name: a
          type: service_call
          config: {service: s, endpoint: /a}
        - name: b
          type: validation
          parallel: true
          config:
            validation_rules: [{field: email, rule: required}]
          on_failure: {action: continue}
        - name: c
          type: service_call
          parallel: true
          config: {service: s, endpoint: /c}
          on_failure: {action: terminate, message: "C broke"}
        - name: d
          type: service_call
          config: {service: s, endpoint: /d}
      output:
        schema:
          type: object
          properties:
            user_id: {type: string}
    """)


def pipeline_definition() -> WorkflowDefinition:
    return load_definition_source(PIPELINE_SOURCE, file="pipeline.yaml")


def pipeline_registered(at: int = T0 - 60_000) -> DefinitionRegistered:
    return DefinitionRegistered("pipeline", "1", PIPELINE_SOURCE, "yaml",
                                hashlib.sha256(PIPELINE_SOURCE.encode()).hexdigest(), at, "tester")


@dataclass
class Driver:
    """One execution driven through `decide` on virtual time."""

    execution_id: str
    definition: WorkflowDefinition | None
    now: int = T0
    state: ExecutionState = field(init=False)
    history: list[RecordedEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = initial_state(self.execution_id)

    def send(self, command: Any, advance_ms: int = 1000) -> "Driver":
        self.now += advance_ms
        self.state, recorded = handle(self.state, command, self.definition, self.now,
                                      unseal=lambda token: "plaintext-password")
        self.history.extend(recorded)
        return self

    def start(self, input_: Any, version: str | None = "1") -> "Driver":
        return self.send(StartWorkflow(self.execution_id, "pipeline", version, input_, "alice"))

    def ok(self, step: str, output: Any = None) -> "Driver":
        attempt = self.state.step(step).attempt
        return self.send(TaskSucceeded(self.execution_id, step, attempt, output, self.now, self.now))

    def fail(self, step: str, transient: bool = True, status: int = 503) -> "Driver":
        attempt = self.state.step(step).attempt
        return self.send(TaskFailed(self.execution_id, step, attempt, f"HTTP {status}", transient, status,
                                    self.now, self.now))

    def fire_timers(self) -> "Driver":
        """Fire the retry timers that are due (what the decider's clock does)."""
        for timer_id in sorted(self.state.timers):
            if timer_id.startswith("retry:"):
                self.send(FireTimer(self.execution_id, timer_id), advance_ms=2000)
        return self


def histories(prefix: str = "exec") -> dict[str, list[RecordedEvent]]:
    """A handful of executions covering every projection path."""
    defn = pipeline_definition()
    out: dict[str, Driver] = {}

    # Completes after a retry of `a` and a failure of `b` that continues.
    d = Driver(f"{prefix}-ok", defn).start({"email": "a@example.com", "password": SECRET})
    d.fail("a").fire_timers().ok("a", {"user_id": "u-1", "token": SECRET})
    d.fail("b", transient=False, status=400).ok("c", {"status": "created"}).ok("d", {"user_id": "u-1"})
    out[d.execution_id] = d

    # `c` fails for good after three attempts: the execution fails.
    d = Driver(f"{prefix}-fail", defn, now=T0 + 10).start({"email": "b@example.com"})
    d.ok("a").ok("b").fail("c").fire_timers().fail("c").fire_timers().fail("c")
    out[d.execution_id] = d

    # Invalid input: rejected, recorded.
    d = Driver(f"{prefix}-rejected", defn, now=T0 + 20).start({"email": "nope", "password": SECRET})
    out[d.execution_id] = d

    # Unknown version: rejected without a version.
    d = Driver(f"{prefix}-unknown", None, now=T0 + 25).start({"email": "c@example.com"}, version=None)
    out[d.execution_id] = d

    # Cancelled while `a` runs, with a signal nobody waits for and a late result.
    d = Driver(f"{prefix}-cancel", defn, now=T0 + 30).start({"email": "c@example.com"})
    d.send(SignalWorkflow(d.execution_id, "poke")).send(CancelWorkflow(d.execution_id, "changed my mind", "bob"))
    d.send(CancelWorkflow(d.execution_id, "again", "bob"))
    out[d.execution_id] = d

    # Still running, `a` retrying.
    d = Driver(f"{prefix}-running", defn, now=T0 + 40).start({"email": "d@example.com"}).fail("a")
    out[d.execution_id] = d
    return {k: v.history for k, v in out.items()}


def many_histories(count: int, prefix: str = "bench") -> list[list[RecordedEvent]]:
    """`count` completing executions (10 events each), for throughput tests."""
    defn = pipeline_definition()
    result = []
    for i in range(count):
        d = Driver(f"{prefix}-{i:06d}", defn, now=T0 + i).start({"email": f"u{i}@example.com"})
        d.ok("a", {"user_id": f"u-{i}"}).ok("b").ok("c").ok("d", {"user_id": f"u-{i}"})
        result.append(d.history)
    return result
