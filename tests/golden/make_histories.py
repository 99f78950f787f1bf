"""Record histories: scenarios run through the pure core on virtual time, one
file per scenario holding the definition, every input (with its `now` and
`cause`) and the events the core decided for it.

    python tests/golden/make_histories.py           # write files for new scenarios
    python tests/golden/make_histories.py --check   # verify, write nothing

Files go to `tests/golden/histories/<scenario>.json`. Each input and each
recorded event is stored twice: as JSON (`to_jsonable`) and as base64 of its
Avro single-object bytes (`avro`), so a file pins both the decisions and the
wire format. FireTimer is internal (never on Kafka, no schema): JSON only.

Existing files are never rewritten: tests/golden/test_histories.py replays
every one through the current core and fails when a decision changed. If a
change must alter past decisions, that is a breaking change for executions in
flight; deleting the file and regenerating it is the explicit, reviewable
way to accept it. `--check` compares the inputs and events as JSON (not the
Avro bytes, nor the definition's text), so a new schema version or an edited
comment in the example does not invalidate recorded files.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any, Callable

if __name__ == "__main__":  # runnable as a plain script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator.codec import Codec
from orchestrator.core.decide import handle
from orchestrator.core.definition import WorkflowDefinition
from orchestrator.core.events import Event, RecordedEvent
from orchestrator.core.evolve import initial_state
from orchestrator.core.loading import load_definition_source
from orchestrator.core.messages import (
    CancelWorkflow,
    ChildExecutionEnded,
    DeliverEvent,
    FireTimer,
    Input,
    SignalWorkflow,
    StartWorkflow,
    TaskFailed,
    TaskSucceeded,
)
from orchestrator.core.state import ExecutionState

from tests.golden.make_corpus import to_jsonable

ROOT = Path(__file__).resolve().parents[2]
HISTORIES_DIR = Path(__file__).resolve().parent / "histories"
SEED_FILE = "examples/user-registration-workflow.yaml"

EID = "exec-1"
T0 = 1767225600000  # 2026-01-01T00:00:00Z
SECOND = 1000
DAY = 86_400_000


def cause_of(command: Input) -> str:
    """A readable cause, in the forms `RecordedEvent.cause` documents."""
    match command:
        case TaskSucceeded() | TaskFailed():
            return f"result:{command.step}#{command.attempt}"
        case ChildExecutionEnded():
            return f"result:child:{command.child_execution_id}"
        case FireTimer():
            return f"timer:{command.timer_id}"
        case _:
            return f"command:{type(command).__name__}"


class Recorder:
    """One execution driven through `handle`, remembering every input and its events."""

    def __init__(self, source: str, file: str, execution_id: str = EID) -> None:
        self.source = source
        self.file = file
        self.definition: WorkflowDefinition = load_definition_source(source, file=file)
        self.state: ExecutionState = initial_state(execution_id)
        self.now = T0
        self.inputs: list[tuple[int, str, Input, list[RecordedEvent]]] = []

    @property
    def eid(self) -> str:
        return self.state.execution_id

    def feed(self, command: Input, *, at: int | None = None, after: int = SECOND) -> list[Event]:
        """Decide `command` at `at` (default: `after` ms past the previous input)."""
        if self.inputs:
            self.now = at if at is not None else self.now + after
        self.state, recorded = handle(self.state, command, self.definition, self.now, cause=cause_of(command))
        self.inputs.append((self.now, cause_of(command), command, recorded))
        return [r.event for r in recorded]

    def fire(self, timer_id: str) -> list[Event]:
        """Fire a timer the execution holds, at its due time."""
        return self.feed(FireTimer(self.eid, timer_id), at=max(self.now, self.state.timers[timer_id]))

    def ok(self, step: str, output: Any = None, attempt: int | None = None) -> list[Event]:
        attempt = attempt or self.state.step(step).attempt
        return self.feed(TaskSucceeded(self.eid, step, attempt, output if output is not None else {},
                                       self.now, self.now + 200))

    def fail(self, step: str, status: int = 503, attempt: int | None = None) -> list[Event]:
        attempt = attempt or self.state.step(step).attempt
        return self.feed(TaskFailed(self.eid, step, attempt, f"HTTP {status}", status >= 500 or status in (408, 429),
                                    status, self.now, self.now + 200))

    def expect(self, status: str, **steps: str) -> "Recorder":
        """The scenario ended as it means to (checked when it is recorded)."""
        got = {name: self.state.step(name).status for name in steps}
        if self.state.status != status or got != steps:
            raise AssertionError(f"scenario ended {self.state.status} with steps {got}, meant {status} with {steps}")
        return self


# -- scenarios ---------------------------------------------------------------

SEED_INPUT = {"username": "john", "email": "john@example.com", "password": "correct horse battery",
              "profile_data": {"locale": "en"}}


def _seed(source: str | None = None) -> Recorder:
    r = Recorder(source or (ROOT / SEED_FILE).read_text("utf-8"), SEED_FILE)
    r.feed(StartWorkflow(r.eid, r.definition.name, r.definition.version, SEED_INPUT, "alice@cli"))
    r.ok("validate_input", {"valid": True})
    return r


def _verified(r: Recorder, user_id: str, event_id: str) -> list[Event]:
    return r.feed(DeliverEvent(r.eid, "wait_for_verification", event_id, "user.email_verified",
                               {"user_id": user_id}, r.now, "mailer"))


def _registered(profile: bool = True) -> Recorder:
    """Account, profile and welcome e-mail done: the wait for verification is open."""
    r = _seed()
    r.ok("create_user_account", {"user_id": "u-1"})
    r.ok("create_user_profile", {"id": "p-1"})
    r.ok("send_welcome_email", {"sent": True})
    return r


def seed_happy_path() -> Recorder:
    """The seed completes: two 503s and retries, a non-matching then the matching event."""
    r = _seed()
    for _ in range(2):  # two 503s, each followed by its retry timer
        r.fail("create_user_account", 503)
        r.fire(next(t for t in r.state.timers if t.startswith("retry:create_user_account:")))
    r.ok("create_user_account", {"user_id": "u-1"})  # profile and welcome e-mail start in parallel
    r.ok("send_welcome_email", {"sent": True})  # the wait opens
    r.ok("create_user_profile", {"id": "p-1"})
    _verified(r, "u-2", "evt-other")  # another user's verification: nothing
    _verified(r, "u-1", "evt-1")
    r.ok("activate_user_account", {"id": "u-1", "status": "active", "activation_date": "2026-01-02T10:00:00Z"})
    r.ok("send_activation_notification", {"delivered": True})
    return r.expect("completed", create_user_account="completed", wait_for_verification="completed")


def seed_wait_timeout_compensation_workflow() -> Recorder:
    """The seed's wait times out: its compensation workflow runs as a child; the execution fails."""
    r = _registered()
    r.fire("wait:wait_for_verification")  # on_timeout: compensate with user-cleanup-workflow
    r.feed(ChildExecutionEnded(r.eid, "someone-else", "compensation", "completed"))  # not our child: nothing
    r.feed(ChildExecutionEnded(r.eid, f"{r.eid}-compensation", "compensation", "completed", {"deleted": True}))
    _verified(r, "u-1", "evt-late")  # too late: nothing
    r.feed(SignalWorkflow(r.eid, "nudge", None, "ops"))  # rejected: already failed
    return r.expect("failed", wait_for_verification="failed")


