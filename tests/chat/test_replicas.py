"""What happens to replicas and Redis when things break: a replica killed with SIGKILL, Redis
stopped and started again, Redis forgetting everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import socketio
from switchboard.token import mint

from tests.chat.presence import bare, changes, told
from tests.conftest import AUTH_SECRET, connect_chat, start_chat
from tests.harness import PATIENCE, Client, RedisServer, until

pytestmark = pytest.mark.asyncio


async def test_a_killed_replicas_names_and_presence_are_freed_once_its_heartbeat_expires(
    tmp_path: Path, redis_server: RedisServer, clients: list[Client], unique: str
) -> None:
    # A short REPLICA_TTL (15 s by default) keeps the story short. How long after the crash
    # the name is freed is the TTL's business and the machine's: this waits for the outcome.
    env = {"REDIS_URL": redis_server.url, "REPLICA_TTL": "3"}
    doomed = start_chat(tmp_path, env, name="doomed")
    survivor = start_chat(tmp_path, env, name="survivor")
    try:
        room = f"r-{unique}"
        ann = await connect_chat(clients, doomed.url, room=room)
        await ann.call("name", f"ann-{unique}")
        ann_id = ann.sid
        bob = await connect_chat(clients, survivor.url, room=room)
        await bob.call("name", f"bob-{unique}")
        other = await connect_chat(clients, survivor.url, room=room)
        assert (await other.call("name", f"ann-{unique}"))["error"] == "taken"
        # Both replicas listen on chat's own channel, not python-socketio's shared default.
        channels = dict(redis.Redis(port=redis_server.port).pubsub_numsub("socketio:chat"))
        assert channels[b"socketio:chat"] >= 2

        doomed.kill()

        async def taken_back() -> bool:
            return bool((await other.call("name", f"ann-{unique}"))["ok"])

        # Two tries a second: within the default rate limit.
        await until(taken_back, "the dead replica's name freed", every=0.5)

        await bob.wait("presence", told("left", id=ann_id))
        (left,) = changes(bob, "left", id=ann_id)
        assert bare(left) == {"id": ann_id, "name": f"ann-{unique}"}
        late = await connect_chat(clients, survivor.url, room=room)
        names = {u["name"] for u in late.received("users")[0][0]}
        assert names == {f"bob-{unique}", f"ann-{unique}"}  # ann now held by `other`
        assert [u["id"] for u in late.received("users")[0][0] if u["name"] == f"ann-{unique}"] == [
            other.sid
        ]
    finally:
        doomed.stop()
        survivor.stop()


async def test_readyz_follows_redis_down_and_back(tmp_path: Path, clients: list[Client]) -> None:
    own_redis = RedisServer(tmp_path)
    service = start_chat(tmp_path, {"REDIS_URL": own_redis.url, "REPLICA_TTL": "3"})
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=PATIENCE) as http:
            assert (await http.get("/api/chat/readyz")).status_code == 200
            own_redis.stop()

            answer = await wait_for_status(http, 503)
            body = answer.json()
            assert body["status"] == "unavailable"
            assert any("redis" in reason for reason in body["reasons"])
            assert (await http.get("/api/chat/healthz")).status_code == 200
            # Chat says it cannot store a message rather than losing it silently.
            refused = Client(service.url, "/api/chat/socket.io")
            clients.append(refused)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.connect()
            assert refused.connect_error["data"]["error"] == "unavailable"

            own_redis = RedisServer(tmp_path, port=own_redis.port)
            await wait_for_status(http, 200)
            client = await connect_chat(clients, service.url)
            assert (await client.call("name", "back"))["ok"] is True
            metrics = (await http.get("/api/chat/metrics")).text
            errors = [
                line
                for line in metrics.splitlines()
                if line.startswith("switchboard_redis_errors_total")
            ]
            assert float(errors[0].split()[-1]) > 0
    finally:
        service.stop()
        own_redis.stop()


async def test_names_survive_redis_forgetting_everything(
    tmp_path: Path, clients: list[Client], unique: str
) -> None:
    own_redis = RedisServer(tmp_path)
    env = {"REDIS_URL": own_redis.url, "REPLICA_TTL": "3", "AUTH_SECRET": AUTH_SECRET}
    a = start_chat(tmp_path, env, name="a")
    b = start_chat(tmp_path, env, name="b")
    try:
        room = f"r-{unique}"
        ann = await connect_chat(clients, a.url, room=room)
        await ann.call("name", f"ann-{unique}")
        # Bea is signed in on both replicas: one member with two connections (issue 15).
        bea = mint(AUTH_SECRET, sub=f"bea-{unique}", name=f"bea-{unique}")
        for url in (a.url, b.url):
            await (await connect_chat(clients, url, room=room, token=bea)).wait("name")

        redis.Redis(port=own_redis.port).flushall()

        # At its next heartbeat (every 1 s here) replica A writes its sessions and names back.
        other = await connect_chat(clients, b.url, room=room)

        async def restored() -> bool:
            users = await fresh_users(clients, b.url, room)
            held = sorted((u["name"], u.get("connections", 1)) for u in users)
            return held == [(f"ann-{unique}", 1), (f"bea-{unique}", 2)]

        await until(restored, "A and B restoring their members", every=0.3)
        assert (await other.call("name", f"ann-{unique}"))["error"] == "taken"
        assert (await other.call("name", f"bea-{unique}"))["error"] == "taken"
    finally:
        a.stop()
        b.stop()
        own_redis.stop()


async def fresh_users(clients: list[Client], url: str, room: str) -> list[dict[str, Any]]:
    observer = await connect_chat(clients, url, room=room)
    users: list[dict[str, Any]] = observer.received("users")[0][0]
    await observer.close()
    return users


async def wait_for_status(http: httpx.AsyncClient, status: int) -> httpx.Response:
    async def answered() -> httpx.Response | None:
        answer = await http.get("/api/chat/readyz", timeout=PATIENCE)
        return answer if answer.status_code == status else None

    found: httpx.Response = await until(answered, f"readyz {status}", every=0.25)
    return found
