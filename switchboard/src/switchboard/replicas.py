"""Which replicas of a service are alive, kept in Redis by a heartbeat.

Each replica refreshes ``<prefix>replica:<id>`` (a key with a TTL) every third of the TTL and
belongs to the set ``<prefix>replicas``. Entries that replicas write for their clients carry the
replica's id; a reader takes an entry whose replica key has expired for gone, so a crashed
replica's entries vanish within the TTL even before anyone cleans them up, and the heartbeat of
a surviving replica then reaps them (see :meth:`Heartbeat.dead`).

A store that writes such entries extends :class:`ReplicaEntries`, which owns its heartbeat.

The heartbeat has a Redis connection of its own, and beats on time whatever else the replica
does: thousands of clients leaving at once queue their removals on the service's pool (a
gateway restart at 20,000 connections took every connection of it for longer than its wait),
and the work after a beat (writing entries back, reaping) waits for that pool. Neither may keep
the liveness key from being refreshed, or the other replicas take this one for dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchboard.components import cancel
from switchboard.metrics import ServiceMetrics
from switchboard.redisclient import redis_client

log = logging.getLogger(__name__)

_BEAT = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return redis.call('SADD', KEYS[2], ARGV[1])
"""


#: The heartbeat's own connections: one beats, one more for its reads (who is alive) and for
#: the key's removal on stopping.
HEARTBEAT_CONNECTIONS = 2


@dataclass(frozen=True, slots=True)
class Replica:
    """This process among the replicas of its service: its id, how long it counts as alive
    after a beat (``REPLICA_TTL``), the metrics its Redis failures are counted in, and the
    Redis its heartbeat connects to (``REDIS_URL``)."""

    id: str
    ttl: float
    metrics: ServiceMetrics
    redis_url: str | None = None


#: Called after each successful beat; ``rejoined`` is true when Redis may have forgotten this
#: replica (it was reaped, Redis restarted, or beats failed or came late), so its entries must
#: be written again.
OnBeat = Callable[[bool], Awaitable[None]]


class Heartbeat:
    """A service component: the replica's liveness key, refreshed until the service stops, on
    a client of its own to ``redis_url``. ``on_beat`` runs after a beat, in a task of its own:
    however long it takes, the next beat comes on time. Beats that come while it runs are
    followed by one more run, told ``rejoined`` if any of them was."""

    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str,
        replica_id: str,
        ttl: float,
        metrics: ServiceMetrics,
        on_beat: OnBeat | None = None,
    ) -> None:
        self.redis = redis_client(redis_url, pool_size=HEARTBEAT_CONNECTIONS)
        self.prefix = prefix
        self.replica_id = replica_id
        self.ttl_ms = int(ttl * 1000)
        self.metrics = metrics
        self.on_beat = on_beat
        self._beat = self.redis.register_script(_BEAT)
        self._task: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        #: A beat since ``on_beat`` last began, and whether one of them found this replica
        #: forgotten.
        self._due = asyncio.Event()
        self._rejoin = False
        self._beats = 0
        self._last = 0.0
        #: When the last beat began, successful or not (monotonic seconds).
        self._began = 0.0
        self._error: str | None = None

    @property
    def beats(self) -> int:
        """Beats that Redis took since the start."""
        return self._beats

    def key(self, replica_id: str) -> str:
        return f"{self.prefix}replica:{replica_id}"

    async def start(self) -> None:
        self._began = time.monotonic()
        # The first beat before the service counts as started; the work after it follows.
        with contextlib.suppress(RedisError, OSError):
            self._rejoin = await self.beat()
            self._due.set()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="heartbeat")
        self._follower = loop.create_task(self._follow(), name="after heartbeat")

    async def stop(self) -> None:
        await cancel(self._task)
        await cancel(self._follower)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.key(self.replica_id))
        await self.redis.aclose()

    async def check(self) -> str | None:
        return self._error

    async def _run(self) -> None:
        while True:
            # A third of the TTL after the last beat began, however long it took.
            await asyncio.sleep(max(0.0, self._began + self.ttl_ms / 3000 - time.monotonic()))
            self._began = time.monotonic()
            try:
                self._rejoin |= await self.beat()
            except (RedisError, OSError) as exc:
                self._failed(exc)
            except Exception:
                log.exception("heartbeat of replica %s failed", self.replica_id)
            else:
                self._due.set()

    async def _follow(self) -> None:
        """``on_beat`` after beats, one run at a time."""
        while True:
            await self._due.wait()
            self._due.clear()
            rejoined, self._rejoin = self._rejoin, False
            if self.on_beat is None:
                continue
            try:
                await self.on_beat(rejoined)
            except (RedisError, OSError) as exc:
                # Not ready until a beat succeeds again, and that beat writes back.
                self._failed(exc)
            except Exception:
                log.exception("the work after replica %s's heartbeat failed", self.replica_id)

    def _failed(self, exc: BaseException) -> None:
        self.metrics.redis_errors.inc()
        self._error = f"redis heartbeat: {exc or type(exc).__name__}"
        log.warning("heartbeat of replica %s failed: %s", self.replica_id, exc)

    async def beat(self) -> bool:
        """Refresh the liveness key; whether Redis may have forgotten this replica since the
        last beat (the work after it must write its entries back)."""
        now = time.monotonic()
        late = self._beats > 0 and (now - self._last) * 1000 >= self.ttl_ms
        added = await self._beat(
            keys=[self.key(self.replica_id), f"{self.prefix}replicas"],
            args=[self.replica_id, self.ttl_ms],
        )
        first = self._beats == 0
        self._beats += 1
        self._last = now
        failed_before, self._error = self._error, None
        return not first and bool(added or late or failed_before)

    async def alive(self, replica_ids: Iterable[str]) -> set[str]:
        """Those of ``replica_ids`` whose liveness key is there."""
        ids = list(dict.fromkeys(replica_ids))
        if not ids:
            return set()
        found = await self.redis.mget([self.key(rid) for rid in ids])
        return {rid for rid, value in zip(ids, found, strict=True) if value is not None}

    async def dead(self) -> list[str]:
        """Replicas still listed whose key has expired: theirs to reap."""
        listed = [str(rid) for rid in await self.redis.smembers(f"{self.prefix}replicas")]
        alive = await self.alive(listed)
        return [rid for rid in listed if rid not in alive and rid != self.replica_id]

    async def forget(self, replica_id: str) -> bool:
        """Take ``replica_id`` off the list; true for the one caller that did it."""
        return bool(await self.redis.srem(f"{self.prefix}replicas", replica_id))


