"""Running blocks of steps: joins, switch, loop, for_each, and cancelling a step.

The execution's steps are a block; so are a switch's cases and the bodies of
loops and for_each. `advance_block` starts every step of a block whose join
is satisfied and lets running composites move on. A step inside a block that
fails for good (action other than `continue`) fails its block: the switch,
the loop, or that item of the for_each, which applies its own policy.
"""

from __future__ import annotations

from typing import Any

from .decision import Decision
from .definition import ForEachConfig, LoopConfig, Step, SwitchConfig, WorkflowDefinition
from .events import (
    CommandRejected,
    IterationFinished,
    IterationStarted,
    StepCancelled,
    StepCompleted,
    StepSkipped,
)
from .keys import instance_prefix, leaf, prefix_of
from .scope import block_step_names
from .state import STEP_ACTIVE, STEP_DONE
from .steps import begin_step, loop_continues, scope_at
from .templates import TemplateError, evaluate_condition

__all__ = ["advance_block", "cancel_step", "reject_cancel"]


def advance_block(d: Decision, definition: WorkflowDefinition, steps: tuple[Step, ...], prefix: str,
                  fail: Any) -> str | None:
    """Move one block on; `fail(step, key, error)` fails a step that cannot start.

    Returns None while the block runs, "completed" once every step ended, or
    the error of a step that failed the block.
    """
    failure = _block_failure(d, steps, prefix)
    for step in steps:
        if failure is not None:
            return failure  # a failed block starts nothing more: its composite decides next
        if d.state.status not in ("running", "compensating"):
            return None
        key = prefix + step.name
        current = d.state.step(key)
        if current.status == "pending":
            start = _join(d, definition, step, prefix)
            if start:
                error = begin_step(d, definition, step, key)
                if error is not None:
                    fail(step, key, error)
        current = d.state.step(key)
        if current.status == "running" and current.block is not None:
            _advance_composite(d, definition, step, key, fail)
        failure = _block_failure(d, (step,), prefix)
    if failure is None and all(d.state.step(prefix + step.name).status in STEP_DONE for step in steps):
        return "completed"
    return failure


def _block_failure(d: Decision, steps: tuple[Step, ...], prefix: str) -> str | None:
    for step in steps:
        current = d.state.step(prefix + step.name)
        if current.status == "failed" and current.failure_action not in ("continue", "abandoned"):
            return f"step '{step.name}' failed: {current.error}"
    return None


def _join(d: Decision, definition: WorkflowDefinition, step: Step, prefix: str) -> bool:
    """Whether the step starts now (it may be skipped, or its rivals cancelled, on the way)."""
    deps = [prefix + dep for dep in definition.dependencies[step.name]]
    statuses = [d.state.step(dep).status for dep in deps]
    join = step.join
    if join.mode == "first":
        completed = statuses.count("completed")
        if completed >= join.count:
            if join.rest == "cancel":
                for dep, status in zip(deps, statuses):
                    if status not in STEP_DONE:
                        cancel_step(d, definition, dep, f"join of '{step.name}' needs it no more")
            return True
        if all(s in STEP_DONE for s in statuses):
            d.emit(StepSkipped(prefix + step.name, f"only {completed} of {len(deps)} dependencies completed "
                                                   f"(join needs {join.count})"))
        return False
    if not all(s in STEP_DONE for s in statuses):
        return False
    if join.mode == "all_completed" and any(s != "completed" for s in statuses):
        missed = next(dep for dep, s in zip(deps, statuses) if s != "completed")
        d.emit(StepSkipped(prefix + step.name, f"dependency '{leaf(missed)}' did not complete"))
        return False
    return True


def _advance_composite(d: Decision, definition: WorkflowDefinition, step: Step, key: str, fail: Any) -> None:
    config = step.config
    if isinstance(config, SwitchConfig):
        _advance_switch(d, definition, step, key, config, fail)
    elif isinstance(config, LoopConfig):
        _advance_loop(d, definition, step, key, config, fail)
    elif isinstance(config, ForEachConfig):
        _advance_for_each(d, definition, step, key, config, fail)


def _advance_switch(d: Decision, definition: WorkflowDefinition, step: Step, key: str, config: SwitchConfig,
                    fail: Any) -> None:
    block = d.state.step(key).block
    assert block is not None
    labels = [case.label(i) for i, case in enumerate(config.cases)]
    steps = config.cases[labels.index(block.case)].steps if block.case in labels else config.default
    prefix = prefix_of(key)
    result = advance_block(d, definition, steps, prefix, fail)
    if result is None or d.state.step(key).status != "running":
        return
    if result == "completed":
        outputs = {s.name: d.state.step(prefix + s.name).output for s in steps}
        d.emit(StepCompleted(key, 1, {"case": block.case, "outputs": outputs}))
    else:
        _cancel_all(d, definition, [prefix + s.name for s in steps], f"switch '{step.name}' failed")
        fail(step, key, f"case '{block.case}': {result}")


