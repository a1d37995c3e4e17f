"""Client managers that fan a broadcast out without one asyncio task per recipient.

python-socketio's ``AsyncManager.emit`` encodes a broadcast once but then creates a task per
recipient and waits for them all; at 1000 recipients that is most of the cost of a message
(bench/chat_fanout.py, docs/benchmarks.md). Handing the packet to each recipient's engine.io
queue in turn is enough: the queue is unbounded, so putting a packet never waits on a slow
client, and each socket's own writer task sends it (STYLE.md: fan-out never waits on the
slowest client).

Broadcasts with an ack callback keep the library's path.
"""

from __future__ import annotations

from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from switchboard.redisclient import redis_client


def _arguments(data: Any) -> list[Any]:
    """socket.io's convention: a tuple is several arguments, None is none, anything else one."""
    if isinstance(data, tuple):
        return list(data)
    if data is None:
        return []
    return [data]


def encode_event(
    server: socketio.AsyncServer, namespace: str, event: str, args: list[Any]
) -> list[eio_packet.Packet]:
    """An event encoded once, as the engine.io packets to hand to any number of clients."""
    encoded = server.packet_class(packet.EVENT, namespace=namespace, data=[event, *args]).encode()
    return [
        eio_packet.Packet(eio_packet.MESSAGE, part)
        for part in (encoded if isinstance(encoded, list) else [encoded])
    ]


async def send_encoded(
    server: socketio.AsyncServer, eio_sid: str, frames: list[eio_packet.Packet]
) -> None:
    for frame in frames:
        await server._send_eio_packet(eio_sid, frame)


def queued(server: socketio.AsyncServer, eio_sid: str) -> int:
    """Packets waiting to be written to a client: more than a few means it reads slowly (the
    websocket's writer waits while the socket's send buffer is full)."""
    socket = server.eio.sockets.get(eio_sid)
    return socket.queue.qsize() if socket is not None else 0


async def deliver_locally(
    manager: socketio.AsyncManager,
    event: str,
    args: list[Any],
    namespace: str,
    room: Any,
    skip_sid: Any,
) -> None:
    """Send ``event`` to this process's participants of ``room``, encoded once."""
    if namespace not in manager.rooms:
        return
    recipients = list(manager.get_participants(namespace, room))
    if not recipients:
        return
    skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
    frames = encode_event(manager.server, namespace, event, args)
    for sid, eio_sid in recipients:
        if sid not in skip:
            await send_encoded(manager.server, eio_sid, frames)


class FanoutManager(socketio.AsyncManager):  # type: ignore[misc]
    """The in-memory manager (one process), with the fast broadcast."""

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if callback is not None:
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to
            )
            return
        await deliver_locally(self, event, _arguments(data), namespace, to or room, skip_sid)


class FanoutRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """The Redis manager, with the fast broadcast for what it delivers in this process, and
    publishing before delivering locally, so that the other replicas start at once instead of
    after this one has served all its own clients."""

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        args = _arguments(data)
        if callback is not None or kwargs.get("ignore_queue") or packet.Packet.data_is_binary(args):
            await super().emit(
                event,
                data,
                namespace=namespace,
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                to=to,
                **kwargs,
            )
            return
        namespace = namespace or "/"
        room = to or room
        # The message python-socketio's pub/sub managers exchange (async_pubsub_manager.emit).
        await self._publish(
            {
                "method": "emit",
                "event": event,
                "data": args,
                "binary": False,
                "namespace": namespace,
                "room": room,
                "skip_sid": skip_sid,
                "callback": None,
                "host_id": self.host_id,
            }
        )
        await deliver_locally(self, event, args, namespace, room, skip_sid)

    def _redis_connect(self) -> None:
        """As python-socketio's, with the pool every service's Redis client has (one that
        waits for a free connection instead of failing a publish with "Too many connections"
        when many clients send at once)."""
        self.redis = redis_client(self.redis_url, **self.redis_options)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("callback") is not None or message.get("binary"):
            await super()._handle_emit(message)
            return
        await deliver_locally(
            self,
            message["event"],
            list(message["data"]),
            message.get("namespace") or "/",
            message.get("room"),
            message.get("skip_sid"),
        )
