"""Step keys: how one run of a step is named in events and state.

A step outside loops and for_each is recorded under its name. A step of
iteration (or item) `i` of the loop or for_each `x` is recorded as
`x[i].step`, nested as `outer[1].inner[0].leaf`. Names never contain `[`,
`]` or `.`, so a key splits back unambiguously.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["leaf", "prefix_of", "frames", "instance_prefix", "child_execution_id", "is_inner", "parent_step"]


def leaf(key: str) -> str:
    """The step's name in the definition: `x[2].charge` -> `charge`."""
    return key.rpartition(".")[2]


def prefix_of(key: str) -> str:
    """What a key adds before a step name of its block: `x[2].charge` -> `x[2].`."""
    head, dot, _ = key.rpartition(".")
    return head + dot


def is_inner(key: str) -> bool:
    return "[" in key


def instance_prefix(composite_key: str, index: int) -> str:
    return f"{composite_key}[{index}]."


def frames(prefix: str) -> list[tuple[str, int]]:
    """The iterations a prefix lies in, outermost first: `a[1].b[0].` ->
    [("a", 1), ("a[1].b", 0)] (each as the composite's key and the index)."""
    out: list[tuple[str, int]] = []
    consumed = ""
    for segment in filter(None, prefix.split(".")):
        name, _, index = segment.partition("[")
        out.append((consumed + name, int(index.rstrip("]"))))
        consumed += segment + "."
    return out


def child_execution_id(execution_id: str, key: str, attempt_base: int = 0) -> str:
    """A workflow step's child execution: `abc` + `pay[3].charge` -> `abc.pay.3.charge`;
    after an operator's retry reset the step, `abc.pay.3.charge-rerun1` (a new child)."""
    child = f"{execution_id}.{key.replace('[', '.').replace(']', '')}"
    return f"{child}-rerun{attempt_base}" if attempt_base else child


def parent_step(key: str, parents: Mapping[str, str]) -> str | None:
    """The key of the composite step whose block runs the step recorded under `key`.

    `parents` maps a step name inside a block to its composite's name (the
    definition's `parents`). A switch case's step `refund` -> `route`; item 3
    of for_each `pay_all`: `pay_all[3].charge` -> `pay_all`; nested,
    `outer[1].inner[0].leaf` -> `outer[1].inner`; a switch inside a loop's
    body, `retry[2].refund` -> `retry[2].route`. Without the definition
    (`parents` empty) an iteration's step still gets its loop or for_each.
    """
    composite = parents.get(leaf(key))
    prefix = prefix_of(key)
    if not prefix:
        return composite
    iteration_of = frames(prefix)[-1][0]  # the loop or for_each whose iteration this is
    if composite is None or leaf(iteration_of) == composite:
        return iteration_of
    return prefix + composite  # a switch (or any composite) inside the iteration
