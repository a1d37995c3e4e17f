"""The remote control (namespace ``/remote``): a desktop page shows a link and its QR code; the
phone that opens it becomes that desktop's controller, and its input reaches that desktop only.

Either side may lose its connection, or its replica, and resume with its session secret within
the grace: the controller's input goes to the desktop's room (``desktop:<id>``), which the
desktop re-enters on whichever replica it resumes, and each replica watches the desktops of its
controllers to tell them when theirs is away, back, or gone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import segno
from redis.exceptions import RedisError
from switchboard.components import cancel
from switchboard.errors import InputError
from switchboard.namespace import RateLimit, ServiceNamespace
from switchboard.origins import address_key, peer_address
from switchboard.ratelimit import SharedLimit
from switchboard.service import Service
from switchboard.validation import connect_auth

from cursor_service.pairing import (
    Claim,
    Outcome,
    Pairing,
    PairingStore,
    Presence,
    normalise_code,
)
from cursor_service.settings import CursorSettings
from cursor_service.validation import (
    orientation,
    pairing_code,
    pairing_secret,
    position,
    press,
    session_secret,
)

log = logging.getLogger(__name__)

#: Moves and orientation go out at most this often per controller; the latest always goes.
COALESCE_S = 0.016
#: How often a replica looks where its controllers' desktops are.
WATCH_S = 1.0


def desktop_room(desktop: str) -> str:
    """Where a desktop's connection is, on whichever replica: what its controller sends to."""
    return f"desktop:{desktop}"


@dataclass(slots=True)
class Controller:
    desktop: str
    #: Its desktop's connection ended (or its replica died): it may come back within the grace.
    away: bool = False
    #: The latest move and orientation not sent yet, by event.
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_sent: float = 0.0
    flusher: asyncio.TimerHandle | None = None


def page_base(environ: dict[str, Any], configured: str | None) -> str:
    """scheme://host of the page the desktop was opened with, so that a phone on the LAN gets
    a link to the same address (behind the gateway, nginx sets the X-Forwarded-* headers)."""
    if configured:
        return configured.rstrip("/")
    scope = environ.get("asgi.scope", {})
    scheme = {"wss": "https", "ws": "http"}.get(scope.get("scheme", "http"), "http")
    scheme = environ.get("HTTP_X_FORWARDED_PROTO", scheme).split(",")[0].strip()
    host = environ.get("HTTP_X_FORWARDED_HOST", environ.get("HTTP_HOST", "localhost"))
    return f"{scheme}://{host.split(',')[0].strip()}"


def pairing_wire(pairing: Pairing) -> dict[str, Any]:
    # The link's secret travels in the fragment: it never reaches a server's or proxy's log.
    # It is named `pair`, not `token`: `#token=` and `auth.token` carry the sign-in token.
    url = f"{pairing.base}/remote/controller.html#pair={pairing.token}"
    return {
        "desktop": pairing.desktop,
        "url": url,
        "code": pairing.code,
        "qr": qr_data_uri(url),
        "expires": pairing.expires,
    }


def qr_data_uri(url: str) -> str:
    return str(segno.make(url, error="m").svg_data_uri(scale=6, border=2))


#: Tokens a desktop's `renew` costs: a new QR code and a new pairing in the store.
RENEW_COST = 50.0


