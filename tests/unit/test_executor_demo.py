"""The seed workflow's steps, performed in order against the demo services (in process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from argon2 import PasswordHasher

from orchestrator.core.definition import WorkflowDefinition
from orchestrator.core.messages import ExecuteStep, TaskFailed, TaskSucceeded
from orchestrator.demo.services import create_app
from orchestrator.runtime.executor_steps import perform
from orchestrator.runtime.secrets import Sealer
from orchestrator.runtime.services import ServiceRegistry

REPO = Path(__file__).resolve().parents[2]
from tests.seed import SEED
SEALER = Sealer.generate()
REGISTRY = ServiceRegistry.from_mapping({"services": {
    name: {"base_url": f"http://demo/{name}"} for name in ("user-service", "profile-service", "notification-service")
}})


@pytest.fixture(scope="module")
def definition() -> WorkflowDefinition:
    if not SEED.exists():
        pytest.fail("the seed example user-registration-workflow.yaml is missing")
    return WorkflowDefinition.model_validate(yaml.safe_load(SEED.read_text()))


class Run:
    """Steps of one execution, each fed the outputs of the ones before (as the decider would)."""

    def __init__(self, definition: WorkflowDefinition, input: Any, app: Any) -> None:
        self.definition, self.input, self.app = definition, input, app
        self.steps: dict[str, Any] = {}

    async def step(self, name: str, steps: tuple[Any, ...] | None = None) -> TaskSucceeded | TaskFailed:
        step = next(s for s in (steps or self.definition.spec.steps) if s.name == name)
        task = ExecuteStep(
            execution_id="exec-42", workflow_name=self.definition.name, workflow_version=self.definition.version,
            step_name=name, step_type=step.type, attempt=1, idempotency_key=f"exec-42/{name}",
            step=step.model_dump(mode="json", by_alias=True, exclude_none=True),
            context={"input": self.input, "steps": self.steps,
                     "execution": {"id": "exec-42", "workflow": self.definition.name}},
            deadline_at=0, timeout_ms=60_000)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app)) as http:
            result = await perform(task, http=http, registry=REGISTRY, sealer=SEALER, secrets_env={})
        ok = isinstance(result, TaskSucceeded)
        self.steps[name] = {"output": result.output if ok else None, "status": "completed" if ok else "failed",
                            "completed": ok, "error": None if ok else result.error, "attempts": 1}
        return result


def test_the_seed_workflow_runs_against_the_demo_services(definition: WorkflowDefinition) -> None:
    app = create_app()
    user_input = {"username": "ann", "email": "ann@example.com", "password": {"$secret": SEALER.seal("pw-ann-123")},
                  "profile_data": {"city": "Oslo"}}

    async def scenario() -> None:
        run = Run(definition, user_input, app)
        validated = await run.step("validate_input")
        assert isinstance(validated, TaskSucceeded) and validated.output == {"valid": True,
                                                                             "checked": ["email", "username"]}
        created = await run.step("create_user_account")
        assert isinstance(created, TaskSucceeded), created
        user_id = created.output["user_id"]
        stored = app.state.users[user_id]
        assert PasswordHasher().verify(stored["password_hash"], "pw-ann-123")
        for name in ("create_user_profile", "send_welcome_email"):
            assert isinstance(await run.step(name), TaskSucceeded)
        run.steps["wait_for_verification"] = {"output": {"user_id": user_id}, "status": "completed",
                                              "completed": True, "error": None, "attempts": 1}
        activated = await run.step("activate_user_account")
        assert isinstance(activated, TaskSucceeded)
        assert activated.output["status"] == "active" and activated.output["activation_date"].endswith("Z")
        assert isinstance(await run.step("send_activation_notification"), TaskSucceeded)
        assert [m["kind"] for m in app.state.messages] == ["email", "notification"]

        compensation = definition.spec.compensation.steps
        for name in ("cleanup_user_account", "cleanup_user_profile"):
            assert isinstance(await run.step(name, compensation), TaskSucceeded)
        assert app.state.users == {} and app.state.profiles == {}

        again = Run(definition, {**user_input, "email": "taken@example.com"}, app)
        refused = await again.step("validate_input")
        assert isinstance(refused, TaskFailed) and not refused.transient
        assert refused.error == "email: unique_email failed: already registered"

    asyncio.run(scenario())
