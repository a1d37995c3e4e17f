"""Two ticker replicas sharing a real redis-server: one upstream connection for the cluster, every
browser gets each trade once, and a killed leader is replaced within 10 s with the gap filled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.harness import Client, RedisServer, ServiceProcess
from tests.ticker.conftest import PREFIX, launch, trade_ids, watch
from tests.ticker.fake_bitstamp import FakeBitstamp
from tests.ticker.test_feed import has_ids, metric, status_of

pytestmark = pytest.mark.asyncio

#: A database of its own, emptied first: a lock or history left by another test is not ours.
DATABASE = 7


async def leader_of(replicas: list[ServiceProcess]) -> ServiceProcess:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leading = [r for r in replicas if await metric(r.url, "switchboard_ticker_leader") == 1]
        if leading:
            assert len(leading) == 1
            return leading[0]
        await asyncio.sleep(0.2)
    raise TimeoutError("no leader within 10 s")


async def test_one_upstream_for_the_cluster_and_a_killed_leader_is_replaced_within_10_s(
    tmp_path: Path, fake: FakeBitstamp, redis_server: RedisServer, clients: list[Client]
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/{DATABASE}"
    redis.Redis.from_url(url).flushdb()
    # The default leader lock TTL (5 s); quick upstream timers.
    env = {"REDIS_URL": url, "TICKER_HEARTBEAT_INTERVAL": "1", "TICKER_SILENCE_TIMEOUT": "3"}
    replicas = [launch(tmp_path, fake, env, name=f"ticker-{side}") for side in "ab"]
    try:
        for replica in replicas:
            await replica.ready(PREFIX)
        [upstream] = await fake.until(fake.subscribed)
        await fake.until(lambda: len(fake.rest_requests) == 4)
        leader = await leader_of(replicas)
        [follower] = [r for r in replicas if r is not leader]
        at_leader, _ = await watch(clients, leader.url)
        at_follower, _ = await watch(clients, follower.url)

        trades = [await fake.trade(price=f"9200{i}") for i in range(5)]
        ids = [t["id"] for t in trades]
        for client in (at_leader, at_follower):
            await has_ids(client, ids)
        await asyncio.sleep(0.3)
        assert trade_ids(at_leader) == ids and trade_ids(at_follower) == ids
        # Both replicas serve the same history and the same status.
        async with httpx.AsyncClient() as http:
            histories = [
                (await http.get(f"{r.url}{PREFIX}/trades/btcusd", params={"limit": 5})).json()
                for r in replicas
            ]
        assert histories[0] == histories[1]
        assert [t["id"] for t in histories[0]["trades"]] == ids[::-1]
        statuses = [await status_of(r.url) for r in replicas]
        assert {s["state"] for s in statuses} == {"connected"}
        assert fake.connections == [upstream], "one upstream connection for the cluster"

        leader.kill()
        killed = time.monotonic()
        # Trades keep happening on the exchange while nobody listens.
        missed = [fake.make_trade(price=f"9300{i}") for i in range(3)]
        second = await fake.successor(upstream, timeout=12)
        assert second.opened_at - killed < 10
        live = await fake.trade(price="93100")
        expected = ids + [t["id"] for t in missed] + [live["id"]]
        await has_ids(at_follower, expected)
        await asyncio.sleep(0.3)
        assert sorted(trade_ids(at_follower)) == sorted(expected), "each trade exactly once"
        backfilled = {t["id"]: t["backfilled"] for (t,) in at_follower.received("trade")}
        assert [backfilled[t["id"]] for t in missed] == [True, True, True]
        assert fake.most_open == 1, "never two upstream connections at once"
        assert await metric(follower.url, "switchboard_ticker_leader") == 1
        status = await status_of(follower.url)
        assert (status["state"], status["reconnects"]) == ("connected", 1)
        assert status["last_reason"] == "the replica holding the upstream connection stopped"
    finally:
        for replica in replicas:
            replica.stop()


async def test_a_new_leader_takes_over_at_once_when_the_old_one_stops_cleanly(
    tmp_path: Path, fake: FakeBitstamp, redis_server: RedisServer
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/{DATABASE}"
    redis.Redis.from_url(url).flushdb()
    env = {"REDIS_URL": url, "TICKER_LEADER_TTL": "30"}
    replicas = [launch(tmp_path, fake, env, name=f"ticker-{side}") for side in "ab"]
    try:
        for replica in replicas:
            await replica.ready(PREFIX)
        [upstream] = await fake.until(fake.subscribed)
        leader = await leader_of(replicas)
        [follower] = [r for r in replicas if r is not leader]
        leader.stop()
        stopped = time.monotonic()
        await fake.successor(upstream)
        # The lock was released, not left to expire after its 30 s.
        assert time.monotonic() - stopped < 10
        assert await metric(follower.url, "switchboard_ticker_leader") == 1
        assert fake.most_open == 1
    finally:
        for replica in replicas:
            replica.stop()


async def test_a_leader_cut_off_from_redis_lets_go_of_upstream_and_one_comes_back(
    tmp_path: Path, fake: FakeBitstamp, clients: list[Client]
) -> None:
    """Redis stops: the leader cannot renew its lock, so it closes its upstream connection before
    the lock could expire (no two leaders); Redis is back: one leader connects again."""
    own = RedisServer(tmp_path)
    env = {"REDIS_URL": own.url, "TICKER_HEARTBEAT_INTERVAL": "1", "TICKER_SILENCE_TIMEOUT": "3"}
    replicas = [launch(tmp_path, fake, env, name=f"ticker-{side}") for side in "ab"]
    try:
        for replica in replicas:
            await replica.ready(PREFIX)
        [upstream] = await fake.until(fake.subscribed)
        watchers = [(await watch(clients, replica.url))[0] for replica in replicas]

        own.stop()
        stopped = time.monotonic()
        await fake.until(lambda: not upstream.open, timeout=10, what="the leader let go")
        # Renewals fail from the first second; it lets go after 60 % of the 5 s TTL.
        assert upstream.closed_by == "client" and time.monotonic() - stopped < 5
        async with httpx.AsyncClient() as http:
            for replica in replicas:
                assert (await http.get(f"{replica.url}{PREFIX}/readyz")).status_code == 503

        own = RedisServer(tmp_path, port=own.port)
        second = await fake.successor(upstream, timeout=15)
        assert fake.most_open == 1
        for replica in replicas:
            await replica.ready(PREFIX, timeout=20)
        # Both replicas' Redis listeners are back: a new trade reaches everyone once.
        data = await fake.trade()
        for watcher in watchers:
            await has_ids(watcher, [data["id"]], timeout=15)
        await asyncio.sleep(0.3)
        assert [trade_ids(watcher).count(data["id"]) for watcher in watchers] == [1, 1]
        assert second.open and fake.subscribed() == [second]
    finally:
        for replica in replicas:
            replica.stop()
        own.stop()
