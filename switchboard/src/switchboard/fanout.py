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
from typing import Any

import engineio
import socketio
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as eio_asgi
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from socketio import packet

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
    "engineio.async_socket.AsyncSocket": ("queue", "upgraded"),
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
    recipients = participants(manager.server, room, namespace)
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


class GuardedWebSocket(eio_asgi.WebSocket):  # type: ignore[misc]
    """python-engineio's ASGI websocket, but a text frame that is no engine.io packet (empty,
    or not starting with a packet type) ends the connection as a client's close would: the
    library then cleans up after it as usual."""

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
    random id. A client that sets the header itself only names its own session."""

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
        if socket is not None and socket.upgraded:
            # The library keeps a websocket open until its client answers the close (or the
            # ping times out, 45 s later): ending its writer closes it now.
            socket.queue.put_nowait(None)