def seed_activation_fails_compensation_steps() -> Recorder:
    """Activation fails after its retries: both compensation steps run, in order."""
    r = _registered()
    _verified(r, "u-1", "evt-1")
    for attempt in (1, 2):
        r.fail("activate_user_account", 503)
        r.fire(f"retry:activate_user_account:{attempt + 1}")
    r.fail("activate_user_account", 503)  # out of attempts: terminate, compensation steps start
    r.ok("cleanup_user_account", {"deleted": True})
    r.ok("cleanup_user_profile", {"deleted": True})  # the profile was created: it is cleaned up
    return r.expect("failed", activate_user_account="failed", cleanup_user_account="completed",
                    cleanup_user_profile="completed")


PROFILE_OPTIONAL_MARK = "      parallel: true\n    # Step 4"


def _profile_optional_seed() -> str:
    text = (ROOT / SEED_FILE).read_text("utf-8")
    if PROFILE_OPTIONAL_MARK not in text:
        raise SystemExit(f"{SEED_FILE} changed: cannot derive the profile-optional variant")
    text = text.replace(PROFILE_OPTIONAL_MARK,
                        "      parallel: true\n      on_failure:\n        action: \"continue\"\n    # Step 4", 1)
    return "# The seed, with create_user_profile on_failure: continue.\n" + text


