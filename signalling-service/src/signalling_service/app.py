"""The signalling service: the course's ``clients``, ``peerOffer``, ``peerAnswer``, ``peerIce``
and ``signal`` events, relayed only within a room, with ``fromId`` set by the server, across
replicas; and the call page's names (``people``, ``name``) and camera and microphone state
(``media``). docs/protocol.md is the contract this module keeps."""

from __future__ import annotations

import logging
import math
import secrets
from typing import Any

from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from socketio import AsyncServer
from switchboard.auth import Identity
from switchboard.errors import InputError
from switchboard.hashing import digest
from switchboard.namespace import RateLimit, ServiceNamespace
from switchboard.origins import address_key, peer_address
from switchboard.ratelimit import MemoryLimit, RedisLimit, SharedLimit
from switchboard.service import Service
from switchboard.validation import connect_auth, name_token, one_argument, room_of

from signalling_service import validation
from signalling_service.echo import ECHO_ID, EchoPeers
from signalling_service.ice import ice_servers, turn_user
from signalling_service.roster import Claim, MemoryRoster, People, Person, RedisRoster, Roster
from signalling_service.settings import SignalSettings

log = logging.getLogger(__name__)

#: Room for a 64 KiB SDP and the event around it (issue 6); other services keep 64 KiB.
MAX_MESSAGE_BYTES = 80 * 1024
#: The check each relayed event's payload goes through.
PAYLOADS = {
    "peerOffer": lambda value: validation.description(value, ("offer",)),
    "peerAnswer": lambda value: validation.description(value, ("answer", "pranswer")),
    "peerIce": validation.candidate,
    "signal": validation.signal,
    "media": validation.media,
}


def user_of(identity: Identity) -> str:
    """The signed-in user a name belongs to: a digest of the token's ``sub``, the same on all
    its connections (the ``sub`` itself may be an email address: Redis never holds it)."""
    return digest(identity.sub)[:24]


def name_error(error: InputError) -> dict[str, Any]:
    """A refusal of a name, as the ``name_error`` event carries it."""
    return {**error.payload(), "event": "name"}


class Rooms:
    """Tells everyone in a room who is there: the course's ``clients`` event (ids), then
    ``people`` (the same, with the names they go by)."""

    def __init__(self, sio: AsyncServer, echo: EchoPeers | None) -> None:
        self.sio = sio
        self.echo = echo

    async def announce(self, room: str, people: People, *, clients: bool = True) -> None:
        """``clients`` and ``people`` to ``room``; only ``people`` when only names changed."""
        echo = {ECHO_ID: {"id": ECHO_ID, "echo": True}} if self.echo else {}
        if clients:
            await self.sio.emit(
                "clients", {**{sid: {"id": sid} for sid in people}, **echo}, room=room
            )
        named = {
            sid: {
                "id": sid,
                "name": person.name if person else None,
                "signed_in": bool(person and person.user),
            }
            for sid, person in people.items()
        }
        await self.sio.emit("people", {**named, **echo}, room=room)

    async def name_lost(self, sid: str, person: Person) -> None:
        error = InputError("taken", f"Your name {person.name!r} was taken while we were cut off.")
        await self.sio.emit("name_error", name_error(error), to=sid)


