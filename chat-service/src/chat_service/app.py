"""The chat service: the course's ``name`` and ``message`` events, made safe and shared by
replicas. docs/protocol.md is the contract this module keeps."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from redis.exceptions import RedisError
from socketio import AsyncServer
from switchboard.errors import InputError
from switchboard.fanout import FanoutRedisManager, delivery
from switchboard.hashing import digest
from switchboard.health import READY_TIMEOUT
from switchboard.namespace import RateLimit, ServiceNamespace
from switchboard.service import Service
from switchboard.validation import connect_auth, name_token, one_argument, room_of

from chat_service import validation
from chat_service.presence import Roster
from chat_service.settings import ChatSettings
from chat_service.store import (
    ChatStore,
    Member,
    MemoryChatStore,
    RedisChatStore,
    Session,
    member_id,
)
from chat_service.validation import id_order

log = logging.getLogger(__name__)

#: Seconds of messages sent again before the point a client says it got to: messages from
#: different replicas reach a client in the order they were published, not always in the order
#: of their ids (one a replica stored first may arrive after a later one of another replica's),
#: so "everything after my last id" could miss one; and the clocks of a replica and of Redis
#: (which dates messages) may differ. Clients drop the ids they hold.
REORDER_WINDOW = 5.0


def rewound(message_id: str) -> str:
    """The id ``REORDER_WINDOW`` before ``message_id``: where a resumed history starts."""
    ms, _ = id_order(message_id)
    return f"{max(0, ms - int(REORDER_WINDOW * 1000))}-0"


class ChatNamespace(ServiceNamespace):
    error_event = "chat_error"
    error_events = {"name": "name_error"}

    def __init__(self, service: Service, store: ChatStore, settings: ChatSettings) -> None:
        super().__init__(service, rate=RateLimit(settings.rate_per_second, settings.rate_burst))
        self.store = store
        self.settings = settings

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        auth = connect_auth(auth)
        room = room_of(auth, environ)
        identity = await self.admit(sid, auth, "chat", room)
        last_id = validation.message_id(auth.get("last_id"))
        proof = name_token(auth.get("name_token"))
        signed_name = validation.signed_in_name(identity) if identity else None
        # Should Redis fail on the way, ServiceNamespace refuses with `unavailable` and runs
        # on_disconnect, which forgets what was begun.
        user = member_id(identity.sub) if identity else ""
        await self.store.join(sid, room, digest(proof) if proof else "", user)
        if signed_name is not None:
            joined, rev = await self._claim_signed_in(sid, signed_name)
            # First, so that the client knows its own messages in the history that follows.
            await self.emit("name", (joined.name, {"id": joined.id, "rev": rev}), to=sid)
        # In the room before its roster is read: any change after the read reaches it (one
        # from before may too, which it skips by its rev).
        await self.enter_room(sid, room)
        roster = await self.store.roster(room)
        await self.emit("users", roster.wire(), to=sid)
        await self.send_history(room, last_id, to=sid)

    async def _claim_signed_in(self, sid: str, name: str) -> tuple[Member, int]:
        """A signed-in user's connection takes the user's name (the token's): shared by its
        connections, taken from an anonymous connection that holds it, refused (``taken``)
        while another signed-in user holds it. The member, and the rev of its coming."""
        claimed = await self.store.claim_user(sid, name, validation.nickname_key(name))
        if not claimed.ok:
            raise InputError(
                "taken", f"Another signed-in user is called {name!r} here; ask for another name."
            )
        if claimed.replaced:
            error = InputError("taken", f"{name!r} belongs to a signed-in user; pick another.")
            await self.emit("name_error", {**error.payload(), "event": "name"}, to=claimed.replaced)
            await self.disconnect(claimed.replaced)
        return self._session(sid).member(sid, claimed.connections), claimed.rev

    async def send_history(self, room: str, after: str | None, *, to: str) -> None:
        """``history``: the room's messages after ``after`` (its last ones when None), with
        those of the ``REORDER_WINDOW`` before it, which the client may lack although it
        holds ``after``; ``complete`` tells of what came after ``after``."""
        history = await self.store.history(room, after)
        messages = history.messages
        if after is not None:
            earlier = await self.store.history(room, rewound(after))
            held = {message.id for message in messages}
            window = [m for m in earlier.messages if m.id not in held]
            messages = sorted([*window, *messages], key=lambda m: id_order(m.id))
        await self.emit(
            "history",
            (
                [m.wire() for m in messages],
                {"room": room, "after": after, "complete": history.complete},
            ),
            to=to,
        )

    async def catch_up(self, since: float) -> None:
        """This replica heard no broadcast from ``since`` (its Redis listener was cut off):
        every room it has clients in gets who is there now (``users``: the joins and leaves it
        missed) and the messages stored from a little before then, as ``history`` (clients
        drop the ones they hold)."""
        after = f"{int(since * 1000)}-0"
        for room in list(self.occupants):
            roster = await self.store.roster(room)
            await self.emit("users", roster.wire(), to=room)
            await self.send_history(room, after, to=room)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        # The store tells the room (presence), unless the connection was never named.
        try:
            await self.store.leave(sid)
        except RedisError:
            # Forgotten here all the same; the store removes the name and the presence
            # after a heartbeat, once Redis answers (no ghost in `users`), and tells the room.
            self.metrics.redis_errors.inc()

    async def on_name(self, sid: str, *args: Any) -> dict[str, Any]:
        name = validation.nickname(one_argument(args))
        key = validation.nickname_key(name)
        session = self._session(sid)
        old = session.name
        if name == old:
            await self.emit("name", (name, {"id": session.user or sid}), to=sid)
            return {"ok": True, "name": name, "id": session.user or sid}
        if session.user:
            raise InputError(
                "name_fixed", f"You are signed in as {old!r}: your name comes with your sign-in."
            )
        # The token lets this client take the name back from a connection of its own that the
        # server has not yet seen drop (a phone changing networks), by sending it on connecting.
        token = secrets.token_urlsafe(16)
        claimed = await self.store.claim(sid, name, key, digest(token))
        if not claimed.ok:
            raise InputError("taken", f"The name {name!r} is taken; pick another.")
        if claimed.replaced:
            await self._replace(claimed.replaced, name)
        # The room hears of it (a rename too: the id's new name) from the store's presence;
        # the rev tells the client which changes of presence came before its name.
        await self.emit("name", (name, {"id": sid, "rev": claimed.rev}), to=sid)
        return {"ok": True, "name": name, "id": sid, "token": token}

    def _session(self, sid: str) -> Session:
        session = self.store.session(sid)
        if session is None:  # an event is only dispatched to a connection that joined
            raise InputError("internal", "This connection has no session.")
        return session

    async def _replace(self, old_sid: str, name: str) -> None:
        """The client came back on a new connection: its old one goes, on whichever replica."""
        error = InputError("replaced", f"{name!r} is now used from another connection of yours.")
        await self.emit("name_error", {**error.payload(), "event": "name"}, to=old_sid)
        await self.disconnect(old_sid)

    async def on_message(self, sid: str, *args: Any) -> dict[str, Any]:
        text = validation.message_text(one_argument(args))
        session = self._session(sid)
        if not session.name:
            raise InputError("no_name", "Pick a name before you send messages.")
        message = await self.store.append(session.room, session.member(sid), text)
        with delivery() as sent:
            await self.emit(
                "message",
                (message.sender.author(), message.text, {"id": message.id, "ts": message.ts}),
                room=session.room,
            )
        ack = {"ok": True, "id": message.id, "ts": message.ts}
        # Stored, and delivered on this replica; the others get it when Redis takes it again.
        return {**ack, "delayed": True} if sent.delayed else ack


class Announcements:
    """What a store tells clients: presence once a tick, and what the Redis store learns after
    a heartbeat."""

    def __init__(self, sio: AsyncServer) -> None:
        self.sio = sio

    async def presence(self, room: str, diff: dict[str, Any]) -> None:
        await self.sio.emit("presence", diff, room=room)

    async def users(self, room: str, roster: Roster) -> None:
        await self.sio.emit("users", roster.wire(), room=room)

    async def heard_up_to_now(self) -> None:
        if isinstance(self.sio.manager, FanoutRedisManager):
            await self.sio.manager.hear_up_to_now(READY_TIMEOUT)

    async def name_lost(self, sid: str, session: Session) -> None:
        name = session.name
        error = InputError("taken", f"Your name {name!r} was taken while we were cut off.")
        await self.sio.emit("name_error", {**error.payload(), "event": "name"}, to=sid)
        if session.user:
            # A signed-in connection has no other name to take: it goes (and its leaving
            # tells the room).
            await self.sio.disconnect(sid)


def create_service(settings: ChatSettings | None = None) -> Service:
    """Build the chat service from ``settings`` (read from the environment when omitted)."""
    settings = settings or ChatSettings.from_env()
    service = Service(settings)
    size, ttl = settings.history_size, settings.history_ttl
    announcements = Announcements(service.sio)
    store: ChatStore = service.store(
        memory=lambda: MemoryChatStore(
            size,
            ttl,
            settings.history_rooms,
            herald=announcements,
            presence_interval=settings.presence_interval,
            list_max=settings.presence_list_max,
        ),
        redis=lambda redis: RedisChatStore(
            redis,
            service.replica,
            announcements,
            acked=service.acked_writes,
            history_size=size,
            history_ttl=ttl,
            history_rooms=settings.history_rooms,
            presence_interval=settings.presence_interval,
            list_max=settings.presence_list_max,
        ),
    )
    namespace = ChatNamespace(service, store, settings)
    service.sio.register_namespace(namespace)
    service.on_heard_again(namespace.catch_up)
    return service
