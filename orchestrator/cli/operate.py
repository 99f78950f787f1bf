"""`orchestrator retry|pause|resume|skip ID`: operators' actions, as commands to the decider.

Each is recorded in the execution's history with who asked (`requested_by`);
one that does not apply (retrying a running execution, skipping a finished
step) is recorded as `CommandRejected` with the reason. `--wait SECONDS`
waits for that decision in the projection and exits 1 when it was rejected.
"""

from __future__ import annotations

from typing import Any

import click

from ..operations.commands import operator_command, seal_input, skip_command, wait_for_decision
from .common import EXIT_TIMEOUT, CliError, echo_json, get_settings, parse_json_value
from .definitions import requested_by

__all__ = ["retry", "pause", "resume", "skip"]

_WAIT = click.option("--wait", "wait_s", type=click.FloatRange(min=0, min_open=True), default=None,
                     metavar="SECONDS", help="Wait this long for the decision (accepted or rejected) in the "
                                             "projection; exit 1 when rejected, 2 when still pending.")
_REASON = click.option("--reason", default=None, help="Recorded with the action.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def _sealed_input(settings: Any, execution_id: str, value: Any) -> Any:
    """A retry's new input, sealed with the input schema of the execution's version (as the API does)."""
    from ..operations.lookups import execution_head, input_schema_of
    from .executions import sealing
    from .pg import connect

    with connect(settings) as conn:
        row = execution_head(conn, execution_id)
        if row is None:
            raise CliError(f"execution {execution_id} is not in the projection: cannot find its input schema")
        schema = input_schema_of(conn, row)
    return seal_input(value, schema, sealing(settings))


def _send(command: Any, text: str, wait_s: float | None, as_json: bool) -> None:
    from .kafka_io import publish, require_topics

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
@click.option("--input", "input_", default=None, metavar="JSON|@FILE",
              help="Replace the input (validated against the definition's schema) before rerunning.")
@_REASON
@_WAIT
@_JSON
def retry(execution_id: str, input_: str | None, reason: str | None, wait_s: float | None, as_json: bool) -> None:
    """Rerun failed execution ID from its failed step: completed steps keep their
    outputs and are not called again."""
    value = parse_json_value(input_, "--input")
    sealed = _sealed_input(get_settings(), execution_id, value) if value is not None else None
    command = operator_command("retry", execution_id, reason=reason, requested_by=requested_by(),
                               sealed_input=sealed)
    _send(command, f"retry requested for {execution_id}", wait_s, as_json)


@click.command()
@click.argument("execution_id", metavar="ID")
@_REASON
@_WAIT
@_JSON
def pause(execution_id: str, reason: str | None, wait_s: float | None, as_json: bool) -> None:
    """Hold running execution ID: no new step starts until `orchestrator resume`;
    calls in flight finish and timers keep their deadlines."""
    command = operator_command("pause", execution_id, reason=reason, requested_by=requested_by())
    _send(command, f"pause requested for {execution_id}", wait_s, as_json)


@click.command()
@click.argument("execution_id", metavar="ID")
@_REASON
@_WAIT
@_JSON
def resume(execution_id: str, reason: str | None, wait_s: float | None, as_json: bool) -> None:
    """Let paused execution ID go on."""
    command = operator_command("resume", execution_id, reason=reason, requested_by=requested_by())
    _send(command, f"resume requested for {execution_id}", wait_s, as_json)


@click.command()
@click.argument("execution_id", metavar="ID")
@click.argument("step")
@click.option("--output", default=None, metavar="JSON|@FILE", help="The output its dependents see (default null).")
@_REASON
@_WAIT
@_JSON
def skip(execution_id: str, step: str, output: str | None, reason: str | None, wait_s: float | None,
         as_json: bool) -> None:
    """End STEP of execution ID as skipped, with --output for the steps after it."""
    command = skip_command(execution_id, step, output=parse_json_value(output, "--output"), reason=reason,
                           requested_by=requested_by())
    _send(command, f"skip of step {step} requested for {execution_id}", wait_s, as_json)
