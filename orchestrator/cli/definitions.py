"""`orchestrator definitions validate|apply|list`.

`validate` is offline: it reads files only (and `ORCH_SERVICES` when set, to
check service names). `apply` validates every file first, then compares with
what the compacted definitions topic holds: the same content under a
`name@version` is "unchanged", different content under an existing version is
refused (publish a new version instead), and nothing is published unless
every file can be.
"""

from __future__ import annotations

import getpass
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml
from rich.markup import escape
from rich.table import Table

from ..config import Settings
from ..core.definition import WorkflowDefinition
from ..core.messages import DefinitionRegistered
from ..core.versions import version_key
from .common import CliError, console, echo_json, get_settings, iso, warn

__all__ = ["definitions", "DefinitionInfo", "FileCheck", "check_file", "definition_info", "requested_by"]


@dataclass(frozen=True)
class DefinitionInfo:
    """What the CLI needs of a registered definition, read without the full loader
    (which pulls in jsonschema's format checkers: seconds of start-up)."""

    name: str
    version: str
    input_schema: dict[str, Any]
    steps: tuple[str, ...]
    compensation: tuple[str, ...]


def _names(steps: Any) -> tuple[str, ...]:
    return tuple(s["name"] for s in steps or () if isinstance(s, dict) and isinstance(s.get("name"), str))


def definition_info(found: list[DefinitionRegistered], name: str, version: str | None) -> DefinitionInfo | None:
    """The registered definition NAME@VERSION (latest version when None), or None."""
    candidates = [d for d in found if d.name == name and (version is None or d.version == version)]
    if not candidates:
        return None
    chosen = max(candidates, key=lambda d: version_key(d.version))
    try:
        data = yaml.safe_load(chosen.source)
    except yaml.YAMLError:
        data = None
    spec = data.get("spec") if isinstance(data, dict) else None
    spec = spec if isinstance(spec, dict) else {}
    schema = (spec.get("input") or {}).get("schema") if isinstance(spec.get("input"), dict) else None
    compensation = spec.get("compensation") if isinstance(spec.get("compensation"), dict) else {}
    return DefinitionInfo(chosen.name, chosen.version, schema if isinstance(schema, dict) else {},
                          _names(spec.get("steps")), _names(compensation.get("steps")))


def requested_by() -> str | None:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return None


@dataclass
class FileCheck:
    """One file's validation: the parsed definition, or the problems."""

    file: str
    text: str = ""
    definition: WorkflowDefinition | None = None
    problems: list[Any] = field(default_factory=list)  # Problem (file, step, field, message, line)
    source_format: str = "yaml"
    digest: str | None = None

    @property
    def ok(self) -> bool:
        return self.definition is not None and not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "valid": self.ok,
            "name": self.definition.name if self.definition else None,
            "version": self.definition.version if self.definition else None,
            "digest": self.digest,
            "problems": [problem_json(p) for p in self.problems],
        }


def problem_json(problem: Any) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": getattr(problem, "line", None),
        "step": problem.step,
        "field": problem.field or None,
        "message": problem.message,
    }


def _known_services(settings: Settings | None) -> set[str] | None:
    if settings is None or settings.services_file is None:
        return None
    from ..runtime.services import load_registry

    try:
        return set(load_registry(settings).names())
    except Exception as exc:  # a broken registry must not hide the definitions' own problems
        warn(f"ORCH_SERVICES ({settings.services_file}): not used for validation: {exc}")
        return None


def check_file(path: str, *, known_services: set[str] | None = None) -> FileCheck:
    """Read, parse and check one definition file (never raises for the user's mistakes)."""
    from ..core.validation import Problem

    result = FileCheck(file=path)
    try:
        result.text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        result.problems.append(Problem(path, None, "", "file not found"))
        return result
    except IsADirectoryError:
        result.problems.append(Problem(path, None, "", "is a directory, not a definition file"))
        return result
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        result.problems.append(Problem(path, None, "", f"cannot read: {reason}"))
        return result
    return check_text(result, known_services)


def source_format(text: str) -> str:
    """How the definitions reader parses the text: JSON when it opens like JSON."""
    return "json" if text.lstrip().startswith(("{", "[")) else "yaml"


