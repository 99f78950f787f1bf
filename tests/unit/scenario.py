"""Given events, when an input arrives, then these events: the decider's test harness."""

from __future__ import annotations

import textwrap
from typing import Any

import yaml

from orchestrator.core.decide import decide
from orchestrator.core.definition import WorkflowDefinition
from orchestrator.core.events import Event, RecordedEvent
from orchestrator.core.evolve import evolve, initial_state
from orchestrator.core.messages import Input
from orchestrator.core.state import ExecutionState


def definition(text: str) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(yaml.safe_load(textwrap.dedent(text)))


class Scenario:
    """An execution under test, on virtual time (epoch ms, starting at 1,000,000)."""

    def __init__(self, defn: WorkflowDefinition, execution_id: str = "exec-1", now: int = 1_000_000) -> None:
        self.definition = defn
        self.state: ExecutionState = initial_state(execution_id)
        self.history: list[RecordedEvent] = []
        self.now = now

    def given(self, *events: Event) -> "Scenario":
        for event in events:
            recorded = RecordedEvent(self.state.execution_id, self.state.sequence + 1, self.now, "given", event)
            self.state = evolve(self.state, recorded)
            self.history.append(recorded)
        return self

    def at(self, now: int) -> "Scenario":
        self.now = now
        return self

    def when(self, command: Input, **kwargs: Any) -> list[Event]:
        recorded = decide(self.state, command, self.definition, self.now, **kwargs)
        for r in recorded:
            self.state = evolve(self.state, r)
        self.history.extend(recorded)
        return [r.event for r in recorded]
