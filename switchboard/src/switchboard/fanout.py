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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import engineio
import orjson
import socketio
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as eio_asgi
from engineio.async_socket import AsyncSocket
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from socketio import packet
from uvicorn.protocols.utils import ClientDisconnected
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
        "_handle_eio_disconnect",
        "packet_class",
        "manager_initialized",
        "eio",
        "_engineio_server_class",
    ),
    "engineio.AsyncServer": (
        "sockets",
        "_async",
        "_handle_connect",
        "_trigger_event",
        "generate_id",
        "start_background_task",
        "reason",
        "handlers",
    ),
    "engineio.async_drivers.asgi": ("WebSocket",),
    "engineio.async_socket.AsyncSocket": (
        "queue",
        "upgraded",
        "upgrading",
        "connected",
        "closed",
        "_websocket_handler",
        "check_ping_timeout",
        "schedule_ping",
        "last_ping",
        "closing",
        "receive",
        "close",
    ),
    # The websocket protocol the wire writes through (WireProtocol).
    # (and its ``scope``, made by ``handle_connect``: without it, no wire, the library's path).
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol": (
        "handle_connect",
        "run_asgi",
        "send_receive_event_to_app",
        "handle_parser_exception",
        "send_500_response",
        "transport",
        "queue",
        "conn",
        "frames",
        "curr_msg_data_type",
        "read_paused",
        "writable",
        "close_sent",
        "close_timer",
        "handshake_complete",
        "disconnected",
        "logger",
        "tasks",
    ),
    "socketio.AsyncManager": (
        "rooms",
        "get_participants",
        "initialize",
        "server",
        "basic_enter_room",
        "basic_leave_room",
        "basic_close_room",
        "basic_disconnect",
        "get_rooms",
        "callbacks",
        "pending_connect",
        "pending_disconnect",
    ),
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
    or callback (``AsyncPubSubManager.emit``), with ``host_id`` last: a replica's listener
    knows its own by their end (:meth:`FanoutRedisManager._listen`)."""
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
    """An event encoded once, for any number of clients: as the websocket frames that carry it
    (for a client on the wire) and as engine.io packets (for a client on long-polling, or one
    still upgrading), each made the first time a client needs it."""

    __slots__ = ("_frames", "_packets", "parts")

    def __init__(self, parts: list[str | bytes]) -> None:
        #: The engine.io message packets' payloads: socket.io's packet, then any attachments.
        self.parts = parts
        self._frames: list[bytes] | None = None
        self._packets: list[eio_packet.Packet] | None = None

    @property
    def frames(self) -> list[bytes]:
        if self._frames is None:
            self._frames = [
                websocket_frame(b"4" + part.encode())
                if isinstance(part, str)
                else websocket_frame(part, binary=True)
                for part in self.parts
            ]
        return self._frames

    @property
    def packets(self) -> list[eio_packet.Packet]:
        if self._packets is None:
            self._packets = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in self.parts]
        return self._packets


def encode_event(
    server: socketio.AsyncServer, namespace: str, event: str, args: list[Any]
) -> Encoded:
    """An event encoded once, to hand to any number of clients. JSON is written straight (what
    socket.io's packet class writes, without its walk through the data looking for binary: our
    events carry none); data that JSON cannot hold (binary) takes the library's way."""
    try:
        data = orjson.dumps([event, *args]).decode()
    except TypeError:  # orjson's error for bytes, among others
        encoded = server.packet_class(packet.EVENT, namespace=namespace, data=[event, *args])
        parts = encoded.encode()
        return Encoded(parts if isinstance(parts, list) else [parts])
    head = "2" if namespace == "/" else f"2{namespace},"
    return Encoded([head + data])


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
    rooms = manager.rooms.get(namespace)
    if rooms is None:
        return
    connected = rooms.get(None)
    if isinstance(room, str) and connected is not None and room in connected:
        recipients: Iterable[tuple[str, str]] = ((room, connected[room]),)  # one client
    else:
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


