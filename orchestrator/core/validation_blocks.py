"""Checks of the control-flow language: blocks, composite steps, joins and triggers.

A definition is a tree of blocks: `spec.steps` is the top-level block and
each composite step runs blocks of its own (a switch: one per case and its
`default`; a loop and a for_each: its body). `Layout` maps every main step to
its block; ordering (`depends_on`, `parallel`) and cycles are per block, and a
step's ancestors are the steps upstream of it in its own block.
`validation_templates` uses the same layout to decide what a template may read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .definition import (
    DelayConfig,
    ForEachConfig,
    Join,
    LoopConfig,
    Step,
    SubWorkflowConfig,
    SwitchConfig,
    Trigger,
    WorkflowDefinition,
    block_dependencies,
)
from .templates import TemplateError, is_single_expression, is_template
from .validation import suggest

__all__ = ["Block", "Layout", "check_graph", "check_control_flow", "check_triggers", "COMPENSATION_TYPES"]

Add = Callable[[str | None, str, str], None]

# What a compensation step may be: one action, run in listed order.
COMPENSATION_TYPES = ("service_call", "validation", "wait_for_event", "delay")


@dataclass(frozen=True)
class Block:
    owner: str | None  # the composite step that runs it; None for spec.steps
    index: int  # a switch: the case's index, len(cases) for the default
    label: str  # how messages name it
    steps: tuple[Step, ...]

    @property
    def key(self) -> tuple[str | None, int]:
        return self.owner, self.index


def _labels(step: Step) -> list[str]:
    config = step.config
    if isinstance(config, SwitchConfig):
        cases = [f"case '{case.label(i)}' of switch '{step.name}'" for i, case in enumerate(config.cases)]
        return [*cases, f"the default of switch '{step.name}'"]
    return [f"the body of {step.type} '{step.name}'"] if step.inner_blocks else []


class Layout:
    """Every block of a definition's main steps, each step's place in them, and
    its prerequisites and ancestors within its block."""

    def __init__(self, defn: WorkflowDefinition) -> None:
        self.blocks: list[Block] = []
        self.block_of: dict[str, Block] = {}  # a duplicated name: its first place
        self.steps: dict[str, Step] = {}
        self.prerequisites: dict[tuple[str | None, int], dict[str, tuple[str, ...]]] = {}  # block key -> deps
        self.ancestors: dict[str, frozenset[str]] = {}
        self._add(Block(None, 0, "the top-level steps", defn.spec.steps))
        for block in self.blocks:
            known = self.prerequisites[block.key]
            for name in known:
                reached: set[str] = set()
                todo = list(known[name])
                while todo:
                    dep = todo.pop()
                    if dep not in reached:
                        reached.add(dep)
                        todo.extend(known[dep])
                self.ancestors.setdefault(name, frozenset(reached))

    def _add(self, block: Block) -> None:
        self.blocks.append(block)
        names = {s.name for s in block.steps}
        # A duplicated name makes the later step "follow itself" implicitly;
        # that is the duplicate's problem (reported elsewhere), not a cycle.
        explicit_self = {s.name for s in block.steps if s.name in (s.depends_on or ())}
        self.prerequisites[block.key] = {
            name: tuple(d for d in deps if d in names and (d != name or name in explicit_self))
            for name, deps in block_dependencies(block.steps).items()
        }
        for step in block.steps:
            self.block_of.setdefault(step.name, block)
            self.steps.setdefault(step.name, step)
        for step in block.steps:
            for i, (label, inner) in enumerate(zip(_labels(step), step.inner_blocks)):
                self._add(Block(step.name, i, label, inner))

    def chain(self, name: str) -> list[tuple[str, Block]]:
        """(name, its block), then (the composite running that block, its block)... up to the top."""
        found: list[tuple[str, Block]] = []
        current: str | None = name
        while current is not None and current in self.block_of and len(found) <= len(self.blocks):
            block = self.block_of[current]
            found.append((current, block))
            current = block.owner
        return found

    def enclosing(self, name: str) -> list[str]:
        """The composite steps whose blocks hold `name`, innermost first."""
        return [step for step, _ in self.chain(name)[1:]]

    def kind(self, name: str) -> str:
        return self.steps[name].type


def check_graph(layout: Layout, add: Add) -> None:
    """`depends_on` names known steps of the same block, without cycles."""
    for block in layout.blocks:
        names = {s.name for s in block.steps}
        for step in block.steps:
            for dep in step.depends_on or ():
                if dep not in names:
                    add(step.name, "depends_on", _foreign_dependency(layout, block, step.name, dep, names))
        for cycle in _cycles(layout.prerequisites[block.key]):
            path = " -> ".join(cycle)
            add(cycle[0], "depends_on", f"dependency cycle: {path} (each step depends on the next)")


def _foreign_dependency(layout: Layout, block: Block, me: str, dep: str, names: set[str]) -> str:
    if dep not in layout.steps:
        return f"unknown step '{dep}'{suggest(dep, names)}"
    if dep in layout.enclosing(me):
        return f"step '{dep}' runs the block this step is in; the block starts when '{dep}' starts"
    instead = next((n for n, b in layout.chain(dep) if b.key == block.key), None)
    hint = f" (depend on '{instead}' instead)" if instead else ""
    return (f"step '{dep}' is in {layout.block_of[dep].label}, not in {block.label}: "
            f"depends_on names steps of its own block only{hint}")  # fmt: skip


def check_control_flow(defn: WorkflowDefinition, layout: Layout, add: Add) -> None:
    """The rules of each composite, delay and workflow step, of joins, and of compensation steps."""
    for block in layout.blocks:
        deps = block_dependencies(block.steps)  # as the decider reads them, unknown names included
        for step in block.steps:
            _check_join(step, len(deps.get(step.name, ())), add)
            _check_config(defn, step, add)
    for step in defn.compensation_steps:
        if step.type not in COMPENSATION_TYPES:
            add(step.name, "type", f"a compensation step cannot be a {step.type} step "
                f"(allowed: {', '.join(COMPENSATION_TYPES)})")  # fmt: skip
        else:
            _check_config(defn, step, add)
        if step.join != Join():
            add(step.name, "join", "not used in compensation steps: they run one by one in listed order")
        if step.cancel_on_signal is not None:
            add(step.name, "cancel_on_signal", "compensation steps cannot be cancelled by a signal: "
                "compensation runs to its end")  # fmt: skip


def _check_join(step: Step, n_deps: int, add: Add) -> None:
    join, name = step.join, step.name
    # `all_completed` after one step still means something: skip unless it completed.
    if (join.mode == "first" and n_deps < 2) or (join.mode == "all_completed" and n_deps < 1):
        least = "two dependencies" if join.mode == "first" else "one dependency"
        add(name, "join", f"join '{join.mode}' needs at least {least}, the step has {n_deps} (nothing to join)")
    elif join.mode == "first" and join.count > n_deps:
        add(name, "join.count", f"join first {join.count}, but the step has only {n_deps} dependencies")
    if join.mode != "first":
        if join.rest != "cancel":
            add(name, "join.rest", "rest is only used with join 'first' (what happens to the other dependencies)")
        if join.count != 1:
            add(name, "join.count", "count is only used with join 'first'")


def _check_config(defn: WorkflowDefinition, step: Step, add: Add) -> None:
    name, config = step.name, step.config
    if isinstance(config, SwitchConfig):
        if not config.cases:
            add(name, "config.cases", "a switch needs at least one case in config.cases")
        seen: set[str] = set()
        for i, case in enumerate(config.cases):
            label = case.label(i)
            if label in seen:
                add(name, f"config.cases[{i}].name", f"duplicate case name '{label}'")
            seen.add(label)
    elif isinstance(config, LoopConfig):
        if config.max_iterations is None:
            add(name, "config.max_iterations", "a loop needs config.max_iterations (its bound)")
        if not config.steps:
            add(name, "config.steps", "a loop needs at least one step in config.steps")
        if config.while_ is not None and config.until is not None:
            add(name, "config.until", "give either while (checked before each iteration) or until "
                "(checked after each), not both")  # fmt: skip
    elif isinstance(config, ForEachConfig):
        _check_for_each(name, config, add)
    elif isinstance(config, SubWorkflowConfig):
        if config.workflow == defn.name:
            add(name, "config.workflow", f"a step of '{defn.name}' cannot start '{defn.name}' itself "
                "(unbounded recursion)")  # fmt: skip
    elif isinstance(config, DelayConfig):
        if (config.duration_ms is None) == (config.until is None):
            add(name, "config", "a delay needs exactly one of duration or until")
        elif config.until is not None and not is_template(config.until) and not _is_time(config.until):
            add(name, "config.until", f"{config.until!r} is not a time: give an ISO-8601 time with a zone "
                "(2030-01-01T09:00:00Z) or a template giving one (or epoch milliseconds)")  # fmt: skip


def _check_for_each(name: str, config: ForEachConfig, add: Add) -> None:
    items = config.items
    if items is None:
        add(name, "config.items", "a for_each needs config.items (a list or a template giving one)")
    elif isinstance(items, str) and is_template(items):
        try:
            single = is_single_expression(items)
        except TemplateError:
            single = True  # the syntax error is reported by the template checks
        if not single:
            add(name, "config.items", "mixed text renders as a string, not a list: write a single "
                "{{ expression }} giving a list")  # fmt: skip
    elif not isinstance(items, (list, tuple)):
        add(name, "config.items", f"a for_each runs over a list, not {_kind(items)}: give a list "
            "or a template {{ ... }} giving one")  # fmt: skip
    if config.step is not None and config.steps:
        add(name, "config.steps", "give either step (one step per item) or steps (a block), not both")
    elif config.step is None and not config.steps:
        add(name, "config.steps", "a for_each needs config.step or at least one step in config.steps")
    if config.tolerated_failures and config.on_item_failure != "collect":
        add(name, "config.tolerated_failures", "tolerated_failures is only used with on_item_failure: collect")


def check_triggers(defn: WorkflowDefinition, add: Add) -> None:
    seen: set[str] = set()
    for i, trigger in enumerate(defn.spec.triggers):
        where = f"spec.triggers[{i}]"
        if trigger.name in seen:
            add(None, f"{where}.name", f"duplicate trigger name '{trigger.name}'")
        seen.add(trigger.name)
        for field, message in _trigger_problems(trigger):
            add(None, f"{where}.{field}" if field else where, f"trigger '{trigger.name}': {message}")


def _trigger_problems(trigger: Trigger) -> Iterator[tuple[str, str]]:
    if (trigger.event is None) == (trigger.schedule is None):
        yield "", "give exactly one of event (an event type) or schedule (a cron expression)"
        return
    if trigger.schedule is None:
        defaults = Trigger(name="x")
        for field in ("timezone", "catch_up", "max_catch_up"):
            if getattr(trigger, field) != getattr(defaults, field):
                yield field, f"{field} is only used with schedule"
        return
    if trigger.filter:
        yield "filter", "filter is only used with event (a schedule has no data to match)"
    zone = _zone(trigger.timezone)
    if zone is None:
        yield "timezone", f"unknown time zone {trigger.timezone!r} (an IANA name such as Europe/Paris or UTC)"
    fields = trigger.schedule.split()
    if len(fields) != 5:
        yield "schedule", (f"a cron expression has five fields (minute hour day-of-month month day-of-week), "
                           f"{trigger.schedule!r} has {len(fields)}")  # fmt: skip
        return
    try:
        CronSim(trigger.schedule, datetime(2000, 1, 1, tzinfo=zone or ZoneInfo("UTC")))
    except (CronSimError, ValueError) as exc:
        yield "schedule", f"invalid cron expression {trigger.schedule!r}: {exc}"


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _is_time(text: str) -> bool:
    """An ISO-8601 time with a zone, as the decider reads a delay's `until`."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return moment.tzinfo is not None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, str):
        return f"text ({value!r})"
    return type(value).__name__


def _cycles(deps: Mapping[str, tuple[str, ...]]) -> list[list[str]]:
    """Each cycle found by an iterative depth-first search, as a closed path."""
    state = dict.fromkeys(deps, 0)  # 0 new, 1 on the current path, 2 done
    cycles: list[list[str]] = []
    for start in deps:
        if state[start]:
            continue
        state[start] = 1
        path, stack = [start], [iter(deps[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state[nxt] == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(deps[nxt]))
    return cycles