def seed_profile_failed_compensation_skips_cleanup() -> Recorder:
    """The profile failed (continue), activation fails: cleanup_user_profile is skipped."""
    r = _seed(_profile_optional_seed())
    r.ok("create_user_account", {"user_id": "u-1"})
    r.fail("create_user_profile", 400)  # continue
    r.ok("send_welcome_email", {"sent": True})
    _verified(r, "u-1", "evt-1")
    for attempt in (1, 2):
        r.fail("activate_user_account", 503)
        r.fire(f"retry:activate_user_account:{attempt + 1}")
    r.fail("activate_user_account", 503)
    r.ok("cleanup_user_account", {"deleted": True})  # cleanup_user_profile: condition false, skipped
    return r.expect("failed", create_user_profile="failed", cleanup_user_account="completed",
                    cleanup_user_profile="skipped")


def seed_cancel_in_flight() -> Recorder:
    """Cancelled while calls are in flight: compensation waits for them, then the execution is cancelled."""
    r = _seed()
    r.ok("create_user_account", {"user_id": "u-1"})  # profile and e-mail in flight
    r.feed(CancelWorkflow(r.eid, "user gave up", "ops"))  # compensating, waiting for the calls in flight
    r.feed(CancelWorkflow(r.eid, "again", "ops"))  # rejected: already compensating
    r.ok("create_user_profile", {"id": "p-1"})
    r.fail("send_welcome_email", 503)  # no retry while compensating: abandoned; compensation starts
    r.ok("cleanup_user_account", {"deleted": True})
    r.ok("cleanup_user_profile", {"deleted": True})
    r.feed(CancelWorkflow(r.eid, "once more", "ops"))  # rejected: already cancelled
    return r.expect("cancelled", create_user_profile="completed", send_welcome_email="failed",
                    cleanup_user_account="completed", cleanup_user_profile="completed")


APPROVAL = """\
apiVersion: workflow/v1
kind: Workflow
metadata: {name: approval, version: "1"}
spec:
  steps:
    - name: request
      type: service_call
      config: {service: approvals}
    - name: approved
      type: wait_for_event
      config: {signal: approve, timeout: 1h}
      output: {by: "{{ event.by }}", amount: "{{ input.amount }}"}
    - name: confirmed
      type: wait_for_event
      config: {signal: confirm}
    - name: book
      type: service_call
      config: {service: bookings}
"""


def signal_wait_early_signal() -> Recorder:
    """A signal sent before its wait opens is kept and consumed; another arrives after its wait opens."""
    r = Recorder(APPROVAL, "approval.yaml")
    r.feed(StartWorkflow(r.eid, "approval", "1", {"amount": 5}))
    r.feed(SignalWorkflow(r.eid, "approve", {"by": "bob"}, "bob"))  # early: kept until the wait opens
    r.feed(SignalWorkflow(r.eid, "unrelated", {"x": 1}))  # kept, never consumed
    r.ok("request", {"id": "req-1"})  # approved opens, consumes the early signal; confirmed opens
    r.feed(SignalWorkflow(r.eid, "confirm", {"ok": True}, "carol"))
    r.ok("book", {"booking": "b-1"})
    return r.expect("completed", approved="completed", confirmed="completed")


