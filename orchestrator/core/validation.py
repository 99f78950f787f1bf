"""Whole-definition checks: what parsing one field at a time cannot see.

`check_definition` returns every problem it finds (never raises), each naming
the file, the step and the field, so `orchestrator definitions validate` can
print them all at once. The rules of blocks, composite steps, joins and
triggers live in `validation_blocks`; template rules in `validation_templates`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for

from .definition import ServiceCallConfig, Step, ValidationConfig, WaitForEventConfig, WorkflowDefinition

if TYPE_CHECKING:
    from .validation_blocks import Layout

__all__ = ["Problem", "check_definition", "BUILTIN_RULES", "declared_properties", "suggest"]

BUILTIN_RULES = frozenset({"required", "email", "regex", "min_length", "max_length", "not_empty"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition; `str()` is the line the CLI prints."""

    file: str
    step: str | None
    field: str
    message: str
    line: int | None = None  # 1-based, when the source text is known

    def __str__(self) -> str:
        parts = [self.file if self.line is None else f"{self.file}:{self.line}"]
        if self.step is not None:
            parts.append(f"step '{self.step}'")
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_definition(
    defn: WorkflowDefinition, *, file: str, known_services: set[str] | None = None
) -> list[Problem]:
    # Both modules import `Problem` and `suggest` from here.
    from .validation_blocks import Layout, check_control_flow, check_graph, check_triggers
    from .validation_templates import check_templates

    checker = _Checker(defn, file, known_services)
    layout = Layout(defn)
    checker.names(layout)
    check_graph(layout, checker.add)
    checker.run(layout)
    check_control_flow(defn, layout, checker.add)
    check_triggers(defn, checker.add)
    check_templates(defn, layout, checker.add)
    return list(dict.fromkeys(checker.problems))  # same problem once, in order


