"""Reading template ASTs: which variable paths and functions a template uses,
and which of them is missing when a render fails (for a clear error)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import nodes

__all__ = ["analyze", "explain_missing"]


def analyze(tree: nodes.Node) -> tuple[set[tuple[str, ...]], set[str]]:
    """(variable paths, called function names) of a parsed template."""
    paths: set[tuple[str, ...]] = set()
    calls: set[str] = set()
    _Walker(paths, calls).visit(tree)
    return paths, calls


def explain_missing(
    paths: Iterable[tuple[str, ...]], calls: Iterable[str], variables: Mapping[str, Any]
) -> str | None:
    """Name the first function or path that does not resolve in `variables`, e.g. a step with no result."""
    for name in sorted(calls):
        if name not in variables:
            return f"function '{name}' is not available here"
    for path in sorted(paths):
        current: Any = variables
        for i, part in enumerate(path):
            shown = ".".join(path[:i])
            if isinstance(current, Mapping) and part in current:
                current = current[part]
                continue
            if i == 0:
                return f"'{part}' is not defined (available: {', '.join(sorted(variables)) or 'nothing'})"
            if path[0] == "steps" and i == 1:
                return f"step '{part}' has no result yet (it has not run, or there is no such step)"
            if current is None:
                hint = ""
                if path[0] == "steps" and i == 3 and path[2] == "output":
                    hint = f" (step '{path[1]}' has not completed)"
                return f"{shown} is null, so it has no field '{part}'{hint}"
            if isinstance(current, Mapping):
                return f"{shown} has no field '{part}'"
            return f"{shown} is a {type(current).__name__}, not an object with field '{part}'"
    return None


class _Walker:
    def __init__(self, paths: set[tuple[str, ...]], calls: set[str]) -> None:
        self.paths, self.calls = paths, calls

    def visit(self, node: nodes.Node) -> None:
        if isinstance(node, (nodes.Name, nodes.Getattr, nodes.Getitem)):
            self._chain(node)
        elif isinstance(node, nodes.Call):
            if isinstance(node.node, nodes.Name):
                self.calls.add(node.node.name)
            elif isinstance(node.node, nodes.Getattr):
                self.visit(node.node.node)  # `x.upper()`: the method is not a path
            else:
                self.visit(node.node)
            for child in (*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs):
                if child is not None:
                    self.visit(child)
        else:
            for child in node.iter_child_nodes():
                self.visit(child)

    def _chain(self, node: nodes.Node) -> None:
        parts: list[str] = []  # collected from the outside in
        while True:
            if isinstance(node, nodes.Getattr):
                parts.append(node.attr)
                node = node.node
            elif isinstance(node, nodes.Getitem):
                arg = node.arg
                if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                    parts.append(arg.value)
                else:  # a dynamic or numeric index: the path ends before it
                    parts.clear()
                    self.visit(arg)
                node = node.node
            elif isinstance(node, nodes.Name):
                if node.ctx == "load":
                    self.paths.add((node.name, *reversed(parts)))
                return
            else:
                self.visit(node)
                return
