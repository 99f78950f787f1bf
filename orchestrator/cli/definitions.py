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
definitions from built-in templates) are in `definition_templates.py`.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml
from rich.markup import escape
from rich.table import Table

from ..config import Settings
from ..core.definition import WorkflowDefinition
from ..core.messages import DefinitionRegistered
from ..core.versions import version_key
from .common import CliError, console, echo_json, get_settings, iso, warn
from .definition_templates import list_templates, new

if TYPE_CHECKING:  # imported when used: the loader pulls in jsonschema (seconds of start-up)
    from ..core.step_templates import StepTemplate
    from ..definitions_io import StepTemplates, TemplateFile

__all__ = ["definitions", "DefinitionInfo", "FileCheck", "check_file", "definition_info", "requested_by"]

TEMPLATES_ENV = "ORCH_TEMPLATES"


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
    step_templates: tuple[str, ...] = ()  # expanded into `text`, in order of first use

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
            **({"step_templates": list(self.step_templates)} if self.step_templates else {}),
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


def source_format(text: str) -> str:
    """How the definitions reader parses the text: JSON when it opens like JSON."""
    return "json" if text.lstrip().startswith(("{", "[")) else "yaml"


def check_text(result: FileCheck, known_services: set[str] | None,
               templates: Mapping[str, StepTemplate] | None = None,
               unusable: Mapping[str, str] | None = None) -> FileCheck:
    """Check `result.text`; with step templates used, `text` becomes the expanded definition."""
    from ..core.expanded_yaml import load_with_templates
    from ..core.loading import DefinitionError, canonical_digest

    result.source_format = source_format(result.text)
    try:
        loaded = load_with_templates(result.text, templates or {}, file=result.file, known_services=known_services,
                                     unusable=unusable)
    except DefinitionError as exc:
        result.problems.extend(exc.problems)
        return result
    result.definition = loaded.definition
    if loaded.expanded:
        result.text, result.source_format = loaded.text, "yaml"
        result.step_templates = tuple(t.name for t in loaded.templates)
    result.digest = canonical_digest(result.definition)
    return result


@dataclass
class Checked:
    """One command's files: definitions (in argument order) and step templates."""

    definitions: list[FileCheck]
    templates: StepTemplates

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.definitions) and not self.templates.problems


def _templates_dir(option: str | None) -> str | None:
    directory = option if option is not None else os.environ.get(TEMPLATES_ENV) or None
    if directory is not None and not Path(directory).is_dir():
        origin = "--templates" if option is not None else TEMPLATES_ENV
        raise CliError(f"{origin} {directory}: not a directory of step templates")
    return directory


def _check_all(files: tuple[str, ...], templates_dir: str | None = None) -> Checked:
    from ..definitions_io import collect_step_templates, looks_like_step_template, read_text

    settings = get_settings()
    services = _known_services(settings)
    directory = _templates_dir(templates_dir)
    texts = {f: read_text(f) for f in dict.fromkeys(files)}
    given = [(f, text) for f, (text, _) in texts.items() if text is not None and looks_like_step_template(text)]
    templates = collect_step_templates(given, directory)
    template_files = {f for f, _ in given}
    results = []
    for f in files:
        if f in template_files:
            continue
        text, problem = texts[f]
        result = FileCheck(file=f)
        if text is None:
            assert problem is not None
            result.problems.append(problem)
            results.append(result)
            continue
        result.text = text
        results.append(check_text(result, services, templates.by_name, templates.unusable))
    return Checked(results, templates)


def _template_json(checked: TemplateFile) -> dict[str, Any]:
    t = checked.template
    return {"file": checked.file, "valid": checked.ok, "name": t.name if t else None,
            "description": t.description if t else None, "problems": [problem_json(p) for p in checked.problems]}


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
        echo_json({"valid": valid, "files": [r.as_json() for r in results],
                   "templates": [_template_json(t) for t in checked.templates.files]})
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
                     "partition": p.partition if p else None, "offset": p.offset if p else None,
                     **({"step_templates": list(r.step_templates)} if r.step_templates else {})})
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
