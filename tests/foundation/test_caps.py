"""What clients can make a process keep is capped (issue 12): rooms, members of a room, and the
chat history kept in memory. Each cap refuses clearly, and frees up as clients leave."""

from __future__ import annotations

from pathlib import Path

import pytest
import socketio
from redis.asyncio import Redis

from tests.conftest import connect_chat
from tests.harness import Client, RedisServer, ServiceProcess, until

pytestmark = pytest.mark.asyncio

#: The services whose clients pick their room, each as (package, prefix, the event that says
#: a connection is in).
ROOMED = {
    "chat": ("chat_service", "history"),
    "cursors": ("cursor_service", "snapshot"),
    "signal": ("signalling_service", "clients"),
}


async def join(opened: list[Client], url: str, service: str, room: str) -> str:
    """Connect to ``room``: ``joined``, or the refusal's code."""
    client = Client(url, f"/api/{service}/socket.io")
    opened.append(client)
    try:
        await client.connect(auth={"room": room})
    except socketio.exceptions.ConnectionError:
        return str(client.connect_error["data"]["error"])
    await client.wait(ROOMED[service][1])
    return "joined"


@pytest.mark.parametrize("service", sorted(ROOMED))
async def test_rooms_and_their_members_are_capped(
    log_dir: Path, clients: list[Client], unique: str, service: str
) -> None:
    caps = {"MAX_ROOMS": "2", "MAX_ROOM_MEMBERS": "2"}
    process = ServiceProcess(ROOMED[service][0], log_dir, caps)
    try:
        process.wait_ready(f"/api/{service}")
        url = process.url
        assert await join(clients, url, service, f"a-{unique}") == "joined"
        assert await join(clients, url, service, f"a-{unique}") == "joined"
        assert await join(clients, url, service, f"a-{unique}") == "room_full"
        assert await join(clients, url, service, f"b-{unique}") == "joined"
        assert await join(clients, url, service, f"c-{unique}") == "too_many_rooms"

        # Room b empties: a new room fits again, once the server has seen b's client go.
        await clients[3].close()

        async def room_c_opens() -> bool:
            return await join(clients, url, service, f"c-{unique}") == "joined"

        await until(room_c_opens, "room c opens once room b is empty", every=0.2)
    finally:
        process.stop()


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_the_history_of_the_quietest_rooms_goes_past_the_cap(
    log_dir: Path, clients: list[Client], unique: str, store: str
) -> None:
    env = {"CHAT_HISTORY_ROOMS": "2"}
    redis = None
    if store == "redis":
        # A Redis of its own: the cap is the cluster's, and would reach other tests' rooms.
        redis = RedisServer(log_dir)
        env["REDIS_URL"] = redis.url
    replicas = [
        ServiceProcess("chat_service", log_dir, env, name=f"chat-history-{store}-{n}")
        for n in range(1 + (store == "redis"))
    ]
    try:
        for replica in replicas:
            replica.wait_ready("/api/chat")
        for n in range(3):  # rooms 0, 1, 2, one message each, in that order, on either replica
            url = replicas[n % len(replicas)].url
            client = await connect_chat(clients, url, room=f"r{n}-{unique}")
            await client.call("name", f"ann{n}-{unique}")
            assert (await client.call("message", f"in room {n}"))["ok"] is True

        histories = []
        for n in range(3):  # read on the other replica
            url = replicas[(n + 1) % len(replicas)].url
            late = await connect_chat(clients, url, room=f"r{n}-{unique}")
            (messages, _) = late.received("history")[0]
            histories.append([message["text"] for message in messages])
        assert histories == [[], ["in room 1"], ["in room 2"]]
        if redis is not None:
            # Nothing of room 0 is left behind in Redis.
            async with Redis.from_url(redis.url, decode_responses=True) as client:
                assert await client.zrange("chat:histories", 0, -1) == [
                    f"r1-{unique}",
                    f"r2-{unique}",
                ]
                assert not await client.exists(f"chat:history:r0-{unique}")
    finally:
        for replica in replicas:
            replica.stop()
        if redis is not None:
            redis.stop()
