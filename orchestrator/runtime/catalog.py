"""The registered workflow definitions, as read from the compacted topic."""

from __future__ import annotations


import structlog

from ..core.definition import WorkflowDefinition
from ..core.loading import DefinitionError, load_definition_source
from ..core.messages import DefinitionRegistered
from ..core.versions import version_key

__all__ = ["Catalog"]

log = structlog.get_logger("catalog")


class Catalog:
    """name@version -> parsed definition; `latest(name)` by version order."""

    def __init__(self) -> None:
        self._registered: dict[str, DefinitionRegistered] = {}
        self._parsed: dict[str, WorkflowDefinition] = {}
        self._versions: dict[str, list[str]] = {}

    def add(self, registered: DefinitionRegistered) -> None:
        key = f"{registered.name}@{registered.version}"
        if key in self._registered and self._registered[key].digest == registered.digest:
            return
        try:
            parsed = load_definition_source(registered.source, file=key)
        except DefinitionError as exc:
            # Apply validates first, so this means a newer engine reads an
            # older definition differently: keep serving the others.
            log.error("definition_unreadable", definition=key, problems=[str(p) for p in exc.problems])
            return
        self._registered[key] = registered
        self._parsed[key] = parsed
        versions = self._versions.setdefault(registered.name, [])
        if registered.version not in versions:
            versions.append(registered.version)
            versions.sort(key=version_key)

    def get(self, name: str, version: str | None) -> WorkflowDefinition | None:
        if version is None:
            versions = self._versions.get(name)
            if not versions:
                return None
            version = versions[-1]
        return self._parsed.get(f"{name}@{version}")

    def __len__(self) -> int:
        return len(self._parsed)
