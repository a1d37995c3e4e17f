"""Redis as every service reaches it: one way to make a connection pool, and the component that
tells ``/readyz`` whether Redis answers."""

from __future__ import annotations

import contextlib
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from switchboard.metrics import ServiceMetrics

#: Redis connections per pool, and how long a command waits for a free one.
POOL_SIZE = 64
POOL_TIMEOUT = 5.0


def redis_options() -> dict[str, Any]:
    """Timeouts so that a frozen or vanished Redis is noticed instead of hanging a handler."""
    return {
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "decode_responses": True,
    }


def redis_client(url: str, **options: Any) -> Redis:
    """A client on a pool that waits for a free connection (up to :data:`POOL_TIMEOUT`)
    instead of failing with "Too many connections", which many clients sending at once caused
    (docs/benchmarks.md, churn). ``options`` override :func:`redis_options`."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=POOL_TIMEOUT, **{**redis_options(), **options}
    )
    return Redis(connection_pool=pool)


class RedisComponent:
    """The service's Redis client: ready while Redis answers PING."""

    def __init__(self, client: Redis, metrics: ServiceMetrics) -> None:
        self.client = client
        self.metrics = metrics

    async def start(self) -> None:
        # Redis may come up after us (compose starts things in parallel): /readyz says so
        # until it answers, rather than the start failing.
        with contextlib.suppress(RedisError, OSError):
            await self.client.ping()

    async def stop(self) -> None:
        await self.client.aclose()

    async def check(self) -> str | None:
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            self.metrics.redis_errors.inc()
            return f"redis: {exc or type(exc).__name__}"
        return None
