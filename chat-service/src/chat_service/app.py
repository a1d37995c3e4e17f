"""The chat service: the course's ``name`` and ``message`` events, made safe and shared by
replicas. docs/protocol.md is the contract this module keeps."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from redis.exceptions import RedisError
from switchboard.errors import InputError
from switchboard.hashing import digest
from switchboard.namespace import RateLimit, ServiceNamespace
from switchboard.service import Service
from switchboard.validation import connect_auth, one_argument, room_of

from chat_service import validation
from chat_service.settings import ChatSettings
from chat_service.store import ChatStore, Member, MemoryChatStore, RedisChatStore

log = logging.getLogger(__name__)


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
        last_id = validation.message_id(auth.get("last_id"))
        proof = validation.name_token(auth.get("name_token"))
        try:
            await self.store.join(sid, room, digest(proof) if proof else "")
            await self.enter_room(sid, room)
            members = await self.store.members(room)
            history = await self.store.history(room, last_id)
        except RedisError:
            # Forget the half-made session; ServiceNamespace refuses with `unavailable`.
            self.store.sessions.pop(sid, None)
            raise
        await self.emit("users", [m.wire() for m in members], to=sid)
        await self.emit(
            "history",
            (
                [m.wire() for m in history.messages],
                {"room": room, "after": last_id, "complete": history.complete},
            ),
            to=sid,
        )

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        try:
            session = await self.store.leave(sid)
        except RedisError:
            # Our heartbeat keeps the entry until this replica stops; the claim script also
            # checks that the owner's session still exists, so the name is not stuck.
            self.metrics.redis_errors.inc()
            session = self.store.sessions.pop(sid, None)
        if session and session.name:
            await self.emit("user_left", Member(sid, session.name).wire(), room=session.room)

    async def on_name(self, sid: str, *args: Any) -> dict[str, Any]:
        self.throttle(sid)
        name = validation.nickname(one_argument(args))
        key = validation.nickname_key(name)
        session = self.store.sessions[sid]
        old = session.name
        if name == old:
            await self.emit("name", name, to=sid)
            return {"ok": True, "name": name}
        # The token lets this client take the name back from a connection of its own that the
        # server has not yet seen drop (a phone changing networks), by sending it on connecting.
        token = secrets.token_urlsafe(16)
        claimed = await self.store.claim(sid, name, key, digest(token))
        if not claimed.ok:
            raise InputError("taken", f"The name {name!r} is taken; pick another.")
        if claimed.replaced:
            await self._replace(claimed.replaced, name)
        await self.emit("name", name, to=sid)
        if old:
            await self.emit("user_left", Member(sid, old).wire(), room=session.room)
        await self.emit("user_joined", Member(sid, name).wire(), room=session.room)
        return {"ok": True, "name": name, "token": token}

    async def _replace(self, old_sid: str, name: str) -> None:
        """The client came back on a new connection: its old one goes, on whichever replica."""
        error = InputError("replaced", f"{name!r} is now used from another connection of yours.")
        await self.emit("name_error", {**error.payload(), "event": "name"}, to=old_sid)
        await self.disconnect(old_sid)

    async def on_message(self, sid: str, *args: Any) -> dict[str, Any]:
        self.throttle(sid)
        text = validation.message_text(one_argument(args))
        session = self.store.sessions[sid]
        if not session.name:
            raise InputError("no_name", "Pick a name before you send messages.")
        message = await self.store.append(session.room, Member(sid, session.name), text)
        await self.emit(
            "message",
            (message.sender.wire(), message.text, {"id": message.id, "ts": message.ts}),
            room=session.room,
        )
        return {"ok": True, "id": message.id, "ts": message.ts}

    async def announce_departed(self, departed: list[tuple[str, Member]]) -> None:
        for room, member in departed:
            await self.emit("user_left", member.wire(), room=room)

    async def name_lost(self, sid: str, name: str) -> None:
        error = InputError("taken", f"Your name {name!r} was taken while we were cut off.")
        await self.emit("name_error", {**error.payload(), "event": "name"}, to=sid)
        room = self.store.sessions[sid].room
        await self.emit("user_left", Member(sid, name).wire(), room=room)


def create_service(settings: ChatSettings | None = None) -> Service:
    """Build the chat service from ``settings`` (read from the environment when omitted)."""
    settings = settings or ChatSettings.from_env()
    service = Service(settings)
    store: ChatStore
    if service.redis is not None:
        redis_store = RedisChatStore(
            service.redis,
            replica_id=service.replica_id,
            history_size=settings.history_size,
            history_ttl=settings.history_ttl,
        )
        redis_store.heartbeat = service.add_heartbeat(RedisChatStore.prefix, redis_store.on_beat)
        store = redis_store
    else:
        store = MemoryChatStore(settings.history_size, settings.history_ttl)
    namespace = ChatNamespace(service, store, settings)
    if isinstance(store, RedisChatStore):
        store.on_departed = namespace.announce_departed
        store.on_name_lost = namespace.name_lost
    service.add_component(store)
    service.sio.register_namespace(namespace)
    return service
