"""Write the golden corpus: one encoded message per message type (and a
"minimal" variant where optional fields are null), with the expected decoded
value next to it.

    python tests/golden/make_corpus.py           # add files for the current schema versions
    python tests/golden/make_corpus.py --check   # verify, write nothing

Files go to `tests/golden/messages/v<N>/`, N being the current version of the
message's envelope schema (`schemas/history/<kind>/v<N>.avsc`). Existing files
are never rewritten: they are the bytes older releases wrote, and every later
release must keep decoding them (tests/golden/test_golden.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # runnable as a plain script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator.codec import Codec, fingerprint_hex
from orchestrator.core import events as ev
from orchestrator.core import messages as msg

MESSAGES_DIR = Path(__file__).resolve().parent / "messages"

EID = "0b9d6a52-3f7e-4c1d-9a57-2d7f9c1e8a40"
T0 = 1767225600000  # 2026-01-01T00:00:00Z
INPUT = {
    "email": "zoë@example.com",
    "name": "Zoë Ångström",
    "password": {"$secret": "gAAAAABl-sealed-token=="},
    "age": 42,
    "ratio": 0.25,
    "tags": ["new", "emoji 🎉", None, True],
    "nested": {"b": [1, 2, {"c": None}], "a": ""},
}
OUTPUT = {"user_id": "u-123", "status": "created", "activation_date": "2026-01-02"}
STEP = {
    "name": "create_user",
    "type": "service_call",
    "config": {"service": "users", "method": "POST", "path": "/api/users",
               "payload": {"email": "{{ input.email }}", "hash": "{{ hash(input.password) }}"}},
    "output": {"user_id": "{{ response.id }}"},
}
CONTEXT = {
    "input": INPUT,
    "steps": {"validate_input": {"output": {"valid": True}, "status": "completed", "completed": True,
                                 "error": None, "attempts": 1}},
    "execution": {"id": EID, "workflow": "user-registration", "version": "1.0.0"},
}


def _recorded(seq: int, event: Any, cause: str = "command:StartWorkflow") -> ev.RecordedEvent:
    return ev.RecordedEvent(EID, seq, T0 + seq, cause, event)


def samples() -> dict[str, Any]:
    """File stem -> message. Events are wrapped in a RecordedEvent."""
    return {
        "StartWorkflow": msg.StartWorkflow(EID, "user-registration", "1.0.0", INPUT, "alice@cli"),
        "StartWorkflow.minimal": msg.StartWorkflow(EID, "user-registration", None, None),
        "CancelWorkflow": msg.CancelWorkflow(EID, "customer asked", "ops"),
        "CancelWorkflow.minimal": msg.CancelWorkflow(EID),
        "SignalWorkflow": msg.SignalWorkflow(EID, "approve", {"approved": True, "by": "bob"}, "bob"),
        "SignalWorkflow.minimal": msg.SignalWorkflow(EID, "ping"),
        "TaskSucceeded": msg.TaskSucceeded(EID, "create_user", 2, OUTPUT, T0, T0 + 1234),
        "TaskFailed": msg.TaskFailed(EID, "create_user", 1, "HTTP 503 Service Unavailable", True, 503, T0, T0 + 30000),
        "TaskFailed.minimal": msg.TaskFailed(EID, "create_user", 3, "connection refused", True, None, T0, T0 + 5),
        "ExecuteStep": msg.ExecuteStep(EID, "user-registration", "1.0.0", "create_user", "service_call", 2,
                                       f"{EID}/create_user", STEP, CONTEXT, T0 + 1_800_000, 1_800_000),
        "DefinitionRegistered": msg.DefinitionRegistered(
            "user-registration", "1.0.0",
            "apiVersion: workflow/v1\nkind: Workflow\nmetadata:\n  name: user-registration\n  version: 1.0.0\n",
            "yaml", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", T0, "alice"),
        "DefinitionRegistered.minimal": msg.DefinitionRegistered(
            "tiny", "1", '{"apiVersion": "workflow/v1"}', "json", "0" * 64, T0),
        "ExternalEvent": msg.ExternalEvent("evt-42", "email.verified", {"user_id": "u-123", "at": T0}, T0, "mailer"),
        "ExternalEvent.minimal": msg.ExternalEvent("evt-43", "ping", None, 0),
        "WorkflowStarted": _recorded(1, ev.WorkflowStarted("user-registration", "1.0.0", INPUT, "alice@cli")),
        "WorkflowStarted.minimal": _recorded(1, ev.WorkflowStarted("w", "1", {})),
        "WorkflowStartRejected": _recorded(1, ev.WorkflowStartRejected(
            "user-registration", "1.0.0", {"email": "nope", "password": "***"},
            ("email: 'nope' is not a 'email'", "name: 'name' is a required property"), "alice@cli")),
        "WorkflowStartRejected.minimal": _recorded(1, ev.WorkflowStartRejected("unknown", None, None, ())),
        "StepScheduled": _recorded(2, ev.StepScheduled("create_user", 1, T0 + 1_800_000)),
        "StepCompleted": _recorded(3, ev.StepCompleted("create_user", 1, OUTPUT), "result:create_user#1"),
        "StepAttemptFailed": _recorded(3, ev.StepAttemptFailed("create_user", 1, "HTTP 503", True, True, 503),
                                       "result:create_user#1"),
        "StepAttemptFailed.minimal": _recorded(3, ev.StepAttemptFailed("create_user", 1, "timeout", True, False)),
        "StepFailed": _recorded(4, ev.StepFailed("create_user", 3, "HTTP 400 Bad Request", "compensate")),
        "StepSkipped": _recorded(4, ev.StepSkipped("send_welcome", "condition false")),
        "TimerScheduled": _recorded(4, ev.TimerScheduled("retry:create_user:2", T0 + 2000)),
        "TimerFired": _recorded(5, ev.TimerFired("retry:create_user:2"), "timer:retry:create_user:2"),
        "WorkflowCompleted": _recorded(9, ev.WorkflowCompleted(OUTPUT)),
        "WorkflowFailed": _recorded(9, ev.WorkflowFailed("step create_user failed: HTTP 400", "create_user")),
        "WorkflowFailed.minimal": _recorded(9, ev.WorkflowFailed("execution timed out")),
        "WorkflowCancelled": _recorded(9, ev.WorkflowCancelled("customer asked", "ops"), "command:CancelWorkflow"),
        "WorkflowCancelled.minimal": _recorded(9, ev.WorkflowCancelled("cancelled")),
        "CommandRejected": _recorded(10, ev.CommandRejected("CancelWorkflow", "execution already completed", "ops"),
                                     "command:CancelWorkflow"),
        "CommandRejected.minimal": _recorded(10, ev.CommandRejected("SignalWorkflow", "no such signal")),
        # added with schema v2 (events, commands, results) and v1 (waits)
        "StartWorkflow.child": msg.StartWorkflow(f"{EID}-compensation", "user-cleanup", None, {"execution_id": EID},
                                                 None, EID, "compensation"),
        "DeliverEvent": msg.DeliverEvent(EID, "wait_for_verification", "evt-42", "user.email_verified",
                                         {"user_id": "u-123"}, T0, "mailer"),
        "DeliverEvent.minimal": msg.DeliverEvent(EID, "wait", "evt-43", "ping", None, 0),
        "TaskFailed.breaker": msg.TaskFailed(EID, "create_user", 2, "circuit open for user-service", True, None,
                                             T0, T0, "open"),
        "ChildExecutionEnded": msg.ChildExecutionEnded(EID, f"{EID}-compensation", "compensation", "completed",
                                                       {"deleted": True}),
        "ChildExecutionEnded.minimal": msg.ChildExecutionEnded(EID, "c", "compensation", "failed", None, "boom"),
        "WaitOpened": msg.WaitOpened(EID, "wait_for_verification", "user.email_verified", {"user_id": "u-123"},
                                     T0, T0 + 86_400_000),
        "WaitOpened.minimal": msg.WaitOpened(EID, "wait", "ping", {}, T0),
        "WorkflowStarted.child": _recorded(1, ev.WorkflowStarted("user-cleanup", "1.0.0", {"execution_id": EID},
                                                                None, EID, "compensation")),
        "WorkflowStartRejected.child": _recorded(1, ev.WorkflowStartRejected("missing", None, {}, ("unknown",),
                                                                             None, EID, "compensation")),
        "StepAttemptFailed.breaker": _recorded(3, ev.StepAttemptFailed("create_user", 2, "circuit open", True, True,
                                                                       None, "open")),
        "StepWaiting": _recorded(5, ev.StepWaiting("wait_for_verification", "user.email_verified", None,
                                                   {"user_id": "u-123"}, T0 + 86_400_000)),
        "StepWaiting.signal": _recorded(5, ev.StepWaiting("approval", None, "approve", {})),
        "SignalReceived": _recorded(6, ev.SignalReceived("approve", {"by": "bob"}, "bob"), "command:SignalWorkflow"),
        "SignalReceived.minimal": _recorded(6, ev.SignalReceived("ping")),
        "WaitSatisfied": _recorded(6, ev.WaitSatisfied("wait_for_verification", "event", "user.email_verified",
                                                       "evt-42", {"user_id": "u-123"}, T0, "mailer")),
        "WaitSatisfied.signal": _recorded(7, ev.WaitSatisfied("approval", "signal", "approve", None, None)),
        "CompensationStarted": _recorded(7, ev.CompensationStarted("failed", "no user.email_verified within 24h",
                                                                   "wait_for_verification", "user-cleanup")),
        "CompensationStarted.cancel": _recorded(7, ev.CompensationStarted("cancelled", "customer asked", None,
                                                                          None, "ops")),
        "CompensationFinished": _recorded(8, ev.CompensationFinished("completed")),
        "CompensationFinished.failed": _recorded(8, ev.CompensationFinished("failed", "step 'cleanup': HTTP 500")),
        "ChildExecutionRequested": _recorded(8, ev.ChildExecutionRequested(
            f"{EID}-compensation", "user-cleanup", None, {"execution_id": EID}, "compensation")),
        # added with schema v3 (events, commands) and v1 (schedules)
        "CancelStep": msg.CancelStep(EID, "poll[2].check", "stuck", "ops"),
        "CancelStep.minimal": msg.CancelStep(EID, "wait"),
        "ScheduleFired": msg.ScheduleFired("nightly-report", "nightly", T0, "nightly-report-nightly-20261127T0200",
                                           T0 + 150),
        "ChildExecutionRequested.step": _recorded(4, ev.ChildExecutionRequested(
            f"{EID}.charge", "payment", "2", {"amount": 10}, "subworkflow", "charge")),
        "StepCancelled": _recorded(6, ev.StepCancelled("reminder", "join 'proceed' needs no more", "ops"),
                                   "command:CancelStep"),
        "StepCancelled.minimal": _recorded(6, ev.StepCancelled("reminder", "cancelled")),
        "BranchChosen": _recorded(3, ev.BranchChosen("route", "large")),
        "ItemsResolved": _recorded(3, ev.ItemsResolved("charge_all", [{"id": 1}, {"id": 2}])),
        "IterationStarted": _recorded(4, ev.IterationStarted("charge_all", 0)),
        "IterationFinished": _recorded(7, ev.IterationFinished("charge_all", 0, "completed", {"charged": True})),
        "IterationFinished.failed": _recorded(7, ev.IterationFinished("charge_all", 1, "failed", None, "HTTP 402")),
        # added with schema v4 (events, commands): operators' actions
        "RetryExecution": msg.RetryExecution(EID, {"email": "ada@example.com"}, "service fixed", "api:ops"),
        "RetryExecution.minimal": msg.RetryExecution(EID),
        "PauseExecution": msg.PauseExecution(EID, "downstream incident", "api:ops"),
        "ResumeExecution": msg.ResumeExecution(EID, "incident over", "ada"),
        "SkipStep": msg.SkipStep(EID, "send_welcome_email", {"sent": False}, "mailer down", "api:ops"),
        "SkipStep.minimal": msg.SkipStep(EID, "send_welcome_email"),
        "ExecutionPaused": _recorded(5, ev.ExecutionPaused("downstream incident", "api:ops"), "commands:0:17"),
        "ExecutionResumed": _recorded(6, ev.ExecutionResumed("incident over"), "commands:0:18"),
        "ExecutionRetried": _recorded(9, ev.ExecutionRetried(("create_user_profile",), {"email": "ada@example.com"},
                                                             "service fixed", "api:ops"), "commands:0:19"),
        "ExecutionRetried.minimal": _recorded(9, ev.ExecutionRetried((), None, "retried")),
        "StepSkipped.operator": _recorded(6, ev.StepSkipped("send_welcome_email", "skipped by api:ops: mailer down",
                                                            {"sent": False}, "api:ops"), "commands:0:20"),
    }


def to_jsonable(value: Any) -> Any:
    """A message as plain JSON: dataclasses become {"$type": name, ...fields}."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"$type": type(value).__name__}
        out.update({f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def entries(codec: Codec) -> list[tuple[Path, bytes, dict]]:
    """(path of the .bin, bytes, expected .json document) for the current versions."""
    out = []
    for stem, message in samples().items():
        kind = codec.kind_of(message)
        version = next(v for v in codec.versions if v.kind == kind and v.current)
        if version.version is None:
            raise SystemExit(f"schemas/{kind}.avsc changed but is not released: copy it to "
                             f"schemas/history/{kind}/v<N+1>.avsc first")
        data = codec.encode(message)
        doc = {
            "kind": kind,
            "schema_version": version.version,
            "fingerprint": fingerprint_hex(version.fingerprint),
            "message": to_jsonable(message),
        }
        out.append((MESSAGES_DIR / f"v{version.version}" / f"{stem}.bin", data, doc))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; fail if files are missing or differ")
    args = parser.parse_args(argv)
    problems, written = [], 0
    for path, data, doc in entries(Codec.default()):
        text = json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        json_path = path.with_suffix(".json")
        if path.exists():
            if path.read_bytes() != data or json.loads(json_path.read_text("utf-8")) != json.loads(text):
                problems.append(f"{path} exists with other content (never rewrite a released golden file)")
            continue
        if args.check:
            problems.append(f"{path} is missing")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        json_path.write_text(text, "utf-8")
        written += 1
    for problem in problems:
        print(problem, file=sys.stderr)
    if not args.check:
        print(f"{written} file pair(s) written under {MESSAGES_DIR}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
