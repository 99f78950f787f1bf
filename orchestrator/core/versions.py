"""How workflow versions are ordered: as people expect, 1.10 after 1.9."""

from __future__ import annotations

import re

__all__ = ["version_key"]


def version_key(version: str) -> tuple:
    """Numeric parts compare as numbers and sort before text parts: 1.2 < 1.10 < 2."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-+]", version))
