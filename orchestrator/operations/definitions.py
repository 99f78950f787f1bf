"""Validating and applying workflow definitions, for the CLI (files) and the API (texts).

Validation is offline: the texts, the step templates among them (`kind:
StepTemplate`) and in a templates directory, and the service registry's names
when one is configured. Applying compares every definition with what the
compacted definitions topic holds: the same content under a `name@version` is
"unchanged", different content under an existing version is a conflict
(publish a new version instead), and nothing is published unless every
definition can be. A definition that uses step templates is checked and
registered expanded, so its registered source never depends on a template.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from ..config import Settings
from ..core.definition import WorkflowDefinition
from ..core.messages import DefinitionRegistered
from ..core.versions import version_key

if TYPE_CHECKING:  # imported when used: the loader pulls in jsonschema (seconds of start-up)
    from ..core.step_templates import StepTemplate
    from ..definitions_io import StepTemplates, TemplateFile

__all__ = ["ApplyPlan", "Checked", "DefinitionInfo", "FileCheck", "check_sources", "check_text",
           "definition_info", "known_services", "plan_apply", "problem_json", "read_registered", "registration_records",
           "applied_rows", "source_format", "template_json", "validation_json"]

Source = tuple[str, Any, Any]  # (file name, its text or None, the Problem why it could not be read or None)


@dataclass(frozen=True)
class DefinitionInfo:
    """What a client needs of a registered definition, read without the full loader
    (which pulls in jsonschema's format checkers: seconds of start-up)."""

    name: str
    version: str
    input_schema: dict[str, Any]
    steps: tuple[str, ...]
    compensation: tuple[str, ...]


def _names(steps: Any) -> tuple[str, ...]:
    return tuple(s["name"] for s in steps or () if isinstance(s, dict) and isinstance(s.get("name"), str))


def definition_info(found: Sequence[Any], name: str, version: str | None) -> DefinitionInfo | None:
    """The registered definition NAME@VERSION (latest version when None), or None.
    `found`: objects with name, version and source (DefinitionRegistered, projection rows as objects)."""
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


def known_services(settings: Settings | None, warn: Callable[[str], None]) -> set[str] | None:
    """The service registry's names (ORCH_SERVICES), or None when there is none or it is broken."""
    if settings is None or settings.services_file is None:
        return None
    from ..runtime.services import load_registry

    try:
        return set(load_registry(settings).names())
    except Exception as exc:  # a broken registry must not hide the definitions' own problems
        warn(f"ORCH_SERVICES ({settings.services_file}): not used for validation: {exc}")
        return None


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
    """One request's files: definitions (in the order given) and step templates."""

    definitions: list[FileCheck]
    templates: StepTemplates

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.definitions) and not self.templates.problems

    @property
    def problems(self) -> list[Any]:
        return [*self.templates.problems, *(p for r in self.definitions for p in r.problems)]


def check_sources(sources: Sequence[Source], *, templates_dir: str | None = None,
                  known_services: set[str] | None = None) -> Checked:
    """Check every source: those that are StepTemplate documents (and the YAML files of
    `templates_dir`) are the step templates the others may use."""
    from ..definitions_io import collect_step_templates

    first: dict[str, str | None] = {}
    for name, text, _ in sources:  # a name given twice is read once
        first.setdefault(name, text)
    given = [(name, text) for name, text in first.items() if text is not None and _is_template(text)]
    templates = collect_step_templates(given, templates_dir)
    template_files = {name for name, _ in given}
    results = []
    for name, text, problem in sources:
        if name in template_files:
            continue
        result = FileCheck(file=name)
        if text is None:
            assert problem is not None
            result.problems.append(problem)
            results.append(result)
            continue
        result.text = text
        results.append(check_text(result, known_services, templates.by_name, templates.unusable))
    return Checked(results, templates)


def _is_template(text: str) -> bool:
    from ..definitions_io import looks_like_step_template

    try:
        return looks_like_step_template(text)
    except yaml.YAMLError:  # unreadable YAML: checked (and reported) as a definition
        return False


