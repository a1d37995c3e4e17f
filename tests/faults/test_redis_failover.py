"""Issue 14: Redis is no single point of failure. `make cluster REDIS_HA=1`'s topology: the
first primary and its replica (redis-server/node.sh), three sentinels
(redis-server/sentinel.sh), two replicas of every service reaching Redis through the sentinels,
the gateway in front.

People talk in a chat room through the gateway while the primary is killed (SIGKILL). The
sentinels promote the replica within :data:`PROMOTION_BOUND`; every service finds the new
primary by itself, ``/readyz`` says 503 during the gap and 200 after; nobody is disconnected;
every message acknowledged before the kill is in the history after it (each waited for the
replica: REDIS_WAIT_REPLICAS), names stay unique, and the ticker never holds two upstream
connections (its lock survives the failover or is taken again, once).

Then the old primary comes back and rejoins as a replica of the new one, and a second kill
fails over back to it, with the same checks.

The test starts the two Redis nodes itself from the Procfile's lines (honcho, which runs the
rest through scripts/cluster.sh, would stop everything when one of its processes died)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import connect_chat
from tests.faults.test_redis_persistence import Talk
from tests.faults.users import ChatUser, duplicates
from tests.gateway.conftest import SERVICES, cluster_env, start_part
from tests.harness import (
    PATIENCE,
    STARTUP,
    Client,
    Process,
    ProcfileProcess,
    free_port,
    until,
    wait_for_port,
)
from tests.ticker.fake_bitstamp import FakeBitstamp

pytestmark = pytest.mark.asyncio

#: From the primary's death to the replica's promotion, with redis-server/sentinel.conf's settings
#: (about 7 s here; the issue's bound).
PROMOTION_BOUND = 15.0
MASTER = "switchboard"
PEOPLE = 4
HISTORY = 1000


@dataclass
class HaCluster:
    """`make cluster REDIS_HA=1` with its two Redis nodes started by the test."""

    log_dir: Path
    infra: Process
    env: dict[str, str]
    nodes: dict[str, ProcfileProcess] = field(default_factory=dict)
    starts: int = 0

    @property
    def url(self) -> str:
        return f"https://localhost:{self.env['GATEWAY_HTTPS_PORT']}"

    def port(self, node: str) -> int:
        return int(self.env["REDIS_PORT" if node == "redis" else "REDIS_REPLICA_PORT"])

    def start(self, node: str) -> None:
        """The Procfile's ``redis`` (the first primary) or ``redis-replica``, on its directory
        under CLUSTER_DIR: what it held comes back with it."""
        self.starts += 1
        process = ProcfileProcess(node, self.log_dir, self.env, label=f"{node}-{self.starts}")
        self.nodes[node] = process
        wait_for_port(self.port(node), process=process)

    def primary(self) -> int | None:
        """The port of the primary, as a majority of the sentinels name it."""
        named: list[int] = []
        for n in (1, 2, 3):
            sentinel = redis.Redis(port=int(self.env[f"SENTINEL_PORT_{n}"]), socket_timeout=2)
            try:
                address = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
                if address:
                    named.append(int(address[1]))
            except redis.RedisError:
                pass
            finally:
                sentinel.close()
        for port in set(named):
            if named.count(port) >= 2:
                return port
        return None

    def heir_known(self, node: str) -> bool:
        """A majority of the sentinels know ``node`` as a replica in good standing, one they
        would promote. They learn of a replica from the primary's INFO, asked every 10 s: a
        primary killed before they did has no good replica to fail over to."""
        knowing = 0
        for n in (1, 2, 3):
            sentinel = redis.Redis(port=int(self.env[f"SENTINEL_PORT_{n}"]), socket_timeout=2)
            try:
                replicas = sentinel.sentinel_slaves(MASTER)
            except redis.RedisError:
                continue
            finally:
                sentinel.close()
            knowing += any(
                replica["port"] == self.port(node)
                and replica["master-link-status"] == "ok"
                and not (replica["is_sdown"] or replica["is_odown"] or replica["is_disconnected"])
                for replica in replicas
            )
        return knowing >= 2

    def replicating(self, node: str, primary: str) -> bool:
        """``node`` is a replica of ``primary`` with its link up (in sync)."""
        try:
            with redis.Redis(port=self.port(node), socket_timeout=2) as client:
                info = client.info("replication")
        except redis.RedisError:
            return False
        return (
            info.get("role") == "slave"
            and int(info.get("master_port", 0)) == self.port(primary)
            and info.get("master_link_status") == "up"
        )

    def stop(self) -> None:
        self.infra.stop()
        for process in self.nodes.values():
            process.stop()


@pytest.fixture
async def ha(tmp_path: Path, fake: FakeBitstamp) -> AsyncIterator[HaCluster]:
    env = cluster_env(tmp_path)
    env.pop("SIMULATOR_PORT")  # the ticker follows the fake exchange, which counts connections
    env.update(
        {
            "REDIS_HA": "1",
            "REDIS_REPLICA_PORT": str(free_port()),
            **{f"SENTINEL_PORT_{n}": str(free_port()) for n in (1, 2, 3)},
            "TICKER_UPSTREAM_URL": fake.url,
            "TICKER_REST_URL": fake.rest_url,
            "CHAT_RATE_PER_SECOND": "1000",
            "CHAT_RATE_BURST": "1000",
            "CHAT_HISTORY_SIZE": str(HISTORY),
        }
    )
    replicas = [f"{service}-{side}" for service in SERVICES for side in "ab"]
    infra, given = start_part(
        tmp_path, env, " ".join(["sentinel-1 sentinel-2 sentinel-3 gateway turn", *replicas])
    )
    cluster = HaCluster(tmp_path, infra, given)
    try:
        cluster.start("redis")
        cluster.start("redis-replica")
        await until_ready(cluster)
        yield cluster
    finally:
        cluster.stop()


def replica_urls(cluster: HaCluster) -> dict[str, str]:
    return {
        f"{service}-{side}": (
            f"http://127.0.0.1:{cluster.env[f'{service.upper()}_PORT_{side.upper()}']}"
            f"/api/{service}"
        )
        for service in SERVICES
        for side in "ab"
    }


async def until_ready(cluster: HaCluster) -> None:
    async with httpx.AsyncClient(timeout=5) as http:

        async def all_ready() -> bool:
            if not cluster.infra.alive():
                raise RuntimeError(f"the cluster stopped:\n{cluster.infra.log()}")
            for url in replica_urls(cluster).values():
                try:
                    if (await http.get(f"{url}/readyz")).status_code != 200:
                        return False
                except httpx.HTTPError:
                    return False
            return True

        await until(all_ready, "every replica ready", timeout=STARTUP, every=0.3)


class Readiness:
    """Every replica's ``/readyz``, asked over and over: what each said, in order."""

    def __init__(self, cluster: HaCluster) -> None:
        self.urls = replica_urls(cluster)
        self.said: dict[str, list[int]] = {name: [] for name in self.urls}
        self.going = True

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=PATIENCE) as http:
            while self.going:
                answers = await asyncio.gather(
                    *(http.get(f"{url}/readyz") for url in self.urls.values()),
                    return_exceptions=True,
                )
                for name, answer in zip(self.urls, answers, strict=True):
                    code = answer.status_code if isinstance(answer, httpx.Response) else 0
                    self.said[name].append(code)
                await asyncio.sleep(0.2)

    def start_over(self) -> None:
        for codes in self.said.values():
            codes.clear()

    def all_ready_again(self) -> bool:
        """Each replica said 503 since :meth:`start_over`, and says 200 now."""
        return all(503 in codes and codes[-1] == 200 for codes in self.said.values())


