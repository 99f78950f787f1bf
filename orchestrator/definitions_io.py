"""Reading definition files from disk: the I/O the pure core leaves out."""

from __future__ import annotations

from pathlib import Path

from .core.definition import WorkflowDefinition
from .core.loading import DefinitionError, load_definition_source
from .core.validation import Problem

__all__ = ["load_definition_file"]


def load_definition_file(path: str | Path, *, known_services: set[str] | None = None) -> WorkflowDefinition:
    """Load and check one YAML/JSON definition; DefinitionError names the file on any problem,
    including a file that cannot be read."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DefinitionError([Problem(name, None, "", f"cannot read the file: {reason}")]) from None
    return load_definition_source(text, file=name, known_services=known_services)
