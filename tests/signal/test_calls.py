"""Two people call each other through the signalling service: real aiortc peers, real socket.io
clients, relayed by a real coturn; in one process and across two replicas sharing Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Cluster
from tests.signal.peers import Peer

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    opened: list[Peer] = []
    yield opened
    for peer in opened:
        await peer.close()


async def person(opened: list[Peer], url: str, style: str = "course", room: str = "") -> Peer:
    peer = Peer(url, style)
    opened.append(peer)
    await peer.connect(room or None)
    return peer


@pytest.mark.parametrize("style", ["course", "signal"])
async def test_two_people_call_each_other_across_the_service(
    signal_cluster: Cluster, peers: list[Peer], unique: str, style: str
) -> None:
    room = f"call-{unique}"
    ann = await person(peers, signal_cluster.a, style, room)
    bob = await person(peers, signal_cluster.b, style, room)
    await ann.client.wait("clients", lambda clients: bob.id in clients)

    await ann.call(bob.id)
    caller = await bob.answer()
    assert caller == ann.id, "fromId is the caller, set by the server"
    await ann.take_answer(bob.id)
    await ann.connected()
    await bob.connected()

    # Video both ways, decoded.
    for frame in await bob.frames(3) + await ann.frames(3):
        assert frame.width > 0 and frame.height > 0
    # And the data channel, both ways.
    await ann.send_when_open("hello")
    assert await bob.message() == "hello"
    await bob.send_when_open("hi")
    assert await ann.message() == "hi"
    # Both saw each other (and the echo peer) in the clients list.
    (clients,) = await bob.client.wait("clients", lambda c: ann.id in c)
    assert clients[ann.id] == {"id": ann.id} and clients["echo"]["echo"] is True
