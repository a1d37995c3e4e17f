"""One upstream per cluster: the replica holding a Redis lock runs the feed (issue 4).

The lock is ``ticker:leader``, set with NX and a TTL (``TICKER_LEADER_TTL``) and renewed every
fifth of it by its holder, only while it still holds it. A leader that cannot renew for 60 % of
the TTL stops its feed before the lock can expire, so two replicas never hold upstream
connections at once; a follower tries to take the lock as often as the leader renews it, so a
dead leader is replaced within about the TTL plus a fifth of it. Without Redis the one process
is the leader for its whole life.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError
from switchboard.components import cancel

log = logging.getLogger(__name__)

KEY = "ticker:leader"
#: KEYS[1] the lock; ARGV[1] our id; ARGV[2] TTL in ms. 1 when renewed, 0 when not ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
#: Seconds between two starts of a feed that crashed (a bug: it is logged).
RESTART_DELAY = 1.0


class Leadership:
    """A service component: runs ``lead`` while this replica is the leader, and cancels it
    when it stops being one."""

    def __init__(
        self,
        lead: Callable[[], Awaitable[None]],
        *,
        redis: Redis | None,
        replica_id: str,
        ttl: float,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.lead = lead
        self.redis = redis
        self.replica_id = replica_id
        self.ttl = ttl
        self.on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._lead_task: asyncio.Task[None] | None = None
        self._renewed = 0.0
        if redis is not None:
            self._renew = redis.register_script(_RENEW)
            self._release = redis.register_script(_RELEASE)

    @property
    def leading(self) -> bool:
        return self._lead_task is not None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ticker:leadership")

    async def stop(self) -> None:
        await cancel(self._task)
        was_leading = self.leading
        await self._step_down("shutting down")
        if was_leading and self.redis is not None:
            # Let a follower take over at once rather than after the TTL.
            with contextlib.suppress(RedisError, OSError):
                await self._release(keys=[KEY], args=[self.replica_id])

    async def check(self) -> str | None:
        return None

    async def _run(self) -> None:
        interval = self.ttl / 5
        while True:
            try:
                await self._step()
            except Exception:
                log.exception("leader election step failed")
            await asyncio.sleep(interval)

    async def _step(self) -> None:
        if self._lead_task is not None and self._lead_task.done():
            # The feed never ends by itself; if it did, its error was logged: start it again.
            self._lead_task = None
            await asyncio.sleep(RESTART_DELAY)
            if self.redis is None:
                self._start_leading()
                return
        if self.redis is None:
            if self._lead_task is None:
                self._start_leading()
            return
        if self._lead_task is None:
            if await self._try(self.redis.set(KEY, self.replica_id, nx=True, px=self._ttl_ms())):
                self._renewed = time.monotonic()
                log.info("replica %s is now the ticker leader", self.replica_id)
                self._start_leading()
            return
        renewed = await self._try(self._renew(keys=[KEY], args=[self.replica_id, self._ttl_ms()]))
        if renewed:
            self._renewed = time.monotonic()
        elif renewed is not None:
            await self._step_down("another replica holds the lock")
        elif time.monotonic() - self._renewed > self.ttl * 0.6:
            await self._step_down("the lock could not be renewed in time")

    async def _try(self, command: Awaitable[object]) -> object | None:
        """The command's answer, or None when Redis did not give one in time."""
        try:
            async with asyncio.timeout(self.ttl / 5):
                return await command
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("leader election: Redis failed: %s", exc or type(exc).__name__)
            return None

    def _ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def _start_leading(self) -> None:
        loop = asyncio.get_running_loop()
        self._lead_task = loop.create_task(self._guarded(), name="ticker:feed")
        if self.on_change:
            self.on_change(True)

    async def _guarded(self) -> None:
        try:
            await self.lead()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the ticker feed failed")

    async def _step_down(self, why: str) -> None:
        task, self._lead_task = self._lead_task, None
        if task is None:
            return
        log.warning("replica %s stops leading the ticker: %s", self.replica_id, why)
        await cancel(task)
        if self.on_change:
            self.on_change(False)
