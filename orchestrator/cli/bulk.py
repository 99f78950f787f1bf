"""`orchestrator bulk cancel|retry|pause|resume`: one action over every execution a filter matches.

The filter is the list's (`reads.parse_filter`, as `GET /api/v1/executions`
takes it); `--dry-run` counts and shows a sample; a real run sends one
command per execution at a bounded rate and reports, per execution, what the
decider made of it (`operations.bulk`, shared with `POST /api/v1/bulk/{action}`).
"""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ..operations.bulk import BULK_ACTIONS
from .common import CliError, console, echo_json, get_settings
from .definitions import requested_by
from .queries import STATUSES

__all__ = ["bulk"]

_OUTCOME_STYLES = {"accepted": "green", "rejected": "red", "pending": "yellow", "failed_to_send": "red"}


def _filter(status: tuple[str, ...], workflow: str | None, version: str | None, created_after: str | None,
            created_before: str | None, fields: tuple[str, ...]) -> Any:
    from ..api.reads import parse_filter

    params: dict[str, Any] = {"status": list(status)} if status else {}
    params.update((k, v) for k, v in (("workflow", workflow), ("version", version),
                                      ("created_after", created_after), ("created_before", created_before)) if v)
    for item in fields:
        path, eq, value = item.partition("=")
        if not eq or not path.startswith(("input.", "output.")):
            raise click.BadParameter(f"{item!r}: expected input.<path>=<value> or output.<path>=<value>",
                                     param_hint="--field")
        params[path] = value
    try:
        return parse_filter(params)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.command()
@click.argument("action", type=click.Choice(BULK_ACTIONS))
@click.option("--status", multiple=True, type=click.Choice(STATUSES), help="Only executions in this status (repeatable).")
@click.option("--workflow", default=None, help="Only this workflow.")
@click.option("--version", default=None, help="Only this version of it.")
@click.option("--created-after", default=None, metavar="ISO8601", help="Created at or after this time.")
@click.option("--created-before", default=None, metavar="ISO8601", help="Created before this time.")
@click.option("--field", "fields", multiple=True, metavar="input.PATH=VALUE",
              help="Input or output field equal to VALUE (JSON when it parses, else text); repeatable.")
@click.option("--dry-run", is_flag=True, help="Only count the matching executions and show a sample.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Commands sent per second at most.")
@click.option("--max", "max_items", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Act on at most this many executions (newest first).")
@click.option("--decision-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              metavar="SECONDS", help="How long to wait for the decider's decisions after the last send.")
@click.option("--reason", default=None, help="Recorded with each command.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def bulk(action: str, status: tuple[str, ...], workflow: str | None, version: str | None,
         created_after: str | None, created_before: str | None, fields: tuple[str, ...], dry_run: bool,
         rate: float, max_items: int, decision_timeout: float, reason: str | None, as_json: bool) -> None:
    """Cancel, retry, pause or resume every execution the filters match.

    Exit 1 when any command was rejected or could not be sent, 2 when some
    decisions did not come within --decision-timeout.
    """
    from ..operations.bulk import bulk_action
    from ..operations.sending import KafkaSender
    from .kafka_io import require_topics
    from .pg import connect

    f = _filter(status, workflow, version, created_after, created_before, fields)
    settings = get_settings()
    if not dry_run:
        require_topics(settings, settings.topics.commands)
    sender = None if dry_run else KafkaSender(settings, role="cli")
    try:
        report = bulk_action(action, f, connect=lambda: connect(settings), send=sender if sender is not None else _unused,
                             settings=settings, requested_by=requested_by(), reason=reason, dry_run=dry_run,
                             rate_per_second=rate, max_items=max_items, decision_timeout_s=decision_timeout)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    finally:
        if sender is not None:
            sender.close()
    if as_json:
        echo_json(report.as_json())
    else:
        _print(report)
    counts = report.counts()
    if counts.get("rejected") or counts.get("failed_to_send"):
        raise SystemExit(1)
    if counts.get("pending"):
        raise SystemExit(2)


def _unused(records: Any) -> Any:
    raise AssertionError("a dry run sends nothing")


def _print(report: Any) -> None:
    out = console()
    if report.dry_run:
        out.print(f"{report.matched} execution{'s' if report.matched != 1 else ''} match; "
                  f"a dry run sends nothing. First {len(report.sample)}:")
        for eid in report.sample:
            out.print(f"  {escape(eid)}")
        return
    table = Table("execution", "outcome", "reason", box=None, pad_edge=False)
    for item in report.results:
        style = _OUTCOME_STYLES.get(item.outcome, "")
        table.add_row(escape(item.execution_id), f"[{style}]{item.outcome}[/{style}]", escape(item.reason or ""))
    out.print(table)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(report.counts().items()))
    acted = len(report.results)
    more = f" (of {report.matched} matching; --max {acted})" if report.matched > acted else ""
    out.print(f"{report.action}: {acted} sent{more}: {summary or 'none'}")
