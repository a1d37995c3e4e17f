"""Issue 14: Redis keeps its data on disk (redis-server/node.sh, as docker compose and
`make cluster` run it: an append-only file, written to disk every second). Stopped (SIGTERM)
or killed (SIGKILL) while people talk on two chat replicas and a phone drives its screen, and
started again on the same directory: the history holds every acknowledged message (after a
SIGKILL, at most those acknowledged in its last second may be missing: the figure is printed),
names of people still connected stay theirs, and the pairing goes on without scanning again."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import connect_chat
from tests.faults.conftest import chat_env
from tests.faults.users import ChatUser, Presses, Side
from tests.harness import (
    SERVICE_PREFIXES,
    Client,
    ProcfileProcess,
    free_port,
    start_together,
    until,
    wait_for_port,
)

pytestmark = pytest.mark.asyncio

PEOPLE = 4
#: The room's history: more than all the messages of the test.
HISTORY = 1000
#: What the append-only file may miss after a SIGKILL: what Redis had not yet written out.
EVERYSEC = 1.0


def redis_env(directory: Path) -> dict[str, str]:
    """What the Procfile's ``redis`` line needs (scripts/cluster.sh sets the same)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_PREFIXES)}
    env.update(
        {"CLUSTER_DIR": str(directory), "REDIS_PORT": str(free_port()), "REDIS_MAXMEMORY": "64mb"}
    )
    return env


def start_redis(log_dir: Path, env: dict[str, str], label: str) -> ProcfileProcess:
    node = ProcfileProcess("redis", log_dir, env, label=label)
    wait_for_port(int(env["REDIS_PORT"]), process=node)
    return node


class Talk:
    """People saying numbered messages, each as soon as the last was answered, noting when
    each acknowledgement came."""

    def __init__(self, people: list[ChatUser], pause: float = 0.1) -> None:
        self.people = people
        #: Between an answer and the next message: some tens a second in all, so that the
        #: room's history holds them, and those of the last second before a fault are few.
        self.pause = pause
        self.acked_at: dict[str, float] = {}
        self.refused = 0
        self.going = True

    async def run(self) -> None:
        await asyncio.gather(*(self._talk(person) for person in self.people))

    async def _talk(self, person: ChatUser) -> None:
        n = 0
        while self.going:
            n += 1
            message_id = await person.say(f"{person.name}: {n}")
            if message_id is None:
                self.refused += 1
                await asyncio.sleep(0.1)
            else:
                self.acked_at[message_id] = time.monotonic()
                await asyncio.sleep(self.pause)


@pytest.mark.parametrize("fault", ["stop", "kill"])
async def test_a_redis_restart_keeps_history_names_and_pairings(
    log_dir: Path, tmp_path: Path, clients: list[Client], unique: str, fault: str
) -> None:
    env = redis_env(tmp_path / "cluster")
    node = start_redis(log_dir, env, f"redis-{fault}-0")
    url = f"redis://127.0.0.1:{env['REDIS_PORT']}/0"
    chat = chat_env(url, CHAT_HISTORY_SIZE=str(HISTORY))
    a, b, cursors = start_together(
        log_dir,
        [
            ("chat", chat, f"chat-aof-{fault}-0"),
            ("chat", chat, f"chat-aof-{fault}-1"),
            ("cursors", {"REDIS_URL": url, "REPLICA_TTL": "3"}, f"remote-aof-{fault}"),
        ],
    )
    room = f"aof-{unique}"
    people = [
        ChatUser([a.url, b.url] if n % 2 == 0 else [b.url, a.url], room, f"p{n}-{unique}")
        for n in range(PEOPLE)
    ]
    screen, phone = Side([cursors.url]), Side([cursors.url])
    talk, presses = Talk(people), Presses(phone)
    tasks: list[asyncio.Task[Any]] = []
    try:
        await asyncio.gather(*(person.connect() for person in people))
        await screen.connect({"role": "desktop"})
        (pairing,) = await until(lambda: screen.got("pairing"), "a pairing")
        await phone.connect({"role": "controller", "pair": pairing["url"].split("#pair=")[1]})
        await until(lambda: phone.got("paired"), "paired")
        tasks = [asyncio.create_task(talk.run()), asyncio.create_task(presses.run())]
        await until(lambda: len(talk.acked_at) >= 100, "messages before the fault")

        node.stop() if fault == "stop" else node.kill()
        down_at = time.monotonic()
        node = start_redis(log_dir, env, f"redis-{fault}-1")

        # Back by themselves: every person's messages acknowledged again, the phone's presses.
        acked_before = len(talk.acked_at)
        pressed_before = len(presses.acked)
        await until(lambda: len(talk.acked_at) >= acked_before + 60, "messages after the restart")
        await until(lambda: len(presses.acked) >= pressed_before + 20, "presses after")
        talk.going = presses.going = False
        await asyncio.gather(*tasks)
        assert len(talk.acked_at) < HISTORY, "more messages than the history holds"

        # The history, as a newcomer is shown it: every acknowledged message, or after a
        # SIGKILL all but some of those acknowledged in its last second.
        newcomer = await connect_chat(clients, b.url, room=room)
        (messages, _info) = await newcomer.wait("history")
        shown = {message["id"] for message in messages}
        lost = [mid for mid in talk.acked_at if mid not in shown]
        late = [mid for mid in lost if talk.acked_at[mid] < down_at - EVERYSEC]
        assert not late, f"{len(late)} acked messages lost from before the last second"
        if fault == "stop":
            assert not lost, f"{len(lost)} acked messages lost over a clean restart"

        # Names of people still here are theirs; the pairing went on, never ended.
        answer = await newcomer.call("name", people[0].name)
        assert answer["error"] == "taken"
        assert not phone.got("unpaired") and not screen.got("unpaired")
        assert screen.reconnects == phone.reconnects == 0
        print(
            f"\nRedis {fault} with its append-only file: {len(talk.acked_at)} acked, "
            f"{talk.refused} refused while down, {len(lost)} lost; "
            f"{len(presses.acked)} presses acked"
        )
    finally:
        talk.going = presses.going = False
        for task in tasks:
            task.cancel()
        for person in people:
            await person.close()
        await screen.close()
        await phone.close()
        for process in (a, b, cursors):
            process.stop()
        node.stop()
