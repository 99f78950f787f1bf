"""`orchestrator retry|pause|resume|skip ID`: operators' actions, as commands to the decider.

Each is recorded in the execution's history with who asked (`requested_by`);
one that does not apply (retrying a running execution, skipping a finished
step) is recorded as `CommandRejected` with the reason. `--wait SECONDS`
waits for that decision in the projection and exits 1 when it was rejected.
"""

from __future__ import annotations

from typing import Any

import click

from ..operations.commands import operator_command, seal_input, skip_command
from .common import CliError, get_settings, parse_json_value
from .definitions import requested_by
from .executions import sealing, send_and_report

__all__ = ["retry", "pause", "resume", "skip"]

_WAIT = click.option("--wait", "wait_s", type=click.FloatRange(min=0, min_open=True), default=None,
                     metavar="SECONDS", help="Wait this long for the decision (accepted or rejected) in the "
                                             "projection; exit 1 when rejected, 2 when still pending.")
_REASON = click.option("--reason", default=None, help="Recorded with the action.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def _sealed_input(settings: Any, execution_id: str, value: Any) -> Any:
    """A retry's new input, sealed with the input schema of the execution's version (as the API does)."""
    from ..operations.lookups import execution_head, input_schema_of
    from .pg import connect

    with connect(settings) as conn:
        row = execution_head(conn, execution_id)
        if row is None:
            raise CliError(f"execution {execution_id} is not in the projection: cannot find its input schema")
        schema = input_schema_of(conn, row)
    return seal_input(value, schema, sealing(settings))


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
    send_and_report(command, f"retry requested for {execution_id}", wait_s, as_json)


@click.command()
@click.argument("execution_id", metavar="ID")
@_REASON
@_WAIT
@_JSON
def pause(execution_id: str, reason: str | None, wait_s: float | None, as_json: bool) -> None:
    """Hold running execution ID: no new step starts until `orchestrator resume`;
    calls in flight finish and timers keep their deadlines."""
    command = operator_command("pause", execution_id, reason=reason, requested_by=requested_by())
    send_and_report(command, f"pause requested for {execution_id}", wait_s, as_json)


@click.command()
@click.argument("execution_id", metavar="ID")
@_REASON
@_WAIT
@_JSON
def resume(execution_id: str, reason: str | None, wait_s: float | None, as_json: bool) -> None:
    """Let paused execution ID go on."""
    command = operator_command("resume", execution_id, reason=reason, requested_by=requested_by())
    send_and_report(command, f"resume requested for {execution_id}", wait_s, as_json)


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
    send_and_report(command, f"skip of step {step} requested for {execution_id}", wait_s, as_json)