def check_text(result: FileCheck, known_services: set[str] | None) -> FileCheck:
    from ..core.loading import DefinitionError, canonical_digest, load_definition_source

    result.source_format = source_format(result.text)
    try:
        result.definition = load_definition_source(result.text, file=result.file, known_services=known_services)
    except DefinitionError as exc:
        result.problems.extend(exc.problems)
        return result
    result.digest = canonical_digest(result.definition)
    return result


def _check_all(files: tuple[str, ...]) -> list[FileCheck]:
    settings = get_settings()
    services = _known_services(settings)
    return [check_file(f, known_services=services) for f in files]


@click.group()
def definitions() -> None:
    """Validate, register and list workflow definitions."""


@definitions.command("validate")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def validate(files: tuple[str, ...], as_json: bool) -> None:
    """Check definition files without Kafka; exit 1 when any has a problem.

    Every problem is printed as `file: step 'x': field: message`.
    """
    results = _check_all(files)
    valid = all(r.ok for r in results)
    if as_json:
        echo_json({"valid": valid, "files": [r.as_json() for r in results]})
    else:
        out = console()
        for r in results:
            if r.ok:
                assert r.definition is not None
                out.print(f"[green]ok[/green] {escape(r.file)}: {escape(r.definition.key)} "
                          f"({len(r.definition.spec.steps)} steps)")
            for problem in r.problems:
                click.echo(str(problem), err=True)
        bad = sum(len(r.problems) for r in results)
        if bad:
            click.echo(f"{bad} problem{'s' if bad != 1 else ''} in "
                       f"{sum(1 for r in results if not r.ok)} of {len(results)} files", err=True)
    if not valid:
        raise SystemExit(1)


@definitions.command("apply")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def apply(files: tuple[str, ...], as_json: bool) -> None:
    """Register definitions on the compacted definitions topic.

    Same content as registered: "unchanged". Different content under an
    existing name@version: refused (bump the version). All or nothing.
    """
    from .kafka_io import ensure, publish, read_definitions

    results = _check_all(files)
    if not all(r.ok for r in results):
        for r in results:
            for problem in r.problems:
                click.echo(str(problem), err=True)
        raise CliError("nothing applied: fix the problems above first")
    settings = get_settings()
    ensure(settings)
    registered = {f"{d.name}@{d.version}": d for d, _ in read_definitions(settings)}

    plan: list[tuple[FileCheck, str]] = []
    conflicts: list[str] = []
    seen: dict[str, FileCheck] = {}
    for r in results:
        assert r.definition is not None and r.digest is not None
        key = r.definition.key
        if key in seen:
            if seen[key].digest != r.digest:
                conflicts.append(f"{r.file}: {key} is also defined by {seen[key].file} with other content")
            continue
        seen[key] = r
        existing = registered.get(key)
        if existing is None:
            plan.append((r, "registered"))
        elif existing.digest == r.digest:
            plan.append((r, "unchanged"))
        else:
            conflicts.append(
                f"{r.file}: {key} is already registered with other content (digest {existing.digest[:12]}, "
                f"registered {iso(existing.registered_at)} by {existing.registered_by or 'unknown'}); "
                "a registered version never changes: give the definition a new metadata.version"
            )
    if conflicts:
        for line in conflicts:
            click.echo(f"error: {line}", err=True)
        raise CliError(f"nothing applied: {len(conflicts)} conflicting definition"
                       f"{'s' if len(conflicts) != 1 else ''}")

    now = int(time.time() * 1000)
    by = requested_by()
    records = []
    for r, outcome in plan:
        if outcome != "registered":
            continue
        assert r.definition is not None and r.digest is not None
        message = DefinitionRegistered(r.definition.name, r.definition.version, r.text, r.source_format,
                                       r.digest, now, by)
        records.append((settings.topics.definitions, r.definition.key, message))
    published = {p.key: p for p in publish(settings, records)} if records else {}

    rows = []
    for r, outcome in plan:
        assert r.definition is not None
        p = published.get(r.definition.key)
        rows.append({"file": r.file, "name": r.definition.name, "version": r.definition.version,
                     "digest": r.digest, "result": outcome,
                     "partition": p.partition if p else None, "offset": p.offset if p else None})
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
