"""ICE servers with short-lived TURN credentials that coturn accepts (and refuses once expired),
and the echo peer that sends a caller's own media back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from tests.conftest import Cluster
from tests.harness import PATIENCE, RawSocket, TurnServer, start_together, until
from tests.signal.conftest import PREFIX, signal_env, start_signal
from tests.signal.peers import Peer
from tests.signal.test_calls import person

pytestmark = pytest.mark.asyncio


async def ice_servers(url: str, source: str = "127.0.0.1") -> tuple[str, dict[str, Any]]:
    """Connect from ``source`` and ask for ICE servers: the socket id and the answer."""
    socket = RawSocket(url, f"{PREFIX}/socket.io", origin=url, source=source)
    try:
        await socket.open()
        sid = await socket.join("/", {"room": "ice"})
        (answer,) = await socket.event("/", 1, "iceServers")
        return sid, answer
    finally:
        await socket.close()


async def test_with_nothing_configured_no_server_is_handed_out(tmp_path: Path) -> None:
    service = start_signal(tmp_path, {}, "signal-bare")
    try:
        _, answer = await ice_servers(service.url)
        assert answer == {"ok": True, "iceServers": [], "iceTransportPolicy": "all", "ttl": None}
        # The HTTP route that handed credentials to anyone is gone, and says where to ask.
        async with httpx.AsyncClient(timeout=PATIENCE) as http:
            gone = await http.get(f"{service.url}{PREFIX}/ice-servers", params={"client": "x"})
        assert gone.status_code == 410 and "iceServers" in gone.json()["message"]
    finally:
        service.stop()


async def test_turn_credentials_follow_coturns_rest_scheme(signal_cluster: Cluster) -> None:
    # The service reads the same wall clock between these two reads: no second edge can fall
    # outside them, however long the request takes.
    before = int(time.time())
    sid, answer = await ice_servers(signal_cluster.a)
    [turn] = answer["iceServers"]
    expiry, client = turn["username"].split(":")
    assert client == sid, "the credential is named after the connection that asked"
    assert before + 600 <= int(expiry) <= int(time.time()) + 600, "at most 10 minutes"
    assert answer["ttl"] == 600 and answer["iceTransportPolicy"] == "relay"
    assert re.fullmatch(r"turn:127\.0\.0\.1:\d+\?transport=udp", turn["urls"][0])


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_credentials_are_limited_per_address_across_replicas(
    request: pytest.FixtureRequest, tmp_path: Path, turn: TurnServer, store: str
) -> None:
    # One set a minute an address: the next comes 60 s later, far beyond these few requests.
    env = signal_env(turn, SIGNAL_ICE_PER_MINUTE="1")
    count = 1
    if store == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_server").url
        count = 2
    names = [f"signal-ice-{store}-{n}" for n in range(count)]
    replicas = start_together(tmp_path, [("signal", env, name) for name in names])
    first, last = replicas[0].url, replicas[-1].url
    try:
        _, answer = await ice_servers(first, "127.0.0.2")
        assert answer["ok"] and answer["iceServers"], answer
        # The next from that address within the minute: refused, by whichever replica.
        _, refused = await ice_servers(last, "127.0.0.2")
        assert refused["error"] == "rate_limited" and 0 < refused["retry_after"] <= 60, refused
        assert "iceServers" not in refused
        # Another address has its own allowance.
        _, answer = await ice_servers(last, "127.0.0.3")
        assert answer["ok"] and answer["iceServers"], answer
    finally:
        for replica in replicas:
            replica.stop()


async def gathered(turn: TurnServer, username: str) -> list[str]:
    """The relay candidates an aiortc peer gets from coturn with this username."""
    credential = base64.b64encode(
        hmac.new(turn.secret.encode(), username.encode(), hashlib.sha1).digest()
    ).decode()
    connection = RTCPeerConnection(
        RTCConfiguration(
            iceServers=[RTCIceServer(turn.url, username=username, credential=credential)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )
    )
    try:
        connection.createDataChannel("probe")
        await connection.setLocalDescription(await connection.createOffer())
        return re.findall(r"^a=candidate:.*$", connection.localDescription.sdp, re.MULTILINE)
    finally:
        await connection.close()


async def test_coturn_takes_a_fresh_credential_and_refuses_an_expired_one(
    turn: TurnServer,
) -> None:
    fresh = await gathered(turn, f"{int(time.time()) + 600}:ann")
    assert fresh and all(" typ relay " in line for line in fresh)
    # coturn refuses a username whose time is before its time(NULL), read after ours: a second
    # ago is expired there, however slow the machine.
    assert await gathered(turn, f"{int(time.time()) - 1}:ann") == []


async def test_the_echo_peer_sends_your_video_back_and_answers_ping(
    signal_cluster: Cluster, unique: str
) -> None:
    peers: list[Peer] = []
    try:
        ann = await person(peers, signal_cluster.a, "course", f"echo-{unique}")
        (clients,) = await ann.client.wait("clients")
        assert clients["echo"] == {"id": "echo", "echo": True}
        await ann.call("echo")
        await ann.take_answer("echo", trickled=False)
        await ann.connected()
        frames = await ann.frames(3)
        assert all(frame.width > 0 for frame in frames)
        await ann.send_when_open("ping")
        assert await ann.message() == "pong"
        # An offer the echo peer cannot read is refused with a reason, not a crash.
        bob = await person(peers, signal_cluster.a, "signal", f"echo-{unique}")
        for sdp in ("v=0\r\nm=video x y z\r\n", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"):
            refused = await bob.client.call("signal", "echo", {"type": "offer", "sdp": sdp})
            assert refused["error"] == "bad_description" and "cannot use" in refused["message"]
    finally:
        for peer in peers:
            await peer.close()


async def test_echo_calls_are_limited_and_end_when_the_caller_leaves_or_the_service_stops(
    tmp_path: Path, turn: TurnServer, unique: str
) -> None:
    # The default SIGNAL_ECHO_SECONDS (5 minutes): no call here ends by its time limit.
    service = start_signal(tmp_path, signal_env(turn, SIGNAL_ECHO_CALLS="1"), "signal-echo")
    peers: list[Peer] = []
    try:
        ann = await person(peers, service.url, "signal", f"echo-{unique}")
        bob = await person(peers, service.url, "signal", f"echo-{unique}")
        await ann.call("echo")
        await ann.take_answer("echo", trickled=False)
        await ann.connected()
        assert await echo_calls(service.url) == 1

        offer = {"type": "offer", "sdp": "v=0\r\n"}
        busy = await bob.client.call("signal", "echo", offer)
        assert (busy["error"], busy["peerId"], busy["reason"]) == ("busy", "echo", "busy")
        (error,) = await bob.client.wait("peer_error")
        assert error["reason"] == "busy"

        await ann.close()
        await until_echo_calls(service.url, 0, "the echo call outlived its caller")

        # Its place is free again: Bob's call goes through, until the service stops.
        await bob.call("echo")
        await bob.take_answer("echo", trickled=False)
        await bob.connected()
        service.stop()  # SIGTERM: the echo peer's connections are closed, not left to rot
        # Uvicorn closes the sockets first (the caller left), else the lifespan closes the rest.
        ended = re.search(rf"echo call with {re.escape(bob.id)} ended: (.*)", service.log())
        assert ended and ended.group(1) in ("the caller left", "the service is stopping")
    finally:
        for peer in peers:
            await peer.close()
        service.stop()


async def echo_calls(url: str) -> float:
    async with httpx.AsyncClient(timeout=PATIENCE) as http:
        text = (await http.get(f"{url}{PREFIX}/metrics")).text
    found = re.search(r"^switchboard_signal_echo_calls (\S+)$", text, re.MULTILINE)
    assert found
    return float(found.group(1))


async def until_echo_calls(url: str, count: float, why: str) -> None:
    """Until the replica at ``url`` holds ``count`` echo calls; ``why`` when it never does."""

    async def holds() -> bool:
        return await echo_calls(url) == count

    await until(holds, why)


async def test_echo_calls_end_after_their_time_limit(
    tmp_path: Path, turn: TurnServer, unique: str
) -> None:
    env = signal_env(turn, SIGNAL_ECHO_SECONDS="2")
    service = start_signal(tmp_path, env, "signal-echo-limits")
    peers: list[Peer] = []
    try:
        ann = await person(peers, service.url, "course", f"echo-{unique}")
        calling = time.monotonic()
        await ann.call("echo")
        # The 2 s run from the offer: the call is not waited for to connect, as connecting
        # may take longer than that on a busy machine (the echo peer's media: tests above).
        await ann.take_answer("echo", trickled=False)
        await until_echo_calls(service.url, 0, "the echo call outlived SIGNAL_ECHO_SECONDS")
        assert time.monotonic() - calling >= 2, "the echo call ended before its time"
        assert f"echo call with {ann.id} (1 open)" in service.log()
        assert f"echo call with {ann.id} ended: the 2 s limit" in service.log()
    finally:
        for peer in peers:
            await peer.close()
        service.stop()
