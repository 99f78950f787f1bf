"""`orchestrator start|cancel|signal` and `orchestrator events publish`: commands in.

Commands go to the commands topic keyed by the execution id (murmur2, so the
record lands on the partition whose decider owns the execution); external
events go to the external-events topic keyed by the event id. Sensitive
input values are sealed here, before anything leaves the machine. The
commands are built by `orchestrator.operations.commands`, as the HTTP API
builds them; only the user name (`requested_by`) and the sender differ.
"""

from __future__ import annotations

import time
from typing import Any

import click
from rich.live import Live

from ..operations.commands import cancel_command, external_event, signal_command, start_command, wait_for_decision
from ..runtime.kafka import partition_for
from .common import EXIT_TIMEOUT, CliError, console, echo_json, get_settings, parse_json_value, warn
from .definitions import definition_info, requested_by
from .kafka_io import publish, read_definitions, reader, require_topics, watermarks
from .render import execution_panel, from_state

__all__ = ["start", "cancel", "signal", "events"]


def sealing(settings: Any) -> Any:
    """The sealing function of this machine's secret key."""
    from ..runtime.secrets import Sealer, SecretKeyError

    try:
        return Sealer.from_settings(settings).seal
    except SecretKeyError as exc:
        raise CliError(str(exc)) from None


