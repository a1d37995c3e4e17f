"""Two ticker replicas sharing a real redis-server: one upstream connection for the cluster, every
browser gets each trade once, and a killed leader is replaced once its lock expires, with the gap
filled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.harness import PATIENCE, Client, RedisServer, ServiceProcess, until
from tests.ticker.conftest import FAST, PREFIX, launch, stop_tickers, trade_ids, watch
from tests.ticker.fake_bitstamp import FakeBitstamp
from tests.ticker.test_feed import has_ids, metric, status_of

pytestmark = pytest.mark.asyncio

#: A database of its own, emptied first: a lock or history left by another test is not ours.
DATABASE = 7
#: The leader lock's key and its default TTL (TICKER_LEADER_TTL).
LOCK, TTL = "ticker:leader", 5.0


async def leader_of(replicas: list[ServiceProcess]) -> ServiceProcess:
    async def leading() -> list[ServiceProcess]:
        return [r for r in replicas if await metric(r.url, "switchboard_ticker_leader") == 1]

    found: list[ServiceProcess] = await until(leading, "a leader", every=0.2)
    assert len(found) == 1
    return found[0]


async def subscribed(url: str, channel: str, count: int) -> None:
    """Until ``count`` clients listen on the Redis pub/sub ``channel``."""
    with redis.Redis.from_url(url) as client:
        await until(
            lambda: dict(client.pubsub_numsub(channel)).get(channel.encode()) == count,
            f"{count} listeners on {channel}",
        )


async def test_one_upstream_for_the_cluster_and_a_killed_leader_is_replaced_once_its_lock_expires(
    tmp_path: Path, fake: FakeBitstamp, redis_server: RedisServer, clients: list[Client]
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/{DATABASE}"
    redis.Redis.from_url(url).flushdb()
    # The default leader lock TTL (5 s); quick upstream timers.
    env = {**FAST, "REDIS_URL": url}
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
        # A second copy would come by the same way right after the first, so before the last
        # trade's: the short wait is for one that would come another way (a slow machine can
        # only make it pass).
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
        # What is left of the dead leader's lock: nobody may take it before that.
        left = max(0, int(redis.Redis.from_url(url).pttl(LOCK))) / 1000
        # Trades keep happening on the exchange while nobody listens.
        missed = [fake.make_trade(price=f"9300{i}") for i in range(3)]
        second = await fake.successor(upstream)
        # (Redis's clock and ours: a few milliseconds' tolerance.)
        assert second.opened_at > killed + left - 0.01, "the follower took a lock still alive"
        # The lock lives at most its TTL after the kill, as Redis counts; then the follower
        # takes it at its next try (every fifth of the TTL) and connects, which needs about a
        # second: bounded far above that, so that a busy machine cannot break it. (The README's
        # "within 10 s" is measured, not asserted here.)
        assert second.opened_at - killed < TTL + PATIENCE / 4
        live = await fake.trade(price="93100")
        expected = ids + [t["id"] for t in missed] + [live["id"]]
        await has_ids(at_follower, expected)
        # The backfill asks for btcusd first, and for the next pair only once btcusd's trades
        # are handed over: a trade sent after that comes after any second copy of one.
        await fake.until(lambda: len(fake.rest_requests) >= 6, what="btcusd backfilled")
        tail = await fake.trade(price="93200")
        expected.append(tail["id"])
        await has_ids(at_follower, expected)
        assert sorted(trade_ids(at_follower)) == sorted(expected), "each trade exactly once"
        backfilled = {t["id"]: t["backfilled"] for (t,) in at_follower.received("trade")}
        assert [backfilled[t["id"]] for t in missed] == [True, True, True]
        assert fake.most_open == 1, "never two upstream connections at once"
        assert await metric(follower.url, "switchboard_ticker_leader") == 1
        status = await status_of(follower.url)
        assert (status["state"], status["reconnects"]) == ("connected", 1)
        assert status["last_reason"] == "the replica holding the upstream connection stopped"
        assert status["last_cause"] == "replica_stopped"
    finally:
        await stop_tickers(*replicas)


async def test_a_new_leader_takes_over_at_once_when_the_old_one_stops_cleanly(
    tmp_path: Path, fake: FakeBitstamp, redis_server: RedisServer
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/{DATABASE}"
    store = redis.Redis.from_url(url)
    store.flushdb()
    ttl = 30
    env = {"REDIS_URL": url, "TICKER_LEADER_TTL": str(ttl)}
    replicas = [launch(tmp_path, fake, env, name=f"ticker-{side}") for side in "ab"]
    try:
        for replica in replicas:
            await replica.ready(PREFIX)
        [upstream] = await fake.until(fake.subscribed)
        leader = await leader_of(replicas)
        [follower] = [r for r in replicas if r is not leader]
        holder = store.get(LOCK)
        assert holder is not None
        await stop_tickers(leader)
        stopped = time.monotonic()
        # The lock was released as the leader stopped, not left to expire after its 30 s: it is
        # free, or the follower's already.
        assert store.get(LOCK) != holder, "the stopped leader still holds the lock"
        second = await fake.successor(upstream)
        # The follower took it at its next try (every fifth of the TTL, 6 s), not after the TTL.
        assert second.opened_at - stopped < ttl * 0.8
        assert await metric(follower.url, "switchboard_ticker_leader") == 1
        assert fake.most_open == 1
    finally:
        await stop_tickers(*replicas)


async def test_a_leader_cut_off_from_redis_lets_go_of_upstream_and_one_comes_back(
    tmp_path: Path, fake: FakeBitstamp, clients: list[Client]
) -> None:
    """Redis stops: the leader cannot renew its lock, so it closes its upstream connection before
    the lock could expire (no two leaders); Redis is back: one leader connects again."""
    own = RedisServer(tmp_path)
    env = {**FAST, "REDIS_URL": own.url}
    replicas = [launch(tmp_path, fake, env, name=f"ticker-{side}") for side in "ab"]
    try:
        for replica in replicas:
            await replica.ready(PREFIX)
        [upstream] = await fake.until(fake.subscribed)
        watchers = [(await watch(clients, replica.url))[0] for replica in replicas]

        own.stop()
        stopped = time.monotonic()
        await fake.until(lambda: not upstream.open, what="the leader let go")
        # Renewals fail from then on; it lets go after 60 % of the 5 s TTL since the last one,
        # before the lock could expire (which is the point: no two leaders). Its last renewal
        # came before Redis stopped, so the lock could expire TTL after that at the latest.
        assert upstream.closed_by == "client"
        assert upstream.closed_at is not None and upstream.closed_at - stopped < TTL
        async with httpx.AsyncClient() as http:
            for replica in replicas:
                assert (await http.get(f"{replica.url}{PREFIX}/readyz")).status_code == 503

        own = RedisServer(tmp_path, port=own.port)
        second = await fake.successor(upstream)
        assert fake.most_open == 1
        for replica in replicas:
            await replica.ready(PREFIX)
        # Each replica's socket.io listener subscribes again after its own backoff (1, 2, 4 s...
        # since Redis stopped), which /readyz does not wait for: until it has, what is published
        # is not for it.
        await subscribed(own.url, "socketio:ticker", len(replicas))
        # Both replicas' Redis listeners are back: a new trade reaches everyone once. The one
        # after it is a barrier: a second copy by the same way would come before it.
        data = await fake.trade()
        after = await fake.trade()
        for watcher in watchers:
            await has_ids(watcher, [data["id"], after["id"]])
        assert [trade_ids(watcher).count(data["id"]) for watcher in watchers] == [1, 1]
        assert second.open and fake.subscribed() == [second]
    finally:
        await stop_tickers(*replicas)
        own.stop()


@pytest.mark.parametrize(
    ("away", "span", "filled"), [(2 * 3600, "day", True), (2 * 86_400, "day", False)]
)
async def test_after_every_replica_was_away_long_the_gap_is_backfilled_as_far_as_rest_allows(
    tmp_path: Path,
    fake: FakeBitstamp,
    redis_server: RedisServer,
    away: int,
    span: str,
    filled: bool,
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/{DATABASE}"
    store = redis.Redis.from_url(url)
    store.flushdb()
    env = {"REDIS_URL": url}
    first = launch(tmp_path, fake, env, name="ticker-before")
    try:
        await first.ready(PREFIX)
        await fake.until(fake.subscribed)
        await until(lambda: store.get("ticker:heard_at"), "the leader records when it heard")
    finally:
        await stop_tickers(first)
    # Every replica away for `away` seconds: the status record (60 s) expired long ago, and
    # upstream was last heard as long ago. (We set the clock's work back by hand.)
    store.delete("ticker:status")
    gone_at = time.time() - away
    store.set("ticker:heard_at", str(gone_at))
    # A trade made while nobody listened, half an hour ago: the REST API lists it.
    missed = fake.make_trade(price="90500")
    missed["timestamp"] = str(int(time.time() - 1800))
    requests = len(fake.rest_requests)

    second = launch(tmp_path, fake, env, name="ticker-after")
    try:
        await second.ready(PREFIX)
        await fake.until(lambda: len(fake.rest_requests) >= requests + 4, what="backfilled")
        assert {asked for _pair, asked in fake.rest_requests[requests:]} == {span}
        async with httpx.AsyncClient(timeout=PATIENCE) as http:
            answer = await http.get(f"{second.url}{PREFIX}/trades/btcusd", params={"limit": 500})
            trades = answer.json()
        ids = {trade["id"] for trade in trades["trades"]}
        assert missed["id"] in ids, "what REST still lists is backfilled"

        async def gap() -> dict | None:
            return (await status_of(second.url)).get("gap")

        told = await until(gap, "the status tells of the gap")
        assert told["filled"] is filled
        assert abs(told["from"] - gone_at * 1000) < 2000
    finally:
        await stop_tickers(second)
        store.close()