def unreplicated(cluster: HaCluster) -> int:
    """Acked writes no replica confirmed, over the chat replicas (their /metrics)."""
    total = 0
    for side in "ab":
        port = cluster.env[f"CHAT_PORT_{side.upper()}"]
        text = httpx.get(f"http://127.0.0.1:{port}/api/chat/metrics", timeout=PATIENCE).text
        found = re.search(r"^switchboard_redis_unreplicated_writes_total\S* (\S+)$", text, re.M)
        total += int(float(found.group(1))) if found else 0
    return total


async def fail_over(
    cluster: HaCluster, talk: Talk, readiness: Readiness, dead: str, heir: str
) -> float:
    """Kill the primary ``dead`` while people talk; the seconds until the sentinels named
    ``heir``. Returns once every replica was unready and is ready again, and people talk."""
    assert cluster.primary() == cluster.port(dead)
    await until(lambda: cluster.heir_known(heir), f"the sentinels know {heir} as a replica")
    readiness.start_over()
    acked = len(talk.acked_at)
    cluster.nodes[dead].kill()
    killed = time.monotonic()
    await until(
        lambda: cluster.primary() == cluster.port(heir),
        f"{heir} promoted",
        timeout=PROMOTION_BOUND,
        every=0.1,
    )
    promoted = time.monotonic() - killed
    await until(readiness.all_ready_again, "every replica unready, then ready again")
    await until(lambda: len(talk.acked_at) >= acked + 30, "people talk again")
    return promoted


