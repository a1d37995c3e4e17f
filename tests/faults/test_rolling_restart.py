"""Issue 13, scenario 5 (chat): a rolling restart of both replicas, one at a time, while people
talk. Each replica drains (DRAIN_SECONDS), closes its connections as a restart and leaves; its
people reconnect to the other one and resume. Nothing acknowledged is lost, a client that keeps
messages by id sees none twice, everyone is connected and listed once at the end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import start_chat
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


async def test_a_rolling_restart_of_chat_under_load_loses_nothing(
    log_dir: Path, own_redis: RedisServer, clients: list[Client], unique: str
) -> None:
    env = chat_env(own_redis.url, DRAIN_SECONDS="1")
    replicas = chat_replicas(log_dir, env, "chat-roll")
    # Where people connect: the replicas in service, as the gateway would route (kept current).
    urls = [replica.url for replica in replicas]
    room = f"roll-{unique}"
    # Half start on each replica.
    people = [ChatUser(urls, room, f"p{n}-{unique}", first=n) for n in range(PEOPLE)]
    talking = True
    try:
        await asyncio.gather(*(person.connect() for person in people))

        async def talk(person: ChatUser) -> None:
            n = 0
            while talking:
                await person.say(f"{person.name} says {n}")
                n += 1
                await asyncio.sleep(0.05)

        chatter = asyncio.gather(*(talk(person) for person in people))
        for n in range(2):
            acked = sum(len(p.acked) for p in people)
            await until(lambda acked=acked: sum(len(p.acked) for p in people) > acked + 30, "talk")
            old = replicas[n]
            old.stop()  # SIGTERM: drain, close the connections, leave
            replicas[n] = start_chat(log_dir, env, f"chat-roll-{n}-new")
            urls[n] = replicas[n].url
        acked_now = sum(len(p.acked) for p in people)
        await until(lambda: sum(len(p.acked) for p in people) > acked_now + 30, "talk after")
        talking = False
        await chatter

        acked = await everyone_gets_every_acked(people)
        assert all(person.sio is not None and person.sio.connected for person in people)
        await until_listed(clients, replicas[0].url, room, [p.name for p in people])
        raw_duplicates = duplicates(people)
        print(
            f"\nrolling restart: {PEOPLE} people, {sum(p.reconnects for p in people)} reconnects, "
            f"{len(acked)} acked, {sum(p.unacked for p in people)} unacked, 0 lost, "
            f"{raw_duplicates} delivered twice (dropped by id), everyone connected"
        )
    finally:
        talking = False
        for person in people:
            await person.close()
        for replica in replicas:
            replica.stop()
