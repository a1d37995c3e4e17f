"""Real WebRTC peers for the tests: aiortc peer connections signalling through the service with a
real socket.io client, in the course's events or in simple-peer's ``signal`` objects.

aiortc gathers its candidates before ``setLocalDescription`` returns and writes them into the
SDP; to make candidates cross the service as a browser's do, the SDP is sent without them and
each goes on its own (``peerIce``, or a ``{"type": "candidate"}`` signal), then, in the course's
events, the end of candidates (a null ``peerIce``). simple-peer's signals have no end of
candidates: as a browser does, a peer takes each one as it comes, for as long as the call lasts.

Every wait here is for something that must happen, bounded by ``PATIENCE``: WebRTC through coturn
on a busy machine takes what it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import socketio
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp

from tests.harness import PATIENCE, Client

SIGNAL_PATH = "/api/signal/socket.io"


def split_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """The SDP without its candidate lines, and those candidates as RTCIceCandidateInit."""
    kept: list[str] = []
    found: list[dict[str, Any]] = []
    index, mid = -1, None
    for line in sdp.splitlines():
        if line.startswith("m="):
            index, mid = index + 1, None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        if line.startswith("a=candidate:"):
            found.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": index})
        elif line != "a=end-of-candidates":
            kept.append(line)
    # The mid comes after the candidates in some sections: fill it in from the section's index.
    mids = [line[len("a=mid:") :] for line in kept if line.startswith("a=mid:")]
    for candidate in found:
        if candidate["sdpMid"] is None and candidate["sdpMLineIndex"] < len(mids):
            candidate["sdpMid"] = mids[candidate["sdpMLineIndex"]]
    return "\r\n".join(kept) + "\r\n", found


class Peer:
    """One person: a socket.io connection to the signalling service and, once calling or
    called, a peer connection sending a test video and holding a data channel."""

    def __init__(self, url: str, style: str = "course", urls: list[str] | None = None) -> None:
        assert style in ("course", "signal")
        self.url = url
        self.style = style
        self.client = Client(url, SIGNAL_PATH)
        #: Where to connect again when the connection drops: the next of these after ``url``,
        #: in turn (the gateway sends a client whose replica died to a live one). None: the
        #: peer stays disconnected.
        self.urls = urls
        self.reconnects = 0
        self._room: str | None = None
        self._closing = False
        self._reconnecting: asyncio.Task[None] | None = None
        self.connection: RTCPeerConnection | None = None
        self.tracks: list[MediaStreamTrack] = []
        self.channel: RTCDataChannel | None = None
        self.messages: list[str] = []
        self._message = asyncio.Event()
        #: Tasks adding the candidates that trickle in (simple-peer's style), until we close.
        self._trickling: list[asyncio.Task[None]] = []

    @property
    def id(self) -> str:
        return self.client.sid

    async def connect(self, room: str | None = None) -> None:
        self._room = room
        if self.urls is not None:
            self.client.sio.on("disconnect", self._on_disconnect)
        await self.client.connect(auth={"room": room} if room else None)
        await self.client.wait("clients")

    async def _on_disconnect(self, *_reason: Any) -> None:
        if not self._closing and (self._reconnecting is None or self._reconnecting.done()):
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Connect again, to the next of ``urls`` in turn, until one takes us (bounded): a new
        connection, with a new id and a :attr:`client` of its own (the old one's events stay
        with it). The call is not touched: its media and data go peer to peer."""
        assert self.urls
        start = self.urls.index(self.url) + 1 if self.url in self.urls else 0
        async with asyncio.timeout(PATIENCE):
            for turn in itertools.count(start):
                url = self.urls[turn % len(self.urls)]
                client = Client(url, SIGNAL_PATH)
                client.sio.on("disconnect", self._on_disconnect)
                try:
                    await client.connect(auth={"room": self._room} if self._room else None)
                    await client.wait("clients")
                except (socketio.exceptions.SocketIOError, OSError, TimeoutError):
                    await client.close()
                    await asyncio.sleep(0.2)
                    continue
                self.url, self.client = url, client
                self.reconnects += 1
                return

    async def ice_servers(self) -> dict[str, Any]:
        found: dict[str, Any] = await self.client.call("iceServers")
        assert found.get("ok"), found
        return found

    async def _open(self, servers: dict[str, Any] | None = None) -> RTCPeerConnection:
        servers = servers or await self.ice_servers()
        configuration = RTCConfiguration(
            iceServers=[RTCIceServer(**server) for server in servers["iceServers"]],
            iceTransportPolicy=RTCIceTransportPolicy(servers["iceTransportPolicy"]),
        )
        connection = RTCPeerConnection(configuration)
        self.connection = connection

        @connection.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tracks.append(track)

        @connection.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            self._hold(channel)

        connection.addTrack(VideoStreamTrack())
        return connection

    def _hold(self, channel: RTCDataChannel) -> None:
        self.channel = channel

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            self.messages.append(str(message))
            self._message.set()

    async def call(self, peer_id: str, servers: dict[str, Any] | None = None) -> None:
        connection = await self._open(servers)
        self._hold(connection.createDataChannel("chat"))
        await connection.setLocalDescription(await connection.createOffer())
        await self._send_description(peer_id, connection.localDescription)

    async def answer(self, timeout: float = PATIENCE) -> str:
        """Take the offer that came, answer it, send the answer and candidates; the caller's
        id (the server's ``fromId``)."""
        event = "peerOffer" if self.style == "course" else "signal"
        me, offer, caller = await self.client.wait(
            event, lambda _me, payload, _from: payload.get("type") == "offer", timeout=timeout
        )
        assert me == self.id
        connection = await self._open()
        await connection.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
        await self.take_candidates(caller, timeout)
        await connection.setLocalDescription(await connection.createAnswer())
        await self._send_description(caller, connection.localDescription)
        return str(caller)

    async def take_answer(
        self, peer_id: str, timeout: float = PATIENCE, trickled: bool = True
    ) -> None:
        """Take ``peer_id``'s answer and then its candidates, or, when not ``trickled``, the
        answer of a peer that puts its candidates in its SDP (the echo peer does)."""
        assert self.connection is not None
        event = "peerAnswer" if self.style == "course" else "signal"
        _me, answer, _sender = await self.client.wait(
            event,
            lambda _me, payload, sender: payload.get("type") == "answer" and sender == peer_id,
            timeout=timeout,
        )
        await self.connection.setRemoteDescription(
            RTCSessionDescription(answer["sdp"], answer["type"])
        )
        if trickled:
            await self.take_candidates(peer_id, timeout)
        else:
            assert "a=candidate:" in answer["sdp"]

    async def _send_description(self, peer_id: str, description: RTCSessionDescription) -> None:
        sdp, candidates = split_candidates(description.sdp)
        assert candidates, "relay candidates were gathered"
        if self.style == "course":
            event = "peerOffer" if description.type == "offer" else "peerAnswer"
            assert (await self.client.call(event, peer_id, {"type": description.type, "sdp": sdp}))[
                "ok"
            ]
            for candidate in [*candidates, None]:
                assert (await self.client.call("peerIce", peer_id, candidate))["ok"]
        else:
            signal = {"type": description.type, "sdp": sdp}
            assert (await self.client.call("signal", peer_id, signal))["ok"]
            for candidate in candidates:
                signal = {"type": "candidate", "candidate": candidate}
                assert (await self.client.call("signal", peer_id, signal))["ok"]

    async def take_candidates(self, peer_id: str, timeout: float = PATIENCE) -> None:
        """Add the candidates ``peer_id`` sends (after its description) to our connection: in
        the course's events, all of them up to the null that ends them; in simple-peer's
        signals, which never say they are over, each as it comes, from now on."""
        assert self.connection is not None
        if self.style == "signal":
            self._trickling.append(asyncio.create_task(self._trickle(peer_id)))
            return
        await self.client.wait(
            "peerIce", lambda _me, c, sender: c is None and sender == peer_id, timeout=timeout
        )
        for _me, candidate, sender in self.client.received("peerIce"):
            if sender == peer_id and candidate is not None:
                await self._add_candidate(candidate)
        await self.connection.addIceCandidate(None)

    async def _trickle(self, peer_id: str) -> None:
        """simple-peer's ``{"type": "candidate"}`` signals from ``peer_id``, added as they come
        (aiortc keeps checking pairs until told the candidates are over, which it never is)."""

        def sent() -> list[dict[str, Any]]:
            return [
                s["candidate"]
                for _me, s, sender in self.client.received("signal")
                if sender == peer_id and s.get("type") == "candidate"
            ]

        taken = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await self.client.wait("signal", lambda *_, known=taken: len(sent()) > known)
            for candidate in sent()[taken:]:
                await self._add_candidate(candidate)
                taken += 1

    async def _add_candidate(self, candidate: dict[str, Any]) -> None:
        assert self.connection is not None
        parsed = candidate_from_sdp(candidate["candidate"].split(":", 1)[1])
        parsed.sdpMid = candidate["sdpMid"]
        parsed.sdpMLineIndex = candidate["sdpMLineIndex"]
        await self.connection.addIceCandidate(parsed)

    async def connected(self, timeout: float = PATIENCE) -> None:
        assert self.connection is not None
        connection = self.connection
        deadline = asyncio.get_running_loop().time() + timeout
        while connection.connectionState != "connected":
            assert connection.connectionState not in ("failed", "closed"), "the call failed"
            for task in self._trickling:
                if task.done():
                    task.result()  # a candidate we could not add says why here
            assert asyncio.get_running_loop().time() < deadline, (
                f"not connected within {timeout} s: {connection.connectionState}"
            )
            await asyncio.sleep(0.05)

    async def frames(self, count: int = 3, timeout: float = PATIENCE) -> list[Any]:
        """Video frames decoded from what the other side sent."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.tracks:
            assert asyncio.get_running_loop().time() < deadline, "no remote track"
            await asyncio.sleep(0.05)
        track = self.tracks[0]
        return [await asyncio.wait_for(track.recv(), timeout) for _ in range(count)]

    async def message(self, timeout: float = PATIENCE) -> str:
        await asyncio.wait_for(self._message.wait(), timeout)
        self._message.clear()
        return self.messages[-1]

    async def send_when_open(self, text: str, timeout: float = PATIENCE) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.channel is None or self.channel.readyState != "open":
            assert asyncio.get_running_loop().time() < deadline, "the data channel never opened"
            await asyncio.sleep(0.05)
        self.channel.send(text)

    async def hang_up(self) -> None:
        """End the call on our side and forget it (its tracks, data channel and messages), so
        that the next call starts afresh."""
        for task in self._trickling:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._trickling = []
        if self.connection is not None:
            await self.connection.close()
        self.connection, self.channel = None, None
        self.tracks, self.messages = [], []
        self._message.clear()

    async def close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnecting
        for task in self._trickling:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()
        await self.client.close()