class SignalNamespace(ServiceNamespace):
    error_event = "signal_error"
    error_events = {"name": "name_error"}

    def __init__(
        self,
        service: Service,
        settings: SignalSettings,
        roster: Roster,
        rooms: Rooms,
        echo: EchoPeers | None,
        ice_limit: SharedLimit,
    ) -> None:
        super().__init__(service, rate=RateLimit(settings.rate_per_second, settings.rate_burst))
        self.settings = settings
        self.roster = roster
        self.rooms = rooms
        self.echo = echo
        self.ice_limit = ice_limit

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        auth = connect_auth(auth)
        room = room_of(auth, environ)
        identity = await self.admit(sid, auth, "signal", room)
        proof = name_token(auth.get("name_token"))
        # Without a name the sign-in could give, the person names itself like anyone.
        signed_name = identity.shown_name if identity else None
        # A name is not a condition of entry (the course's clients give none): one refused is
        # told on name_error, and the connection goes on without it. A signed-in user's is
        # the user's, and nobody else's.
        person: Person | None = None
        token = ""
        refused: InputError | None = None
        if identity is not None and signed_name is not None:
            person = Person(signed_name, validation.name_key(signed_name), user_of(identity))
        elif "name" in auth:
            try:
                name = validation.person_name(auth["name"])
            except InputError as error:
                refused = error
            else:
                token = secrets.token_urlsafe(16)
                person = Person(name, validation.name_key(name), proof=digest(token))
        # Should Redis fail on the way, ServiceNamespace refuses with `unavailable` and runs
        # on_disconnect, which forgets what was begun.
        claim = await self.roster.join(sid, room, person, digest(proof) if proof else "")
        if not claim.ok and person is not None:
            if person.user:
                raise InputError(
                    "taken",
                    f"Another signed-in user is called {person.name!r} here; ask for another name.",
                )
            refused = InputError("taken", f"The name {person.name!r} is taken here; pick another.")
            person = None
            claim = await self.roster.join(sid, room, None)
        await self.enter_room(sid, room)
        if person is not None:
            await self.tell_name(sid, person, token)
        if refused is not None:
            await self.emit("name_error", name_error(refused), to=sid)
        await self.settle(claim)
        await self.announce(room)

    async def tell_name(self, sid: str, person: Person, token: str) -> None:
        """``name``: the name ``sid`` goes by now, and the token that lets its tab take the
        name back on connecting again (a name given by hand)."""
        about: dict[str, Any] = {"id": sid, "signed_in": bool(person.user)}
        if token:
            about["token"] = token
        await self.emit("name", (person.name, about), to=sid)

    async def settle(self, claim: Claim) -> None:
        """Tell those a claim took a name from: a stale connection of the claimant's own tab
        goes; an anonymous one whose name a signed-in user took picks another."""
        for old in claim.replaced:
            error = InputError(
                "replaced", "Your name is now used from another connection of yours."
            )
            await self.emit("name_error", name_error(error), to=old)
            await self.disconnect(old)
        for old in claim.unnamed:
            error = InputError("taken", "A signed-in user has that name here; pick another.")
            await self.emit("name_error", name_error(error), to=old)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        if self.echo:
            await self.echo.hang_up(sid, "the caller left")
        try:
            room = await self.roster.leave(sid)
            if room is not None:
                await self.announce(room)
        except RedisError as exc:
            # The roster takes the peer off after a heartbeat, once Redis answers, and then
            # tells the room.
            self.metrics.redis_errors.inc()
            log.warning("signal: Redis failed as %s left: %s", sid, exc)

    async def announce(self, room: str, *, clients: bool = True) -> None:
        await self.rooms.announce(room, await self.roster.people(room), clients=clients)

    async def on_name(self, sid: str, *args: Any) -> dict[str, Any]:
        """``name``: go by another name in the room (or a first one)."""
        name = validation.person_name(one_argument(args))
        current = self.roster.persons.get(sid)
        if current is not None and current.user:
            raise InputError(
                "name_fixed",
                f"You are signed in as {current.name!r}: your name comes with your sign-in.",
            )
        if current is not None and current.name == name:
            await self.tell_name(sid, current, "")
            return {"ok": True, "name": name, "id": sid}
        token = secrets.token_urlsafe(16)
        person = Person(name, validation.name_key(name), proof=digest(token))
        claim = await self.roster.rename(sid, person)
        if not claim.ok:
            raise InputError("taken", f"The name {name!r} is taken here; pick another.")
        await self.tell_name(sid, person, token)
        await self.settle(claim)
        await self.announce(self.roster.rooms_of[sid], clients=False)
        return {"ok": True, "name": name, "id": sid, "token": token}

    async def on_iceServers(self, sid: str, *args: Any) -> dict[str, Any]:
        """The ``iceServers`` for this connection's next call: TURN credentials go only to a
        live connection, named after it, and only ``SIGNAL_ICE_PER_MINUTE`` an address."""
        if args:
            raise InputError("bad_arguments", f"iceServers takes no arguments, got {len(args)}")
        environ = self.server.get_environ(sid, self.namespace)
        wait = await self.ice_limit.spend(address_key(peer_address(environ)))
        if wait:
            raise InputError(
                "rate_limited",
                f"Too many calls from your address; try again in {math.ceil(wait)} s.",
                details={"retry_after": wait},
            )
        settings = self.settings
        return {
            "ok": True,
            "iceServers": ice_servers(settings, turn_user(self.identity(sid), sid)),
            "iceTransportPolicy": settings.ice_transport_policy,
            "ttl": settings.turn_ttl if settings.turn_urls else None,
        }

    async def on_peerOffer(self, sid: str, *args: Any) -> dict[str, Any]:
        return await self.relay("peerOffer", sid, args)

    async def on_peerAnswer(self, sid: str, *args: Any) -> dict[str, Any]:
        return await self.relay("peerAnswer", sid, args)

    async def on_peerIce(self, sid: str, *args: Any) -> dict[str, Any]:
        return await self.relay("peerIce", sid, args)

    async def on_signal(self, sid: str, *args: Any) -> dict[str, Any]:
        return await self.relay("signal", sid, args)

    async def on_media(self, sid: str, *args: Any) -> dict[str, Any]:
        """``media(peerId, {audio, video})``: our camera and microphone, for the one we call."""
        return await self.relay("media", sid, args)

    async def relay(self, event: str, sid: str, args: tuple[Any, ...]) -> dict[str, Any]:
        """``event(peerId, payload)`` from ``sid`` reaches peerId as
        ``event(peerId, payload, fromId)``, the course's order, with ``fromId`` ours to set."""
        if len(args) != 2:
            raise InputError("bad_arguments", f"{event} takes (peerId, payload), got {len(args)}")
        peer_id = validation.peer_id(args[0])
        payload = PAYLOADS[event](args[1])
        room = self.roster.rooms_of[sid]
        if peer_id == ECHO_ID and self.echo:
            await self.echo.receive(sid, event, payload)
            return {"ok": True}
        if peer_id == sid:
            raise self.peer_error(peer_id, "self", "That is you: call someone else.")
        if not await self.roster.present(room, peer_id):
            raise self.peer_error(
                peer_id, "unknown_peer", f"There is no {peer_id!r} in the room {room!r}."
            )
        await self.emit(event, (peer_id, payload, sid), to=peer_id)
        return {"ok": True}

    @staticmethod
    def peer_error(peer_id: str, reason: str, message: str) -> InputError:
        return InputError(
            reason, message, event="peer_error", details={"peerId": peer_id, "reason": reason}
        )


