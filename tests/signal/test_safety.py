"""Nobody speaks for anyone else, nothing crosses rooms, and malformed or oversized signalling
is refused with a reason; a crashed replica's people leave everyone's list."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import Cluster
from tests.harness import PATIENCE, Client, RedisServer, TurnServer
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
    opened = time.monotonic()  # before Ann's token bucket is made
    ann = await join(clients, signal_cluster.a, room)
    bob = await join(clients, signal_cluster.a, room)
    # Each event takes a token, refused or not, unknown or not: these take 3.
    assert (await ann.call("peerOffer", OFFER))["error"] == "bad_arguments"
    assert (await ann.call("peerOffer", 42, OFFER))["error"] == "bad_peer_id"
    assert (await ann.call("hello", bob.sid))["error"] == "unknown_event"
    # The default rate: 20 a second, bursts of 100. Ann sends 100 at a time, all at once, until
    # she is refused; what was let through is bounded by the time this took, however long.
    answers: list[dict] = []
    deadline = time.monotonic() + PATIENCE
    while all(answer["ok"] for answer in answers):
        assert time.monotonic() < deadline, f"never limited: {len(answers)} let through"
        answers += await asyncio.gather(
            *(ann.call("peerIce", bob.sid, CANDIDATE) for _ in range(100))
        )
    window = time.monotonic() - opened
    accepted = sum(1 for answer in answers if answer["ok"])
    limited = [answer for answer in answers if not answer["ok"]]
    assert {answer["error"] for answer in limited} == {"rate_limited"}
    # Some wait, at most the 1/20 s that one token takes to come back.
    assert all(0 < answer["retry_after"] <= 1 / 20 for answer in limited), limited
    # Refused only once the burst was spent (refills only add to it), ...
    assert accepted + 3 >= 100, accepted
    # ... and never more than the burst and what 20 a second refilled while we were at it.
    assert accepted + 3 <= 100 + 20 * window, (accepted, window)


async def test_a_crashed_replicas_people_leave_the_list(
    tmp_path: Path, redis_server: RedisServer, turn: TurnServer, clients: list[Client], unique: str
) -> None:
    # A short REPLICA_TTL (beats every 5/3 s) keeps the story short; once the doomed replica's
    # key has expired, a surviving replica's heartbeat tells the room.
    env = signal_env(turn, REDIS_URL=redis_server.url, REPLICA_TTL="5")
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
        # Within REPLICA_TTL and a beat on a quiet machine; PATIENCE is many times that.
        await bob.wait("clients", lambda c: ann_id not in c)
        assert (await bob.call("peerOffer", ann_id, OFFER))["reason"] == "unknown_peer"
    finally:
        doomed.stop()
        survivor.stop()
