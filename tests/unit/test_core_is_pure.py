"""The import contract of the pure core: no I/O, clock or randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "orchestrator" / "core"
FORBIDDEN = {
    "confluent_kafka", "httpx", "aiohttp", "psycopg", "socket", "random", "secrets", "time", "uuid",
    "os", "subprocess", "threading", "asyncio", "urllib", "requests", "structlog", "logging",
    "orchestrator.runtime", "orchestrator.cli", "orchestrator.codec", "projections",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "urandom", "uuid4", "random"}


def modules() -> list[Path]:
    return sorted(CORE.glob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.name)
def test_core_module_imports_nothing_impure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), (
                f"{path.name}:{node.lineno} imports {name}: the core must stay pure")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in FORBIDDEN_CALLS, (
                f"{path.name}:{node.lineno} calls .{node.func.attr}(): time and randomness are inputs")
