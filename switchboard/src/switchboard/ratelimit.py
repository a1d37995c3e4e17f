"""Token buckets: one per connection, cheap enough to sit on every inbound event; and one per
client address, held in memory or, for replicas, in Redis."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Protocol

from redis.asyncio import Redis

from switchboard.components import Passive
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

    def give_back(self, cost: float = 1.0) -> None:
        """Return tokens taken for something that turned out not to count."""
        self._tokens = min(self.burst, self.available() + cost)

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens will be there, rounded up to 0.01 s: a client that
        waits what it is told is let through, and is never told 0.0 while it would not be."""
        return max(0.0, math.ceil((cost - self._tokens) / self.rate * 100) / 100)


def spend(bucket: TokenBucket, cost: float = 1.0) -> None:
    """Take ``cost`` tokens for one event, or refuse the event with the ``rate_limited`` error
    every service sends: the connection stays, and ``retry_after`` says how long to wait."""
    if not bucket.take(cost):
        wait = bucket.retry_after(cost)
        raise InputError(
            "rate_limited",
            f"Too fast: wait {wait:.2f} s before sending again.",
            details={"retry_after": wait},
        )


class SharedLimit(Protocol):
    """A token bucket per key (a client's address), for a limit that must hold across
    connections and, with Redis, across replicas. A component of its service."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def check(self) -> str | None: ...

    async def spend(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when there was one, else the seconds until there is
        (rounded up to 0.01 s). The check and the taking are one step: clients racing each
        other never get more than the bucket holds."""
        ...

    async def give_back(self, key: str) -> None:
        """Return the token a spend took (the attempt it paid for turned out not to count)."""
        ...


class MemoryLimit(Passive):
    """One process: a :class:`TokenBucket` per key, the ``most`` most recently used kept. The
    one forgotten is the one idle longest, whose tokens have most likely come back: forgetting
    it gives its key nothing it would not have had."""

    def __init__(self, rate: float, burst: float, most: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.most = most
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, key: str) -> TokenBucket:
        bucket = self.buckets.get(key)
        if bucket is not None:
            self.buckets.move_to_end(key)
            return bucket
        if len(self.buckets) >= self.most:
            self.buckets.popitem(last=False)
        bucket = self.buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket

    async def spend(self, key: str) -> float:
        bucket = self._bucket(key)
        return 0.0 if bucket.take() else bucket.retry_after()

    async def give_back(self, key: str) -> None:
        self._bucket(key).give_back()


# KEYS[1]: the key's bucket, a hash {tokens, at}. ARGV: tokens per ms, burst, cost (-1 gives
# one back). Returns 0 when taken, else the ms until the cost is there. Redis's clock, so that
# every replica counts the same.
_SPEND = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(held[1]) or burst
local at = tonumber(held[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= cost then
  tokens = math.min(burst, tokens - cost)
else
  wait = math.ceil((cost - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return wait
"""


class RedisLimit(Passive):
    """Replicas: the buckets in Redis under ``prefix``, each gone once it would be full."""

    def __init__(self, redis: Redis, prefix: str, rate: float, burst: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.rate = rate
        self.burst = burst
        self._spend = redis.register_script(_SPEND)

    async def _run(self, key: str, cost: float) -> float:
        wait_ms = await self._spend(
            keys=[self.prefix + key], args=[self.rate / 1000, self.burst, cost]
        )
        return math.ceil(int(wait_ms) / 10) / 100

    async def spend(self, key: str) -> float:
        return await self._run(key, 1.0)

    async def give_back(self, key: str) -> None:
        await self._run(key, -1.0)
