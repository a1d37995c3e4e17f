"""Issue 13, scenario 4 for the cursors, the remote and signalling: Redis killed (SIGKILL) and
started again, empty, while people are connected to two replicas of each. While it is gone,
what needs it is refused with ``unavailable`` (a desktop asking for a pairing, a newcomer to a
call room), never accepted half-done; the replicas come back by themselves (no restart of
theirs): ready again, their people written back, each once, and no ghost."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import socketio

from tests.conftest import CURSORS_PATH
from tests.cursors.test_cursors import join as join_cursors
from tests.cursors.test_cursors import sees_at
from tests.harness import Client, RedisServer, start_together, until
from tests.signal.peers import SIGNAL_PATH
from tests.signal.test_safety import join as join_call

pytestmark = pytest.mark.asyncio

OFFER = {"type": "offer", "sdp": "v=0\r\n"}


async def ready(url: str, service: str) -> bool:
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            return (await http.get(f"{url}/api/{service}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False


async def refused(url: str, path: str, auth: dict[str, str], namespace: str = "/") -> str:
    """The error a connection is refused with, or ``accepted``."""
    client = Client(url, path, namespace=namespace)
    try:
        await client.connect(auth=auth)
    except socketio.exceptions.ConnectionError:
        return str(client.connect_error["data"]["error"])
    await client.close()
    return "accepted"


async def test_cursors_remote_and_signalling_ride_out_a_redis_restart(
    log_dir: Path, clients: list[Client], unique: str
) -> None:
    server = RedisServer(log_dir)
    env = {"REDIS_URL": server.url, "REPLICA_TTL": "3"}
    started = start_together(
        log_dir,
        [
            (service, env, f"outage-{service}-{n}")
            for service in ("cursors", "signal")
            for n in range(2)
        ],
    )
    cursors, signals = started[:2], started[2:]
    room = f"outage-{unique}"
    try:
        ann = await join_cursors(clients, cursors[0].url, room, "ann")
        bob = await join_cursors(clients, cursors[1].url, room, "bob")
        callers = [await join_call(clients, replica.url, room) for replica in signals]
        ids = {caller.sid for caller in callers}
        await callers[0].wait("clients", lambda c: ids <= c.keys())

        server.kill()

        # What needs Redis is refused, with a reason the pages act on.
        desktop = await refused(cursors[0].url, CURSORS_PATH, {"role": "desktop"}, "/remote")
        assert desktop == "unavailable"
        assert await refused(signals[1].url, SIGNAL_PATH, {"room": room}) == "unavailable"
        assert not await ready(cursors[0].url, "cursors")

        server = RedisServer(log_dir, port=server.port)

        # Back by themselves: ready, and their people written back, once each, no ghost.
        for replica, service in [(r, "cursors") for r in cursors] + [
            (r, "signal") for r in signals
        ]:
            await until(lambda r=replica, s=service: ready(r.url, s), f"{service} ready again")
        await ann.call("update", {"x": 0.25, "y": 0.75})
        await sees_at(bob, ann.sid, 0.25, 0.75)
        newcomer = await join_cursors(clients, cursors[1].url, room, "carol")

        async def both_cursors() -> bool:
            shown = (await newcomer.call("snapshot"))["cursors"].keys()
            return shown == {ann.sid, bob.sid, newcomer.sid}

        await until(both_cursors, "the room's cursors written back")
        late = Client(signals[1].url, SIGNAL_PATH)
        clients.append(late)
        await late.connect(auth={"room": room})
        await late.wait("clients", lambda c: c.keys() - {"echo"} == ids | {late.sid})
        # Signalling across replicas again: Ann's caller reaches Bob's.
        assert (await callers[0].call("peerOffer", callers[1].sid, OFFER))["ok"]
        await callers[1].wait("peerOffer")
        # And the remote pairs across replicas again.
        screen = Client(cursors[0].url, CURSORS_PATH, namespace="/remote")
        clients.append(screen)
        await screen.connect(auth={"role": "desktop"})
        (pairing,) = await screen.wait("pairing")
        phone = Client(cursors[1].url, CURSORS_PATH, namespace="/remote")
        clients.append(phone)
        await phone.connect(auth={"role": "controller", "code": pairing["code"]})
        await screen.wait("controller_joined")
        print("\nRedis killed and restarted: cursors, remote and signalling back, no ghost")
    finally:
        for replica in [*cursors, *signals]:
            replica.stop()
        server.stop()
