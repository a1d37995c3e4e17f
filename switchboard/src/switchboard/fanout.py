"""Client managers that fan a broadcast out without one asyncio task per recipient, and every
other use of python-socketio's and python-engineio's private parts: this module is the one door
to them (``INTERNALS``), the versions are bounded above in switchboard/pyproject.toml, and
tests/test_library_contract.py fails, naming the attribute, when an upgrade changes one.

python-socketio's ``AsyncManager.emit`` encodes a broadcast once but then creates a task per
recipient and waits for them all; at 1000 recipients that is most of the cost of a message
(bench/chat_fanout.py, docs/benchmarks.md). Handing the packet to each recipient's engine.io
queue in turn is enough: the queue is unbounded, so putting a packet never waits on a slow
client, and each socket's own writer task sends it (STYLE.md: fan-out never waits on the
slowest client).

Broadcasts with an ack callback keep the library's path.

**The wire** (issue 17). A websocket client's packets do not wait in its engine.io queue for a
writer task: :class:`WireProtocol` (uvicorn's websocket protocol) hands the engine.io layer its
connection, and a :class:`WireSocket` writes each packet's websocket frame straight to it, so a
broadcast is framed once and the same bytes written to every recipient (:class:`Encoded`). The
library's reader, which made two tasks and a timer per packet received, is replaced by one loop
with one deadline. A client whose frames pile up unread in this process past
:attr:`GatewaySessions.send_buffer_limit` bytes is cut off. Long-polling keeps the library's path.

:class:`GuardedServer` looks at each inbound packet before the library does (issue 12), and
opens engine.io sessions under the id the gateway proposes (:class:`GatewaySessions`, issue 16).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import engineio
import socketio
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as eio_asgi
from engineio.async_socket import AsyncSocket
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from socketio import packet
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from switchboard.components import cancel
from switchboard.redisclient import redis_client
from switchboard.retry import backoff_delay

log = logging.getLogger(__name__)

#: The private (or undocumented) attributes used here, by where they are found.
INTERNALS: dict[str, tuple[str, ...]] = {
    "socketio.AsyncServer": (
        "_send_eio_packet",
        "_handle_eio_message",
        "packet_class",
        "manager_initialized",
        "eio",
        "_engineio_server_class",
    ),
    "engineio.AsyncServer": ("sockets", "_async", "_handle_connect", "generate_id"),
    "engineio.async_drivers.asgi": ("WebSocket",),
    "engineio.async_socket.AsyncSocket": (
        "queue",
        "upgraded",
        "upgrading",
        "connected",
        "closed",
        "_websocket_handler",
        "check_ping_timeout",
        "receive",
        "close",
    ),
    # The websocket protocol the wire writes through (WireProtocol).
    # (and its ``scope``, made by ``handle_connect``: without it, no wire, the library's path).
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol": (
        "handle_connect",
        "transport",
        "writable",
        "close_sent",
        "disconnected",
    ),
    "socketio.AsyncManager": ("rooms", "get_participants", "initialize", "server"),
    "socketio.AsyncRedisManager": (
        "_redis_connect",
        "_redis_listen_with_retries",
        "_listen",
        "_handle_emit",
        "_publish",
        "channel",
        "pubsub",
        "host_id",
        "redis_url",
        "redis_options",
        "thread",
    ),
    # Read by switchboard.redisclient, for REDIS_URL's redis+sentinel:// form.
    "socketio.redis_manager": ("parse_redis_sentinel_url",),
}


def start_listener(server: socketio.AsyncServer) -> None:
    """Start the manager's pub/sub listener now, not on the first request (python-socketio's
    habit), so that /readyz can see it."""
    if not server.manager_initialized:
        server.manager_initialized = True
        server.manager.initialize()


def listener(server: socketio.AsyncServer) -> asyncio.Task[None] | None:
    """The task that listens to the Redis channel, when the manager has one."""
    task = getattr(server.manager, "thread", None)
    return task if isinstance(task, asyncio.Task) else None


def participants(server: socketio.AsyncServer, room: Any, namespace: str = "/") -> list[Any]:
    """This process's clients in ``room`` (or rooms), as (sid, engine.io sid) pairs."""
    if namespace not in server.manager.rooms:
        return []
    return list(server.manager.get_participants(namespace, room))