class ClientRooms(socketio.AsyncManager):  # type: ignore[misc]
    """A manager that knows each client's rooms. python-socketio's finds them by looking in
    every room of the namespace (each client has one of its own): a disconnect cost a look at
    every client's, and a thousand leaving at once a million (bench/versus_node.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (namespace, sid): the rooms the client is in, its own included.
        self.client_rooms: dict[tuple[str, str], set[Any]] = {}

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self.client_rooms.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self.client_rooms.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self.client_rooms[(namespace, sid)]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        return [r for r in self.client_rooms.get((namespace, sid), ()) if r is not None]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """The library's, leaving only the client's own rooms."""
        if namespace not in self.rooms:
            return
        for room in list(self.client_rooms.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]


class FanoutManager(ClientRooms):
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


class FanoutRedisManager(ClientRooms, socketio.AsyncRedisManager):  # type: ignore[misc]
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
        #: Messages Redis would not take (their JSON), oldest first, and the task that
        #: publishes them.
        self.unpublished: deque[bytes] = deque()
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
        namespace = namespace or "/"
        room = to or room
        message: bytes | None = None
        if callback is None and not kwargs.get("ignore_queue"):
            with contextlib.suppress(TypeError):  # binary data: JSON cannot hold it
                message = orjson.dumps(
                    emit_message(event, args, namespace, room, skip_sid, self.host_id)
                )
        if message is None:
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
        if isinstance(room, str) and skip_sid is None and self.is_connected(room, namespace):
            # To one of this replica's own clients (an ack's event, a refusal): no other
            # replica has it to deliver, and Redis, slow or gone, must not hold it up.
            await deliver_locally(self, event, args, namespace, room, skip_sid)
            return
        published = await self._publish(message)
        await deliver_locally(self, event, args, namespace, room, skip_sid)
        if not published and (outcome := _DELIVERY.get()) is not None:
            outcome.delayed = True

    async def _publish(self, data: dict[str, Any] | bytes) -> bool:
        """Publish a message (or its JSON) to the other replicas: true when Redis took it.
        Otherwise (after a second try: a connection may have been cut) the message waits, in
        order, behind any already waiting, and is published as soon as Redis takes it again:
        late, never lost. The library only logged the failure and dropped the message."""
        if not isinstance(data, bytes):
            data = orjson.dumps(data)
        if not self.unpublished:
            for attempt in (1, 2):
                try:
                    await self._client().publish(self.channel, data)
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
                    await self._client().publish(self.channel, self.unpublished[0])
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
        # Redis sends a subscriber what it published itself too: our broadcasts were delivered
        # here already, and are known by their end (emit_message puts host_id last) without
        # decoding them; the library would decode each to find out.
        own = b'"host_id":"' + self.host_id.encode() + b'"}'
        async for data in super()._listen():
            if isinstance(data, bytes) and data.endswith(own):
                continue
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


def websocket_frame(payload: str | bytes, *, binary: bool = False) -> bytes:
    """A whole server-to-client websocket frame (final, unmasked: RFC 6455 5.2): a text frame
    (a str, or bytes of UTF-8), a binary one with ``binary``. The same bytes serve every client
    a broadcast goes to."""
    data = payload.encode() if isinstance(payload, str) else payload
    head = 0x82 if binary else 0x81
    size = len(data)
    if size < 126:
        return bytes((head, size)) + data
    if size < 1 << 16:
        return bytes((head, 126)) + size.to_bytes(2, "big") + data
    return bytes((head, 127)) + size.to_bytes(8, "big") + data


def packet_frame(pkt: eio_packet.Packet) -> bytes:
    """An engine.io packet's websocket frame (binary for binary data)."""
    encoded = pkt.encode()
    return websocket_frame(encoded, binary=isinstance(encoded, bytes))


class WireProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol (websockets' sans-I/O implementation), offering its
    connection to the engine.io layer under :data:`WIRE_EXTENSION`.

    Once the engine.io socket is on the websocket, it is attached (:meth:`attach`): frames
    are written to the transport without a task or a queue (those of one turn of the event
    loop together), and frames received go straight to the socket. The ASGI application then
    returns (a connection kept for hours keeps no task and no chain of awaiting calls) and the
    connection stays open: its events (a frame, the peer's close, the transport lost, the
    server shutting down) reach the socket."""

    #: The engine.io socket this connection carries, once attached.
    socket: WireSocket | None = None
    #: Frames written this turn of the event loop, not yet handed to the transport.
    corked: list[bytes] | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # only an accepted handshake makes one
        if scope is not None:
            scope["extensions"][WIRE_EXTENSION] = self

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The handshake's request and response (and their headers) are not needed again:
            # a connection kept for hours should not keep them (the request's headers are
            # emptied: websockets' parser keeps the request itself).
            self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]

    def attach(self, socket: WireSocket) -> None:
        """From now on, what the client sends goes to ``socket``; what waits goes first."""
        waiting, self.queue = self.queue, _Events(socket)  # type: ignore[assignment]
        self.socket = socket
        while not waiting.empty():
            self.queue.put_nowait(waiting.get_nowait())
        self.resume()

    async def run_asgi(self) -> None:
        """uvicorn's, but an attached connection stays open when the application returns."""
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned %r.", result)
        if self.close_timer is None and self.socket is None:
            self.transport.close()

    def send_receive_event_to_app(self) -> None:
        if self.socket is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # after our close, as uvicorn does
        if self.curr_msg_data_type != "text":
            self.socket.inbound(bytes(data))
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.conn.send_close(1007)  # invalid frame payload data (RFC 6455 7.4.1)
            self.handle_parser_exception()
            return
        self.socket.inbound(text)

    @property
    def open(self) -> bool:
        return not (self.close_sent or self.disconnected or self.transport.is_closing())

    @property
    def paused(self) -> bool:
        """Over the transport's high-water mark: frames wait here, not in the kernel."""
        return not self.writable.is_set()

    def write(self, frame: bytes) -> None:
        """Write a whole frame, with the others written to this client in the same turn of
        the event loop: one system call for all of them, at the end of the turn."""
        if self.corked is None:
            if not self.open:
                return
            self.corked = [frame]
            _CORKED.append(self)
            if len(_CORKED) == 1:
                asyncio.get_running_loop().call_soon(_uncork)
        else:
            self.corked.append(frame)

    def flush(self) -> None:
        """Write what this turn of the loop has for the client now; if too much waits unread,
        the socket says what becomes of it."""
        corked, self.corked = self.corked, None
        if not corked or not self.open:
            return
        transport = self.transport
        transport.write(corked[0] if len(corked) == 1 else b"".join(corked))
        if self.socket is not None and transport.get_write_buffer_size() > self.socket.limit:
            self.socket.too_slow()

    def track(self, task: asyncio.Task[None]) -> None:
        """A task of this connection's that uvicorn waits for when it stops, as it waits for
        the ASGI application's (a client's disconnect handlers run before the lifespan ends)."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def pause(self) -> None:
        """Read nothing more from the client for now."""
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    async def hang_up(self) -> None:
        """Close the websocket (a close frame, after what was written before it; the transport
        closes when the client answers, or 10 s later)."""
        self.flush()
        with contextlib.suppress(Exception):
            await self.send({"type": "websocket.close"})

    def cut(self) -> None:
        """End the connection now, dropping what waits to be sent."""
        self.transport.abort()


#: The connections written to in this turn of the event loop, in order.
_CORKED: list[WireProtocol] = []


def _uncork() -> None:
    """At the end of a turn of the event loop: every frame of it to its connection."""
    corked = _CORKED.copy()
    _CORKED.clear()
    for wire in corked:
        try:
            wire.flush()
        except Exception:  # one connection's trouble must not keep the others' frames
            log.exception("writing to a websocket failed")


class _Events:
    """What an attached :class:`WireProtocol` has for its ASGI receive queue: uvicorn puts the
    connection's events in it, and they go to the socket at once. Nobody receives from it."""

    def __init__(self, socket: WireSocket) -> None:
        self.socket = socket

    def put_nowait(self, event: dict[str, Any]) -> None:
        if event["type"] == "websocket.receive":
            text = event.get("text")
            self.socket.inbound(text if text is not None else event.get("bytes") or b"")
        elif event["type"] == "websocket.disconnect":
            self.socket.peer_gone()

    def empty(self) -> bool:
        return True


class Drained:
    """The queue of a socket on the wire, which has none (every packet is written at once):
    always empty; a packet put in it (only the library's own paths could, for a socket whose
    connection is gone) is dropped. One for all sockets."""

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    async def join(self) -> None:
        return None

    def put_nowait(self, item: object) -> None:
        pass

    async def put(self, item: object) -> None:
        self.put_nowait(item)


DRAINED = Drained()

#: Packets received and not yet handled, past which a client's connection is not read until
#: they are: a client that sends faster than its events are handled waits in TCP, not here.
INBOX_MOST = 32


class WireSocket(AsyncSocket):  # type: ignore[misc]
    """An engine.io socket whose packets, once it is on a websocket, go straight to the wire
    and come straight from it (:meth:`inbound`); packets received are handled in order by a
    task that lives while there are some.

    :func:`on_the_wire` makes a socket one when the ASGI server offers the wire, and
    :class:`GuardedWebSocket` then serves the websocket with :meth:`_websocket_handler`
    instead of the library's."""

    # The library's (set in its __init__), typed for mypy.
    connected: bool
    upgrading: bool
    upgraded: bool
    closed: bool
    closing: bool
    queue: Any
    last_ping: float | None
    #: The connection, once the socket is on the websocket transport.
    wire: WireProtocol | None = None
    #: The next ping, or the deadline of the pong the last one asked for: one timer.
    heartbeat: asyncio.TimerHandle | None = None
    inbox: deque[str | bytes] | None = None
    #: Handles the inbox, while it has packets.
    reader: asyncio.Task[None] | None = None
    #: The connection ended: the socket closes once the inbox is handled.
    ended: bool = False

    async def send(self, pkt: eio_packet.Packet) -> None:
        if self.wire is None:
            await super().send(pkt)
            return
        if await self.check_ping_timeout():
            self.write(packet_frame(pkt))

    def write(self, frame: bytes) -> None:
        """Write a frame to the wire."""
        if self.wire is not None:
            self.wire.write(frame)

    @property
    def limit(self) -> int:
        """Bytes that may wait unread for the client (SEND_BUFFER_LIMIT)."""
        return int(self.server.send_buffer_limit)

    def too_slow(self) -> None:
        """More than :attr:`limit` waits unread: the client is cut off."""
        log.info("cutting off %s: its frames wait unread (SEND_BUFFER_LIMIT)", self.sid)
        if self.server.on_cut_off is not None:
            self.server.on_cut_off()
        if self.wire is not None:
            self.wire.cut()

    async def hang_up(self) -> None:
        """Close the websocket now (a close frame), without waiting for the client."""
        self._stop_heartbeat()
        if self.wire is not None:
            await self.wire.hang_up()

    # -- what the client sends ----------------------------------------------------------------

    def inbound(self, data: str | bytes) -> None:
        """A frame from the client: handled after those before it."""
        if self.ended or self.closed:
            return
        if len(data) > self.server.max_http_buffer_size or (
            isinstance(data, str) and data[:1] not in ENGINEIO_TYPES
        ):
            # Too large, or no engine.io packet: the end of the connection, as the library
            # ends it for a frame too large (and GuardedWebSocket for one that is no packet).
            log.info("closing %s: a frame too large or that is no engine.io packet", self.sid)
            self.peer_gone()
            self.server.start_background_task(self.hang_up)
            return
        if self.inbox is None:
            self.inbox = deque()
        self.inbox.append(data)
        if self.reader is None:
            self.reader = self._start_reader()
        elif len(self.inbox) > INBOX_MOST and self.wire is not None:
            self.wire.pause()

    def peer_gone(self) -> None:
        """The connection ended (the client closed it, it was lost, the server stops)."""
        if self.ended:
            return
        self.ended = True
        self._stop_heartbeat()
        if self.reader is None:
            self.reader = self._start_reader()

    def _start_reader(self) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._read())
        if self.wire is not None:
            self.wire.track(task)
        return task

    async def _read(self) -> None:
        """Hand each packet received to the library, in order; then, if the connection
        ended, close the socket."""
        inbox = self.inbox
        try:
            while inbox and not self.closed:
                data = inbox.popleft()
                if self.wire is not None and len(inbox) < INBOX_MOST // 2:
                    self.wire.resume()
                try:
                    if isinstance(data, str) and data[:1] == "4":
                        # A message: straight to socket.io's handler, without engine.io's
                        # decoding (which tries it as JSON first) and its wrappers.
                        await self.server.handlers["message"](self.sid, data[1:])
                    else:
                        await self.receive(eio_packet.Packet(encoded_packet=data))
                except eio_exceptions.UnknownPacketError:
                    pass
                except eio_exceptions.SocketIsClosedError:
                    break
                except Exception:
                    log.exception("engine.io: a received packet failed")
        finally:
            self.reader = None
            self.inbox = None
            if self.ended or self.closed:
                await self._end()

    async def _end(self) -> None:
        self.ended = True
        self._stop_heartbeat()
        if not self.closed:
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
        await self.hang_up()
        if self.server.sockets.get(self.sid) is self:
            del self.server.sockets[self.sid]

    # -- the heartbeat (engine.io: the server pings every ping_interval, the client answers
    # -- within ping_timeout) on one timer, instead of the library's task a ping and its sweep

    def schedule_ping(self) -> None:
        """Called by the library when the socket opens and on each pong."""
        if self.last_ping:  # not while a ping is unanswered
            self.last_ping = None
            self._arm(self.server.ping_interval, self._ping)

    def _arm(self, delay: float, then: Callable[[], None]) -> None:
        self._stop_heartbeat()
        self.heartbeat = asyncio.get_running_loop().call_later(delay, then)

    def _stop_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            self.heartbeat = None

    def _ping(self) -> None:
        if self.closing or self.closed or self.ended:
            return
        self.last_ping = time.time()
        if self.wire is not None:
            self.write(websocket_frame("2"))
        else:  # still on long-polling, or upgrading: the library's queue
            self.server.start_background_task(super().send, eio_packet.Packet(eio_packet.PING))
        self._arm(self.server.ping_timeout, self._pong_overdue)

    def _pong_overdue(self) -> None:
        self.heartbeat = None
        if not (self.closing or self.closed):
            log.info("%s: no pong within %s s, closing", self.sid, self.server.ping_timeout)
            self.server.start_background_task(self._gone)

    async def _gone(self) -> None:
        await self.close(wait=False, abort=True, reason=self.server.reason.PING_TIMEOUT)
        if self.wire is not None:
            await self.hang_up()  # its end then removes the socket
        elif self.server.sockets.get(self.sid) is self:
            del self.server.sockets[self.sid]

    # -- the websocket transport ----------------------------------------------------------------

    async def _websocket_handler(self, ws: GuardedWebSocket) -> None:
        """The library's handler, without its writer and reader tasks: the upgrade from
        long-polling (probe, then upgrade packet) as the library does it, then whatever was
        queued meanwhile written in order, and the socket attached to the connection."""
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
        while not self.queue.empty():
            queued = self.queue.get_nowait()
            self.queue.task_done()
            if queued is not None:
                wire.write(packet_frame(queued))
        self.queue = DRAINED  # never used again: its memory goes
        self.wire = wire
        wire.attach(self)

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


