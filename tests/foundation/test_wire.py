"""The wire (switchboard.fanout, issue 17): a websocket client's frames are written straight to its
connection, and a client that stops reading is cut off once SEND_BUFFER_LIMIT bytes wait for it,
while everyone else goes on being served. Long-polling, and its upgrade to a websocket, keep
working beside it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import CHAT_PATH, connect_chat, start_chat
from tests.harness import PATIENCE, Client, ServiceProcess, until

#: The smallest limit the setting takes: a reader that stops is cut off after little traffic.
LIMIT = 64 * 1024
TEXT = "x" * 1990
CUT_OFF = "switchboard_slow_clients_cut_off_total"


@pytest.fixture(scope="module")
def chat(log_dir: Path) -> Iterator[ServiceProcess]:
    process = start_chat(
        log_dir,
        {
            "SEND_BUFFER_LIMIT": str(LIMIT),
            "CHAT_RATE_PER_SECOND": "100000",
            "CHAT_RATE_BURST": "100000",
        },
        name="chat-wire",
    )
    yield process
    process.stop()


async def stalled_reader(url: str, room: str) -> Any:
    """A websocket client in ``room`` that reads its first frames and then nothing: its receive
    buffer is made small, so what the server sends it soon waits in the server."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    host, port = url.removeprefix("http://").split(":")
    await asyncio.get_running_loop().sock_connect(raw, (host, int(port)))
    reader = await websockets.connect(
        f"ws://{host}:{port}/api/chat/socket.io/?EIO=4&transport=websocket",
        sock=raw,
        max_queue=1,  # the library stops reading once one message waits for us
        max_size=None,
        open_timeout=PATIENCE,
    )
    assert str(await reader.recv()).startswith("0{")
    await reader.send(f'40{{"room": "{room}"}}')
    async with asyncio.timeout(PATIENCE):
        while not str(await reader.recv()).startswith("40{"):
            pass  # the room's users and history come first
    return reader


async def metric(url: str, name: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/api/chat/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


async def test_a_client_that_stops_reading_is_cut_off_and_the_room_goes_on(
    chat: ServiceProcess, clients: list[Client], unique: str
) -> None:
    room = f"wire-{unique}"
    before = await metric(chat.url, CUT_OFF)
    stalled = await stalled_reader(chat.url, room)
    ann = await connect_chat(clients, chat.url, room=room)
    bob = await connect_chat(clients, chat.url, room=room)
    for client, name in ((ann, "Ann"), (bob, "Bob")):
        assert (await client.call("name", name))["ok"]
    try:
        # Ann talks until the stalled reader is cut off: the kernel's buffers fill (about a
        # thousand 2 KB messages here), then the limit; every message is acknowledged, and Bob
        # (who reads) gets every one, in order.
        sent = 0
        while sent < 5000:
            answer = await ann.call("message", f"{sent} {TEXT}")
            assert answer["ok"], answer
            sent += 1
            if sent % 50 == 0 and await metric(chat.url, CUT_OFF) > before:
                break
        assert await metric(chat.url, CUT_OFF) == before + 1
        # The limit, not the end of the loop, cut it off.
        assert sent < 5000
        await bob.wait("message", lambda _who, text, *_: text.startswith(f"{sent - 1} "))
        texts = [text.split(" ")[0] for (_who, text, *_) in bob.received("message")]
        assert texts == [str(n) for n in range(sent)]
        # The stalled client, reading again, finds its connection ended.
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(PATIENCE):
                while True:
                    await stalled.recv()
    finally:
        await stalled.close()


async def test_long_polling_and_its_upgrade_work_beside_the_wire(
    chat: ServiceProcess, clients: list[Client], unique: str
) -> None:
    room = f"wire-poll-{unique}"
    polling = Client(chat.url, CHAT_PATH)
    upgrading = Client(chat.url, CHAT_PATH)
    clients += [polling, upgrading]
    await polling.connect(auth={"room": room}, transports=["polling"])
    await upgrading.connect(auth={"room": room}, transports=["polling", "websocket"])
    for client, name in ((polling, "Pat"), (upgrading, "Uma")):
        assert (await client.call("name", name))["ok"]
    await until(lambda: upgrading.sio.transport() == "websocket", "the upgrade")
    for n in range(20):
        await (polling if n % 2 else upgrading).call("message", f"m{n}")
    for client in (polling, upgrading):
        await client.wait("message", lambda _who, text, *_: text == "m19")
        assert [text for (_who, text, *_) in client.received("message")] == [
            f"m{n}" for n in range(20)
        ]
    assert polling.sio.transport() == "polling"
    assert upgrading.sio.transport() == "websocket"


@pytest.fixture(scope="module")
def quick_heartbeat(log_dir: Path) -> Iterator[ServiceProcess]:
    """Pings every second, a second to answer."""
    process = start_chat(
        log_dir, {"PING_INTERVAL": "1", "PING_TIMEOUT": "1"}, name="chat-heartbeat"
    )
    yield process
    process.stop()


async def test_a_client_that_stops_answering_pings_is_let_go_and_the_others_stay(
    quick_heartbeat: ServiceProcess, clients: list[Client], unique: str
) -> None:
    url = quick_heartbeat.url
    room = f"heartbeat-{unique}"
    # Ann answers pings (python-socketio does), on a websocket and on long-polling.
    on_websocket = await connect_chat(clients, url, room=room)
    on_polling = Client(url, CHAT_PATH)
    clients.append(on_polling)
    await on_polling.connect(auth={"room": room}, transports=["polling"])
    # This one reads (it gets its pings) but never answers.
    host_port = url.removeprefix("http://")
    silent = await websockets.connect(
        f"ws://{host_port}{CHAT_PATH}/?EIO=4&transport=websocket", open_timeout=PATIENCE
    )
    try:
        await silent.send(f'40{{"room": "{room}"}}')
        frames: list[str] = []
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(PATIENCE):
                while True:
                    frames.append(str(await silent.recv()))
        assert "2" in frames, "pinged before being let go"
        # The others answered every ping meanwhile (at least two cycles): still here.
        for client in (on_websocket, on_polling):
            assert client.sio.connected
            assert (await client.call("name", f"N{len(frames)}-{client.sio.transport()}"))["ok"]
    finally:
        await silent.close()
