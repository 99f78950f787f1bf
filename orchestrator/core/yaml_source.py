"""Definition text (YAML or JSON) -> plain data, with the line of every key.

Besides parsing, this catches what YAML silently gets wrong for workflow
authors: duplicate keys (the last one would win unnoticed), `version: 1.10`
read as the float 1.1 (the raw text is kept), and alias bombs (documents whose
aliases expand to a huge tree are refused before anything walks them).
JSON text is read with the json module: PyYAML implements YAML 1.1, which
reads some JSON (`1e5`, tabs) differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["Loc", "SourceData", "read_source", "MAX_SOURCE_CHARS", "MAX_NODES"]

MAX_SOURCE_CHARS = 2_000_000
MAX_NODES = 50_000  # nodes visited with aliases expanded (a large workflow has a few thousand)

Loc = tuple[str | int, ...]


@dataclass
class SourceData:
    data: Any = None
    ok: bool = False
    lines: dict[Loc, int] = field(default_factory=dict)  # location -> 1-based line
    problems: list[tuple[Loc, int | None, str]] = field(default_factory=list)  # (loc, line, message)


def read_source(text: str) -> SourceData:
    out = SourceData()
    if len(text) > MAX_SOURCE_CHARS:
        out.problems.append(((), None, f"the definition is longer than {MAX_SOURCE_CHARS} characters"))
        return out
    if text.lstrip().startswith(("{", "[")):
        try:
            out.data = json.loads(text, object_pairs_hook=_JsonPairs(out))
            out.ok = True
            return out
        except json.JSONDecodeError as exc:
            json_error = (exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})")
            out.problems.clear()
        except RecursionError:
            json_error = (None, "invalid JSON: nested too deeply")
        if not _read_yaml(text, SourceData()).ok:  # not YAML flow syntax either
            out.problems.append(((), *json_error))
            return out
    return _read_yaml(text, out)


class _JsonPairs:
    def __init__(self, out: SourceData) -> None:
        self.out = out

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                self.out.problems.append(((key,), None, f"duplicate key '{key}'"))
            result[key] = value
        return result


def _read_yaml(text: str, out: SourceData) -> SourceData:
    try:
        # The reader checks characters as it is built: a control character fails here.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        out.problems.append(((), None, f"invalid YAML: {str(exc).splitlines()[0]}"))
        return out
    try:
        node = loader.get_single_node()
        if node is None:
            out.problems.append(((), None, "the document is empty"))
            return out
        walker = _Walker(out)
        if not walker.walk(node, ()):
            out.problems.append(((), None, f"the document expands to more than {MAX_NODES} nodes (aliases?)"))
            return out
        out.data = loader.construct_document(node)
        _keep_version_text(node, out.data)
        out.ok = True
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = f" ({exc.context})" if exc.context else ""
        out.problems.append(((), mark.line + 1 if mark else None, f"invalid YAML: {exc.problem}{context}"))
    except yaml.YAMLError as exc:
        out.problems.append(((), None, f"invalid YAML: {exc}"))
    except RecursionError:
        out.problems.append(((), None, "invalid YAML: nested too deeply"))
    finally:
        loader.dispose()
    return out


class _Walker:
    def __init__(self, out: SourceData) -> None:
        self.out, self.visits = out, 0

    def walk(self, node: yaml.Node, loc: Loc) -> bool:
        """Record lines and duplicate keys; False when the tree is too big."""
        self.visits += 1
        if self.visits > MAX_NODES:
            return False
        self.out.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    if not self.walk(value_node, loc):
                        return False
                    continue
                key = str(key_node.value)
                if key in seen:
                    self.out.problems.append(((*loc, key), key_node.start_mark.line + 1, f"duplicate key '{key}'"))
                seen.add(key)
                self.out.lines[(*loc, key)] = key_node.start_mark.line + 1
                if not self.walk(value_node, (*loc, key)):
                    return False
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                if not self.walk(item, (*loc, i)):
                    return False
        return True


def _keep_version_text(root: yaml.Node, data: Any) -> None:
    # `version: 1.10` is the float 1.1 to YAML; the author meant the text.
    if not (isinstance(root, yaml.MappingNode) and isinstance(data, dict)):
        return
    for key, value in root.value:
        if key.value == "metadata" and isinstance(value, yaml.MappingNode) and isinstance(data.get("metadata"), dict):
            for k2, v2 in value.value:
                if k2.value == "version" and isinstance(v2, yaml.ScalarNode) and v2.tag.endswith((":float", ":int")):
                    data["metadata"]["version"] = v2.value
