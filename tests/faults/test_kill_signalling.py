"""Issue 13, scenario 2 (signalling): a signalling replica killed (SIGKILL) during a call. Only
signalling dies: the call's media and data go peer to peer (here through coturn), so video keeps
being decoded and the data channel keeps working both ways. The peer that was on the killed
replica connects again to another one, under a new id; once REPLICA_TTL has passed its old id
is on no ``clients`` list (no ghost peer), its new one is on every list once, and the two can
call each other again: signalling is whole again."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from aiortc.mediastreams import MediaStreamTrack

from tests.harness import Client, RedisServer, TurnServer, start_together, until
from tests.signal.conftest import (
    signal_env,
    turn,  # noqa: F401  (the session's coturn, re-exported)
)
from tests.signal.peers import Peer
from tests.signal.test_safety import OFFER, join

pytestmark = pytest.mark.asyncio

#: Video frames each side must decode after the kill (a second of the test track's 30 a second).
FRAMES = 30


class Screen:
    """Shows a peer's incoming video: takes every frame as soon as it is decoded and counts it,
    so that frames do not pile up unread and those counted after a moment were sent after it."""

    def __init__(self, peer: Peer) -> None:
        assert peer.tracks, "a call under way has the other side's video"
        self.decoded = 0
        self._task = asyncio.get_running_loop().create_task(self._show(peer.tracks[0]))

    async def _show(self, track: MediaStreamTrack) -> None:
        while True:
            frame = await track.recv()
            assert frame.width > 0 and frame.height > 0
            self.decoded += 1

    async def more(self, count: int, what: str) -> None:
        """Until ``count`` more frames than now are decoded."""
        start = self.decoded
        await until(lambda: self._showing() and self.decoded >= start + count, what)

    def _showing(self) -> bool:
        if self._task.done():
            self._task.result()  # the track ended or a frame was bad: say so
        return True

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


def latest_clients(client: Client) -> dict[str, Any]:
    received = client.received("clients")
    return dict(received[-1][0]) if received else {}


async def call(caller: Peer, callee: Peer) -> None:
    """``caller`` calls ``callee``, who answers; until both are connected and have decoded
    video from the other and sent a word each way on the data channel."""
    await caller.call(callee.id)
    assert await callee.answer() == caller.id
    await caller.take_answer(callee.id)
    await caller.connected()
    await callee.connected()
    for frame in await callee.frames(3) + await caller.frames(3):
        assert frame.width > 0 and frame.height > 0
    await caller.send_when_open("hello")
    assert await callee.message() == "hello"
    await callee.send_when_open("hi")
    assert await caller.message() == "hi"


async def test_a_signalling_replica_killed_mid_call_leaves_the_call_and_no_ghost(
    log_dir: Path,
    own_redis: RedisServer,
    turn: TurnServer,  # noqa: F811
    clients: list[Client],
    unique: str,
) -> None:
    # Beats every second: a dead replica's peers are taken for gone within 3 s of its last.
    env = signal_env(turn, REDIS_URL=own_redis.url, REPLICA_TTL="3")
    a, b, c = start_together(log_dir, (("signal", env, f"signal-kill-{side}") for side in "abc"))
    room = f"kill-{unique}"
    # Ann is on A and falls back to B; Bob on B; a bystander on C watches the room's list.
    ann = Peer(a.url, urls=[a.url, b.url])
    bob = Peer(b.url)
    screens: list[Screen] = []
    try:
        await ann.connect(room)
        await bob.connect(room)
        watcher = await join(clients, c.url, room)
        await until(
            lambda: {ann.id, bob.id, watcher.sid} <= latest_clients(watcher).keys(),
            "everyone listed",
        )
        await call(ann, bob)
        screens = [Screen(ann), Screen(bob)]
        for screen in screens:
            await screen.more(FRAMES, "video flowing before the kill")

        old_id = ann.id
        at_kill = [screen.decoded for screen in screens]
        a.kill()

        # The call goes on while signalling is down for Ann ...
        await asyncio.gather(*(s.more(FRAMES, "video after the kill") for s in screens))
        # ... and after she is on B under a new id.
        await until(lambda: ann.reconnects == 1, "Ann connected again")
        assert ann.url == b.url and ann.id != old_id
        new_id = ann.id
        # Once A's heartbeat has expired: every list holds Ann once under her new id, never
        # under her old one: Ann's own, Bob's (her replica now) and the bystander's (on C).
        expected = {new_id, bob.id, watcher.sid, "echo"}

        def lists() -> dict[str, set[str]]:
            return {
                who: set(latest_clients(client))
                for who, client in (("ann", ann.client), ("bob", bob.client), ("c", watcher))
            }

        try:
            await until(lambda: all(v == expected for v in lists().values()), "lists converge")
        except AssertionError:
            raise AssertionError(f"clients lists: {lists()}, expected {expected}") from None
        for client in (ann.client, bob.client, watcher):
            listed = latest_clients(client)
            assert [entry["id"] for entry in listed.values()].count(new_id) == 1, listed
        # Nothing is relayed to the old id, on any replica: it is nobody's any more.
        refused = await bob.client.call("peerOffer", old_id, OFFER)
        assert refused["ok"] is False and refused["reason"] == "unknown_peer", refused
        newcomer = await join(clients, c.url, room)
        (first,) = newcomer.received("clients")[0]
        assert set(first) == expected | {newcomer.sid}, first
        await newcomer.close()

        # The first call still carries video and data, both ways, after all that.
        await asyncio.gather(*(s.more(FRAMES, "video after the reap") for s in screens))
        await ann.send_when_open("still here")
        assert await bob.message() == "still here"
        await bob.send_when_open("me too")
        assert await ann.message() == "me too"
        after_kill = [screen.decoded - n for screen, n in zip(screens, at_kill, strict=True)]

        # Signalling is whole again: Bob calls Ann at her new id, a call from scratch.
        for screen in screens:
            await screen.close()
        screens = []
        await ann.hang_up()
        await bob.hang_up()
        await call(bob, ann)
        print(
            f"\nsignalling replica killed mid-call: {after_kill[0]} and {after_kill[1]} video "
            f"frames decoded by Ann and Bob after the kill, a data channel message each way "
            f"after it, {ann.reconnects} reconnect, old id on 0 of 3 clients lists and "
            f"unknown_peer, new id once on each, a new call connected"
        )
    finally:
        for screen in screens:
            await screen.close()
        await ann.close()
        await bob.close()
        for replica in (a, b, c):
            replica.stop()
