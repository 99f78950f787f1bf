"""`orchestrator definitions validate|apply|list|new|templates`.

`validate` is offline: it reads files only (and `ORCH_SERVICES` when set, to
check service names). `apply` validates every file first, then compares with
what the compacted definitions topic holds: the same content under a
`name@version` is "unchanged", different content under an existing version is
refused (publish a new version instead), and nothing is published unless
every file can be.

Step templates (`kind: StepTemplate`, see docs/templates.md) come from the
files given and from `--templates DIR` (or `ORCH_TEMPLATES`); a definition
whose steps use them is checked and registered expanded, so its registered
source never depends on a template file. `new` and `templates` (starter
definitions from built-in templates) are in `definition_templates.py`. The
checking and the apply plan are `orchestrator.operations.definitions`, which
the HTTP API uses too.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from ..config import Settings
from ..core.versions import version_key
from ..operations.definitions import (
    Checked,
    DefinitionInfo,
    FileCheck,
    applied_rows,
    check_sources,
    check_text,
    definition_info,
    known_services,
    plan_apply,
    registration_records,
    validation_json,
)
from .common import CliError, console, echo_json, get_settings, iso, warn
from .definition_templates import list_templates, new

if TYPE_CHECKING:  # imported when used: the loader pulls in jsonschema (seconds of start-up)
    from ..core.step_templates import StepTemplate

__all__ = ["definitions", "DefinitionInfo", "FileCheck", "check_file", "definition_info", "requested_by"]

TEMPLATES_ENV = "ORCH_TEMPLATES"


def requested_by() -> str | None:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return None


def _known_services(settings: Settings | None) -> set[str] | None:
    return known_services(settings, warn)


def check_file(path: str, *, known_services: set[str] | None = None,
               templates: Mapping[str, StepTemplate] | None = None) -> FileCheck:
    """Read, parse and check one definition file (never raises for the user's mistakes)."""
    from ..definitions_io import read_text

    result = FileCheck(file=path)
    text, problem = read_text(path)
    if text is None:
        assert problem is not None
        result.problems.append(problem)
        return result
    result.text = text
    return check_text(result, known_services, templates)


def _templates_dir(option: str | None) -> str | None:
    directory = option if option is not None else os.environ.get(TEMPLATES_ENV) or None
    if directory is not None and not Path(directory).is_dir():
        origin = "--templates" if option is not None else TEMPLATES_ENV
        raise CliError(f"{origin} {directory}: not a directory of step templates")
    return directory


def _check_all(files: tuple[str, ...], templates_dir: str | None = None) -> Checked:
    from ..definitions_io import read_text

    settings = get_settings()
    services = _known_services(settings)
    directory = _templates_dir(templates_dir)
    texts = {f: read_text(f) for f in dict.fromkeys(files)}
    return check_sources([(f, *texts[f]) for f in files], templates_dir=directory, known_services=services)


_TEMPLATES_OPTION = click.option(
    "--templates", "templates_dir", metavar="DIR", default=None,
    help=f"A directory of step templates (*.yaml, *.yml); default ${TEMPLATES_ENV}.")


@click.group()
def definitions() -> None:
    """Validate, register and list workflow definitions; start new ones from templates."""


@definitions.command("validate")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@_TEMPLATES_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def validate(files: tuple[str, ...], templates_dir: str | None, as_json: bool) -> None:
    """Check definition files without Kafka; exit 1 when any has a problem.

    Every problem is printed as `file: step 'x': field: message`. Files of
    `kind: StepTemplate` among FILE... are step templates for the others.
    """
    checked = _check_all(files, templates_dir)
    results = checked.definitions
    valid = checked.ok
    if as_json:
        echo_json(validation_json(checked))
    else:
        out = console()
        for t in checked.templates.files:
            if t.ok and t.given and t.template is not None:
                out.print(f"[green]ok[/green] {escape(t.file)}: step template {escape(t.template.name)}")
            for problem in t.problems:
                click.echo(str(problem), err=True)
        for r in results:
            if r.ok:
                assert r.definition is not None
                used = f"; step templates: {', '.join(r.step_templates)}" if r.step_templates else ""
                out.print(f"[green]ok[/green] {escape(r.file)}: {escape(r.definition.key)} "
                          f"({len(r.definition.spec.steps)} steps{escape(used)})")
            for problem in r.problems:
                click.echo(str(problem), err=True)
        bad_files = [r for r in results if not r.ok] + [t for t in checked.templates.files if not t.ok]
        bad = sum(len(r.problems) for r in bad_files)
        if bad:
            click.echo(f"{bad} problem{'s' if bad != 1 else ''} in "
                       f"{len(bad_files)} of {len(results) + len(checked.templates.files)} files", err=True)
    if not valid:
        raise SystemExit(1)


@definitions.command("apply")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@_TEMPLATES_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def apply(files: tuple[str, ...], templates_dir: str | None, as_json: bool) -> None:
    """Register definitions on the compacted definitions topic.

    Same content as registered: "unchanged". Different content under an
    existing name@version: refused (bump the version). All or nothing.
    A definition that uses step templates is registered expanded.
    """
    from .kafka_io import ensure, publish, read_definitions

    checked = _check_all(files, templates_dir)
    results = checked.definitions
    if not checked.ok:
        for problem in checked.templates.problems:
            click.echo(str(problem), err=True)
        for r in results:
            for problem in r.problems:
                click.echo(str(problem), err=True)
        raise CliError("nothing applied: fix the problems above first")
    settings = get_settings()
    ensure(settings)
    registered = {f"{d.name}@{d.version}": d for d, _ in read_definitions(settings)}
    plan = plan_apply(checked, registered, when=iso)
    if plan.conflicts:
        for line in plan.conflicts:
            click.echo(f"error: {line}", err=True)
        raise CliError(f"nothing applied: {len(plan.conflicts)} conflicting definition"
                       f"{'s' if len(plan.conflicts) != 1 else ''}")
    records = registration_records(plan, settings.topics.definitions, int(time.time() * 1000), requested_by())
    published = {p.key: p for p in publish(settings, records)} if records else {}
    rows = applied_rows(plan, published)
    if as_json:
        echo_json({"definitions": rows})
        return
    out = console()
    for row in rows:
        colour = "green" if row["result"] == "registered" else "dim"
        out.print(f"[{colour}]{row['result']}[/{colour}] {escape(row['name'])}@{escape(row['version'])} "
                  f"({escape(row['file'])}, digest {row['digest'][:12]})")


@definitions.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_definitions(as_json: bool) -> None:
    """The registered definitions (read from the compacted topic)."""
    from .kafka_io import read_definitions

    settings = get_settings()
    found = [d for d, _ in read_definitions(settings)]
    found.sort(key=lambda d: (d.name, version_key(d.version)))
    rows = [{"name": d.name, "version": d.version, "registered_at": iso(d.registered_at),
             "registered_by": d.registered_by, "digest": d.digest, "source_format": d.source_format}
            for d in found]
    if as_json:
        echo_json({"definitions": rows})
        return
    if not rows:
        click.echo(f"no definitions registered on {settings.topics.definitions}")
        return
    table = Table("name", "version", "registered at", "by", "digest", box=None, pad_edge=False)
    previous = None
    for row in rows:
        table.add_row(escape(row["name"]) if row["name"] != previous else "", escape(row["version"]),
                      row["registered_at"], escape(row["registered_by"] or ""), row["digest"][:12])
        previous = row["name"]
    console().print(table)


definitions.add_command(list_templates)  # `new` and `templates`: definition_templates.py
definitions.add_command(new)