@click.command()
@click.argument("name")
@click.option("--version", "version", default=None, help="Definition version (default: the latest registered).")
@click.option("--input", "input_", default=None, metavar="JSON|@FILE", help="Input as JSON, @file or @- (stdin).")
@click.option("--id", "execution_id", default=None, help="Execution id (default: a new UUID).")
@click.option("--wait", is_flag=True, help="Follow the execution until it ends; exit 0 only if it completed.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="With --wait: give up after this long (exit 2).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def start(name: str, version: str | None, input_: str | None, execution_id: str | None, wait: bool,
          timeout: float | None, as_json: bool) -> None:
    """Start an execution of workflow NAME and print its id.

    With --wait, exit 0 when it completed, 1 when it failed or was cancelled,
    2 when --timeout ran out first.
    """
    if timeout is not None and not wait:
        raise click.UsageError("--timeout only applies with --wait")
    value = parse_json_value(input_, "--input")
    value = {} if value is None else value
    if execution_id is not None and not execution_id.strip():
        raise click.BadParameter("must not be empty", param_hint="--id")
    settings = get_settings()
    topics = settings.topics
    metadata = require_topics(settings, topics.commands, *([topics.events] if wait else []))
    found = [d for d, _ in read_definitions(settings, topics=metadata)]
    definition = definition_info(found, name, version)
    if definition is None:
        what = f"'{name}' version '{version}'" if version else f"'{name}'"
        warn(f"workflow {what} is not registered on {topics.definitions}: the decider will reject the start "
             "unless it is applied first (`orchestrator definitions apply FILE`)")
    schema = definition.input_schema if definition is not None else {}
    command = start_command(name, version, value, execution_id=execution_id, requested_by=requested_by(),
                            input_schema=schema, seal=sealing(settings))

    eid = command.execution_id
    partition = partition_for(eid, settings.partitions)
    follower = None
    start_offset = 0
    if wait:
        from .watch import Follow, fold_existing

        consumer = reader(settings)
        try:
            start_offset = watermarks(consumer, topics.events, partition)[1]
        finally:
            consumer.close()
        follower = Follow(settings, eid, partition)
        if execution_id is not None:
            fold_existing(follower)

    [sent] = publish(settings, [(topics.commands, eid, command)])
    if not wait:
        if as_json:
            echo_json({"execution_id": eid, "workflow_name": name, "workflow_version": version,
                       "command": sent.as_json()})
        else:
            click.echo(eid)
        return
    if not as_json:
        click.echo(eid)
    assert follower is not None
    _wait(follower, start_offset, sent, timeout, definition, as_json, (name, version))


def _document(follower: Any, definition: Any, asked: tuple[str, str | None]) -> dict[str, Any]:
    doc = from_state(follower.state, definition)
    if doc["workflow_name"] is None:  # nothing recorded yet: show what was asked for
        doc["workflow_name"] = asked[0]
        doc["workflow_version"] = definition.version if definition is not None else asked[1]
    return doc


def _wait(follower: Any, start_offset: int, sent: Any, timeout: float | None, definition: Any,
          as_json: bool, asked: tuple[str, str | None]) -> None:
    from .watch import decider_cause, follow

    began = time.monotonic()
    deadline = None if timeout is None else began + timeout
    cause = decider_cause(sent.partition, sent.offset)
    out = console()
    live_view = out.is_terminal and not as_json

    def view() -> Any:
        return execution_panel(_document(follower, definition, asked), live=True,
                               waited_s=time.monotonic() - began)

    try:
        if live_view:
            with Live(view(), console=out, refresh_per_second=4, transient=True) as live:
                def redraw(state: Any = None) -> None:
                    live.update(view())

                outcome = follow(follower, start_offset, deadline=deadline, command_cause=cause,
                                 on_change=redraw, tick=redraw)
        else:
            outcome = follow(follower, start_offset, deadline=deadline, command_cause=cause,
                             on_change=lambda state: None)
    except KeyboardInterrupt:
        raise CliError(f"stopped waiting; execution {follower.execution_id} goes on "
                       f"(`orchestrator status {follower.execution_id}`)", exit_code=130) from None
    doc = _document(follower, definition, asked)
    doc["timed_out"] = outcome.timed_out
    doc["rejected"] = outcome.rejected
    if as_json:
        echo_json(doc)
    else:
        out.print(execution_panel(doc))
    if outcome.rejected:
        raise CliError(f"the start of {follower.execution_id} was rejected: {outcome.rejected}")
    if outcome.timed_out:
        raise CliError(f"execution {follower.execution_id} is still {doc['status']} after the "
                       f"--timeout ({timeout:g}s); it goes on", exit_code=EXIT_TIMEOUT)
    if outcome.state.status != "completed":
        raise SystemExit(1)


def send_and_report(command: Any, text: str, wait_s: float | None, as_json: bool) -> None:
    """Publish one command keyed by its execution id and print where it landed; with `wait_s`,
    also the decider's decision from the projection (exit 1 when rejected, 2 when pending)."""
    settings = get_settings()
    require_topics(settings, settings.topics.commands)
    [sent] = publish(settings, [(settings.topics.commands, command.execution_id, command)])
    doc: dict[str, Any] = {"execution_id": command.execution_id, "command": type(command).__name__,
                           **sent.as_json()}
    if wait_s is not None:
        from .pg import connect

        outcome, reason = wait_for_decision(lambda: connect(settings), command.execution_id, sent.partition,
                                            sent.offset, wait_s)
        doc.update(outcome=outcome, reason=reason)
        text += f": {outcome}" + (f" ({reason})" if reason else "")
    if as_json:
        echo_json(doc)
    else:
        click.echo(text)
    if doc.get("outcome") == "rejected":
        raise SystemExit(1)
    if doc.get("outcome") == "pending":
        raise SystemExit(EXIT_TIMEOUT)


@click.command()
@click.argument("execution_id", metavar="ID")
@click.option("--step", default=None, metavar="STEP",
              help="Withdraw only this step (a name, or a key like pay_all[3].charge); the execution goes on.")
@click.option("--reason", default="cancelled", show_default=True, help="Recorded with the cancellation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def cancel(execution_id: str, step: str | None, reason: str, as_json: bool) -> None:
    """Ask the decider to cancel execution ID (compensating first), or with
    --step only one pending or active step of it (recorded as StepCancelled)."""
    if step is not None and not step.strip():
        raise click.BadParameter("must not be empty", param_hint="--step")
    command = cancel_command(execution_id, reason=reason, step=step, requested_by=requested_by())
    text = (f"cancel of step {step} requested for {execution_id}" if step is not None
            else f"cancel requested for {execution_id}")
    send_and_report(command, text, None, as_json)


@click.command()
@click.argument("execution_id", metavar="ID")
@click.argument("name")
@click.option("--data", default=None, metavar="JSON|@FILE", help="Signal payload as JSON, @file or @-.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def signal(execution_id: str, name: str, data: str | None, as_json: bool) -> None:
    """Send signal NAME (with optional data) to execution ID."""
    payload = parse_json_value(data, "--data")
    command = signal_command(execution_id, name, payload, requested_by=requested_by())
    send_and_report(command, f"signal '{name}' sent to {execution_id}", None, as_json)


@click.group()
def events() -> None:
    """External (business) events."""


@events.command("publish")
@click.argument("event_type", metavar="TYPE")
@click.option("--data", required=True, metavar="JSON|@FILE", help="Event data as JSON, @file or @-.")
@click.option("--id", "event_id", default=None, help="Event id (default: a new UUID); also the Kafka key.")
@click.option("--source", default=None, help="Who emitted the event (recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def publish_event(event_type: str, data: str, event_id: str | None, source: str | None, as_json: bool) -> None:
    """Publish an external event of TYPE for waiting steps to match."""
    payload = parse_json_value(data, "--data")
    settings = get_settings()
    topic = settings.topics.external_events
    require_topics(settings, topic)
    event = external_event(event_type, payload, event_id=event_id, source=source)
    eid = event.event_id
    [sent] = publish(settings, [(topic, eid, event)])
    if as_json:
        echo_json({"event_id": eid, "event_type": event_type, **sent.as_json()})
    else:
        click.echo(eid)
