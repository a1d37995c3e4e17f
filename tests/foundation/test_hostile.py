"""Hostile clients, frame by frame (issue 12): what a socket.io client library would never send,
sent raw to every namespace of every service."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import CHAT_PATH, Embedded, start_chat
from tests.harness import PATIENCE, RawSocket, RedisServer, ServiceProcess

pytestmark = pytest.mark.asyncio


@dataclass(frozen=True)
class Namespace:
    service: str
    namespace: str
    auth: Any
    error_event: str

    @property
    def path(self) -> str:
        return f"/api/{self.service}/socket.io"

    @property
    def prefix(self) -> str:
        return "" if self.namespace == "/" else f"{self.namespace},"


EVERY_NAMESPACE = [
    Namespace("chat", "/", {"room": "hostile"}, "chat_error"),
    Namespace("cursors", "/", {"room": "hostile"}, "cursor_error"),
    Namespace("cursors", "/remote", {"role": "desktop"}, "remote_error"),
    Namespace("signal", "/", {"room": "hostile"}, "signal_error"),
    Namespace("ticker", "/", None, "ticker_error"),
]
#: The names socket.io itself gives meaning to, on the server or in its clients.
RESERVED = ["connect", "disconnect", "connect_error", "disconnecting", "newListener"]


@pytest.fixture
async def raw_sockets() -> AsyncIterator[list[RawSocket]]:
    opened: list[RawSocket] = []
    yield opened
    for socket in opened:
        await socket.close()


async def open_raw(opened: list[RawSocket], url: str, path: str, origin: str) -> RawSocket:
    socket = RawSocket(url, path, origin=origin)
    opened.append(socket)
    return await socket.open()


def error_events(socket: RawSocket, space: Namespace) -> list[dict[str, Any]]:
    head = f'42{space.prefix}["{space.error_event}",'
    return [
        json.loads(frame[len(f"42{space.prefix}") :])[1]
        for frame in socket.frames
        if isinstance(frame, str) and frame.startswith(head)
    ]


@pytest.mark.parametrize("space", EVERY_NAMESPACE, ids=lambda s: f"{s.service}{s.namespace}")
async def test_events_named_like_the_lifecycle_are_refused(
    embedded: Embedded, raw_sockets: list[RawSocket], space: Namespace
) -> None:
    socket = await open_raw(raw_sockets, embedded.url, space.path, embedded.url)
    await socket.join(space.namespace, space.auth)
    forged_environ = {"QUERY_STRING": "", "REMOTE_ADDR": "203.0.113.9"}
    for ack_id, name in enumerate(RESERVED):
        (answer,) = await socket.event(space.namespace, ack_id, name, forged_environ, {"r": 1})
        assert answer["ok"] is False, (name, answer)
        assert answer["error"] == "reserved_event", (name, answer)
    # Each refusal also came on the namespace's error event, naming the event.
    refused = [e for e in error_events(socket, space) if e["error"] == "reserved_event"]
    assert sorted(e["event"] for e in refused) == sorted(RESERVED)
    # The connection is whole: it is still there and still answered.
    (answer,) = await socket.event(space.namespace, 99, "no_such_event")
    assert answer["error"] == "unknown_event"


async def test_a_forged_connect_rebuilds_neither_the_session_nor_the_rate_limit(
    log_dir: Path, raw_sockets: list[RawSocket], unique: str
) -> None:
    # Three events, then one every 1000 s: the same story however fast this machine is.
    service = start_chat(log_dir, {"CHAT_RATE_PER_SECOND": "0.001", "CHAT_RATE_BURST": "3"})
    try:
        socket = await open_raw(raw_sockets, service.url, CHAT_PATH, service.url)
        await socket.join("/", {"room": f"r-{unique}"})
        assert (await socket.event("/", 1, "name", f"ann-{unique}"))[0]["ok"] is True
        assert (await socket.event("/", 2, "message", "one"))[0]["ok"] is True
        assert (await socket.event("/", 3, "message", "two"))[0]["ok"] is True
        (spent,) = await socket.event("/", 4, "message", "three")
        assert spent["error"] == "rate_limited"

        await socket.event("/", 5, "connect", {"QUERY_STRING": ""}, {"room": "beta"})

        # Before the fix, this was `no_name`: a new session and a full bucket.
        (after,) = await socket.event("/", 6, "message", "four")
        assert after["error"] == "rate_limited", after
    finally:
        service.stop()


async def refused_packets(url: str, code: str) -> float:
    """How many packets the chat service refused with ``code``, from its /metrics."""
    async with httpx.AsyncClient(verify=False, timeout=PATIENCE) as http:
        text = (await http.get(f"{url}/api/chat/metrics")).text
    name = f'switchboard_rejected_inputs_total{{error="{code}",event="(packet)",service="chat"}}'
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize(
    "frame",
    [
        '451-["message",{"_placeholder":true,"num":0}]',
        # Nearly ten billion attachments: the library would wait for them, keeping each frame.
        '459999999999-["update",{"_placeholder":true,"num":0}]',
        '461-0[{"_placeholder":true,"num":0}]',
        b"\x00\x01\x02 a binary websocket frame",
    ],
    ids=["binary-event", "ten-billion-attachments", "binary-ack", "bare-binary-frame"],
)
async def test_binary_packets_are_refused_and_close_the_connection(
    embedded: Embedded, raw_sockets: list[RawSocket], frame: str | bytes
) -> None:
    before = await refused_packets(embedded.url, "binary")
    socket = await open_raw(raw_sockets, embedded.url, CHAT_PATH, embedded.url)
    await socket.join("/", {"room": "binary"})
    await socket.send(frame)
    assert await socket.closed(), "the connection stayed open"
    assert await refused_packets(embedded.url, "binary") == before + 1


@pytest.mark.parametrize(
    "frame",
    [
        '42["message"',  # JSON cut short
        "42[]",  # an event with no name
        '42{"event":"message"}',  # not an array
        "4x",  # no such packet type
        "42" + "[" * 20_000 + "]" * 20_000,  # nested deeper than JSON can be read here
        "x42[]",  # no engine.io packet type
        "9",  # no such engine.io packet type
        "",  # nothing at all
        "4true",  # engine.io reads it as JSON, and socket.io took True for DISCONNECT
        "4null",
        '4{"a": 1}',
    ],
    ids=[
        "cut-short",
        "no-name",
        "not-an-array",
        "unknown-type",
        "too-deep",
        "no-type",
        "no-such-type",
        "empty",
        "json-true",
        "json-null",
        "json-object",
    ],
)
async def test_unreadable_packets_close_the_connection_without_a_traceback(
    embedded: Embedded, raw_sockets: list[RawSocket], frame: str
) -> None:
    before = await refused_packets(embedded.url, "bad_packet")
    socket = await open_raw(raw_sockets, embedded.url, CHAT_PATH, embedded.url)
    await socket.join("/", {"room": "unreadable"})
    await socket.send(frame)
    assert await socket.closed(), "the connection stayed open"
    if frame[:1] == "4":  # a socket.io packet: counted; an engine.io one ends the socket
        assert await refused_packets(embedded.url, "bad_packet") == before + 1
    assert "Traceback" not in embedded.process.log()


async def test_an_event_whose_name_is_not_a_string_is_refused(
    embedded: Embedded, raw_sockets: list[RawSocket]
) -> None:
    socket = await open_raw(raw_sockets, embedded.url, CHAT_PATH, embedded.url)
    await socket.join("/", {"room": "names"})
    for ack_id, name in enumerate([1, None, ["message"], {"a": 1}, True]):
        (answer,) = await socket.event("/", ack_id, name, "hello")
        assert answer["error"] == "unknown_event", (name, answer)


#: Each namespace's rate settings, three events a connection and then one every 1000 s: the
#: same answers however fast this machine is.
TINY_RATES = {
    "chat": {"CHAT_RATE_PER_SECOND": "0.001", "CHAT_RATE_BURST": "3"},
    "cursors/": {"CURSORS_RATE_PER_SECOND": "0.001", "CURSORS_RATE_BURST": "3"},
    "cursors/remote": {"CURSORS_REMOTE_RATE_PER_SECOND": "0.001", "CURSORS_REMOTE_RATE_BURST": "3"},
    "signal": {"SIGNAL_RATE_PER_SECOND": "0.001", "SIGNAL_RATE_BURST": "3"},
    "ticker": {"TICKER_RATE_PER_SECOND": "0.001", "TICKER_RATE_BURST": "3"},
}
PACKAGES = {
    "chat": "chat_service",
    "cursors": "cursor_service",
    "signal": "signalling_service",
    "ticker": "ticker_service",
}


@pytest.mark.parametrize("space", EVERY_NAMESPACE, ids=lambda s: f"{s.service}{s.namespace}")
async def test_every_event_of_every_namespace_spends_from_its_rate_limit(
    log_dir: Path, raw_sockets: list[RawSocket], space: Namespace
) -> None:
    rates = TINY_RATES.get(f"{space.service}{space.namespace}") or TINY_RATES[space.service]
    process = ServiceProcess(PACKAGES[space.service], log_dir, rates)
    try:
        # healthz: the ticker is not ready without an upstream, and needs none here.
        await process.ready(f"/api/{space.service}", path="healthz")
        socket = await open_raw(raw_sockets, process.url, space.path, process.url)
        await socket.join(space.namespace, space.auth)
        # Events nobody handles, and names nobody may send, cost as much as any other.
        answers = [
            (await socket.event(space.namespace, ack, name))[0]["error"]
            for ack, name in enumerate(["nothing", "connect", "nothing", "nothing"])
        ]
        assert answers == ["unknown_event", "reserved_event", "unknown_event", "rate_limited"]
    finally:
        process.stop()


async def test_a_refused_connect_leaves_nothing_behind(
    log_dir: Path, raw_sockets: list[RawSocket], unique: str
) -> None:
    redis = RedisServer(log_dir)
    service = ServiceProcess(PACKAGES["chat"], log_dir, {"REDIS_URL": redis.url})
    try:
        service.wait_ready("/api/chat")
        admin = Redis.from_url(redis.url, decode_responses=True)
        # A room whose history Redis cannot read: joining it fails half-way, after the
        # connection's session was written.
        await admin.set(f"chat:history:broken-{unique}", "not a stream")
        socket = await open_raw(raw_sockets, service.url, CHAT_PATH, service.url)
        with pytest.raises(ConnectionRefusedError) as refused:
            await socket.join("/", {"room": f"broken-{unique}"})
        assert refused.value.args[0]["data"]["error"] == "unavailable"

        sessions = [key async for key in admin.scan_iter("chat:sessions:*")]
        assert [await admin.hlen(key) for key in sessions] in ([], [0])
        metrics = (await asyncio.to_thread(httpx.get, f"{service.url}/api/chat/metrics")).text
        assert 'switchboard_connected_clients{service="chat"} 0.0' in metrics
        await admin.aclose()
    finally:
        service.stop()
        redis.stop()
