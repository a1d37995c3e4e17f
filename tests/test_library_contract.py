"""What switchboard/fanout.py takes from python-socketio's and python-engineio's private parts is
still there in the installed versions: an upgrade that changes one fails here, naming it, not in
production. The names are fanout.INTERNALS; switchboard/pyproject.toml bounds the versions."""

from __future__ import annotations

import asyncio
import contextlib
from importlib.metadata import version
from typing import Any

import socketio
import uvicorn
from engineio.async_drivers import asgi as eio_asgi
from engineio.async_socket import AsyncSocket
from socketio import redis_manager
from socketio.async_pubsub_manager import AsyncPubSubManager
from switchboard.fanout import (
    INTERNALS,
    FanoutRedisManager,
    WireProtocol,
    emit_message,
    listener,
    start_listener,
)
from uvicorn.server import ServerState

VERSIONS = (
    f"python-socketio {version('python-socketio')}, python-engineio {version('python-engineio')}, "
    f"uvicorn {version('uvicorn')}"
)


async def specimens() -> dict[str, Any]:
    """One object of each kind INTERNALS names, as the services make them. The Redis manager
    points at a port nothing listens on: its listener only has to exist."""
    manager = FanoutRedisManager("redis://127.0.0.1:1/0", channel="socketio:contract")
    server = socketio.AsyncServer(async_mode="asgi", client_manager=manager)
    start_listener(server)
    return {
        "socketio.AsyncServer": server,
        "engineio.AsyncServer": server.eio,
        "engineio.async_socket.AsyncSocket": AsyncSocket(server.eio, "sid"),
        "socketio.AsyncManager": manager,
        "socketio.AsyncRedisManager": manager,
        "engineio.async_drivers.asgi": eio_asgi,
        "socketio.redis_manager": redis_manager,
        "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol": (
            WireProtocol(uvicorn.Config(server), ServerState(), {})
        ),
    }


async def test_every_private_part_fanout_uses_is_still_there() -> None:
    found = await specimens()
    try:
        missing = [
            f"{owner}.{name}"
            for owner, names in INTERNALS.items()
            for name in names
            if not hasattr(found[owner], name)
        ]
        assert not missing, f"{VERSIONS}: gone: {', '.join(missing)} (see switchboard/fanout.py)"
        assert isinstance(found["engineio.AsyncServer"].sockets, dict)
        assert found["engineio.AsyncServer"]._async["websocket"] is eio_asgi.WebSocket
        assert isinstance(found["socketio.AsyncManager"].rooms, dict)
        assert isinstance(listener(found["socketio.AsyncServer"]), asyncio.Task)
    finally:
        task = listener(found["socketio.AsyncServer"])
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def test_the_pubsub_emit_message_is_the_librarys() -> None:
    """The message fanout publishes is the one python-socketio's managers publish and read."""
    published: list[dict[str, Any]] = []

    class Capturing(AsyncPubSubManager):  # type: ignore[misc]
        async def _publish(self, data: dict[str, Any]) -> None:
            published.append(data)

        async def _handle_emit(self, message: dict[str, Any]) -> None:
            pass

    manager = Capturing(channel="socketio:contract")
    manager.set_server(socketio.AsyncServer(async_mode="asgi", client_manager=manager))
    await manager.emit("trade", {"id": 1}, namespace="/", room="btcusd", skip_sid="x")
    (theirs,) = published
    ours = emit_message("trade", [{"id": 1}], "/", "btcusd", "x", manager.host_id)
    assert set(ours) == set(theirs), f"{VERSIONS}: the library's message is {sorted(theirs)}"
    assert {k: v for k, v in ours.items() if k != "data"} == {
        k: v for k, v in theirs.items() if k != "data"
    }