class _Checker:
    def __init__(self, defn: WorkflowDefinition, file: str, known_services: set[str] | None) -> None:
        self.defn, self.file, self.known_services = defn, file, known_services
        self.problems: list[Problem] = []
        comp = defn.spec.compensation
        self.comp_steps: tuple[Step, ...] = comp.steps if comp else ()
        self.has_compensation = bool(comp and (comp.steps or comp.workflow))

    def add(self, step: str | None, field: str, message: str) -> None:
        self.problems.append(Problem(self.file, step, field, message))

    def run(self, layout: Layout) -> None:
        self._schemas()
        for block in layout.blocks:  # every main step, those inside blocks included
            for step in block.steps:
                self._step(step, compensation=False)
        for step in self.comp_steps:
            self._step(step, compensation=True)
        self._policy(None, "spec.config.retry_policy", self.defn.spec.config.retry_policy)
        comp = self.defn.spec.compensation
        if comp is not None and comp.steps and comp.workflow:
            self.add(None, "spec.compensation", "give either steps or workflow, not both")

    def names(self, layout: Layout) -> None:
        """Step names are unique across the whole definition: blocks and compensation included."""
        main: set[str] = set()
        for block in layout.blocks:
            for step in block.steps:
                if step.name in main:
                    nested = block.owner is not None or layout.block_of[step.name].owner is not None
                    where = " (names are unique across the whole definition, blocks included)" if nested else ""
                    self.add(step.name, "name", f"duplicate step name '{step.name}'{where}")
                main.add(step.name)
        seen: set[str] = set()
        for step in self.comp_steps:
            if step.name in seen:
                self.add(step.name, "name", f"duplicate compensation step name '{step.name}'")
            elif step.name in main:
                # One row per (execution, step) in step_executions: names must not clash.
                self.add(step.name, "name", f"compensation step name '{step.name}' is also a main step")
            seen.add(step.name)

    def _schemas(self) -> None:
        spec = self.defn.spec
        _schema_problems(self, "spec.input.schema", spec.input.schema_)
        if spec.output is not None and spec.output.schema_ is not None:
            _schema_problems(self, "spec.output.schema", spec.output.schema_)

    def _step(self, step: Step, *, compensation: bool) -> None:
        name, config = step.name, step.config
        if compensation and (step.depends_on is not None or step.parallel):
            self.add(name, "depends_on" if step.depends_on is not None else "parallel",
                     "not used in compensation steps: they run one by one in listed order")  # fmt: skip
        if isinstance(config, ServiceCallConfig):
            self._service(name, "config.service", config.service)
        elif isinstance(config, ValidationConfig):
            self._rules(name, config)
        elif isinstance(config, WaitForEventConfig):
            if not config.event_type and not config.signal:
                self.add(name, "config", "wait_for_event needs an event_type or a signal")
            elif config.event_type and config.signal:
                self.add(name, "config", "wait_for_event waits for an event_type or a signal, not both")
            elif config.signal and config.filter:
                self.add(name, "config.filter", "a signal wait has no filter: signals go to one execution")
            if step.on_timeout is not None and config.timeout_ms is None and step.timeout_ms is None:
                self.add(name, "on_timeout", "on_timeout is set but the wait has no timeout")
        for field, action in (("on_failure", step.on_failure), ("on_timeout", step.on_timeout)):
            if action is None:
                continue
            if action.action == "compensate":
                if compensation:
                    self.add(name, f"{field}.action", "a compensation step cannot start compensation")
                elif not (self.has_compensation or action.compensation_workflow):
                    self.add(name, f"{field}.action", "action 'compensate' but the workflow defines no "
                             "compensation (spec.compensation or compensation_workflow)")  # fmt: skip
            elif action.compensation_workflow:
                self.add(name, f"{field}.compensation_workflow",
                         "compensation_workflow is only used with action 'compensate'")  # fmt: skip
        if step.retry_policy is not None:
            self._policy(name, "retry_policy", step.retry_policy)

    def _service(self, step: str, field: str, service: str) -> None:
        known = self.known_services
        if known is not None and service not in known:
            self.add(step, field, f"unknown service '{service}'{suggest(service, known)}")

    def _rules(self, step: str, config: ValidationConfig) -> None:
        properties = declared_properties(self.defn.spec.input.schema_)
        for i, rule in enumerate(config.validation_rules):
            where = f"config.validation_rules[{i}]"
            if rule.service is not None:
                self._service(step, f"{where}.service", rule.service)
            elif rule.rule not in BUILTIN_RULES:
                self.add(step, f"{where}.rule", f"unknown rule '{rule.rule}' without a service"
                         f"{suggest(rule.rule, BUILTIN_RULES)} (built-in rules: "
                         f"{', '.join(sorted(BUILTIN_RULES))}; other rules need a service)")  # fmt: skip
            elif rule.rule == "regex":
                if not isinstance(rule.value, str):
                    self.add(step, f"{where}.value", "rule 'regex' needs the pattern as value")
                else:
                    try:
                        re.compile(rule.value)
                    except re.error as exc:
                        self.add(step, f"{where}.value", f"invalid regular expression: {exc}")
            elif rule.rule in ("min_length", "max_length"):
                if not isinstance(rule.value, int) or isinstance(rule.value, bool) or rule.value < 0:
                    self.add(step, f"{where}.value", f"rule '{rule.rule}' needs a non-negative integer value")
            top = rule.field.split(".", 1)[0]
            if properties is not None and top not in properties:
                self.add(step, f"{where}.field", f"input has no property '{top}'{suggest(top, properties)}")

    def _policy(self, step: str | None, field: str, policy: Any) -> None:
        if policy.initial_delay_ms > policy.max_delay_ms:
            self.add(step, field, "initial_delay is longer than max_delay")


def declared_properties(schema: Any) -> Mapping[str, Any] | None:
    """The declared properties when references outside them are mistakes."""
    if not isinstance(schema, Mapping) or not isinstance(schema.get("properties"), Mapping):
        return None
    if schema.get("additionalProperties", False) not in (False, None):
        return None  # the author allows other fields explicitly
    return schema["properties"]


def _schema_problems(checker: _Checker, field: str, schema: Any) -> None:
    try:
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):
        key = None  # not JSON data: check it without the cache
    errors = _schema_errors(key) if key is not None else _meta_errors(schema)
    for suffix, message in errors:
        checker.add(None, field + suffix, f"invalid JSON Schema: {message}")


@lru_cache(maxsize=256)
def _schema_errors(schema_json: str) -> tuple[tuple[str, str], ...]:
    # Meta-schema validation costs milliseconds; definitions repeat schemas.
    return _meta_errors(json.loads(schema_json))


def _meta_errors(schema: Any) -> tuple[tuple[str, str], ...]:
    cls: Any = Draft202012Validator  # the default dialect; "$schema" may pick Draft 7 etc.
    if isinstance(schema, Mapping) and "$schema" in schema:
        dialect = schema["$schema"]
        cls = validator_for(schema, default=None) if isinstance(dialect, str) else None
        if cls is None:
            return ((".$schema", f"unknown JSON Schema dialect {dialect!r} (omit it for Draft 2020-12)"),)
    meta = cls(cls.META_SCHEMA)
    found = []
    for error in sorted(meta.iter_errors(schema), key=lambda e: list(map(str, e.path))):
        suffix = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
        found.append((suffix, error.message))
    return tuple(dict.fromkeys(found))
