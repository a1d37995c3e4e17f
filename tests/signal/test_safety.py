"""Nobody speaks for anyone else, nothing crosses rooms, and malformed or oversized signalling
is refused with a reason; a crashed replica's people leave everyone's list."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import Cluster
from tests.harness import Client, RedisServer, TurnServer
from tests.signal.conftest import signal_env, start_signal
from tests.signal.peers import SIGNAL_PATH

pytestmark = pytest.mark.asyncio

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


async def join(opened: list[Client], url: str, room: str) -> Client:
    client = Client(url, SIGNAL_PATH)
    opened.append(client)
    await client.connect(auth={"room": room})
    await client.wait("clients")
    return client


async def test_only_the_room_is_listed_and_reachable(
    signal_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    ann = await join(clients, signal_cluster.a, f"a-{unique}")
    bob = await join(clients, signal_cluster.b, f"a-{unique}")
    carol = await join(clients, signal_cluster.b, f"b-{unique}")
    (listed,) = await ann.wait("clients", lambda c: bob.sid in c)
    assert set(listed) == {ann.sid, bob.sid, "echo"}

    refused = await ann.call("peerOffer", carol.sid, OFFER)
    assert refused["error"] == "unknown_peer" and refused["peerId"] == carol.sid
    (error,) = await ann.wait("peer_error")
    assert error == {**refused, "event": "peerOffer"}
    assert (await ann.call("signal", "nobody-here", OFFER))["reason"] == "unknown_peer"
    assert (await ann.call("peerOffer", ann.sid, OFFER))["reason"] == "self"
    assert carol.received("peerOffer") == [] and carol.received("signal") == []


async def test_from_id_is_always_the_sender(
    signal_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, signal_cluster.a, room)
    bob = await join(clients, signal_cluster.b, room)
    mallory = await join(clients, signal_cluster.b, room)
    # Mallory would like Ann to take this answer for Bob's: a third argument changes nothing.
    spoof = await mallory.call("peerAnswer", ann.sid, {"type": "answer", "sdp": "v=0\r\n"}, bob.sid)
    assert spoof["error"] == "bad_arguments"
    assert (await mallory.call("peerAnswer", ann.sid, {"type": "answer", "sdp": "v=0\r\n"}))["ok"]
    (_me, _answer, sender) = await ann.wait("peerAnswer")
    assert sender == mallory.sid != bob.sid
    assert (await mallory.call("peerIce", ann.sid, CANDIDATE))["ok"]
    assert (await ann.wait("peerIce"))[2] == mallory.sid


@pytest.mark.parametrize(
    ("event", "payload", "code"),
    [
        ("peerOffer", {"type": "offer", "sdp": "v=0\r\n" + "a" * (64 * 1024)}, "too_large"),
        ("peerOffer", {"type": "answer", "sdp": "v=0\r\n"}, "bad_description"),
        ("peerOffer", {"type": "offer", "sdp": "hello"}, "bad_description"),
        ("peerOffer", {"type": "offer", "sdp": "v=0\r\n", "extra": 1}, "bad_description"),
        ("peerOffer", "v=0", "bad_description"),
        ("peerAnswer", {"type": "answer", "sdp": 42}, "bad_description"),
        ("peerIce", {**CANDIDATE, "candidate": "candidate:" + "x" * 1024}, "too_large"),
        ("peerIce", {**CANDIDATE, "candidate": "hello"}, "bad_candidate"),
        ("peerIce", {**CANDIDATE, "sdpMLineIndex": -1}, "bad_candidate"),
        ("peerIce", [CANDIDATE], "bad_candidate"),
        ("signal", {"type": "candidate"}, "bad_candidate"),
        ("signal", {"renegotiate": "yes"}, "bad_signal"),
        ("signal", {"transceiverRequest": {"kind": "smell"}}, "bad_signal"),
        ("signal", {"what": "ever"}, "bad_signal"),
    ],
)
async def test_malformed_and_oversized_signalling_is_refused(
    signal_cluster: Cluster,
    clients: list[Client],
    unique: str,
    event: str,
    payload: object,
    code: str,
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, signal_cluster.a, room)
    bob = await join(clients, signal_cluster.a, room)
    refused = await ann.call(event, bob.sid, payload)
    assert refused["error"] == code, refused
    (error,) = await ann.wait("signal_error")
    assert error["event"] == event
    assert bob.received(event) == []
    assert ann.sio.connected


async def test_simple_peers_signals_pass_unchanged(
    signal_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, signal_cluster.a, room)
    bob = await join(clients, signal_cluster.b, room)
    signals = [
        OFFER,
        {"type": "candidate", "candidate": CANDIDATE},
        {"renegotiate": True},
        {"transceiverRequest": {"kind": "video", "init": {"direction": "sendrecv"}}},
    ]
    for signal in signals:
        assert (await ann.call("signal", bob.sid, signal))["ok"]
    await bob.wait("signal", lambda *_: len(bob.received("signal")) == len(signals))
    assert bob.received("signal") == [(bob.sid, signal, ann.sid) for signal in signals]


async def test_arguments_and_rate_are_checked(
    signal_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, signal_cluster.a, room)
    bob = await join(clients, signal_cluster.a, room)
    assert (await ann.call("peerOffer", OFFER))["error"] == "bad_arguments"
    assert (await ann.call("peerOffer", 42, OFFER))["error"] == "bad_peer_id"
    assert (await ann.call("hello", bob.sid))["error"] == "unknown_event"
    # The default rate: 20 a second, bursts of 100.
    answers = [await ann.call("peerIce", bob.sid, CANDIDATE) for _ in range(130)]
    limited = [a for a in answers if not a["ok"]]
    assert limited and limited[0]["error"] == "rate_limited" and limited[0]["retry_after"] > 0


async def test_a_crashed_replicas_people_leave_the_list_within_30_seconds(
    tmp_path: Path, redis_server: RedisServer, turn: TurnServer, clients: list[Client], unique: str
) -> None:
    env = signal_env(turn, REDIS_URL=redis_server.url)  # the default REPLICA_TTL, 15 s
    doomed = start_signal(tmp_path, env, "doomed")
    survivor = start_signal(tmp_path, env, "survivor")
    try:
        room = f"r-{unique}"
        ann = await join(clients, doomed.url, room)
        bob = await join(clients, survivor.url, room)
        await bob.wait("clients", lambda c: ann.sid in c)
        ann_id = ann.sid
        bob.events["clients"].clear()
        doomed.kill()
        killed = time.monotonic()
        await bob.wait("clients", lambda c: ann_id not in c, timeout=30)
        assert time.monotonic() - killed < 30
        assert (await bob.call("peerOffer", ann_id, OFFER))["reason"] == "unknown_peer"
    finally:
        doomed.stop()
        survivor.stop()
