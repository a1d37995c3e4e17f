"""Issue 13, scenario 4: Redis stopped and started again (SIGTERM, or SIGKILL), or frozen
(SIGSTOP, for as long as the refusals take: each command waits out its 5 s timeout) while people
talk on two chat replicas. While it is gone a message is refused (`unavailable`), never
acknowledged without being stored; the services recover by themselves; every acknowledged
message reaches everyone; names and presence come back, with no ghost."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
import redis

from tests.conftest import connect_chat
from tests.faults.conftest import chat_env, chat_replicas
from tests.faults.users import ChatUser, everyone_gets_every_acked, until_listed
from tests.harness import Client, RedisServer, until

pytestmark = pytest.mark.asyncio

PEOPLE = 4


@pytest.mark.parametrize("fault", ["stop", "kill", "freeze"])
async def test_chat_rides_out_a_redis_outage(
    log_dir: Path, clients: list[Client], unique: str, fault: str
) -> None:
    server = RedisServer(log_dir)
    a, b = chat_replicas(log_dir, chat_env(server.url), f"chat-{fault}")
    room = f"outage-{unique}"
    people = [
        ChatUser([a.url, b.url] if n % 2 == 0 else [b.url, a.url], room, f"p{n}-{unique}")
        for n in range(PEOPLE)
    ]
    refused_while_down = 0
    try:
        await asyncio.gather(*(person.connect() for person in people))
        for person in people:
            assert await person.say(f"{person.name}: before")

        if fault == "freeze":
            os.kill(server.pid, signal.SIGSTOP)
        else:
            server.stop() if fault == "stop" else server.kill()

        # While Redis is gone: every message is refused, none acknowledged.
        async def try_to_talk(person: ChatUser) -> int:
            return sum([await person.say(f"{person.name}: during {n}") is None for n in range(3)])

        refused_while_down = sum(await asyncio.gather(*(try_to_talk(p) for p in people)))
        assert refused_while_down == PEOPLE * 3

        if fault == "freeze":
            os.kill(server.pid, signal.SIGCONT)
        else:
            server = RedisServer(log_dir, port=server.port)

        # Back by themselves: talking works again, on both replicas.
        async def talks_again(person: ChatUser) -> bool:
            return await person.say(f"{person.name}: after") is not None

        for person in people:
            await until(lambda person=person: talks_again(person), f"{person.name} talks again")
        acked = await everyone_gets_every_acked(people)
        if fault == "freeze":
            # Nothing was lost: every acked message is stored.
            with redis.Redis(port=server.port, decode_responses=True) as control:
                stored = {mid for mid, _ in control.xrange(f"chat:history:{room}")}
            assert acked <= stored

        # Names and presence as they were (the replicas write them again after a heartbeat):
        # everyone listed once to a newcomer, no name up for grabs.
        await until_listed(clients, b.url, room, [p.name for p in people])
        newcomer = await connect_chat(clients, b.url, room=room)
        assert (await newcomer.call("name", people[0].name))["error"] == "taken"
        print(
            f"\nRedis {fault}: {len(acked)} acked, {refused_while_down} refused while down, "
            f"0 lost, {sum(p.reconnects for p in people)} reconnects"
        )
    finally:
        for person in people:
            await person.close()
        a.stop()
        b.stop()
        if server.alive():
            os.kill(server.pid, signal.SIGCONT)
        server.stop()