def create_service(settings: SignalSettings | None = None) -> Service:
    """Build the signalling service from ``settings`` (read from the environment when omitted)."""
    settings = settings or SignalSettings.from_env()
    service = Service(settings, max_message_bytes=MAX_MESSAGE_BYTES)
    echo: EchoPeers | None = None
    if settings.echo:

        async def send(event: str, to: str, args: tuple[Any, ...]) -> None:
            await service.sio.emit(event, args, to=to)

        echo = EchoPeers(settings, send, service.metrics.registry)
        service.add_component(echo)
    rooms = Rooms(service.sio, echo)
    roster: Roster = service.store(
        memory=MemoryRoster,
        redis=lambda redis: RedisRoster(redis, service.replica, rooms),
    )
    per_minute = settings.ice_per_minute
    ice_limit: SharedLimit = service.store(
        memory=lambda: MemoryLimit(per_minute / 60, per_minute),
        redis=lambda redis: RedisLimit(redis, "signal:ice:", per_minute / 60, per_minute),
    )
    service.sio.register_namespace(
        SignalNamespace(service, settings, roster, rooms, echo, ice_limit)
    )

    @service.http.get(f"{service.prefix}/ice-servers", tags=["signal"], status_code=410)
    async def get_ice_servers() -> JSONResponse:
        """Gone: TURN credentials go only to a live signalling connection, which asks with
        the socket.io event ``iceServers``."""
        message = "Ask for ICE servers over your signalling connection: emit iceServers."
        return JSONResponse({"ok": False, "error": "gone", "message": message}, 410)

    return service
