"""The echo peer (issue 6): a server-side aiortc peer, listed as ``echo`` in every room, that
answers a call by sending the caller's own video and audio back and answering ``ping`` with
``pong`` on any data channel, so a person can check camera, microphone and network path alone.

Each replica answers the calls of its own clients. At most ``SIGNAL_ECHO_CALLS`` at once; a call
ends when its caller leaves, after ``SIGNAL_ECHO_SECONDS``, when its connection fails, and on
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.exceptions import InvalidAccessError, InvalidStateError
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp
from prometheus_client import CollectorRegistry, Gauge
from switchboard.errors import InputError

from signalling_service.ice import ice_servers
from signalling_service.settings import SignalSettings

log = logging.getLogger(__name__)

ECHO_ID = "echo"
#: Sends ``event`` with ``args`` to the socket ``sid``.
Send = Callable[[str, str, tuple[Any, ...]], Awaitable[None]]


class EchoCall:
    def __init__(self, caller: str, connection: RTCPeerConnection) -> None:
        self.caller = caller
        self.connection = connection
        self.relay = MediaRelay()
        self.timer: asyncio.Task[None] | None = None


class EchoPeers:
    """A service component: the echo calls of this replica."""

    def __init__(self, settings: SignalSettings, send: Send, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.send = send
        self.calls: dict[str, EchoCall] = {}
        self.gauge = Gauge(
            "switchboard_signal_echo_calls", "echo calls open in this replica", registry=registry
        )

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for caller in list(self.calls):
            await self.hang_up(caller, "the service is stopping")

    async def check(self) -> str | None:
        return None

    def configuration(self) -> RTCConfiguration:
        servers = [
            RTCIceServer(
                urls=server["urls"],
                username=server.get("username"),
                credential=server.get("credential"),
            )
            for server in ice_servers(self.settings, ECHO_ID)
        ]
        policy = RTCIceTransportPolicy(self.settings.ice_transport_policy)
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)

    async def receive(self, caller: str, event: str, payload: Any) -> None:
        """A message from ``caller`` to the echo peer, already validated."""
        if event == "peerOffer" or (event == "signal" and payload.get("type") == "offer"):
            await self._answer(caller, payload, event)
        elif event == "peerIce":
            await self._add_candidate(caller, payload)
        elif event == "signal" and payload.get("type") == "candidate":
            await self._add_candidate(caller, payload["candidate"])
        # An answer, a renegotiation request or a transceiver request has no meaning for a
        # peer that only ever answers: they are ignored.

    async def _answer(self, caller: str, offer: dict[str, Any], event: str) -> None:
        call = self.calls.get(caller)
        if call is None:
            if len(self.calls) >= self.settings.echo_calls:
                raise InputError(
                    "busy",
                    "The echo peer is busy with other calls; try again in a few minutes.",
                    event="peer_error",
                    details={"peerId": ECHO_ID, "reason": "busy"},
                )
            call = self._open(caller)
        connection = call.connection
        try:
            description = RTCSessionDescription(offer["sdp"], offer["type"])
            await connection.setRemoteDescription(description)
            await connection.setLocalDescription(await connection.createAnswer())
        except (ValueError, AssertionError, InvalidAccessError, InvalidStateError) as exc:
            # aiortc's SDP parser says "unreadable" with ValueError or a failed assertion.
            await self.hang_up(caller, f"unusable offer: {exc}")
            raise InputError(
                "bad_description", f"The echo peer cannot use this offer: {exc or 'malformed'}"
            ) from None
        local = connection.localDescription
        answer = {"type": local.type, "sdp": local.sdp}
        if event == "peerOffer":
            await self.send("peerAnswer", caller, (caller, answer, ECHO_ID))
        else:
            await self.send("signal", caller, (caller, answer, ECHO_ID))

    def _open(self, caller: str) -> EchoCall:
        connection = RTCPeerConnection(self.configuration())
        call = EchoCall(caller, connection)
        self.calls[caller] = call
        self.gauge.set(len(self.calls))
        log.info("echo call with %s (%d open)", caller, len(self.calls))

        @connection.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            # The caller's own media goes straight back.
            connection.addTrack(call.relay.subscribe(track))

        @connection.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            @channel.on("message")
            def on_message(message: str | bytes) -> None:
                channel.send("pong" if message == "ping" else message)

        @connection.on("connectionstatechange")
        async def on_state() -> None:
            if connection.connectionState in ("failed", "closed"):
                await self.hang_up(caller, f"connection {connection.connectionState}")

        async def time_limit() -> None:
            await asyncio.sleep(self.settings.echo_seconds)
            await self.hang_up(caller, f"the {self.settings.echo_seconds:g} s limit")

        call.timer = asyncio.get_running_loop().create_task(time_limit(), name="signal:echo")
        return call

    async def _add_candidate(self, caller: str, candidate: dict[str, Any] | None) -> None:
        call = self.calls.get(caller)
        if call is None or candidate is None or not candidate.get("candidate"):
            return
        parsed = candidate_from_sdp(candidate["candidate"].removeprefix("a=").split(":", 1)[1])
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await call.connection.addIceCandidate(parsed)

    async def hang_up(self, caller: str, why: str) -> None:
        call = self.calls.pop(caller, None)
        if call is None:
            return
        self.gauge.set(len(self.calls))
        log.info("echo call with %s ended: %s", caller, why)
        if call.timer and call.timer is not asyncio.current_task():
            call.timer.cancel()
        with contextlib.suppress(Exception):
            await call.connection.close()
