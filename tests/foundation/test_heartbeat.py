"""A replica's heartbeat keeps its liveness key fresh whatever else the replica waits for: its
own Redis connection, and the work after a beat (writing entries back, reaping) in a task of
its own. Found at 20,000 connections: everyone leaving at once took every connection of the
service's pool, the beat waited behind them, and the other replicas took this one for dead."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from switchboard.metrics import ServiceMetrics
from switchboard.replicas import Heartbeat

from tests.harness import RedisServer, until

pytestmark = pytest.mark.asyncio


async def test_the_heartbeat_beats_while_the_services_pool_and_the_work_after_it_are_stuck(
    redis_server: RedisServer,
) -> None:
    # The service's pool, starved: its only connection is taken, and whoever asks waits.
    pool = BlockingConnectionPool.from_url(redis_server.url, max_connections=1, timeout=None)
    starved = Redis(connection_pool=pool)
    taken = await pool.get_connection()
    told: list[bool] = []

    async def after_beat(rejoined: bool) -> None:
        """Like a store's write-back and reaping: on the service's pool."""
        told.append(rejoined)
        await starved.get("anything")

    prefix = f"heartbeat-{uuid.uuid4().hex[:8]}:"
    rid = uuid.uuid4().hex[:12]
    metrics = ServiceMetrics(f"heartbeat_{uuid.uuid4().hex[:8]}")
    heartbeat = Heartbeat(
        redis_server.url,
        prefix=prefix,
        replica_id=rid,
        ttl=0.6,
        metrics=metrics,
        on_beat=after_beat,
    )
    observer = Redis.from_url(redis_server.url, decode_responses=True)
    released = False
    await heartbeat.start()
    try:
        # The first beat's work waits for the pool; beats go on.
        await until(lambda: heartbeat.beats >= 1 and told == [False], "no first beat")
        # Redis forgets the replica meanwhile (as if it had been reaped).
        await observer.srem(f"{prefix}replicas", rid)
        await until(lambda: heartbeat.beats >= 5, "the heartbeat stopped behind the pool")
        assert told == [False], "work after a beat ran while the one before it waited"
        assert await observer.exists(f"{prefix}replica:{rid}")
        assert await observer.sismember(f"{prefix}replicas", rid)

        await pool.release(taken)
        released = True
        # One more run for the beats that came meanwhile, told that one of them rejoined.
        await until(lambda: len(told) >= 2, "the beats that came meanwhile were not followed")
        assert told[1] is True, told
        assert await heartbeat.check() is None
    finally:
        if not released:
            await pool.release(taken)
        await heartbeat.stop()
        assert not await observer.exists(f"{prefix}replica:{rid}")
        await observer.aclose()
        await starved.aclose()
