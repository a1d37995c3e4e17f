"""The packet fuzzer (issue 12): random engine.io and socket.io frames (tests/fuzzing.py) sent
to every namespace of every service through the real server, between the events of a client
that behaves. For each frame the connection answers or is closed; nothing is left unhandled in
the log; the well-behaved client is never lost; memory comes back within a bound.

`make test` sends FUZZ_FRAMES (300) frames a namespace; `make fuzz` sends 100,000 (by hand).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets

from tests.fuzzing import Frames
from tests.harness import Client, RawSocket, ServiceProcess, rss_kb

pytestmark = pytest.mark.asyncio

FRAMES = int(os.environ.get("FUZZ_FRAMES", "300"))
SEED = int(os.environ.get("FUZZ_SEED", "12"))
#: Limits lifted, so that the frames reach the handlers rather than the rate limit.
OPEN = {
    "CHAT_RATE_PER_SECOND": "100000",
    "CHAT_RATE_BURST": "100000",
    "CURSORS_RATE_PER_SECOND": "100000",
    "CURSORS_RATE_BURST": "100000",
    "CURSORS_REMOTE_RATE_PER_SECOND": "100000",
    "CURSORS_REMOTE_RATE_BURST": "100000",
    "SIGNAL_RATE_PER_SECOND": "100000",
    "SIGNAL_RATE_BURST": "100000",
    "SIGNAL_ICE_PER_MINUTE": "10000",
    "TICKER_RATE_PER_SECOND": "100000",
    "TICKER_RATE_BURST": "100000",
    "TICKER_UPSTREAM_URL": "ws://127.0.0.1:9",  # nothing there: the feed just retries
    "TICKER_REST_URL": "http://127.0.0.1:9",
    "LOG_LEVEL": "info",
}
#: (service, package, namespace, auth, the events its handlers take, a harmless event whose
#: ack proves the connection is still served)
TARGETS = [
    ("chat", "chat_service", "/", {"room": "fuzz"}, ["name", "message"], "message"),
    ("cursors", "cursor_service", "/", {"room": "fuzz"}, ["update", "snapshot"], "snapshot"),
    (
        "cursors",
        "cursor_service",
        "/remote",
        {"role": "desktop"},
        ["renew", "unpair", "update", "orientation", "press"],
        "update",
    ),
    (
        "signal",
        "signalling_service",
        "/",
        {"room": "fuzz"},
        ["peerOffer", "peerAnswer", "peerIce", "signal", "iceServers"],
        "peerIce",
    ),
    ("ticker", "ticker_service", "/", None, ["subscribe", "unsubscribe"], "subscribe"),
]
#: What the log must never hold: a traceback, an error, an exception logged by a library.
UNHANDLED = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|handler error|exception", re.I)


@pytest.fixture
async def sockets() -> AsyncIterator[list[RawSocket]]:
    opened: list[RawSocket] = []
    yield opened
    for socket in opened:
        await socket.close()


@pytest.mark.parametrize(
    ("service", "package", "namespace", "auth", "events", "probe"),
    TARGETS,
    ids=[f"{t[0]}{t[2]}" for t in TARGETS],
)
async def test_random_frames_are_answered_or_close_and_nothing_is_lost(
    log_dir: Path,
    sockets: list[RawSocket],
    clients: list[Client],
    service: str,
    package: str,
    namespace: str,
    auth: object,
    events: list[str],
    probe: str,
) -> None:
    process = ServiceProcess(package, log_dir, OPEN, name=f"fuzz-{service}{namespace.strip('/')}")
    try:
        await process.ready(f"/api/{service}", path="healthz")
        path = f"/api/{service}/socket.io"

        async def connect() -> RawSocket:
            socket = RawSocket(process.url, path, origin=process.url)
            sockets.append(socket)
            await socket.open()
            await socket.join(namespace, auth)
            return socket

        # A client that behaves, with a real socket.io client (it answers pings by itself).
        bystander = Client(process.url, path, namespace=namespace)
        clients.append(bystander)
        await bystander.connect(auth=auth)
        assert "ok" in await bystander.call(probe, {"n": -1})
        baseline = rss_kb(process.pid)
        frames = Frames(SEED, namespace, events)
        socket = await connect()
        closed = 0
        for n in range(FRAMES):
            frame = frames.frame()
            await socket.send(frame)
            if isinstance(frame, str) and frame.startswith(("1", "40", "41")):
                # The client closed its connection (an engine.io close), or joined or left a
                # namespace, as it may: start afresh.
                await socket.close()
                socket = await connect()
                continue
            try:
                # The connection still serves: an event's ack comes back, after whatever the
                # frame made the server send.
                (answer,) = await socket.event(namespace, 10**6 + n, probe, {"n": n})
                assert isinstance(answer, dict) and "ok" in answer, (frame, answer)
                socket.frames.clear()  # what the frame made the server send: looked at
            except websockets.ConnectionClosed:
                closed += 1
                socket = await connect()
            if n % 50 == 0:
                assert "ok" in await bystander.call(probe, {"n": n}), "the bystander was lost"
        assert "ok" in await bystander.call(probe, {"n": FRAMES}), "the bystander was lost"
        assert bystander.sio.connected
        grown = rss_kb(process.pid) - baseline
        log = process.log()
        bad = [line for line in log.splitlines() if UNHANDLED.search(line)]
        print(
            f"{service}{namespace}: {FRAMES} frames, {closed} closed a connection, RSS +{grown} kB"
        )
        assert not bad, "\n".join(bad[:20])
        assert grown < 64 * 1024 + FRAMES // 10, f"RSS grew {grown} kB"
    finally:
        process.stop()
