"""Issue 13, scenario 1: a chat replica killed (SIGKILL) while everyone talks. Its people connect
again to the other replica and resume with ``last_id``; every message the service acknowledged
reaches every person in the room; names and presence converge: nobody twice, no ghost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from switchboard.token import mint

from tests.chat.presence import changes, told
from tests.conftest import AUTH_SECRET, connect_chat
from tests.faults.conftest import chat_env, chat_replicas
from tests.faults.users import (
    ChatUser,
    duplicates,
    everyone_gets_every_acked,
    until_listed,
)
from tests.harness import Client, RedisServer, until

pytestmark = pytest.mark.asyncio

PEOPLE = 6
MESSAGES = 40


async def test_a_chat_replica_killed_under_load_loses_no_acked_message(
    log_dir: Path, own_redis: RedisServer, clients: list[Client], unique: str
) -> None:
    a, b = chat_replicas(log_dir, chat_env(own_redis.url), "chat-kill")
    room = f"kill-{unique}"
    # Half start on A (and fall back to B), half on B.
    people = [
        ChatUser([a.url, b.url] if n % 2 == 0 else [b.url, a.url], room, f"p{n}-{unique}")
        for n in range(PEOPLE)
    ]
    try:
        await asyncio.gather(*(person.connect() for person in people))

        async def talk(person: ChatUser) -> None:
            for n in range(MESSAGES):
                await person.say(f"{person.name} says {n}")

        talking = asyncio.gather(*(talk(person) for person in people))
        await until(
            lambda: sum(len(p.acked) for p in people) >= PEOPLE * MESSAGES // 3,
            "a third of the messages acked",
            every=0.02,
        )
        a.kill()
        await talking

        acked = await everyone_gets_every_acked(people)
        # Names and presence: each person once, under the connection they hold now.
        await until_listed(clients, b.url, room, [p.name for p in people])
        raw_duplicates = duplicates(people)
        print(
            f"\nchat replica killed: {PEOPLE} people, {sum(p.reconnects for p in people)} "
            f"reconnects, {len(acked)} acked, {sum(p.unacked for p in people)} unacked, "
            f"0 lost, {raw_duplicates} delivered twice (dropped by id)"
        )
    finally:
        for person in people:
            await person.close()
        a.stop()
        b.stop()


async def test_a_signed_in_user_on_a_killed_replica_stays_with_its_other_connection(
    log_dir: Path, own_redis: RedisServer, clients: list[Client], unique: str
) -> None:
    """Issue 15: Ann is signed in on both replicas; A is killed. When B reaps A, the room is told
    Ann has one connection left (``updated``), not that she left, and her name stays hers;
    she leaves with her last connection."""
    a, b = chat_replicas(log_dir, chat_env(own_redis.url, AUTH_SECRET=AUTH_SECRET), "chat-ids")
    room, name = f"ids-{unique}", f"Ann {unique}"
    ann = mint(AUTH_SECRET, sub=f"ann-{unique}", name=name)
    try:
        watcher = await connect_chat(clients, b.url, room=room)
        for url in (a.url, b.url):
            connection = await connect_chat(clients, url, room=room, token=ann)
            await connection.wait("name")
        await watcher.wait("presence", told("updated", connections=2))
        (both,) = changes(watcher, "updated", connections=2)
        a.kill()
        await watcher.wait("presence", told("updated", connections=1))
        (after,) = changes(watcher, "updated", connections=1)
        assert after["id"] == both["id"] and not changes(watcher, "left")
        stranger = await connect_chat(clients, b.url, room=room)
        users, _ = await stranger.wait("users")
        assert [(u["name"], u["connections"]) for u in users] == [(name, 1)]
        assert (await stranger.call("name", name))["error"] == "taken"
        await clients[-2].close()  # Ann's connection on B
        await watcher.wait("presence", told("left", id=both["id"]))
    finally:
        a.stop()
        b.stop()
