"""Issue 13, scenario 3: a replica frozen (SIGSTOP) for longer than REPLICA_TTL, then let
go (SIGCONT). Meanwhile the other replica takes it for dead: its people leave the room and their
names are free, and one is taken. On waking the frozen replica writes its people back, nobody
twice; the one whose name went to someone else is told, and keeps no name."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.chat.presence import told
from tests.conftest import connect_chat
from tests.cursors.test_cursors import join as join_cursors
from tests.cursors.test_cursors import sees_at, where
from tests.faults.users import until_listed
from tests.harness import Client, RedisServer, start_together, until
from tests.signal.peers import SIGNAL_PATH
from tests.signal.test_safety import join as join_call

pytestmark = pytest.mark.asyncio


async def test_a_frozen_replica_wakes_to_what_the_others_decided(
    log_dir: Path, redis_server: RedisServer, clients: list[Client], unique: str
) -> None:
    env = {"REDIS_URL": redis_server.url, "REPLICA_TTL": "3"}
    a, b = start_together(log_dir, (("chat", env, f"chat-frozen-{side}") for side in "ab"))
    room = f"frozen-{unique}"
    ann_name, dave_name = f"ann-{unique}", f"dave-{unique}"
    try:
        ann = await connect_chat(clients, a.url, room=room)
        dave = await connect_chat(clients, a.url, room=room)
        bob = await connect_chat(clients, b.url, room=room)
        assert (await ann.call("name", ann_name))["ok"] is True
        assert (await dave.call("name", dave_name))["ok"] is True
        await bob.call("name", f"bob-{unique}")

        os.kill(a.pid, signal.SIGSTOP)
        try:
            # B takes A for dead after its TTL: A's people leave, and Ann's name is free.
            for name in (ann_name, dave_name):
                await bob.wait("presence", told("left", name=name))
            carol = await connect_chat(clients, b.url, room=room)
            assert (await carol.call("name", ann_name))["ok"] is True
        finally:
            os.kill(a.pid, signal.SIGCONT)

        # A wakes: Ann lost her name to Carol and is told; Dave is written back, once.
        (lost,) = await ann.wait("name_error")
        assert lost["error"] == "taken"

        # Carol holds ann_name now.
        await until_listed(clients, b.url, room, [ann_name, dave_name, f"bob-{unique}"])

        # Bob, who saw Dave leave, is told he is back (a second join of his, in `presence`).
        def dave_joined() -> int:
            return sum(told("joined", id=dave.sid)(diff) for (diff,) in bob.received("presence"))

        await until(lambda: dave_joined() == 2, "Bob is told Dave is back")
        # A serves again, across replicas: Dave's message reaches Bob.
        assert (await dave.call("message", "back"))["ok"] is True
        await bob.wait("message", lambda _s, text, _m: text == "back")
        assert ann.sio.connected and dave.sio.connected
    finally:
        os.kill(a.pid, signal.SIGCONT) if a.alive() else None
        a.stop()
        b.stop()


async def test_frozen_cursor_and_signalling_replicas_wake_without_doubles(
    log_dir: Path, redis_server: RedisServer, clients: list[Client], unique: str
) -> None:
    """The same for the cursors and a call room: while A is frozen its cursors leave B's
    screens and its people leave B's ``clients``; on waking it writes them back, each once,
    and everyone is shown again."""
    env = {"REDIS_URL": redis_server.url, "REPLICA_TTL": "3"}
    started = start_together(
        log_dir,
        [
            (service, env, f"{service}-frozen-{side}")
            for service in ("cursors", "signal")
            for side in "ab"
        ],
    )
    cursors, signals = started[:2], started[2:]
    room = f"frozen-{unique}"
    frozen = [cursors[0], signals[0]]
    try:
        ann = await join_cursors(clients, cursors[0].url, room, "ann")
        bob = await join_cursors(clients, cursors[1].url, room, "bob")
        await ann.call("update", {"x": 0.1, "y": 0.2})
        await sees_at(bob, ann.sid, 0.1, 0.2)
        callers = [await join_call(clients, replica.url, room) for replica in signals]
        both = {caller.sid for caller in callers}
        await callers[1].wait("clients", lambda c: c.keys() - {"echo"} == both)

        for replica in frozen:
            os.kill(replica.pid, signal.SIGSTOP)
        try:
            # B takes A for dead: Ann's cursor leaves Bob's screen, A's caller B's room.
            await bob.wait("delta", lambda frame: ann.sid in frame["left"])
            await callers[1].wait("clients", lambda c: c.keys() - {"echo"} == {callers[1].sid})
        finally:
            for replica in frozen:
                os.kill(replica.pid, signal.SIGCONT)

        # A wakes and writes its people back, once each: shown again everywhere.
        await bob.wait("delta", lambda frame: ann.sid in frame["joined"])
        await ann.call("update", {"x": 0.3, "y": 0.4})
        await bob.wait("delta", lambda frame: where(frame, ann.sid) == [0.3, 0.4])
        assert (await bob.call("snapshot"))["cursors"].keys() == {ann.sid, bob.sid}
        await callers[1].wait("clients", lambda c: c.keys() - {"echo"} == both)
        newcomer = Client(signals[1].url, SIGNAL_PATH)
        clients.append(newcomer)
        await newcomer.connect(auth={"room": room})
        (listed,) = await newcomer.wait("clients", lambda c: newcomer.sid in c)
        assert listed.keys() - {"echo"} == both | {newcomer.sid}
    finally:
        for replica in frozen:
            if replica.alive():
                os.kill(replica.pid, signal.SIGCONT)
        for replica in [*cursors, *signals]:
            replica.stop()