def emit_message(
    event: str, args: list[Any], namespace: str, room: Any, skip_sid: Any, host_id: str
) -> dict[str, Any]:
    """The message python-socketio's pub/sub managers exchange for an emit without binary data
    or callback (``AsyncPubSubManager.emit``)."""
    return {
        "method": "emit",
        "event": event,
        "data": args,
        "binary": False,
        "namespace": namespace,
        "room": room,
        "skip_sid": skip_sid,
        "callback": None,
        "host_id": host_id,
    }


def _arguments(data: Any) -> list[Any]:
    """socket.io's convention: a tuple is several arguments, None is none, anything else one."""
    if isinstance(data, tuple):
        return list(data)
    if data is None:
        return []
    return [data]


class Encoded:
    """An event encoded once, for any number of clients: as engine.io packets (for a client on
    long-polling, or one still upgrading) and as the websocket frames that carry them, made the
    first time a client on the wire needs them."""

    __slots__ = ("_frames", "packets")

    def __init__(self, packets: list[eio_packet.Packet]) -> None:
        self.packets = packets
        self._frames: list[bytes] | None = None

    @property
    def frames(self) -> list[bytes]:
        if self._frames is None:
            self._frames = [websocket_frame(frame.encode()) for frame in self.packets]
        return self._frames


def encode_event(
    server: socketio.AsyncServer, namespace: str, event: str, args: list[Any]
) -> Encoded:
    """An event encoded once, to hand to any number of clients."""
    encoded = server.packet_class(packet.EVENT, namespace=namespace, data=[event, *args]).encode()
    return Encoded(
        [
            eio_packet.Packet(eio_packet.MESSAGE, part)
            for part in (encoded if isinstance(encoded, list) else [encoded])
        ]
    )


async def send_encoded(server: socketio.AsyncServer, eio_sid: str, encoded: Encoded) -> None:
    """Send an encoded event to one client: written at once on the wire, else queued."""
    socket = server.eio.sockets.get(eio_sid)
    if isinstance(socket, WireSocket) and socket.wire is not None:
        for frame in encoded.frames:
            socket.write(frame)
        return
    for part in encoded.packets:
        await server._send_eio_packet(eio_sid, part)


def behind(server: socketio.AsyncServer, eio_sid: str, most_queued: int) -> bool:
    """Whether a client reads too slowly to be sent more now: on the wire, its connection's send
    buffer is over the transport's high-water mark (what the kernel would take is taken, and
    frames wait in this process); on long-polling, more than ``most_queued`` packets wait."""
    socket = server.eio.sockets.get(eio_sid)
    if socket is None:
        return False
    if isinstance(socket, WireSocket) and socket.wire is not None:
        return socket.wire.paused
    return bool(socket.queue.qsize() > most_queued)


async def deliver_locally(
    manager: socketio.AsyncManager,
    event: str,
    args: list[Any],
    namespace: str,
    room: Any,
    skip_sid: Any,
) -> None:
    """Send ``event`` to this process's participants of ``room``, encoded once, framed once."""
    server = manager.server
    if namespace not in manager.rooms:
        return
    recipients = manager.get_participants(namespace, room)
    skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
    sockets = server.eio.sockets
    encoded: Encoded | None = None
    for sid, eio_sid in recipients:
        if sid in skip:
            continue
        if encoded is None:
            encoded = encode_event(server, namespace, event, args)
        socket = sockets.get(eio_sid)
        if isinstance(socket, WireSocket) and socket.wire is not None:
            for frame in encoded.frames:
                socket.write(frame)
        else:
            for part in encoded.packets:
                await server._send_eio_packet(eio_sid, part)


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


