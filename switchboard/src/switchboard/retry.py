"""How long to wait before trying again what failed: one rule for every retry loop."""

from __future__ import annotations

import random


def backoff_delay(
    failures: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after the ``failures``-th failed attempt in a row ("full jitter": a
    random wait up to ``base`` doubled per failure, at most ``cap``, so that many processes
    retrying at once do not move together)."""
    ceiling = min(cap, base * 2 ** min(failures - 1, 32))
    return (rng or random).uniform(0, ceiling)
