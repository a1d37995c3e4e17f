"""A bare Python websocket broadcast server: the practical limit for Python (issue 17).

uvloop and the ``websockets`` library, no socket.io machinery: just enough of engine.io v4 and
socket.io v5's text framing for the benchmarks' clients to drive it like the real chat servers.

- A connection is sent the engine.io open packet ``0{...}`` (no upgrades, no pings: it never
  pings, and a pong ``3`` is ignored).
- ``40`` (with or without auth) joins the namespace ``/``: the answer is ``40{"sid": ...}``.
- ``42["name", name]``: a name that is not empty and not taken is echoed, ``42["name", name]``;
  else ``42["error", reason]``.
- ``42["message", text]`` from a named connection goes to every connection in the namespace,
  the sender too, as ``42["message", {"id": sid, "name": name}, text]``: JSON made once, the
  same bytes written to every socket, never waiting on a slow one.
- ``41`` or ``1`` closes the connection.

Run: ``PORT=3102 .venv/bin/python bench/rawpy.py`` (HOST defaults to 127.0.0.1; the socket.io
path is ``/socket.io/``). ``bench/versus_node.py`` starts it as its ``raw`` server.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
from dataclasses import dataclass
from http import HTTPStatus

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

PATH = "/socket.io/"
OPEN_PACKET = "0" + json.dumps(
    {
        "sid": "",
        "upgrades": [],
        "pingInterval": 25000,
        "pingTimeout": 20000,
        "maxPayload": 1_000_000,
    },
    separators=(",", ":"),
)


@dataclass(slots=True)
class Member:
    """A connection that joined the namespace, and the name it took (empty until then)."""

    sid: str
    name: str = ""


class Chat:
    """The namespace: who is in it, the names taken, and the two events."""

    def __init__(self) -> None:
        self.members: dict[ServerConnection, Member] = {}
        self.names: set[str] = set()

    def join(self, connection: ServerConnection) -> Member:
        member = self.members[connection] = Member(secrets.token_urlsafe(15))
        return member

    def leave(self, connection: ServerConnection) -> None:
        member = self.members.pop(connection, None)
        if member is not None:
            self.names.discard(member.name)

    async def event(self, connection: ServerConnection, member: Member, packet: str) -> None:
        try:
            event, *args = json.loads(packet[2:])
        except (ValueError, TypeError):
            return
        argument = args[0] if args else None
        if event == "name":
            name = argument.strip() if isinstance(argument, str) else ""
            if not name or (name != member.name and name in self.names):
                reason = "Name is already taken" if name else "Name must not be empty"
                await connection.send(encode("error", reason))
                return
            self.names.discard(member.name)
            self.names.add(name)
            member.name = name
            await connection.send(encode("name", name))
        elif event == "message" and member.name:
            author = {"id": member.sid, "name": member.name}
            broadcast(self.members, encode("message", author, argument).encode(), text=True)

    async def serve(self, connection: ServerConnection) -> None:
        """One connection, from its open packet to its close."""
        member: Member | None = None
        try:
            await connection.send(OPEN_PACKET)
            async for packet in connection:
                if not isinstance(packet, str):
                    continue
                if packet.startswith("42"):
                    if member is not None:
                        await self.event(connection, member, packet)
                elif packet.startswith("40"):
                    if member is None:
                        member = self.join(connection)
                    await connection.send("40" + json.dumps({"sid": member.sid}))
                elif packet in ("41", "1"):
                    break
        except ConnectionClosed:
            pass
        finally:
            self.leave(connection)


def encode(event: str, *args: object) -> str:
    return "42" + json.dumps([event, *args], separators=(",", ":"), ensure_ascii=False)


def only_socketio_path(connection: ServerConnection, request: Request) -> Response | None:
    if request.path.split("?", 1)[0] != PATH:
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
    return None


async def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "3000"))
    chat = Chat()
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def end() -> None:
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, end)
    async with serve(
        chat.serve,
        host,
        port,
        process_request=only_socketio_path,
        compression=None,
        ping_interval=None,
        max_size=1_000_000,
    ):
        print(f"rawpy listening on {host}:{port} (pid {os.getpid()})", flush=True)
        await stop


if __name__ == "__main__":
    uvloop.run(main())
