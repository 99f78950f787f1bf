"""Step templates: a partial step written once, used by `template: NAME` in many steps.

A template is its own YAML document:

    apiVersion: workflow/v1
    kind: StepTemplate
    metadata: {name: notify-user, description: "an e-mail through the notification service"}
    spec: {type: service_call, config: {service: notification-service, method: POST}}

A step that says `template: notify-user` gets the template's spec with its own
fields merged over it: mappings merge key by key (recursively), any other value
of the step (a list, a text, null) replaces the template's. Steps inside switch
cases, loop and for_each bodies and compensation steps may use templates too.
Templates do not nest: a template's spec cannot say `template:` (not even in
the steps of a block it defines), so expansion is one level, never a cycle.

Expansion works on the parsed data, before it becomes a `WorkflowDefinition`.
Problems name the file, the step and the field, with the line in the author's
file. Writing the expanded definition out as YAML (the text that gets
registered) and loading a definition through it is `expanded_yaml`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .definition import Step
from .validation import Problem, suggest
from .yaml_source import Loc

__all__ = [
    "KIND",
    "StepTemplate",
    "Expansion",
    "is_step_template",
    "parse_step_template",
    "merge",
    "uses_templates",
    "expand_steps",
]

KIND = "StepTemplate"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STEP_FIELDS = frozenset(
    {f.alias or n for n, f in Step.model_fields.items()} | {"when"}
) - {"name"}
_DOC_FIELDS = ("apiVersion", "kind", "metadata", "spec")
_META_FIELDS = ("name", "description")


@dataclass(frozen=True)
class StepTemplate:
    name: str
    spec: Mapping[str, Any]  # a partial step: plain data, never `name` or `template`
    file: str
    description: str | None = None

    @property
    def digest(self) -> str:
        """sha256 of the spec's canonical JSON (what the expanded source records)."""
        text = json.dumps(self.spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_step_template(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND


def parse_step_template(
    data: Any, *, file: str, lines: Mapping[Loc, int] | None = None
) -> tuple[StepTemplate | None, list[Problem]]:
    """The template of one parsed document, or the problems with it (never raises)."""
    problems: list[Problem] = []

    def add(loc: Loc, message: str) -> None:
        problems.append(Problem(file, None, _loc_text(loc), message, _line(loc, lines or {})))

    if not isinstance(data, dict):
        add((), f"a step template must be a mapping, not {_kind(data)}")
        return None, problems
    for key in data:
        if key not in _DOC_FIELDS:
            add((key,), f"unknown field '{key}'{suggest(str(key), _DOC_FIELDS)} (a step template has "
                        f"{', '.join(_DOC_FIELDS)})")  # fmt: skip
    if data.get("apiVersion") != "workflow/v1":
        add(("apiVersion",), f"expected 'workflow/v1', not {data.get('apiVersion')!r}")
    if data.get("kind") != KIND:
        add(("kind",), f"expected '{KIND}', not {data.get('kind')!r}")
    meta, name, description = data.get("metadata"), None, None
    if not isinstance(meta, dict):
        add(("metadata",), f"expected a mapping with the template's name, not {_kind(meta)}")
    else:
        for key in meta:
            if key not in _META_FIELDS:
                add(("metadata", key), f"unknown field '{key}'{suggest(str(key), _META_FIELDS)}")
        name, description = meta.get("name"), meta.get("description")
        if name is None:
            add(("metadata", "name"), "missing required field 'name' (the name steps use in `template:`)")
        elif not isinstance(name, str) or not _NAME.match(name):
            add(("metadata", "name"), f"the template's name must be text matching {_NAME.pattern}, "
                                      f"not {name!r}")  # fmt: skip
        if not isinstance(name, str) or not _NAME.match(name):
            name = None
        if description is not None and not isinstance(description, str):
            add(("metadata", "description"), f"expected text, not {_kind(description)}")
    spec = data.get("spec")
    if not isinstance(spec, dict) or not spec:
        what = "an empty mapping" if spec == {} else _kind(spec)
        add(("spec",), f"expected a mapping of the step fields the template sets (type, config, ...), not {what}")
    else:
        for key in spec:
            if key == "name":
                add(("spec", "name"), "a step template cannot set the step's name: each step using it "
                                      "names itself")  # fmt: skip
            elif key == "template":
                add(("spec", "template"), "a step template cannot use another template (templates do not nest)")
            elif key not in _STEP_FIELDS:
                add(("spec", key), f"unknown step field '{key}'{suggest(str(key), _STEP_FIELDS)}")
        for loc in _nested_template_refs(spec, ("spec",)):
            add(loc, "a step inside a step template cannot use a template (templates do not nest)")
    if problems or name is None:
        return None, problems
    return StepTemplate(name, spec, file, description if isinstance(description, str) else None), []


def merge(base: Any, override: Any) -> Any:
    """`override` over `base`: mappings merge recursively (override wins); anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = copy.deepcopy(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


# -- where steps are ------------------------------------------------------------------


def _blocks(step: dict[str, Any]) -> list[tuple[Loc, Any, bool]]:
    """(location within the step, value, is a single step) of each block of inner steps."""
    config = step.get("config")
    if not isinstance(config, dict):
        return []
    kind = step.get("type")
    found: list[tuple[Loc, Any, bool]] = []
    if kind == "switch":
        for i, case in enumerate(config.get("cases") or ()):
            if isinstance(case, dict) and "steps" in case:
                found.append((("config", "cases", i, "steps"), case["steps"], False))
        if "default" in config:
            found.append((("config", "default"), config["default"], False))
    elif kind in ("loop", "for_each") and "steps" in config:
        found.append((("config", "steps"), config["steps"], False))
    if kind == "for_each" and "step" in config:
        found.append((("config", "step"), config["step"], True))
    return found


def _walk(blocks: list[tuple[Loc, Any, bool]]) -> Iterator[tuple[Loc, dict[str, Any]]]:
    """Each step of the blocks, in document order; a step's own blocks are read after it is yielded
    (so a caller may expand it first)."""
    for loc, block, single in blocks:
        if single:
            items = [(loc, block)]
        else:
            items = [((*loc, i), s) for i, s in enumerate(block)] if isinstance(block, list) else []
        for at, step in items:
            if isinstance(step, dict):
                yield at, step
                yield from _walk([((*at, *where), value, one) for where, value, one in _blocks(step)])


def _each_step(data: Any) -> Iterator[tuple[Loc, dict[str, Any]]]:
    spec = data.get("spec") if isinstance(data, dict) else None
    if not isinstance(spec, dict):
        return iter(())
    comp = spec.get("compensation")
    lists = [(("spec", "steps"), spec.get("steps"), False)]
    if isinstance(comp, dict):
        lists.append((("spec", "compensation", "steps"), comp.get("steps"), False))
    return _walk(lists)


def _nested_template_refs(step: Mapping[str, Any], loc: Loc) -> list[Loc]:
    """Where steps inside the blocks of `step` say `template:`."""
    inner = [((*loc, *where), value, one) for where, value, one in _blocks(dict(step))]
    return [(*at, "template") for at, s in _walk(inner) if "template" in s]


def uses_templates(data: Any) -> bool:
    """Whether any step (nested ones included) says `template:`."""
    return any("template" in step for _, step in _each_step(data))


# -- expansion ----------------------------------------------------------------------


@dataclass
class Expansion:
    data: Any  # the definition with every `template:` replaced by the merged step
    used: dict[str, StepTemplate] = field(default_factory=dict)  # in order of first use
    problems: list[Problem] = field(default_factory=list)
    step_locs: dict[str, Loc] = field(default_factory=dict)  # step name -> location (as written)
    # step name -> (its template, the fields the step gave itself)
    origins: dict[str, tuple[StepTemplate, dict[str, Any]]] = field(default_factory=dict)


def expand_steps(data: Any, templates: Mapping[str, StepTemplate], *, file: str,
                 lines: Mapping[Loc, int] | None = None, unusable: Mapping[str, str] | None = None) -> Expansion:
    """Replace every step's `template:` by the template's spec with the step's fields merged over it.

    Blocks are found after merging (a template may define a loop's body), so
    steps the author nests under a templated composite step expand too.
    """
    out = Expansion(copy.deepcopy(data))
    unusable = unusable or {}
    for loc, step in _each_step(out.data):
        name = step.get("name") if isinstance(step.get("name"), str) else None
        if name is not None:
            out.step_locs.setdefault(name, loc)
        if "template" not in step:
            continue
        ref = step["template"]
        own = {k: v for k, v in step.items() if k != "template"}
        where = (*loc, "template")
        problem = None
        if not isinstance(ref, str) or not ref:
            problem = f"expected the name of a step template, not {_kind(ref)}"
        elif ref in templates and _nested_template_refs(dict(templates[ref].spec), ()):
            problem = f"step template '{ref}' uses another template inside (templates do not nest)"
        elif ref not in templates and ref in unusable:
            problem = f"step template '{ref}' cannot be used: {unusable[ref]} has problems"
        elif ref not in templates:
            known = sorted(templates)
            hint = suggest(ref, known) or (f" (known: {', '.join(known)})" if known else
                                           " (no step templates were given: pass --templates DIR or the "
                                           "template files with the definition)")  # fmt: skip
            problem = f"unknown step template '{ref}'{hint}"
        if problem is not None:
            field_text = "template" if name is not None else _loc_text(where)
            out.problems.append(Problem(file, name, field_text, problem, _line(where, lines or {})))
            step.clear()
            step.update(own)
            continue
        template = templates[ref]
        out.used.setdefault(ref, template)
        merged = merge(dict(template.spec), {k: v for k, v in own.items() if k != "name"})
        step.clear()
        step.update({"name": own["name"]} if "name" in own else {})
        step.update(merged)
        if name is not None:
            out.origins[name] = (template, own)
    return out


# -- small helpers ------------------------------------------------------------------
# (`_line` and `_loc_text` are shared with expanded_yaml, which reports problems the same way.)


def _line(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _loc_text(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", int: "a number", float: "a number"}
    return "nothing (null)" if value is None else names.get(type(value), type(value).__name__)