TIMEOUTS = """\
apiVersion: workflow/v1
kind: Workflow
metadata: {name: timeouts, version: "1"}
spec:
  config:
    timeout: 10s
    execution_timeout: 50s
    retry_policy: {max_attempts: 5, backoff: fixed, initial_delay: 5s, jitter: 0}
  steps:
    - name: slow
      type: service_call
      config: {service: slow-service}
"""


def attempt_timeout_then_execution_timeout() -> Recorder:
    """Attempts time out and are retried until the execution's own time limit ends it."""
    r = Recorder(TIMEOUTS, "timeouts.yaml")
    r.feed(StartWorkflow(r.eid, "timeouts", "1", {}))
    r.fire("timeout:slow:1")  # the attempt timed out: retried
    r.ok("slow", {"late": True}, attempt=1)  # the timed-out attempt reports late: nothing
    while "execution-timeout" in r.state.timers:  # attempts keep timing out until the execution does
        r.fire(min(r.state.timers, key=lambda t: (r.state.timers[t], t)))
    r.fail("slow", 503, attempt=4)  # late news after the end: nothing
    r.feed(FireTimer(r.eid, "timeout:slow:1"), after=0)  # a timer that no longer exists: nothing
    return r.expect("failed", slow="failed")


ORDERS = """\
apiVersion: workflow/v1
kind: Workflow
metadata: {name: orders, version: "1"}
spec:
  config: {retry_policy: {max_attempts: 2, backoff: fixed, initial_delay: 2s, jitter: 0}}
  input:
    schema:
      type: object
      properties:
        amount: {type: number}
        lines: {type: array}
  steps:
    - name: route
      type: switch
      config:
        cases:
          - name: large
            when: "{{ input.amount > 1000 }}"
            steps: [{name: review, type: service_call, config: {service: review-service}}]
        default: []
    - name: reserve_all
      type: for_each
      config:
        items: "{{ input.lines }}"
        concurrency: 2
        on_item_failure: collect
        tolerated_failures: 1
        step: {name: reserve, type: service_call, config: {service: stock-service, payload: {sku: "{{ item.sku }}"}}}
    - name: confirm
      type: loop
      config:
        max_iterations: 3
        until: "{{ steps.check.output.confirmed }}"
        steps: [{name: check, type: service_call, config: {service: stock-service}}]
    - name: paid
      type: wait_for_event
      depends_on: [confirm]
      config: {event_type: payment.received, filter: {order: "{{ execution.id }}"}}
    - name: give_up
      type: delay
      depends_on: [confirm]
      config: {duration: 1h}
    - name: close
      type: service_call
      depends_on: [paid, give_up]
      join: any
      config: {service: stock-service}
"""


def orders_control_flow() -> Recorder:
    """A switch, a for_each that tolerates one failed item, a loop until confirmed, and a
    deferred choice between a payment event and a one-hour delay that the delay wins."""
    r = Recorder(ORDERS, "orders.yaml")
    r.feed(StartWorkflow(r.eid, "orders", "1", {"amount": 5000, "lines": [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]}))
    r.ok("review", {"ok": True})  # the large case ends the switch; items 0 and 1 start
    r.fail("reserve_all[1].reserve", 409)  # permanent: item 1 fails, tolerated; item 2 starts
    r.fail("reserve_all[0].reserve", 503)  # transient: retried after 2s
    r.fire("retry:reserve_all[0].reserve:2")
    r.ok("reserve_all[2].reserve", {"reserved": "c"})
    r.ok("reserve_all[0].reserve", {"reserved": "a"}, attempt=2)  # the for_each completes
    r.ok("confirm[0].check", {"confirmed": False})
    r.ok("confirm[1].check", {"confirmed": True})  # the loop ends; the wait and the delay open
    r.fire("wait:give_up")  # the delay wins: the wait is cancelled, close starts
    r.ok("close", {"closed": True})
    return r.expect("completed", route="completed", reserve_all="completed", confirm="completed",
                    paid="cancelled", give_up="completed", close="completed")