def _advance_loop(d: Decision, definition: WorkflowDefinition, step: Step, key: str, config: LoopConfig,
                  fail: Any) -> None:
    while d.state.step(key).status == "running":
        block = d.state.step(key).block
        assert block is not None and block.active
        index = max(block.active)
        prefix = instance_prefix(key, index)
        result = advance_block(d, definition, config.steps, prefix, fail)
        if result is None or d.state.step(key).status != "running":
            return
        if result != "completed":
            _cancel_all(d, definition, [prefix + s.name for s in config.steps], f"loop '{step.name}' failed")
            d.emit(IterationFinished(key, index, "failed", None, result))
            fail(step, key, f"iteration {index}: {result}")
            return
        output = {name: d.state.step(prefix + name).output for name in block_step_names(step)}
        try:
            # `until` sees this iteration's steps: decide before folding them away.
            done = config.until is not None and evaluate_condition(
                config.until, scope_at(d, definition, prefix + step.name), where=f"step '{step.name}': config.until")
        except TemplateError as exc:
            d.emit(IterationFinished(key, index, "failed", None, str(exc)))
            fail(step, key, str(exc))
            return
        d.emit(IterationFinished(key, index, "completed", output))
        if not done:
            if index + 1 >= (config.max_iterations or 0):
                fail(step, key, f"loop '{step.name}' reached its limit of {config.max_iterations} "
                                f"iterations (max_iterations) before its exit condition held")
                return
            try:
                done = not loop_continues(d, definition, step, key, index + 1)
            except TemplateError as exc:
                fail(step, key, str(exc))
                return
        if done:
            d.emit(StepCompleted(key, 1, output))
            return
        d.emit(IterationStarted(key, index + 1))


def _advance_for_each(d: Decision, definition: WorkflowDefinition, step: Step, key: str, config: ForEachConfig,
                      fail: Any) -> None:
    block = d.state.step(key).block
    assert block is not None and block.items is not None
    # Only items this decision touched can move: a for_each of 1,000 items costs
    # per result what its item costs, not what every item in flight costs.
    todo = sorted(block.active if d.advance_every_item else _touched_items(d, key) & block.active)
    while d.state.step(key).status == "running":
        for index in todo:
            if not _advance_item(d, definition, step, key, config, index, fail):
                return
        block = d.state.step(key).block
        assert block is not None and block.items is not None
        free = config.concurrency - len(block.active)
        todo = list(range(block.started, min(len(block.items), block.started + max(free, 0))))
        if not todo:
            break
        for index in todo:
            d.emit(IterationStarted(key, index))
    block = d.state.step(key).block
    if (d.state.step(key).status == "running" and block is not None and block.items is not None
            and not block.active and block.started == len(block.items)):
        d.emit(StepCompleted(key, 1, [block.outputs.get(i) for i in range(len(block.items))]))


def _touched_items(d: Decision, key: str) -> set[int]:
    """Indexes of `key`'s items that events of this decision name (`key[i]...`)."""
    head = key + "["
    touched = set()
    for r in d.recorded:
        name = getattr(r.event, "step", None)
        if name == key and isinstance(r.event, IterationStarted):
            touched.add(r.event.index)
        elif isinstance(name, str) and name.startswith(head):
            touched.add(int(name[len(head):name.index("]", len(head))]))
    return touched


def _advance_item(d: Decision, definition: WorkflowDefinition, step: Step, key: str, config: ForEachConfig,
                  index: int, fail: Any) -> bool:
    """Move item `index` on; False once the for_each itself has failed."""
    prefix = instance_prefix(key, index)
    result = advance_block(d, definition, config.block, prefix, fail)
    if result is None or d.state.step(key).status != "running":
        return True
    if result == "completed":
        outputs = {s.name: d.state.step(prefix + s.name).output for s in config.block}
        output = outputs[config.block[0].name] if config.step is not None else outputs
        d.emit(IterationFinished(key, index, "completed", output))
        return True
    _cancel_all(d, definition, [prefix + s.name for s in config.block], f"item {index} failed")
    d.emit(IterationFinished(key, index, "failed", None, result))
    block = d.state.step(key).block
    assert block is not None
    tolerated = config.tolerated_failures if config.on_item_failure == "collect" else 0
    if len(block.failed) <= tolerated:
        return True
    for other in sorted(block.active):
        _cancel_iteration(d, definition, key, other, config.block, "the for_each failed")
    first = min(block.failed)
    fail(step, key, f"{len(block.failed)} item(s) failed (tolerated: {tolerated}); "
                    f"item {first}: {block.failed[first]}")
    return False


def cancel_step(d: Decision, definition: WorkflowDefinition, key: str, reason: str,
                requested_by: str | None = None) -> bool:
    """Withdraw a pending or active step (and everything running inside it);
    False when it has already ended."""
    current = d.state.step(key)
    if current.status in STEP_DONE:
        return False
    step = definition.all_steps_by_name[leaf(key)]
    block = current.block
    if block is not None:
        if block.kind == "switch":
            config = step.config
            assert isinstance(config, SwitchConfig)
            _cancel_all(d, definition, [prefix_of(key) + s.name for s in _all_case_steps(config)], reason)
        else:
            for index in sorted(block.active):
                _cancel_iteration(d, definition, key, index, step.inner_blocks[0], reason)
    d.emit(StepCancelled(key, reason, requested_by))
    return True


def reject_cancel(d: Decision, key: str, requested_by: str | None) -> None:
    d.emit(CommandRejected("CancelStep", f"step '{key}': step already {d.state.step(key).status}", requested_by))


def _all_case_steps(config: SwitchConfig) -> list[Step]:
    return [s for case in config.cases for s in case.steps] + list(config.default)


def _cancel_all(d: Decision, definition: WorkflowDefinition, keys: list[str], reason: str) -> None:
    for key in keys:
        status = d.state.step(key).status
        if status in STEP_ACTIVE or (status == "pending" and key in d.state.steps):
            cancel_step(d, definition, key, reason)


def _cancel_iteration(d: Decision, definition: WorkflowDefinition, key: str, index: int,
                      steps: tuple[Step, ...], reason: str) -> None:
    prefix = instance_prefix(key, index)
    _cancel_all(d, definition, [prefix + name for name in _names(steps)], reason)
    d.emit(IterationFinished(key, index, "cancelled", None, reason))


def _names(steps: tuple[Step, ...]) -> list[str]:
    names = []
    for step in steps:
        names.append(step.name)
        if isinstance(step.config, SwitchConfig):
            names.extend(s.name for s in _all_case_steps(step.config))
    return names

