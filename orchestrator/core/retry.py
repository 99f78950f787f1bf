"""Backoff delays for retries, with jitter that replays identically."""

from __future__ import annotations

import hashlib

from .definition import RetryPolicy

__all__ = ["retry_delay_ms", "is_transient_status"]


def _unit_interval(seed: str) -> float:
    # A hash instead of a random generator: the same attempt always gets the
    # same jitter, so replaying the inputs reproduces every decision.
    digest = hashlib.blake2b(seed.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def retry_delay_ms(policy: RetryPolicy, failed_attempt: int, seed: str) -> int:
    """Delay before the attempt that follows `failed_attempt` (1-based)."""
    n = max(failed_attempt, 1)
    base = policy.initial_delay_ms
    if policy.backoff == "exponential":
        delay = base * policy.multiplier ** (n - 1)
    elif policy.backoff == "linear":
        delay = base * n
    else:
        delay = base
    delay = min(delay, policy.max_delay_ms)
    if policy.jitter:
        delay *= 1 + policy.jitter * (2 * _unit_interval(f"{seed}#{n}") - 1)
    return int(min(delay, policy.max_delay_ms))


def is_transient_status(status: int) -> bool:
    return status in (408, 429) or status >= 500
