"""Definition text or data -> `WorkflowDefinition`, or a `DefinitionError` listing
every problem (parse errors and `check_definition` findings) with the file,
the step by name, the field and, for text, the line.

Reading files is not the core's job: see `orchestrator.definitions_io`.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from .definition import CONFIG_MODELS, STEP_TYPES, WorkflowDefinition
from .validation import Problem, check_definition, suggest
from .yaml_source import Loc, read_source

__all__ = ["DefinitionError", "parse_definition", "load_definition_source", "canonical_digest"]


class DefinitionError(ValueError):
    """A definition that cannot be used; `problems` lists everything wrong with it."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def parse_definition(data: Any, *, file: str) -> WorkflowDefinition:
    """Typed model of already-parsed data; raises DefinitionError on shape errors."""
    defn, problems = _parse(data, file)
    if defn is None:
        raise DefinitionError(problems)
    return defn


def load_definition_source(
    text: str, *, file: str, known_services: set[str] | None = None
) -> WorkflowDefinition:
    """Parse YAML or JSON text and check the whole definition; raises DefinitionError."""
    source = read_source(text)
    problems = [Problem(file, *_locate(loc, source.data), message, line) for loc, line, message in source.problems]
    defn = None
    if source.ok:
        defn, parse_problems = _parse(source.data, file)
        problems += parse_problems
        if defn is not None:
            problems += check_definition(defn, file=file, known_services=known_services)
    problems = [_with_line(p, source.data, source.lines) for p in problems]
    if problems or defn is None:
        raise DefinitionError(problems)
    return defn


# Fields the language gained after definitions were first registered: left out
# of the canonical form at their default, so a definition that does not use
# them keeps the digest it was registered with (re-applying it is a no-op).
_LATER_STEP_DEFAULTS = {"join": {"mode": "all", "count": 1, "rest": "cancel"}, "cancel_on_signal": None}


def _without_later_defaults(value: Any) -> Any:
    if isinstance(value, list):
        return [_without_later_defaults(v) for v in value]
    if not isinstance(value, dict):
        return value
    is_step = "name" in value and "type" in value and "config" in value
    return {k: _without_later_defaults(v) for k, v in value.items()
            if not (is_step and k in _LATER_STEP_DEFAULTS and v == _LATER_STEP_DEFAULTS[k])}


def canonical_digest(defn: WorkflowDefinition) -> str:
    """sha256 of the definition's canonical JSON: same meaning, same digest."""
    data = _without_later_defaults(defn.model_dump(mode="json", by_alias=True))
    if not data["spec"]["triggers"]:
        del data["spec"]["triggers"]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _parse(data: Any, file: str) -> tuple[WorkflowDefinition | None, list[Problem]]:
    if not isinstance(data, dict):
        return None, [Problem(file, None, "", f"a workflow definition must be a mapping, not {_kind(data)}")]
    try:
        return WorkflowDefinition.model_validate(data), []
    except ValidationError as exc:
        errors = exc.errors()
    # A step whose type is wrong cannot have its config checked meaningfully.
    bad_types = {e["loc"][:-1] for e in errors if e["loc"][-1:] == ("type",) and _is_step_loc(e["loc"][:-1])}
    locs = [tuple(e["loc"]) for e in errors]
    problems = []
    for error, loc in zip(errors, locs):
        if any(loc[: len(s) + 1] == (*s, "config") for s in bad_types):
            continue
        if error["type"] == "too_short" and any(len(o) > len(loc) and o[: len(loc)] == loc for o in locs):
            continue  # "too short" only because its invalid items were left out
        step, field = _locate(loc, data)
        problems.append(Problem(file, step, field, _message(error, loc, data)))
    return None, list(dict.fromkeys(problems))


# Where steps sit: the top-level and compensation lists, then, inside a step,
# a switch case's steps, a switch's default, a loop's or for_each's steps, a for_each's step.
_STEP_LISTS = (("spec", "steps", int), ("spec", "compensation", "steps", int))
_INNER_STEPS = (("config", "cases", int, "steps", int), ("config", "default", int), ("config", "steps", int),
                ("config", "step"))  # fmt: skip


def _step_ends(loc: Loc) -> list[int]:
    """The lengths of the prefixes of `loc` that point at a step, outermost first."""
    def fits(start: int, pattern: tuple[Any, ...]) -> bool:
        part = loc[start : start + len(pattern)]
        return len(part) == len(pattern) and all(
            isinstance(p, int) if want is int else p == want for p, want in zip(part, pattern))

    ends = [len(p) for p in _STEP_LISTS if fits(0, p)][:1]
    while ends:
        inner = next((p for p in _INNER_STEPS if fits(ends[-1], p)), None)
        if inner is None:
            break
        ends.append(ends[-1] + len(inner))
    return ends


