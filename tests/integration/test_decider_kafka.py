"""The decider loop on a real broker, with results fed by hand (no executor)."""

from __future__ import annotations

import threading

import pytest

from orchestrator.core.events import StepCompleted, StepScheduled, WorkflowCompleted, WorkflowStarted
from orchestrator.core.messages import ExecuteStep, StartWorkflow, TaskSucceeded
from orchestrator.runtime.decider import Decider

from .helpers import read_all, register, send, wait_for

pytestmark = pytest.mark.integration

TWO_STEPS = """
apiVersion: workflow/v1
kind: Workflow
metadata: {name: two-steps, version: "1"}
spec:
  input:
    schema:
      type: object
      properties: {password: {type: string}, name: {type: string}}
  steps:
    - {name: first, type: service_call, config: {service: s, endpoint: /a}}
    - {name: second, type: service_call, config: {service: s, endpoint: "/b/{{ steps.first.output.id }}"}}
"""


@pytest.fixture
def running_decider(kafka_settings):
    stop = threading.Event()
    decider = Decider(kafka_settings)
    thread = threading.Thread(target=decider.run, args=(stop,), daemon=True)
    thread.start()
    yield decider
    stop.set()
    thread.join(30)


def test_a_start_and_results_run_the_workflow_to_completion(kafka_settings, running_decider):
    register(kafka_settings, TWO_STEPS)
    send(kafka_settings, kafka_settings.topics.commands,
         StartWorkflow("e-1", "two-steps", None, {"name": "n", "password": "hunter22"}))
    tasks = wait_for(lambda: read_all(kafka_settings, kafka_settings.topics.tasks, "e-1"))
    assert [t.step_name for t in tasks] == ["first"]
    assert isinstance(tasks[0], ExecuteStep) and tasks[0].idempotency_key == "e-1/first"
    assert "hunter22" not in repr(tasks[0].context), "the password travels sealed"

    send(kafka_settings, kafka_settings.topics.results, TaskSucceeded("e-1", "first", 1, {"id": 7}, 0, 0))
    tasks = wait_for(lambda: [t for t in read_all(kafka_settings, kafka_settings.topics.tasks, "e-1")
                              if t.step_name == "second"])
    assert tasks[0].context["steps"]["first"]["output"] == {"id": 7}
    send(kafka_settings, kafka_settings.topics.results, TaskSucceeded("e-1", "second", 1, {"ok": True}, 0, 0))
    events = wait_for(lambda: [r for r in read_all(kafka_settings, kafka_settings.topics.events, "e-1")
                               if isinstance(r.event, WorkflowCompleted)] and
                      read_all(kafka_settings, kafka_settings.topics.events, "e-1"))
    kinds = [type(r.event) for r in events]
    assert kinds == [WorkflowStarted, StepScheduled, StepCompleted, StepScheduled, StepCompleted, WorkflowCompleted]
    assert [r.sequence for r in events] == list(range(1, 7))


def test_state_is_restored_from_the_events_after_a_restart(kafka_settings):
    register(kafka_settings, TWO_STEPS)
    stop = threading.Event()
    first = Decider(kafka_settings)
    thread = threading.Thread(target=first.run, args=(stop,), daemon=True)
    thread.start()
    send(kafka_settings, kafka_settings.topics.commands, StartWorkflow("e-2", "two-steps", "1", {}))
    wait_for(lambda: read_all(kafka_settings, kafka_settings.topics.tasks, "e-2"))
    stop.set()
    thread.join(30)

    stop = threading.Event()
    second = Decider(kafka_settings)
    thread = threading.Thread(target=second.run, args=(stop,), daemon=True)
    thread.start()
    try:
        send(kafka_settings, kafka_settings.topics.results, TaskSucceeded("e-2", "first", 1, {"id": 1}, 0, 0))
        wait_for(lambda: [t for t in read_all(kafka_settings, kafka_settings.topics.tasks, "e-2")
                          if t.step_name == "second"])
    finally:
        stop.set()
        thread.join(30)
