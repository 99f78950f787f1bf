"""Reading definition and step template files from disk: the I/O the pure core leaves out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .core.definition import WorkflowDefinition
from .core.expanded_yaml import load_with_templates
from .core.loading import DefinitionError
from .core.step_templates import StepTemplate, is_step_template, parse_step_template
from .core.validation import Problem
from .core.yaml_source import read_source

__all__ = ["load_definition_file", "read_text", "TemplateFile", "read_step_template", "template_dir_files",
           "StepTemplates", "collect_step_templates", "looks_like_step_template"]


def read_text(path: str | Path) -> tuple[str | None, Problem | None]:
    """The file's text, or the problem naming it (missing, a directory, unreadable)."""
    name = str(path)
    try:
        return Path(path).read_text(encoding="utf-8"), None
    except FileNotFoundError:
        return None, Problem(name, None, "", "file not found")
    except IsADirectoryError:
        return None, Problem(name, None, "", "is a directory, not a definition file")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None, Problem(name, None, "", f"cannot read: {reason}")


def load_definition_file(path: str | Path, *, known_services: set[str] | None = None,
                         templates: Mapping[str, StepTemplate] | None = None) -> WorkflowDefinition:
    """Load and check one YAML/JSON definition, step templates expanded; DefinitionError names
    the file on any problem, including a file that cannot be read."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DefinitionError([Problem(name, None, "", f"cannot read the file: {reason}")]) from None
    return load_with_templates(text, templates or {}, file=name, known_services=known_services).definition


@dataclass
class TemplateFile:
    """One step template file: the template, or the problems with it."""

    file: str
    template: StepTemplate | None = None
    problems: list[Problem] = field(default_factory=list)
    given: bool = False  # named on the command line (not found in the templates directory)
    name: str | None = None  # metadata.name as written, even when the template has problems

    @property
    def ok(self) -> bool:
        return self.template is not None and not self.problems


def looks_like_step_template(text: str) -> bool:
    """Whether the text is a StepTemplate document (cheap test first: most files are workflows)."""
    if "StepTemplate" not in text:
        return False
    source = read_source(text)
    return source.ok and is_step_template(source.data)


def read_step_template(file: str, text: str) -> TemplateFile:
    source = read_source(text)
    out = TemplateFile(file)
    meta = source.data.get("metadata") if isinstance(source.data, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    out.name = name if isinstance(name, str) else None
    if not source.ok:
        out.problems = [Problem(file, None, "", message, line) for _, line, message in source.problems]
        return out
    if isinstance(source.data, dict) and "kind" in source.data and not is_step_template(source.data):
        kind = source.data["kind"]
        out.problems = [Problem(file, None, "kind", f"not a step template (kind: {kind}): a templates "
                                "directory holds StepTemplate documents only", source.lines.get(("kind",)))]
        return out
    out.template, out.problems = parse_step_template(source.data, file=file, lines=source.lines)
    return out


def template_dir_files(directory: str | Path) -> list[Path]:
    """The `*.yaml` and `*.yml` files of a templates directory (not its subdirectories), by name."""
    root = Path(directory)
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))


@dataclass
class StepTemplates:
    """The step templates of one command: by name, and every file read (with its problems)."""

    by_name: dict[str, StepTemplate] = field(default_factory=dict)
    files: list[TemplateFile] = field(default_factory=list)
    unusable: dict[str, str] = field(default_factory=dict)  # name -> file, of templates with problems

    @property
    def problems(self) -> list[Problem]:
        return [p for f in self.files for p in f.problems]


def collect_step_templates(given: Iterable[tuple[str, str]], directory: str | Path | None) -> StepTemplates:
    """Templates from files named on the command line ((file, text) pairs) and from every YAML file
    of `directory` (each must be a StepTemplate). A file named twice is read once; two files with
    one template name are a problem."""
    out = StepTemplates()
    seen: set[Path] = set()
    sources: list[tuple[str, str | None, Problem | None, bool]] = []
    for file, text in given:
        if Path(file).resolve() not in seen:
            seen.add(Path(file).resolve())
            sources.append((file, text, None, True))
    if directory is not None:
        for path in template_dir_files(directory):
            if path.resolve() in seen:
                continue
            text, problem = read_text(path)
            sources.append((str(path), text, problem, False))
    for file, text, problem, is_given in sources:
        if text is None:
            out.files.append(TemplateFile(file, problems=[problem] if problem else [], given=is_given))
            continue
        checked = read_step_template(file, text)
        checked.given = is_given
        template = checked.template
        if template is not None and template.name in out.by_name:
            other = out.by_name[template.name].file
            checked.problems.append(Problem(file, None, "metadata.name", f"step template '{template.name}' is "
                                            f"also defined in {other}: template names must be unique"))
        elif template is not None and not checked.problems:
            out.by_name[template.name] = template
        elif checked.name is not None and checked.name not in out.by_name:
            out.unusable.setdefault(checked.name, file)
        out.files.append(checked)
    return out