def template_json(checked: TemplateFile) -> dict[str, Any]:
    t = checked.template
    return {"file": checked.file, "valid": checked.ok, "name": t.name if t else None,
            "description": t.description if t else None, "problems": [problem_json(p) for p in checked.problems]}


def validation_json(checked: Checked) -> dict[str, Any]:
    """What `definitions validate --json` prints."""
    return {"valid": checked.ok, "files": [r.as_json() for r in checked.definitions],
            "templates": [template_json(t) for t in checked.templates.files]}


@dataclass
class ApplyPlan:
    """Each distinct definition with what applying it does (registered | unchanged), or the conflicts."""

    steps: list[tuple[FileCheck, str]]
    conflicts: list[str]


def plan_apply(checked: Checked, registered: Mapping[str, DefinitionRegistered],
               when: Callable[[int], Any] = str) -> ApplyPlan:
    """Compare valid definitions with what is registered (by `name@version`).
    `when` formats a registration time (epoch ms) for the conflict messages."""
    steps: list[tuple[FileCheck, str]] = []
    conflicts: list[str] = []
    seen: dict[str, FileCheck] = {}
    for r in checked.definitions:
        assert r.definition is not None and r.digest is not None
        key = r.definition.key
        if key in seen:
            if seen[key].digest != r.digest:
                conflicts.append(f"{r.file}: {key} is also defined by {seen[key].file} with other content")
            continue
        seen[key] = r
        existing = registered.get(key)
        if existing is None:
            steps.append((r, "registered"))
        elif existing.digest == r.digest:
            steps.append((r, "unchanged"))
        else:
            conflicts.append(
                f"{r.file}: {key} is already registered with other content (digest {existing.digest[:12]}, "
                f"registered {when(existing.registered_at)} by {existing.registered_by or 'unknown'}); "
                "a registered version never changes: give the definition a new metadata.version"
            )
    return ApplyPlan(steps, conflicts)


def read_registered(settings: Settings) -> dict[str, DefinitionRegistered]:
    """What the compacted definitions topic holds, by `name@version` (undecodable records skipped and logged).
    Kafka errors propagate (KafkaException: the topic is missing or the cluster out of reach)."""
    import structlog

    from ..codec import Codec, DecodeError
    from ..runtime.kafka import read_compacted_topic

    codec = Codec.default()
    found: dict[str, DefinitionRegistered] = {}
    for key, value in read_compacted_topic(settings, settings.topics.definitions, idle_timeout=15).items():
        try:
            found[key] = codec.decode(value, expect="definitions")
        except DecodeError as exc:
            structlog.get_logger("orchestrator.operations").warning(
                "definition_undecodable", topic=settings.topics.definitions, key=key, error=str(exc))
    return found


def registration_records(plan: ApplyPlan, topic: str, now_ms: int,
                         registered_by: str | None) -> list[tuple[str, str, DefinitionRegistered]]:
    """The DefinitionRegistered records of the new definitions, keyed `name@version`."""
    records = []
    for r, outcome in plan.steps:
        if outcome != "registered":
            continue
        assert r.definition is not None and r.digest is not None
        message = DefinitionRegistered(r.definition.name, r.definition.version, r.text, r.source_format,
                                       r.digest, now_ms, registered_by)
        records.append((topic, r.definition.key, message))
    return records


def applied_rows(plan: ApplyPlan, published: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per definition: what `definitions apply --json` prints (`published`: by key)."""
    rows = []
    for r, outcome in plan.steps:
        assert r.definition is not None
        p = published.get(r.definition.key)
        rows.append({"file": r.file, "name": r.definition.name, "version": r.definition.version,
                     "digest": r.digest, "result": outcome,
                     "partition": p.partition if p else None, "offset": p.offset if p else None,
                     **({"step_templates": list(r.step_templates)} if r.step_templates else {})})
    return rows