def _is_step_loc(loc: Loc) -> bool:
    ends = _step_ends(loc)
    return bool(ends) and ends[-1] == len(loc)


def _locate(loc: Loc, data: Any) -> tuple[str | None, str]:
    """(name of the innermost step, field within it) or (None, path from the root)."""
    for end in reversed(_step_ends(loc)):
        if len(loc) > end:
            raw = _get(data, loc[:end])
            name = raw.get("name") if isinstance(raw, dict) else None
            if isinstance(name, str) and name:
                return name, _loc_text(loc[end:])
    return None, _loc_text(loc)


def _loc_text(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _get(data: Any, loc: Loc) -> Any:
    for part in loc:
        if isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data):
            data = data[part]
        elif isinstance(part, str) and isinstance(data, dict):
            data = data.get(part)
        else:
            return None
    return data


def _message(error: Any, loc: Loc, data: Any) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    last = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        return f"unknown field '{last}'{suggest(str(last), _field_names(loc[:-1], data))}"
    if kind == "missing":
        extra = f" (one of {', '.join(STEP_TYPES)})" if last == "type" and _is_step_loc(loc[:-1]) else ""
        return f"missing required field '{last}'{extra}"
    if kind == "literal_error" and last == "type" and _is_step_loc(loc[:-1]):
        return f"unknown step type {value!r} (expected one of {', '.join(STEP_TYPES)})"
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx.get('expected')}"
    if kind == "value_error":
        return str(ctx.get("error") or error["msg"])
    if kind == "string_pattern_mismatch":
        return f"{value!r} is not allowed here (it must match {ctx.get('pattern')})"
    if kind == "too_short" and last == "steps":
        return "at least one step is required"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, not {_kind(value)}"
    return f"{error['msg']} (got {_kind(value)}: {_short(value)})"


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", int: "a number", float: "a number"}
    return "nothing (null)" if value is None else names.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_names(loc: Loc, data: Any) -> list[str]:
    """Field names (aliases) of the model at `loc`, for did-you-mean suggestions."""
    model: type[BaseModel] | None = WorkflowDefinition
    raw = data
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            raw = _get(raw, (part,))
            continue
        info = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if info is None:
            return []
        candidates = _models_in(info.annotation)
        if len(candidates) > 1 and isinstance(raw, dict):  # a step's config: pick by type
            candidates = [CONFIG_MODELS[raw["type"]]] if raw.get("type") in CONFIG_MODELS else []
        model = candidates[0] if candidates else None
        raw = _get(raw, (part,))
    return [f.alias or n for n, f in model.model_fields.items()] if model else []


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _with_line(problem: Problem, data: Any, lines: dict[Loc, int]) -> Problem:
    if problem.line is not None or not lines:
        return problem
    loc: list[str | int] = []
    if problem.step is not None:
        loc = list(_step_loc(problem.step, data))
    for token in problem.field.replace("[", ".[").split("."):
        if token:
            loc.append(int(token[1:-1]) if token.startswith("[") and token[1:-1].isdigit() else token)
    for end in range(len(loc), -1, -1):
        if tuple(loc[:end]) in lines:
            return Problem(problem.file, problem.step, problem.field, problem.message, lines[tuple(loc[:end])])
    return problem


def _step_loc(name: str, data: Any) -> Loc:
    """Where the step called `name` sits in the raw data (blocks searched too, outer ones first), or ()."""
    todo = [*_listed(("spec", "steps"), data), *_listed(("spec", "compensation", "steps"), data)]
    while todo:
        loc, raw = todo.pop(0)
        if raw.get("name") == name:
            return loc
        config = raw.get("config")
        if not isinstance(config, dict):
            continue
        cases = config.get("cases")
        for j in range(len(cases) if isinstance(cases, list) else 0):
            todo += _listed((*loc, "config", "cases", j, "steps"), data)
        todo += [*_listed((*loc, "config", "default"), data), *_listed((*loc, "config", "steps"), data)]
        if isinstance(config.get("step"), dict):
            todo.append(((*loc, "config", "step"), config["step"]))
    return ()


def _listed(prefix: Loc, data: Any) -> list[tuple[Loc, dict[str, Any]]]:
    steps = _get(data, prefix)
    listed = steps if isinstance(steps, list) else []
    return [((*prefix, i), raw) for i, raw in enumerate(listed) if isinstance(raw, dict)]
