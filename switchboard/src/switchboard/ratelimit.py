"""A token bucket, one per connection: cheap enough to sit on every inbound event."""

from __future__ import annotations

import math
import time

from switchboard.errors import InputError


class TokenBucket:
    """Allows ``rate`` events per second on average and bursts of up to ``burst``."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def available(self) -> float:
        """Tokens there now (refilled for the time since the last look)."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._tokens

    def take(self, cost: float = 1.0) -> bool:
        if self.available() < cost:
            return False
        self._tokens -= cost
        return True

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens will be there, rounded up to 0.01 s: a client that
        waits what it is told is let through, and is never told 0.0 while it would not be."""
        return max(0.0, math.ceil((cost - self._tokens) / self.rate * 100) / 100)


def spend(bucket: TokenBucket) -> None:
    """Take a token for one event, or refuse the event with the ``rate_limited`` error every
    service sends: the connection stays, and ``retry_after`` says how long to wait."""
    if not bucket.take():
        wait = bucket.retry_after()
        raise InputError(
            "rate_limited",
            f"Too fast: wait {wait:.2f} s before sending again.",
            details={"retry_after": wait},
        )