#: How long the listener (or the republisher) waits before trying Redis again: up to the first
#: after one failure (a connection killed while Redis is up comes back at once), doubled after
#: each further failure up to the most (:func:`switchboard.retry.backoff_delay`).
LISTEN_RETRY_FIRST = 0.5
LISTEN_RETRY_MOST = 5.0
#: How a readiness probe starts on the wire (see :meth:`FanoutRedisManager.probe`).
PROBE_PREFIX = b'{"method":"probe",'

#: Broadcasts kept, in order, while Redis refuses to publish them; past this, the oldest goes.
UNPUBLISHED_MOST = 1000


@dataclass
class Delivery:
    """What became of the broadcasts made inside :func:`delivery`."""

    #: One could not be published: this replica's clients have it, the others' will get it
    #: when Redis takes it again.
    delayed: bool = False


_DELIVERY: ContextVar[Delivery | None] = ContextVar("switchboard_delivery", default=None)


@contextlib.contextmanager
def delivery() -> Iterator[Delivery]:
    """Learn whether the broadcasts made in this block reached every replica at once::

    with delivery() as sent:
        await self.emit("message", ...)
    if sent.delayed: ...
    """
    outcome = Delivery()
    token = _DELIVERY.set(outcome)
    try:
        yield outcome
    finally:
        _DELIVERY.reset(token)


#: Told, once the listener hears Redis again after losing it, the wall-clock time (seconds)
#: since which broadcasts may have been missed: a service sends its clients what they missed.
OnHeardAgain = Callable[[float], Awaitable[None]]


class FanoutRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """The Redis manager, with the fast broadcast for what it delivers in this process, and
    publishing before delivering locally, so that the other replicas start at once instead of
    after this one has served all its own clients.

    Its listener keeps one Redis client for the life of the process (the library made a new
    connection pool at every reconnect, and left the old one open), comes back within
    :data:`LISTEN_RETRY_MOST` of Redis, and then calls :attr:`on_heard_again`. :meth:`probe`
    proves that it hears: what ``/readyz`` asks."""

    redis: Redis | None
    pubsub: PubSub | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Called after the listener heard nothing for a while and hears again.
        self.on_heard_again: list[OnHeardAgain] = []
        #: When the listener last heard anything (or subscribed): a gap starts there.
        self.last_heard = time.time()
        self._probes: dict[str, asyncio.Event] = {}
        #: Messages Redis would not take, oldest first, and the task that publishes them.
        self.unpublished: deque[dict[str, Any]] = deque()
        self._republisher: asyncio.Task[None] | None = None

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
        if isinstance(room, str) and skip_sid is None and self.is_connected(room, namespace):
            # To one of this replica's own clients (an ack's event, a refusal): no other
            # replica has it to deliver, and Redis, slow or gone, must not hold it up.
            await deliver_locally(self, event, args, namespace, room, skip_sid)
            return
        published = await self._publish(
            emit_message(event, args, namespace, room, skip_sid, self.host_id)
        )
        await deliver_locally(self, event, args, namespace, room, skip_sid)
        if not published and (outcome := _DELIVERY.get()) is not None:
            outcome.delayed = True

    async def _publish(self, data: dict[str, Any]) -> bool:
        """Publish to the other replicas: true when Redis took it. Otherwise (after a second
        try: a connection may have been cut) the message waits, in order, behind any already
        waiting, and is published as soon as Redis takes it again: late, never lost. The
        library only logged the failure and dropped the message."""
        if not self.unpublished:
            for attempt in (1, 2):
                try:
                    await self._client().publish(self.channel, self.json.dumps(data))
                    return True
                except Exception as exc:
                    if attempt == 2:
                        log.warning("Redis would not publish a broadcast (%s): kept", exc)
        if len(self.unpublished) >= UNPUBLISHED_MOST:
            self.unpublished.popleft()
            log.error(
                "more than %d broadcasts wait for Redis: the oldest dropped", UNPUBLISHED_MOST
            )
        self.unpublished.append(data)
        if self._republisher is None or self._republisher.done():
            self._republisher = asyncio.get_running_loop().create_task(
                self._republish(), name="republish"
            )
        return False

    async def _republish(self) -> None:
        failures = 1  # the publish that kept the first message
        while self.unpublished:
            await asyncio.sleep(backoff_delay(failures, LISTEN_RETRY_FIRST, LISTEN_RETRY_MOST))
            try:
                while self.unpublished:
                    message = self.json.dumps(self.unpublished[0])
                    await self._client().publish(self.channel, message)
                    self.unpublished.popleft()
                log.info("broadcasts kept while Redis refused them are published")
            except Exception as exc:
                log.warning("%d broadcasts still wait for Redis (%s)", len(self.unpublished), exc)
                failures += 1

    async def stop(self) -> None:
        """Stop publishing what waits: the service is stopping."""
        await cancel(self._republisher)

    def _redis_connect(self) -> None:
        """One client for the process, on the pool every service's Redis client has (one that
        waits for a free connection instead of failing a publish with "Too many connections"
        when many clients send at once); its connections come back by themselves. The
        listener makes its own subscription."""
        self._client()

    def _client(self) -> Redis:
        if self.redis is None:
            self.redis = redis_client(self.redis_url, **self.redis_options)
        self.connected = True
        return self.redis

    async def _redis_listen_with_retries(self) -> AsyncIterator[dict[str, Any]]:
        failures = 0
        deaf = False
        while True:
            pubsub = self.pubsub = self._client().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if deaf:
                    await self._heard_again()
                deaf, failures = False, 0
                async for message in pubsub.listen():
                    self.last_heard = time.time()
                    yield message
            except Exception as exc:
                log.warning("socket.io listener lost Redis (%s)", exc or type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            deaf = True  # however the subscription ended: what came meanwhile is missed
            failures += 1
            await asyncio.sleep(backoff_delay(failures, LISTEN_RETRY_FIRST, LISTEN_RETRY_MOST))

    async def _heard_again(self) -> None:
        since = self.last_heard
        self.last_heard = time.time()
        log.info("socket.io listener hears Redis again, after %.1f s", self.last_heard - since)
        for callback in self.on_heard_again:
            try:
                await callback(since)
            except Exception:
                log.exception("catching up after the listener's gap failed")

    async def _listen(self) -> AsyncIterator[bytes]:
        async for data in super()._listen():
            if isinstance(data, bytes) and data.startswith(PROBE_PREFIX):
                with contextlib.suppress(ValueError, KeyError):
                    heard = self._probes.get(self.json.loads(data)["nonce"])
                    if heard is not None:
                        heard.set()
                continue  # a probe is for its sender alone
            yield data

    async def probe(self, within: float) -> str | None:
        """Publish a probe and wait for the listener to hear it: None when it does ``within``
        seconds, else why not. A listener that hears nothing is made to subscribe again,
        for a connection can die without a word (a network cut)."""
        nonce = uuid.uuid4().hex
        heard = self._probes[nonce] = asyncio.Event()
        message = {"method": "probe", "host_id": self.host_id, "nonce": nonce}
        try:
            await self._client().publish(self.channel, self.json.dumps(message))
            async with asyncio.timeout(within):
                await heard.wait()
            return None
        except TimeoutError:
            if self.pubsub is not None:
                with contextlib.suppress(Exception):
                    await self.pubsub.aclose()  # type: ignore[no-untyped-call]
            return f"socket.io Redis listener did not hear a probe within {within} s"
        except Exception as exc:
            return f"socket.io Redis publish: {exc or type(exc).__name__}"
        finally:
            self._probes.pop(nonce, None)

    async def hear_up_to_now(self, within: float) -> None:
        """Until every broadcast the others published before now has been delivered here, or
        never can be: the listener hears a probe published now (Redis sends a subscriber what
        is published in order), or, not within ``within`` s, its subscription is ended (what
        was on its way on it is dropped) and made anew, and the service sends its clients what
        they missed (:attr:`on_heard_again`). What this replica broadcasts next then reaches
        its own clients after what the others said before it: a network cut holds back what
        Redis sends a subscriber, until TCP sends it again, seconds after the cut ends."""
        why = await self.probe(within)
        if why is not None:
            log.info("the listener subscribes again to hear up to now (%s)", why)

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


#: socket.io packet types that announce binary attachments (BINARY_EVENT, BINARY_ACK).
BINARY_TYPES = (str(packet.BINARY_EVENT), str(packet.BINARY_ACK))


#: The first character of every engine.io packet: its type, 0 (open) to 6 (noop). With
#: anything else python-engineio's reader raised: a traceback in the log.
ENGINEIO_TYPES = frozenset(str(kind) for kind in range(len(eio_packet.packet_names)))


# --- the wire: frames written straight to a websocket's connection (issue 17) ----------------

#: The ASGI scope extension under which :class:`WireProtocol` offers its connection.
WIRE_EXTENSION = "switchboard.wire"
#: Bytes that may wait unread in this process for one client before it is cut off (the setting
#: SEND_BUFFER_LIMIT; what the kernel's socket buffer holds comes on top).
SEND_BUFFER_LIMIT = 1024 * 1024


def websocket_frame(payload: str | bytes) -> bytes:
    """A whole server-to-client websocket frame (final, unmasked: RFC 6455 5.2): text for a
    str, binary for bytes. The same bytes serve every client a broadcast goes to."""
    if isinstance(payload, str):
        data, head = payload.encode(), 0x81
    else:
        data, head = payload, 0x82
    size = len(data)
    if size < 126:
        return bytes((head, size)) + data
    if size < 1 << 16:
        return bytes((head, 126)) + size.to_bytes(2, "big") + data
    return bytes((head, 127)) + size.to_bytes(8, "big") + data


class WireProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol (websockets' sans-I/O implementation), offering its
    connection to the engine.io layer under :data:`WIRE_EXTENSION`: a frame is written to the
    transport at once, from the task that sends it, with nothing queued and no task woken."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # only an accepted handshake makes one
        if scope is not None:
            scope["extensions"][WIRE_EXTENSION] = self

    @property
    def open(self) -> bool:
        return not (self.close_sent or self.disconnected)

    @property
    def paused(self) -> bool:
        """Over the transport's high-water mark: frames wait here, not in the kernel."""
        return not self.writable.is_set()

    def write(self, frame: bytes) -> int:
        """Write a whole frame; the bytes now waiting in this process to be sent."""
        if not self.open:
            return 0
        transport = self.transport
        transport.write(frame)
        return int(transport.get_write_buffer_size())

    def cut(self) -> None:
        """End the connection now, dropping what waits to be sent."""
        self.transport.abort()


class WireSocket(AsyncSocket):  # type: ignore[misc]
    """An engine.io socket whose packets, once it is on a websocket, go straight to the wire.

    :class:`GuardedWebSocket` makes a socket one (by setting its class: the library makes its
    sockets itself, without a hook) when the ASGI server offers the wire, and then serves the
    websocket with :meth:`_websocket_handler` instead of the library's."""

    # The library's (set in its __init__), typed for mypy.
    connected: bool
    upgrading: bool
    upgraded: bool
    closed: bool
    #: The connection, once the socket is on the websocket transport; None before and after.
    wire: WireProtocol | None = None
    websocket: GuardedWebSocket | None = None

    async def send(self, pkt: eio_packet.Packet) -> None:
        if self.wire is None:
            await super().send(pkt)
            return
        if await self.check_ping_timeout():
            self.write(websocket_frame(pkt.encode()))

    def write(self, frame: bytes) -> None:
        """Write a frame to the wire; cut the client off when too much waits unread."""
        wire = self.wire
        if wire is None:
            return
        if wire.write(frame) > self.server.send_buffer_limit:
            log.info("cutting off %s: its frames wait unread (SEND_BUFFER_LIMIT)", self.sid)
            if self.server.on_cut_off is not None:
                self.server.on_cut_off()
            self.wire = None
            wire.cut()

    async def hang_up(self) -> None:
        """Close the websocket now (a close frame), without waiting for the client."""
        if self.websocket is not None:
            self.wire = None
            await self.websocket.close()

    async def _websocket_handler(self, ws: GuardedWebSocket) -> None:
        """The library's handler, with the writer task and the per-packet timers gone: the
        upgrade from long-polling (probe, then upgrade packet) as the library does it, then
        whatever was queued meanwhile written in order, then every packet written at once."""
        if self.connected:
            self.upgrading = True
            try:
                if await self._upgrade(ws):
                    self.upgraded = True
            finally:
                self.upgrading = False
            if not self.upgraded:
                return
        else:
            self.connected = True
            self.upgraded = True
        wire = ws.wire
        if wire is None:
            return
        self.websocket = ws
        while not self.queue.empty():
            queued = self.queue.get_nowait()
            self.queue.task_done()
            if queued is not None:
                wire.write(websocket_frame(queued.encode()))
        self.wire = wire
        try:
            await self._read(ws)
        finally:
            self.wire = None
            await ws.close()
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    async def _upgrade(self, ws: GuardedWebSocket) -> bool:
        """The upgrade from long-polling: ``2probe`` answered ``3probe``, the pending poll ended,
        then ``5``. False (the socket stays on polling) when the client says anything else."""
        try:
            probe = await ws.wait()
        except OSError:
            return False
        if probe != "2probe":
            return False
        await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        await self.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
        try:
            upgrade = await ws.wait()
        except OSError:
            return False
        return bool(upgrade == "5")

    async def _read(self, ws: GuardedWebSocket) -> None:
        """Hand each packet the client sends to the library, until it closes, sends something
        too large, or is silent for longer than a ping cycle (one deadline, moved each time)."""
        server = self.server
        silence = server.ping_interval + server.ping_timeout
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as deadline:
                while True:
                    deadline.reschedule(loop.time() + silence)
                    data = await ws.wait()
                    if data is None or len(data) > server.max_http_buffer_size:
                        return
                    try:
                        await self.receive(eio_packet.Packet(encoded_packet=data))
                    except eio_exceptions.UnknownPacketError:
                        pass
                    except eio_exceptions.SocketIsClosedError:
                        return
                    except Exception:
                        log.exception("engine.io: a received packet failed")
        except (TimeoutError, OSError):
            return


class GuardedWebSocket(eio_asgi.WebSocket):  # type: ignore[misc]
    """python-engineio's ASGI websocket, but a text frame that is no engine.io packet (empty,
    or not starting with a packet type) ends the connection as a client's close would: the
    library then cleans up after it as usual. When the ASGI server offers the wire
    (:class:`WireProtocol`), the socket it serves becomes a :class:`WireSocket`."""

    handler: Callable[[GuardedWebSocket], Awaitable[None]]

    def __init__(self, handler: Callable[[GuardedWebSocket], Awaitable[None]], server: Any) -> None:
        super().__init__(handler, server)
        self.wire: WireProtocol | None = None

    async def __call__(self, environ: dict[str, Any]) -> Any:
        wire = environ["asgi.scope"].get("extensions", {}).get(WIRE_EXTENSION)
        socket = getattr(self.handler, "__self__", None)
        if isinstance(wire, WireProtocol) and type(socket) is AsyncSocket:
            self.wire = wire
            socket.__class__ = WireSocket
            self.handler = cast(WireSocket, socket)._websocket_handler
        return await super().__call__(environ)

    async def wait(self) -> Any:
        message = await super().wait()
        if isinstance(message, str) and message[:1] not in ENGINEIO_TYPES:
            log.info("closing a websocket: a frame that is no engine.io packet")
            return None
        return message


#: The header in which the gateway proposes the id of the engine.io session a handshake opens
#: (nginx's ``$request_id``: 32 random hex digits), as WSGI-style environ key.
SESSION_HEADER = "HTTP_X_SWITCHBOARD_SESSION"
_SESSION_ID = re.compile(r"[0-9a-f]{32}")
_proposed_session: ContextVar[str | None] = ContextVar("proposed_session", default=None)


class GatewaySessions(engineio.AsyncServer):  # type: ignore[misc]
    """An engine.io server whose sessions take the id the gateway proposes, so that the gateway
    can send every later request of the session (long-polling, its upgrade to a websocket) to
    this replica by hashing the ``sid`` they carry: the handshake was sent here by hashing the
    same id (gateway/nginx.conf.template). Without the header (a client that reaches the
    replica directly), or with one that is not 32 hex digits or is taken, the library's own
    random id. A client that sets the header itself only names its own session.

    It also holds what the wire needs of the server: the send buffer limit, and how many clients
    were cut off for reading too slowly."""

    #: Bytes waiting unread for one client past which it is cut off (:class:`WireSocket`).
    send_buffer_limit: int = SEND_BUFFER_LIMIT
    #: Called when a client is cut off (for /metrics).
    on_cut_off: Callable[[], object] | None = None

    async def _handle_connect(self, environ: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        proposed = environ.get(SESSION_HEADER, "")
        token = _proposed_session.set(proposed if _SESSION_ID.fullmatch(proposed) else None)
        try:
            return await super()._handle_connect(environ, *args, **kwargs)
        finally:
            _proposed_session.reset(token)

    def generate_id(self) -> str:
        proposed = _proposed_session.get()
        if proposed is not None and proposed not in self.sockets:
            return proposed
        return str(super().generate_id())


class GuardedServer(socketio.AsyncServer):  # type: ignore[misc]
    """An AsyncServer that refuses, before the library reads it, what none of our events needs:
    binary data (an attachment count the library would wait for, frames it would keep), and
    closes the connection of a client whose packet it cannot read (bad JSON, an event that is
    not ``[name, ...]``, nesting too deep to parse): one line in the log, never a traceback,
    never a half-read packet kept."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A copy: the driver's table is the module's own, shared by every server.
        self.eio._async = {**self.eio._async, "websocket": GuardedWebSocket}

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return GatewaySessions

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if isinstance(data, bytes) or (isinstance(data, str) and data[:1] in BINARY_TYPES):
            await self.refuse_packet(eio_sid, "binary", "binary data is not accepted")
            return
        if not isinstance(data, str):
            # python-engineio hands over what parses as JSON parsed ("4true" as True), which
            # python-socketio then reads as a packet type: True is DISCONNECT.
            await self.refuse_packet(eio_sid, "bad_packet", "not a socket.io packet")
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except Exception as exc:
            await self.refuse_packet(eio_sid, "bad_packet", f"unreadable ({type(exc).__name__})")

    async def refuse_packet(self, eio_sid: str, code: str, why: str) -> None:
        """Close the connection that sent a packet we refuse."""
        log.info("closing connection %s: its packet was refused: %s", eio_sid, why)
        socket = self.eio.sockets.get(eio_sid)
        await self.eio.disconnect(eio_sid)
        if isinstance(socket, WireSocket):
            # The library keeps a websocket open until its client answers the close (or the
            # ping times out, 45 s later): close it now.
            await socket.hang_up()
        elif socket is not None and socket.upgraded:
            socket.queue.put_nowait(None)  # the library's writer ends, and closes it
