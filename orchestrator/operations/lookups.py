"""What the API and the command line look up in the projection before sending a command:
whether an execution exists (and its workflow), and the definition whose input schema
seals a start's or a retry's input."""

from __future__ import annotations

from typing import Any

from .definitions import DefinitionInfo, definition_info

__all__ = ["execution_head", "definition_of", "input_schema_of"]


def execution_head(conn: Any, execution_id: str) -> dict[str, Any] | None:
    """The execution's id, workflow and version from the projection, or None (a cheap existence check)."""
    row = conn.execute("SELECT id, workflow_name, workflow_version, status FROM workflow_executions WHERE id = %s",
                       (execution_id,)).fetchone()
    return dict(row) if row is not None else None


class _Registered:
    def __init__(self, row: dict[str, Any]) -> None:
        self.name, self.version, self.source = row["name"], row["version"], row["source"]


def definition_of(conn: Any, workflow: str, version: str | None) -> DefinitionInfo | None:
    """The projection's definition WORKFLOW@VERSION (the latest version when None), or None:
    what a start or a retry seals its input with."""
    from ..api import reads

    if version is None:
        found = reads.get_definition(conn, workflow)
        if not found or not found["versions"]:
            return None
        version = found["versions"][-1]["version"]  # listed in version order
    row = reads.get_definition_version(conn, workflow, version)
    return definition_info([_Registered(row)], workflow, version) if row else None


def input_schema_of(conn: Any, execution: dict[str, Any]) -> dict[str, Any] | None:
    """The input schema of an execution's version (`execution_head`'s row): what seals a retry's new input."""
    version = execution["workflow_version"]
    info = definition_of(conn, execution["workflow_name"], version) if version else None
    return info.input_schema if info else None
