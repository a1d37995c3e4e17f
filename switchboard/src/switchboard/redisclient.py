"""Redis as every service reaches it: one way to make a client, from a ``redis://`` URL (one
Redis) or a ``redis+sentinel://`` URL (the primary the sentinels name, followed through a
failover); the writes a client is told are done (:class:`AckedWrites`); and the component that
tells ``/readyz`` whether Redis answers."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

# python-socketio's own reading of a sentinel URL, so that ours means what its manager's does
# (listed in switchboard.fanout.INTERNALS).
from socketio.redis_manager import parse_redis_sentinel_url

from switchboard.metrics import ServiceMetrics

log = logging.getLogger(__name__)

#: Redis connections per pool, and how long a command waits for a free one.
POOL_SIZE = 64
POOL_TIMEOUT = 5.0
SENTINEL_SCHEME = "redis+sentinel"


def redis_options() -> dict[str, Any]:
    """Timeouts so that a frozen or vanished Redis is noticed instead of hanging a handler."""
    return {
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "decode_responses": True,
    }


class SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """The sentinels' pool (it asks them where the primary is, and drops the connections to a
    primary that was replaced), waiting for a free connection like every other pool here."""


def redis_client(url: str, *, pool_size: int = POOL_SIZE, **options: Any) -> Redis:
    """A client on a pool of ``pool_size`` connections that waits for a free one (up to
    :data:`POOL_TIMEOUT`)
    instead of failing with "Too many connections", which many clients sending at once caused
    (docs/benchmarks.md, churn). ``options`` override :func:`redis_options`.

    ``redis+sentinel://[user:password@]host:port,host:port/db/name`` asks those sentinels for
    the primary called ``name`` on each new connection: after a failover, connections to the
    old primary fail and the next ones reach the new one."""
    options = {**redis_options(), **options}
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        pool = BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=POOL_TIMEOUT, **options
        )
        return Redis(connection_pool=pool)
    sentinels, name, credentials = parse_redis_sentinel_url(url)
    # The sentinels get the timeouts, not the data nodes' password or database.
    to_sentinels = {key: value for key, value in options.items() if key.startswith("socket_")}
    sentinel = Sentinel(sentinels, sentinel_kwargs=to_sentinels, **options, **credentials)  # type: ignore[no-untyped-call]
    client: Redis = sentinel.master_for(
        name,
        connection_pool_class=SentinelBlockingPool,
        max_connections=pool_size,
        timeout=POOL_TIMEOUT,
    )
    return client


def check_redis_url(url: str) -> str:
    """``url`` if a client can be made of it, else ValueError saying what is wrong."""
    scheme = urlsplit(url).scheme
    if scheme == SENTINEL_SCHEME:
        try:
            sentinels, name, _ = parse_redis_sentinel_url(url)
        except ValueError as exc:
            raise ValueError(f"a redis+sentinel:// URL lists host:port pairs ({exc})") from None
        if not sentinels or not name:
            raise ValueError(
                "a redis+sentinel:// URL is redis+sentinel://host:port,host:port/db/name"
            )
    elif scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
    return url


def shown(url: str) -> str:
    """``url`` fit for a log: its password replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    hosts = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


#: While the primary has fewer replicas than acked writes wait for, how often (seconds) one of
#: them asks it again (ROLE) instead of waiting.
ALONE_RECHECK = 1.0


class AckedWrites:
    """The writes a client is told are done (a chat message, a name), made so that a failover
    keeps them: with ``replicas`` above 0 (``REDIS_WAIT_REPLICAS``), each is followed, on the
    same connection, by ``WAIT replicas timeout``, and answered once that many replicas have
    it. Replication is otherwise asynchronous: the primary answers first, and a write it has
    not yet passed on dies with it.

    A primary with fewer replicas (one gone, or just promoted) cannot have it copied: rather
    than refuse every write until a replica is back, the service stays usable on one Redis.
    Such writes are answered without waiting, and counted
    (``switchboard_redis_unreplicated_writes``), as is one a replica did not confirm within
    ``timeout``; the primary is asked again every :data:`ALONE_RECHECK` s."""

    def __init__(
        self, redis: Redis, metrics: ServiceMetrics, *, replicas: int, timeout: float
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.replicas = replicas
        self.timeout_ms = max(1, int(timeout * 1000))
        #: The primary had too few replicas when last asked, at this (monotonic) time.
        self._alone_since: float | None = None

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """``script``'s answer, once the write is on ``replicas`` replicas too."""
        if self.replicas == 0:
            return await script(keys=keys, args=args)
        if self._alone_since is not None and (
            time.monotonic() - self._alone_since < ALONE_RECHECK or await self._alone()
        ):
            self.metrics.unreplicated_writes.inc()
            return await script(keys=keys, args=args)
        async with self.redis.pipeline(transaction=False) as pipe:
            await script(keys=keys, args=args, client=pipe)
            pipe.wait(self.replicas, self.timeout_ms)
            answer, copies = await pipe.execute()
        if copies < self.replicas:
            self.metrics.unreplicated_writes.inc()
            if not await self._alone():
                log.warning("a write reached %d of %d replicas in time", copies, self.replicas)
        return answer

    async def _alone(self) -> bool:
        """Whether the primary has fewer replicas than wanted (ROLE), noted for the next
        writes; a Redis that does not answer is left to the write itself to find out."""
        replicas = self.replicas
        with contextlib.suppress(RedisError, OSError):
            role = await self.redis.execute_command("ROLE")  # type: ignore[no-untyped-call]
            replicas = len(role[2]) if len(role) > 2 and isinstance(role[2], list) else 0
        if replicas >= self.replicas:
            if self._alone_since is not None:
                log.info("Redis primary has its replicas again: acked writes wait for them")
            self._alone_since = None
            return False
        if self._alone_since is None:
            log.warning("Redis primary has %d replicas: acked writes are on it alone", replicas)
        self._alone_since = time.monotonic()
        return True


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
