"""The namespace base every service's namespaces extend: every inbound event counted, refusals
sent one way, nothing a client sends can crash the service or see a traceback; each accepted
connection counted and given the token bucket its service declares."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import socketio
from redis.exceptions import RedisError

from switchboard.auth import PRIVATE_PREFIX, Admissions, Identity
from switchboard.errors import InputError
from switchboard.ratelimit import TokenBucket, spend
from switchboard.validation import one_argument

if TYPE_CHECKING:
    from switchboard.service import Service

log = logging.getLogger(__name__)


#: Event names socket.io gives a meaning of its own, on the server or in its clients. A client
#: that sends one as an event is refused: it never reaches a handler.
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What one connection may send: ``per_second`` events on average, ``burst`` at once.
    Each refused event is answered (its ack), but its error event goes out at most once every
    ``tell_every`` seconds when that is set: a client over the limit at 200 moves a second
    must not get 200 errors a second back."""

    per_second: float
    burst: float
    tell_every: float = 0.0


@dataclass(slots=True)
class Connection:
    """What the namespace keeps of an accepted connection."""

    #: Its token bucket; None without a rate limit.
    bucket: TokenBucket | None
    #: When it was last sent a ``rate_limited`` error event (monotonic seconds).
    told: float = -math.inf


def refusal(error: InputError) -> Exception:
    """For a connect handler to raise: socket.io's ``connect_error`` carries
    ``{message, data}``, and ``data`` is our usual error object."""
    refused: Exception = socketio.exceptions.ConnectionRefusedError(error.message, error.payload())
    return refused


class ServiceNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """A namespace whose handlers may raise :class:`InputError`.

    Every inbound event is counted, an event with no handler is refused, and an unexpected
    exception is logged here and answered with an ``internal`` error: nothing a client sends
    can crash the service or see a traceback.
    """

    #: The event that carries refusals to the client (``chat_error`` for chat).
    error_event = "error"
    #: Events whose refusals travel on an event of their own (chat's ``name_error``).
    error_events: dict[str, str] = {}
    #: Tokens an event costs, when not 1: what is dear to serve (a new pairing code).
    event_costs: dict[str, float] = {}

    def __init__(
        self, service: Service, namespace: str = "/", *, rate: RateLimit | None = None
    ) -> None:
        super().__init__(namespace)
        self.service = service
        self.metrics = service.metrics
        self.rate = rate
        #: The connections this namespace accepted: made when a connect handler accepts,
        #: dropped on disconnect.
        self.connections: dict[str, Connection] = {}
        #: The connections that came with a token: who, and when it expires (:meth:`admit`).
        self.admissions = Admissions(
            service.settings.auth_leeway, self._token_expiring, self._token_expired
        )
        #: This process's rooms and their members, and each member's rooms, for the caps.
        self.occupants: dict[str, set[str]] = {}
        self._rooms_of: dict[str, set[str]] = {}

    def throttle(self, sid: str, event: str) -> None:
        """Take the tokens one ``event`` of ``sid`` costs, or refuse it with ``rate_limited``."""
        connection = self.connections.get(sid)
        if connection is not None and connection.bucket is not None:
            spend(connection.bucket, self.event_costs.get(event, 1.0))

    async def trigger_event(self, event: Any, *args: Any) -> Any:
        sid = args[0]
        # The library calls the lifecycle handlers while the connection is connecting or
        # disconnecting; an event a client sends arrives only while it is connected.
        lifecycle = not self.server.manager.is_connected(sid, self.namespace)
        if event == "connect" and lifecycle:
            return await self._connect(*args)
        if event == "disconnect" and lifecycle:
            self._vacate(sid)
            self.admissions.drop(sid)
            if sid not in self.connections:
                return None  # never accepted: nothing of it to forget
            del self.connections[sid]
            self.metrics.connected_clients.dec()
            return await super().trigger_event(event, *args)
        # The name refusals carry, and the label the metrics count the event under.
        known = isinstance(event, str) and event.isidentifier()
        reserved = known and event in RESERVED_EVENTS
        handler = getattr(self, f"on_{event}", None) if known and not reserved else None
        name = event if reserved or handler is not None else "(unknown)"
        self.metrics.received("(reserved)" if reserved else name)
        try:
            # Every event spends tokens, the refused ones too: a flood is a flood.
            self.throttle(sid, name)
            if reserved:
                raise InputError("reserved_event", f"{event!r} is not an event to send")
            if handler is None:
                raise InputError("unknown_event", f"there is no event {repr(event)[:40]}")
            return await handler(*args)
        except InputError as error:
            return await self.refuse(sid, name, error)
        except RedisError as exc:
            self.metrics.redis_errors.inc()
            log.warning("%s: Redis failed while handling %r: %s", self.service.name, name, exc)
            return await self.refuse(
                sid,
                name,
                InputError("unavailable", "The service's storage is unavailable; try again."),
            )
        except Exception:
            log.exception("%s: %r handler failed", self.service.name, name)
            return await self.refuse(
                sid, name, InputError("internal", "Something went wrong on our side.")
            )

    async def _connect(self, *args: Any) -> Any:
        """A connection refused for a reason the client can act on, never a hung handshake:
        storage failures and our own bugs become refusals too."""
        try:
            accepted = await super().trigger_event("connect", *args)
        except InputError as error:
            self.metrics.rejected("connect", error.code)
            await self._forget(args[0])
            raise refusal(error) from None
        except socketio.exceptions.ConnectionRefusedError:
            await self._forget(args[0])
            raise
        except RedisError as exc:
            self.metrics.redis_errors.inc()
            log.warning("%s: refusing a connection, Redis failed: %s", self.service.name, exc)
            await self._forget(args[0])
            unavailable = InputError("unavailable", "The service's storage is unavailable.")
            raise refusal(unavailable) from None
        except Exception:
            log.exception("%s: connect handler failed", self.service.name)
            await self._forget(args[0])
            raise refusal(InputError("internal", "Something went wrong on our side.")) from None
        if accepted is not False:
            rate = self.rate
            bucket = TokenBucket(rate.per_second, rate.burst) if rate else None
            self.connections[args[0]] = Connection(bucket)
            self.metrics.connected_clients.inc()
        return accepted

    async def admit(
        self, sid: str, auth: Mapping[str, Any], grant: str, room: str | None = None
    ) -> Identity | None:
        """Let ``sid`` in, to ``room`` of the service ``grant`` names (``chat``, ``cursors``,
        ``signal``) or to the app ``grant`` (``remote``, ``ticker``) when ``room`` is None, as
        AUTH_MODE and its token (``auth.token``) allow; who it is, or None for anyone (open
        mode, no token). Refusals: ``token_required``, ``token_invalid``, ``token_expired``,
        ``room_forbidden``, ``app_forbidden``."""
        token = auth.get("token")
        private = room is not None and room.startswith(PRIVATE_PREFIX)
        closed = self.service.settings.auth_mode == "token"
        if token is None:
            if closed:
                raise InputError("token_required", "This service needs a token: sign in first.")
            if private:
                raise InputError("token_required", f"The room {room!r} is private: sign in.")
            return None
        identity = await self.service.verifier.verify(token)
        self._check_grants(identity, grant, room)
        self.admissions.add(sid, identity, grant, room)
        return identity

    def identity(self, sid: str) -> Identity | None:
        """Who ``sid`` is, if it came with a token."""
        admission = self.admissions.get(sid)
        return admission.identity if admission is not None else None

    def _check_grants(self, identity: Identity, grant: str, room: str | None) -> None:
        closed = self.service.settings.auth_mode == "token"
        if room is not None and (closed or room.startswith(PRIVATE_PREFIX)):
            if not identity.may_enter(grant, room):
                raise InputError("room_forbidden", f"Your token does not let you into {room!r}.")
        elif room is None and closed and not identity.may_use(grant):
            raise InputError("app_forbidden", f"Your token does not let you use the {grant}.")

    async def on_refresh(self, sid: str, *args: Any) -> dict[str, Any]:
        """``refresh``: a fresh token for this connection (its user's, granting what it uses),
        before the one it came with expires; acked with the new expiry."""
        admission = self.admissions.get(sid)
        if admission is None:
            raise InputError("token_invalid", "This connection came without a token.")
        identity = await self.service.verifier.verify(one_argument(args))
        if identity.sub != admission.identity.sub:
            raise InputError("token_invalid", "A fresh token must be for the same user.")
        self._check_grants(identity, admission.grant, admission.room)
        self.admissions.renew(sid, identity)
        return {"ok": True, "expires": identity.expires}

    async def _token_expiring(self, sid: str) -> None:
        admission = self.admissions.get(sid)
        if admission is not None:
            await self.emit("token_expiring", {"expires": admission.identity.expires}, to=sid)

    async def _token_expired(self, sid: str) -> None:
        """The token expired with no fresh one: told why, then disconnected."""
        if self.admissions.get(sid) is None:
            return
        self.admissions.drop(sid)
        error = InputError("token_expired", "Your token expired; sign in again.")
        await self.emit(self.error_event, {**error.payload(), "event": "refresh"}, to=sid)
        await self.disconnect(sid)

    async def enter_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        """Put ``sid`` in ``room``, within this process's caps (MAX_ROOMS, MAX_ROOM_MEMBERS)."""
        settings = self.service.settings
        members = self.occupants.get(room)
        if members is None:
            if len(self.occupants) >= settings.max_rooms:
                raise InputError("too_many_rooms", "The service holds all the rooms it can.")
            members = self.occupants[room] = set()
        elif sid not in members and len(members) >= settings.max_room_members:
            raise InputError("room_full", f"The room {room!r} is full.")
        members.add(sid)
        self._rooms_of.setdefault(sid, set()).add(room)
        await super().enter_room(sid, room, namespace)

    async def leave_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        self._vacate(sid, room)
        await super().leave_room(sid, room, namespace)

    def _vacate(self, sid: str, room: str | None = None) -> None:
        """Take ``sid`` out of ``room`` (of every room when None) in the caps' count."""
        rooms = self._rooms_of.get(sid, set())
        for left in [room] if room is not None else list(rooms):
            rooms.discard(left)
            members = self.occupants.get(left)
            if members is not None:
                members.discard(sid)
                if not members:
                    del self.occupants[left]
        if not rooms:
            self._rooms_of.pop(sid, None)

    async def _forget(self, sid: str) -> None:
        """Undo what a refused connect had begun: python-socketio runs no disconnect handler
        for a connection it never accepted, so ours runs here (every one copes with a
        connection it knows nothing or only part of)."""
        self._vacate(sid)
        self.admissions.drop(sid)
        try:
            await super().trigger_event("disconnect", sid, "connect refused")
        except Exception as exc:
            log.warning("%s: forgetting a refused connection failed: %r", self.service.name, exc)

    async def refuse(self, sid: str, event: str, error: InputError) -> dict[str, Any]:
        self.metrics.rejected(event, error.code)
        payload = error.payload()
        if error.code == "rate_limited" and not self._tell(sid):
            return payload
        channel = error.event or self.error_events.get(event, self.error_event)
        await self.emit(channel, {**payload, "event": event}, to=sid)
        return payload

    def _tell(self, sid: str) -> bool:
        """Whether a ``rate_limited`` refusal of ``sid`` gets its error event now."""
        connection = self.connections.get(sid)
        if self.rate is None or connection is None:
            return True
        now = time.monotonic()
        if now - connection.told < self.rate.tell_every:
            return False
        connection.told = now
        return True