async def test_the_sentinels_promote_the_replica_and_nothing_acked_is_lost(
    ha: HaCluster, fake: FakeBitstamp, clients: list[Client], unique: str
) -> None:
    room = f"failover-{unique}"
    people = [ChatUser([ha.url], room, f"p{n}-{unique}") for n in range(PEOPLE)]
    talk, readiness = Talk(people, pause=0.25), Readiness(ha)
    tasks: list[asyncio.Task[Any]] = []
    checked: set[str] = set()

    async def nothing_lost() -> None:
        """Every message acknowledged since the last look is in the history a newcomer is
        shown (the room's history holds more than a failover's worth of talk)."""
        due = [mid for mid in talk.acked_at if mid not in checked]
        newcomer = await connect_chat(clients, ha.url, room=room)
        (messages, _info) = await newcomer.wait("history")
        shown = {message["id"] for message in messages}
        lost = [mid for mid in due if mid not in shown]
        assert not lost, f"{len(lost)} of {len(due)} acked messages lost"
        assert len(due) < HISTORY, "more messages than the history holds: talk slower"
        checked.update(due)
        await newcomer.close()

    try:
        await asyncio.gather(*(person.connect() for person in people))
        await fake.until(fake.subscribed, what="the ticker's upstream")
        tasks = [asyncio.create_task(talk.run()), asyncio.create_task(readiness.run())]
        await until(lambda: len(talk.acked_at) >= 60, "messages before the kill")

        first = await fail_over(ha, talk, readiness, dead="redis", heir="redis-replica")
        await nothing_lost()

        # The old primary rejoins as a replica of the new one, and holds what was said.
        ha.start("redis")
        await until(
            lambda: ha.replicating("redis", primary="redis-replica"),
            "the old primary a replica of the new one, in sync",
        )

        # The acked writes wait for it again (they stopped waiting while the new primary was
        # alone): a stretch of talk with none acked unreplicated.
        async def replicated_again() -> bool:
            counted, acked = unreplicated(ha), len(talk.acked_at)
            await until(lambda: len(talk.acked_at) >= acked + 20, "people talk on")
            return unreplicated(ha) == counted

        await until(replicated_again, "acked writes waiting for the replica again")
        second = await fail_over(ha, talk, readiness, dead="redis-replica", heir="redis")
        talk.going = readiness.going = False
        await asyncio.gather(*tasks)
        await nothing_lost()

        # Nobody was disconnected; everyone keeps their name, listed once.
        assert sum(person.reconnects for person in people) == 0
        newcomer = await connect_chat(clients, ha.url, room=room)
        answer = await newcomer.call("name", people[0].name)
        assert answer["error"] == "taken"
        users = await newcomer.wait("users")
        names = [user["name"] for user in users[0]]
        assert sorted(names) == sorted(person.name for person in people)
        # The ticker: never two upstream connections; the lock taken again at most once a kill.
        assert fake.most_open == 1
        assert len(fake.connections) <= 3
        await fake.until(fake.subscribed, what="the ticker's upstream after the failovers")
        print(
            f"\nRedis failover: promoted after {first:.1f} s, back after {second:.1f} s; "
            f"{len(talk.acked_at)} acked, {talk.refused} refused in the gaps, 0 lost, "
            f"{duplicates(people)} duplicates; {unreplicated(ha)} writes acked on a lone "
            f"primary; {len(fake.connections)} upstream connections, never two at once"
        )
    finally:
        talk.going = readiness.going = False
        for task in tasks:
            task.cancel()
        for person in people:
            await person.close()