SCENARIOS: dict[str, Callable[[], Recorder]] = {
    "seed_happy_path": seed_happy_path,
    "seed_wait_timeout_compensation_workflow": seed_wait_timeout_compensation_workflow,
    "seed_activation_fails_compensation_steps": seed_activation_fails_compensation_steps,
    "seed_profile_failed_compensation_skips_cleanup": seed_profile_failed_compensation_skips_cleanup,
    "seed_cancel_in_flight": seed_cancel_in_flight,
    "signal_wait_early_signal": signal_wait_early_signal,
    "attempt_timeout_then_execution_timeout": attempt_timeout_then_execution_timeout,
    "orders_control_flow": orders_control_flow,
}


# -- files -------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def document(name: str, r: Recorder, codec: Codec) -> dict[str, Any]:
    inputs = []
    for now, cause, command, recorded in r.inputs:
        entry: dict[str, Any] = {"now": now, "cause": cause, "input": to_jsonable(command)}
        if not isinstance(command, FireTimer):
            entry["avro"] = _b64(codec.encode(command))
        entry["events"] = [{"event": to_jsonable(rec), "avro": _b64(codec.encode(rec))} for rec in recorded]
        inputs.append(entry)
    return {
        "scenario": name,
        "description": (SCENARIOS[name].__doc__ or "").strip() or None,
        "execution_id": r.eid,
        "definition": {"file": r.file, "source_lines": r.source.splitlines()},
        "inputs": inputs,
        "final": {"status": r.state.status, "steps": {n: s.status for n, s in r.state.steps.items()}},
    }


def _comparable(value: Any) -> Any:
    """What `--check` compares: no Avro bytes (a new schema version writes others), and
    no null fields (a field added later with its null default changes no meaning)."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k != "avro" and v is not None}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def difference(recorded: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Where a regenerated document departs from the recorded one, or None.

    The definition source and the description are not compared: a comment
    edited in the example must not invalidate histories recorded with it (they
    replay with their own copy); a change of meaning shows in the events.
    """
    recorded, now = _comparable(recorded), _comparable(now)
    for i, (old, new) in enumerate(zip(recorded["inputs"], now["inputs"])):
        if old != new:
            return f"input #{i} ({old['input'].get('$type')}, cause {old['cause']!r}) differs"
    if len(recorded["inputs"]) != len(now["inputs"]):
        return f"{len(recorded['inputs'])} input(s) recorded, {len(now['inputs'])} now"
    for key in sorted(set(recorded) | set(now)):
        if key not in ("inputs", "definition", "description") and recorded.get(key) != now.get(key):
            return f"'{key}' differs"
    return None


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; fail if files are missing or differ")
    args = parser.parse_args(argv)
    codec = Codec.default()
    problems, written = [], 0
    for name, scenario in SCENARIOS.items():
        path = HISTORIES_DIR / f"{name}.json"
        try:
            doc = document(name, scenario(), codec)
        except AssertionError as exc:  # Recorder.expect: the scenario no longer means what it says
            problems.append(f"scenario '{name}': {exc}")
            continue
        if path.exists():
            diff = difference(json.loads(path.read_text("utf-8")), json.loads(dumps(doc)))
            if diff is not None:
                problems.append(f"{path}: scenario '{name}' now records something else: {diff} (never rewrite "
                                f"a recorded history; tests/golden/test_histories.py names the changed decision)")
            continue
        if args.check:
            problems.append(f"{path} is missing: run tests/golden/make_histories.py")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(doc), "utf-8")
        written += 1
    for path in sorted(HISTORIES_DIR.glob("*.json")):
        if path.stem not in SCENARIOS:
            problems.append(f"{path}: no scenario '{path.stem}' in tests/golden/make_histories.py")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not args.check:
        print(f"{written} history file(s) written under {HISTORIES_DIR}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
