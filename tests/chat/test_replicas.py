"""What happens to replicas and Redis when things break: a replica killed with SIGKILL, Redis
stopped and started again, Redis forgetting everything."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import redis
import socketio

from tests.conftest import connect_chat, start_chat
from tests.harness import Client, RedisServer

pytestmark = pytest.mark.asyncio


async def test_a_killed_replicas_names_and_presence_are_freed_within_30_seconds(
    tmp_path: Path, redis_server: RedisServer, clients: list[Client], unique: str
) -> None:
    env = {"REDIS_URL": redis_server.url}  # the default REPLICA_TTL, 15 s
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
        killed_at = time.monotonic()
        while (await other.call("name", f"ann-{unique}"))["ok"] is False:
            assert time.monotonic() - killed_at < 30, "the dead replica's name is still held"
            await asyncio.sleep(0.5)
        freed_after = time.monotonic() - killed_at

        (left,) = await bob.wait("user_left", lambda u: u["id"] == ann_id, timeout=30 - freed_after)
        assert left == {"id": ann_id, "name": f"ann-{unique}"}
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
        async with httpx.AsyncClient(base_url=service.url) as http:
            assert (await http.get("/api/chat/readyz")).status_code == 200
            own_redis.stop()

            answer = await wait_for_status(http, 503, within=10)
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
            await wait_for_status(http, 200, within=20)
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
    env = {"REDIS_URL": own_redis.url, "REPLICA_TTL": "3"}
    a = start_chat(tmp_path, env, name="a")
    b = start_chat(tmp_path, env, name="b")
    try:
        room = f"r-{unique}"
        ann = await connect_chat(clients, a.url, room=room)
        await ann.call("name", f"ann-{unique}")

        redis.Redis(port=own_redis.port).flushall()

        # Within a heartbeat (1 s here) replica A writes its sessions and names back.
        other = await connect_chat(clients, b.url, room=room)
        deadline = time.monotonic() + 5
        while {u["name"] for u in (await fresh_users(clients, b.url, room))} != {f"ann-{unique}"}:
            assert time.monotonic() < deadline, "A did not restore its members"
            await asyncio.sleep(0.3)
        assert (await other.call("name", f"ann-{unique}"))["error"] == "taken"
    finally:
        a.stop()
        b.stop()
        own_redis.stop()


async def fresh_users(clients: list[Client], url: str, room: str) -> list[dict[str, str]]:
    observer = await connect_chat(clients, url, room=room)
    users: list[dict[str, str]] = observer.received("users")[0][0]
    await observer.close()
    return users


async def wait_for_status(http: httpx.AsyncClient, status: int, within: float) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        answer = await http.get("/api/chat/readyz", timeout=5)
        if answer.status_code == status:
            return answer
        assert time.monotonic() < deadline, f"readyz still {answer.status_code}: {answer.text}"
        await asyncio.sleep(0.25)
