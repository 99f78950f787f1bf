"""Built-in starter definitions: `orchestrator definitions new NAME --from-template TEMPLATE`.

Each `<template>.yaml` here is a complete, valid workflow definition whose
`metadata.name` is the token `__NAME__`; rendering replaces that token with
the new workflow's name and nothing else (no template engine: the output is
the file as written, comments included). The first comment line of each file
is its one-line description (`orchestrator definitions templates`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["PLACEHOLDER", "DefinitionTemplate", "available", "render", "UnknownTemplate", "InvalidName"]

PLACEHOLDER = "__NAME__"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # metadata.name of the language
_MAX_NAME = 200


class UnknownTemplate(LookupError):
    """No built-in template of that name; the message lists those there are."""


class InvalidName(ValueError):
    """Not a workflow name (metadata.name)."""


@dataclass(frozen=True)
class DefinitionTemplate:
    name: str
    description: str
    text: str

    def render(self, workflow_name: str) -> str:
        if not _NAME.match(workflow_name) or len(workflow_name) > _MAX_NAME:
            raise InvalidName(f"{workflow_name!r} is not a workflow name: letters, digits, '_', '.' and '-', "
                              f"starting with a letter or digit, at most {_MAX_NAME} characters")
        return self.text.replace(PLACEHOLDER, workflow_name)


def available() -> dict[str, DefinitionTemplate]:
    """Every built-in template by name, sorted."""
    found = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda e: e.name):
        if entry.is_file() and entry.name.endswith(".yaml"):
            text = entry.read_text(encoding="utf-8")
            name = entry.name[: -len(".yaml")]
            found[name] = DefinitionTemplate(name, _description(text), text)
    return found


def render(template: str, workflow_name: str) -> str:
    """The starter definition TEMPLATE with `metadata.name` WORKFLOW_NAME."""
    templates = available()
    if template not in templates:
        close = difflib.get_close_matches(template, list(templates), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UnknownTemplate(f"no definition template '{template}' ({hint}available: {', '.join(templates)})")
    return templates[template].render(workflow_name)


def _description(text: str) -> str:
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    return first.lstrip("#").strip()