class ReplicaEntries:
    """A service component for what this replica writes to Redis for its clients, under
    :attr:`prefix`. Its heartbeat beats from :meth:`start` to :meth:`stop`; after each beat,
    :meth:`rejoin` writes the entries back when Redis may have forgotten them, and
    :meth:`reap` removes those of every replica that died. On stopping, :meth:`depart` removes
    this replica's own at once, rather than after its TTL."""

    #: Where the service keeps its keys in Redis (``chat:``), the heartbeat's among them.
    prefix: ClassVar[str]

    def __init__(self, redis: Redis, replica: Replica) -> None:
        self.redis = redis
        self.rid = replica.id
        #: Removals of a client's entries that Redis did not take (it failed as the client
        #: left), by sid: tried again after each beat until it does, so that no ghost stays.
        self.unfinished: dict[str, Callable[[], Awaitable[None]]] = {}
        if replica.redis_url is None:
            raise ValueError("entries in Redis need the replica's REDIS_URL for its heartbeat")
        self.heartbeat = Heartbeat(
            replica.redis_url,
            prefix=self.prefix,
            replica_id=replica.id,
            ttl=replica.ttl,
            metrics=replica.metrics,
            on_beat=self._after_beat,
        )

    async def start(self) -> None:
        await self.heartbeat.start()

    async def stop(self) -> None:
        try:
            await self.depart()
        except (RedisError, OSError) as exc:
            log.warning("%s could not remove this replica's entries from Redis: %s", self, exc)
        await self.heartbeat.stop()

    async def check(self) -> str | None:
        return await self.heartbeat.check()

    async def _after_beat(self, rejoined: bool) -> None:
        if rejoined:
            await self.rejoin()
        for sid, attempt in list(self.unfinished.items()):
            await attempt()
            del self.unfinished[sid]
            log.info("%s: %s's entries are removed at last", self, sid)
        for rid in await self.heartbeat.dead():
            await self.reap(rid)

    async def remove_entries(
        self,
        sid: str,
        attempt: Callable[[], Awaitable[None]],
        retry: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Run ``attempt``, the removal of ``sid``'s entries. If Redis fails it, ``retry``
        (by default the same; it may also tell whom it concerns, as the caller would have)
        runs after each beat until Redis takes it, and the error is raised for the caller to
        carry on without it."""
        try:
            await attempt()
        except (RedisError, OSError):
            self.unfinished[sid] = retry or attempt
            raise

    async def rejoin(self) -> None:
        """Redis may have forgotten this replica (restarted, or reaped it while we could not
        reach it): write its entries again."""

    async def reap(self, replica_id: str) -> None:
        """Remove the entries of ``replica_id``, which died."""

    async def depart(self) -> None:
        """Remove this replica's entries: it is stopping."""

    def __str__(self) -> str:
        return f"{type(self).__name__} of replica {self.rid}"