class RemoteNamespace(ServiceNamespace):
    error_event = "remote_error"
    event_costs = {"renew": RENEW_COST}

    def __init__(
        self,
        service: Service,
        settings: CursorSettings,
        store: PairingStore,
        attempts: SharedLimit,
    ) -> None:
        rate = RateLimit(settings.remote_rate_per_second, settings.remote_rate_burst)
        super().__init__(service, "/remote", rate=rate)
        self.settings = settings
        self.store = store
        #: Wrong codes a client address may try (CURSORS_CODE_ATTEMPTS a minute).
        self.attempts = attempts
        #: This replica's desktops: sid -> desktop id (random, never the sid).
        self.desktops: dict[str, str] = {}
        self.controllers: dict[str, Controller] = {}
        self._watcher: asyncio.Task[None] | None = None

    # -- a service component: the watch over the controllers' desktops ----------------------

    async def start(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="remote")

    async def stop(self) -> None:
        await cancel(self._watcher)

    async def check(self) -> str | None:
        return None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                await self.watch()
            except (RedisError, OSError) as exc:
                self.metrics.redis_errors.inc()
                log.warning("remote: could not look where the desktops are: %s", exc)
            except Exception:
                log.exception("remote: watching the desktops failed")

    async def watch(self) -> None:
        """Tell each controller of this replica whether its desktop went away, came back or
        is gone (away longer than the grace: the pairing ends)."""
        grace = self.settings.resume_grace
        self.store.sweep(grace)
        watched = list(self.controllers.items())
        if not watched:
            return
        found = await self.store.presence([c.desktop for _, c in watched], grace)
        for (sid, controller), presence in zip(watched, found, strict=True):
            if self.controllers.get(sid) is not controller:
                continue  # it left meanwhile
            if presence is Presence.GONE:
                await self._end_controller(sid, "desktop_left")
            elif (presence is Presence.AWAY) != controller.away:
                controller.away = presence is Presence.AWAY
                if controller.away:
                    await self.emit("desktop_left", {"grace": grace}, to=sid)
                else:
                    await self.emit("desktop_back", {}, to=sid)

    # -- connecting ---------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        auth = connect_auth(auth)
        role = auth.get("role")
        if role == "desktop":
            # A screen needs a token granting the remote in AUTH_MODE=token; a phone is let in
            # by the pairing such a screen shows it (a link or code of minutes, used once).
            await self.admit(sid, auth, "remote")
            session = session_secret(auth.get("session"))
            if session is not None:
                await self._resume_desktop(sid, session)
            else:
                await self._connect_desktop(sid, environ)
        elif role == "controller":
            await self._connect_controller(sid, environ, auth)
        else:
            raise InputError("bad_role", "auth.role must be 'desktop' or 'controller'.")

    async def _connect_desktop(self, sid: str, environ: dict[str, Any]) -> None:
        desktop = secrets.token_urlsafe(9)
        session = secrets.token_urlsafe(16)
        base = page_base(environ, self.settings.public_url)
        pairing = await self._open(desktop, sid, base, session)
        await self._enter_desktop(sid, desktop)
        await self.emit("pairing", {**pairing, "session": session}, to=sid)

    async def _enter_desktop(self, sid: str, desktop: str) -> None:
        self.desktops[sid] = desktop
        await self.enter_room(sid, desktop_room(desktop))

    async def _resume_desktop(self, sid: str, session: str) -> None:
        """A desktop that lost its connection (or its replica) takes its pairing back: its
        controller, connected or within its grace, goes on steering it."""
        claim = await self.store.resume_desktop(session, sid, self.settings.resume_grace)
        if claim.outcome is not Outcome.PAIRED:
            raise InputError("bad_session", "This screen's pairing has ended; it gets a new one.")
        await self._enter_desktop(sid, claim.desktop)
        if claim.replaced_sid:
            await self.disconnect(claim.replaced_sid)
        if claim.controller:
            await self.emit(
                "controller_joined", {"controller": claim.controller, "resumed": True}, to=sid
            )
        elif claim.session:
            # Its controller left too and may still resume: the desktop waits as before.
            left_ago = max(0.0, time.time() - claim.controller_left / 1000)
            grace = max(0.0, self.settings.resume_grace - left_ago)
            await self.emit("controller_left", {"controller": "", "grace": grace}, to=sid)
        else:
            # Nothing paired: a fresh link and code (the old link's secret is not kept in clear).
            await self.emit("pairing", await self._open(claim.desktop, sid), to=sid)

    async def _open(
        self, desktop: str, sid: str, base: str | None = None, session: str = ""
    ) -> dict[str, Any]:
        """A new pairing link and code for ``desktop``; ``base`` defaults to the one it had."""
        pairing = await self.store.open(desktop, sid, self.settings.pairing_ttl, base, session)
        return {**pairing_wire(pairing), "ttl": self.settings.pairing_ttl}

    async def _connect_controller(
        self, sid: str, environ: dict[str, Any], auth: dict[str, Any]
    ) -> None:
        # Whatever the client sent is checked before any of it is used: a number, an empty or
        # a huge string is refused here, and never reaches the store.
        pair = pairing_secret(auth.get("pair"))
        code = pairing_code(auth.get("code"))
        resuming = session_secret(auth.get("session"))
        session = secrets.token_urlsafe(16)
        resumed = False
        if pair is not None:
            claim = await self.store.claim_token(pair, sid, session)
            if claim.outcome is not Outcome.PAIRED:
                raise InputError(
                    "bad_pair",
                    "This pairing link is unknown, used or expired: scan the code again.",
                )
        elif code is not None:
            claim = await self._claim_code(sid, environ, normalise_code(code), session)
        elif resuming is not None:
            session = resuming
            claim = await self.store.resume(session, sid, self.settings.resume_grace)
            if claim.outcome is not Outcome.PAIRED:
                raise InputError("bad_session", "This pairing has ended; scan the code again.")
            resumed = True
        else:
            raise InputError(
                "bad_auth",
                "A controller needs auth.pair (from its link), auth.code or auth.session.",
            )
        self.controllers[sid] = Controller(claim.desktop)
        if claim.replaced_sid:
            await self._end_controller(claim.replaced_sid, "replaced")
        grace = self.settings.resume_grace
        await self.emit(
            "paired", {"desktop": claim.desktop, "session": session, "grace": grace}, to=sid
        )
        await self.emit(
            "controller_joined",
            {"controller": sid, "resumed": resumed},
            to=desktop_room(claim.desktop),
        )

    async def _claim_code(
        self, sid: str, environ: dict[str, Any], code: str, session: str
    ) -> Claim:
        address = address_key(peer_address(environ))
        wait = await self.attempts.spend(address)
        if wait:
            raise InputError(
                "too_many_attempts",
                f"Too many wrong codes; try again in {math.ceil(wait)} s.",
                details={"retry_after": wait},
            )
        claim = await self.store.claim_code(code, sid, session, self.settings.code_guesses)
        if claim.outcome is Outcome.PAIRED:
            await self.attempts.give_back(address)  # only wrong codes count
            return claim
        await self.store.wrong_guess()
        if claim.outcome is Outcome.RETIRED:
            # Too many wrong guesses while this code was valid: the desktop gets a new one,
            # on whichever replica it is.
            renewed = await self._open(claim.desktop, claim.desktop_sid)
            await self.emit("pairing", renewed, to=desktop_room(claim.desktop))
        raise InputError("bad_code", "That code is wrong or has expired.")

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        if (desktop := self.desktops.pop(sid, None)) is not None:
            # Closed, reloaded, a lost connection or this replica stopping: all look alike
            # here. A paired desktop may resume within the grace; its controller is told it
            # is away, and unpaired once the grace is over.
            await self.store.desktop_gone(desktop, sid, self.settings.resume_grace)
        elif (controller_state := self.controllers.pop(sid, None)) is not None:
            if controller_state.flusher:
                controller_state.flusher.cancel()
            if await self.store.controller_gone(controller_state.desktop, sid):
                await self.emit(
                    "controller_left",
                    {"controller": sid, "grace": self.settings.resume_grace},
                    to=desktop_room(controller_state.desktop),
                )

    async def _end_controller(self, sid: str, reason: str) -> None:
        await self.emit("unpaired", {"reason": reason}, to=sid)
        await self.disconnect(sid)

    # -- the desktop's events -----------------------------------------------------------------

    def _desktop(self, sid: str, args: tuple[Any, ...]) -> str:
        desktop = self.desktops.get(sid)
        if desktop is None:
            raise InputError("wrong_role", "Only a desktop can do this.")
        if args:
            raise InputError("bad_arguments", "This event takes no arguments.")
        return desktop

    async def on_renew(self, sid: str, *args: Any) -> dict[str, Any]:
        desktop = self._desktop(sid, args)
        if await self.store.controller_of(desktop):
            raise InputError("paired", "A controller is paired: unpair it first.")
        return {"ok": True, **await self._open(desktop, sid)}

    async def on_unpair(self, sid: str, *args: Any) -> dict[str, Any]:
        desktop = self._desktop(sid, args)
        controller = await self.store.unpair(desktop)
        if controller:
            await self._end_controller(controller, "desktop_unpaired")
        return {"ok": True, **await self._open(desktop, sid)}

    # -- the controller's events --------------------------------------------------------------

    def _controller(self, sid: str) -> Controller:
        controller = self.controllers.get(sid)
        if controller is None:
            raise InputError("wrong_role", "Only a paired controller can do this.")
        if controller.away:
            raise InputError("desktop_away", "The screen lost its connection; wait for it.")
        return controller

    async def on_update(self, sid: str, *args: Any) -> dict[str, Any]:
        controller = self._controller(sid)
        if len(args) == 2:
            # The course's shape: update(desktopId, {x, y}).
            if args[0] != controller.desktop:
                raise InputError("not_paired", "This controller is not paired with that desktop.")
            args = args[1:]
        if len(args) != 1:
            raise InputError("bad_arguments", "update takes {x, y}, or (desktopId, {x, y}).")
        x, y = position(args[0])
        await self._coalesced(sid, controller, "update", {"x": x, "y": y})
        return {"ok": True}

    async def on_orientation(self, sid: str, *args: Any) -> dict[str, Any]:
        controller = self._controller(sid)
        if len(args) != 1:
            raise InputError("bad_arguments", "orientation takes {alpha, beta, gamma}.")
        await self._coalesced(sid, controller, "orientation", orientation(args[0]))
        return {"ok": True}

    async def on_press(self, sid: str, *args: Any) -> dict[str, Any]:
        controller = self._controller(sid)
        if len(args) != 1:
            raise InputError("bad_arguments", "press takes {button, down}.")
        event = press(args[0])
        # Never coalesced, never dropped; the move waiting to go goes first, to keep order.
        await self._flush(controller)
        # Acknowledged once the desktop has it: a desktop moving between replicas (or one
        # whose replica just died) leaves its room empty for a moment, and a press sent then
        # must not be taken for delivered. Presses are states (down, up): sent again, the same.
        confirmed = asyncio.get_running_loop().create_future()

        def confirm(*_answer: Any) -> None:
            if not confirmed.done():
                confirmed.set_result(True)

        await self.emit("press", event, to=desktop_room(controller.desktop), callback=confirm)
        try:
            await asyncio.wait_for(confirmed, self.settings.press_ack_seconds)
        except TimeoutError:
            raise InputError(
                "not_delivered", "The screen did not confirm this press; send it again."
            ) from None
        return {"ok": True}

    async def _coalesced(
        self, sid: str, controller: Controller, event: str, payload: dict[str, Any]
    ) -> None:
        controller.pending[event] = payload
        wait = controller.last_sent + COALESCE_S - time.monotonic()
        if wait <= 0:
            await self._flush(controller)
        elif controller.flusher is None:
            loop = asyncio.get_running_loop()
            controller.flusher = loop.call_later(
                wait, lambda: self.service.background(lambda: self._flush(controller), "flush")
            )

    async def _flush(self, controller: Controller) -> None:
        if controller.flusher is not None:
            controller.flusher.cancel()
            controller.flusher = None
        pending, controller.pending = controller.pending, {}
        if pending:
            controller.last_sent = time.monotonic()
        for event, payload in pending.items():
            await self.emit(event, payload, to=desktop_room(controller.desktop))