def wire_of(environ: dict[str, Any]) -> WireProtocol | None:
    """The wire the ASGI server offers for this request (a websocket's), if any."""
    wire = environ["asgi.scope"].get("extensions", {}).get(WIRE_EXTENSION)
    return wire if isinstance(wire, WireProtocol) else None


def on_the_wire(socket: AsyncSocket) -> WireSocket:
    """Make a socket a :class:`WireSocket` (the library makes its sockets itself, with no hook
    to make another class; this one only adds to it)."""
    if type(socket) is AsyncSocket:
        socket.__class__ = WireSocket
    return cast(WireSocket, socket)


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
        wire = wire_of(environ)
        socket = getattr(self.handler, "__self__", None)
        if wire is not None and isinstance(socket, AsyncSocket):
            self.wire = wire
            self.handler = on_the_wire(socket)._websocket_handler
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

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "connect" and wire_of(args[1]) is not None:
            # A client that opens with a websocket: on the wire from its first ping.
            on_the_wire(self.sockets[args[0]])
        return await super()._trigger_event(event, *args, **kwargs)

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

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any = None) -> None:
        socket = self.eio.sockets.get(eio_sid)
        await super()._handle_eio_disconnect(eio_sid, reason)
        said_goodbye = reason == self.eio.reason.CLIENT_DISCONNECT
        if said_goodbye and socket is not None and not (socket.upgraded or socket.upgrading):
            # A long-polling client that said goodbye (its CLOSE packet) still has a GET
            # waiting for packets: the library let it wait for the next ping (25 s), and the
            # client with it. (When the server disconnects, its CLOSE packet ends the GET.)
            socket.queue.put_nowait(None)

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
