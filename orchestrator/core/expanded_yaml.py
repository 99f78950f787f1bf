"""The expanded definition as YAML text, and loading a definition through it.

`load_with_templates` expands a definition's step templates
(`step_templates.expand_steps`), writes the result as YAML and loads the
definition from that text. That text is what gets registered, so the
registered definition never changes when a template file does, and what is
registered is exactly what was checked. A definition without `template:` keys
is loaded from its own text untouched.

The YAML keeps the author's key order and opens with a comment naming each
template used (its file and digest). Problems found in the expanded text are
reported against the author's file: the line there, and the template a field
came from when the step did not set it itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from .loading import DefinitionError, load_definition_source
from .step_templates import Expansion, StepTemplate, _line, _loc_text, expand_steps, uses_templates
from .validation import Problem
from .yaml_source import Loc, read_source

__all__ = ["Loaded", "render_expanded", "load_with_templates"]


# -- writing the expanded YAML -------------------------------------------------------


def render_expanded(data: Any, used: Mapping[str, StepTemplate], *, file: str) -> str:
    """The expanded definition as YAML: the author's key order, a leading comment naming the templates."""
    lines = [f"# Expanded from {_one_line(file)} by orchestrator definitions: step templates written out,",
             "# so this registered definition stays as it is when a template changes. Step templates:"]
    for name, template in used.items():
        lines.append(f"#   {name}: {_one_line(template.file)} (sha256 {template.digest[:12]})")
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False,
                     width=100)
    return "\n".join(lines) + "\n" + body


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # written out in full: no anchors in a registered source

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # list items indented under their key


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line text as a block (`|`), as authors write it. Other line breaks only double-quoted
    # (escaped): PyYAML writes them raw in the other styles, and they read back as "\n".
    if any(c in value for c in "\r\x85\u2028\u2029\ufeff"):
        style: str | None = '"'
    else:
        style = "|" if "\n" in value.strip("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


# -- loading through it -------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    definition: Any  # WorkflowDefinition
    text: str  # what to register: the author's text, or the expanded text
    templates: tuple[StepTemplate, ...] = ()  # expanded, in order of first use

    @property
    def expanded(self) -> bool:
        return bool(self.templates)


def load_with_templates(text: str, templates: Mapping[str, StepTemplate], *, file: str,
                        known_services: set[str] | None = None, unusable: Mapping[str, str] | None = None) -> Loaded:
    """`load_definition_source` with step templates expanded; raises DefinitionError.

    Without `template:` keys the text is loaded (and kept) as written. With
    them, the definition is loaded from the expanded text, so what is
    registered and what was checked are the same text.
    """
    source = read_source(text) if "template" in text else None
    if source is None or not source.ok or not uses_templates(source.data):
        return Loaded(load_definition_source(text, file=file, known_services=known_services), text)
    expansion = expand_steps(source.data, templates, file=file, lines=source.lines, unusable=unusable)
    # What the reader found (duplicate keys) would not survive the expansion: report it here.
    read = [Problem(file, *_in_step(loc, expansion.step_locs), message, line) for loc, line, message in source.problems]
    if read or expansion.problems:
        raise DefinitionError(read + expansion.problems)
    expanded = render_expanded(expansion.data, expansion.used, file=file)
    try:
        defn = load_definition_source(expanded, file=file, known_services=known_services)
    except DefinitionError as exc:
        raise DefinitionError(_as_written(p, expansion, source.lines) for p in exc.problems) from None
    return Loaded(defn, expanded, tuple(expansion.used.values()))


def _in_step(loc: Loc, step_locs: Mapping[str, Loc]) -> tuple[str | None, str]:
    """(step, field within it) of a location, or (None, the path from the root)."""
    found = [(name, at) for name, at in step_locs.items() if loc[: len(at)] == at]
    if not found:
        return None, _loc_text(loc)
    name, at = max(found, key=lambda f: len(f[1]))
    return name, _loc_text(loc[len(at):])


def _as_written(problem: Problem, expansion: Expansion, lines: Mapping[Loc, int]) -> Problem:
    """A problem of the expanded text, with the line in the author's file and the template named."""
    field_loc = _field_loc(problem.field)
    if problem.step is None:
        loc: Loc | None = field_loc
    else:
        base = expansion.step_locs.get(problem.step)
        loc = None if base is None else (*base, *field_loc)
    message = problem.message
    origin = expansion.origins.get(problem.step or "")
    if origin is not None and field_loc:
        template, own = origin
        if _get(own, field_loc) is _MISSING and _get(template.spec, field_loc) is not _MISSING:
            message += f" (from step template '{template.name}', {template.file})"
    return Problem(problem.file, problem.step, problem.field, message, None if loc is None else _line(loc, lines))


# -- small helpers ------------------------------------------------------------------


def _get(data: Any, loc: Loc) -> Any:
    """The value at `loc`, or _MISSING (a None value is there)."""
    for part in loc:
        if isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data):
            data = data[part]
        elif isinstance(part, str) and isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return _MISSING
    return data


_MISSING = object()


def _field_loc(text: str) -> Loc:
    loc: list[str | int] = []
    for token in text.replace("[", ".[").split("."):
        if token:
            loc.append(int(token[1:-1]) if token.startswith("[") and token[1:-1].isdigit() else token)
    return tuple(loc)


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")
