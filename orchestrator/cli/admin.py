"""`orchestrator projections rebuild|migrate` and `orchestrator topics create`."""

from __future__ import annotations

from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import CliError, console, echo_json, err_console, get_settings
from .kafka_io import ensure, require_kafka
from .pg import connect, projection_schema

__all__ = ["projections", "topics"]


@click.group()
def projections() -> None:
    """The PostgreSQL projection: schema migrations and rebuilds."""


@projections.command("migrate")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def migrate_command(as_json: bool) -> None:
    """Apply the projection's SQL migrations that are not applied yet."""
    from projections.migrate import migrate

    settings = get_settings()
    with connect(settings, dict_rows=False) as conn:
        applied = migrate(conn, projection_schema())
    items = [{"version": m.version, "name": m.name} for m in applied]
    if as_json:
        echo_json({"applied": items, "schema": projection_schema()})
    elif items:
        for m in items:
            click.echo(f"applied {m['version']:04d}_{m['name']}")
    else:
        click.echo("the projection schema is up to date")


@projections.command("rebuild")
@click.option("--yes", is_flag=True, help="Do not ask before emptying the projection tables.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def rebuild_command(yes: bool, as_json: bool) -> None:
    """Empty the projection and project every event again from offset 0."""
    from projections.rebuild import rebuild

    settings = get_settings()
    require_kafka(settings)
    with connect(settings):  # fail fast, with a clear line, before anything is emptied
        pass
    if not yes and not as_json and click.get_text_stream("stdin").isatty():
        click.confirm("This empties the projection tables and re-reads every event. Go on?", abort=True)
    progress = Progress(TextColumn("rebuilding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console(), transient=as_json)
    with progress:
        task = progress.add_task("rebuild", total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            result = rebuild(settings, progress=report, schema=projection_schema())
        except TimeoutError as exc:
            raise CliError(f"rebuild did not finish: {exc}") from None
    doc: dict[str, Any] = {"messages": result.messages, "events": result.events,
                           "definitions": result.definitions, "seconds": round(result.seconds, 3)}
    if as_json:
        echo_json(doc)
    else:
        click.echo(f"rebuilt the projection: {result.events} events and {result.definitions} definitions "
                   f"({result.messages} offsets) in {result.seconds:.1f}s")


@click.group()
def topics() -> None:
    """The orchestrator's Kafka topics."""


@topics.command("create")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def create_topics(as_json: bool) -> None:
    """Create missing topics and check existing ones (partitions, configs)."""
    settings = get_settings()
    outcome = ensure(settings)
    if as_json:
        echo_json({"partitions": settings.partitions, "topics": outcome})
        return
    table = Table("topic", "result", box=None, pad_edge=False, header_style="bold")
    for name, result in outcome.items():
        table.add_row(name, f"[green]{result}[/green]" if result == "created" else result)
    console().print(table)
