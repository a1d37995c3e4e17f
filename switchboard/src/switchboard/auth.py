"""Who may connect: the operator's backend signs tokens (JWTs), every service checks them the
same way (issue 15; docs/auth.md).

``AUTH_MODE=open`` (the default): anyone may connect, as before, except to a room whose name
starts with ``private-``, which needs a token that grants it. ``AUTH_MODE=token``: every
connection needs a valid token, and its grants say which rooms and apps it may use.

A token is a JWT signed with ``AUTH_SECRET`` (HS256) or by a key of the JWKS at
``AUTH_JWKS_URL`` (RS256, ES256, EdDSA), fetched once, kept, and fetched again when a token
names a key it does not hold (a rotation), at most once every :data:`JWKS_REFETCH` seconds.
``exp`` and ``sub`` are required; ``nbf``, ``iss`` (``AUTH_ISSUER``) and ``aud``
(``AUTH_AUDIENCE``) are checked, each time with ``AUTH_LEEWAY`` seconds of clock leeway.

Its claims: ``sub`` (who), ``name`` (the name shown, optional), and ``grants``::

    {"chat": ["team-*", "lobby"], "cursors": ["*"], "signal": ["call-42"],
     "remote": true, "ticker": true}

A room pattern is a room name, or a prefix ending in ``*``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from switchboard.errors import InputError
from switchboard.validation import display_name

log = logging.getLogger(__name__)

#: Rooms with this prefix need a token that grants them, whatever the mode.
PRIVATE_PREFIX = "private-"
#: The services whose grants are rooms, and those whose grant is being allowed at all.
ROOM_GRANTS = ("chat", "cursors", "signal")
APP_GRANTS = ("remote", "ticker")
#: Algorithms a JWKS key may sign with; HS256 is only ever checked with AUTH_SECRET.
ASYMMETRIC = ("RS256", "ES256", "EdDSA")
#: A token longer than this is refused unread.
TOKEN_MAX = 8192
#: The least time between two fetches of the JWKS (a token naming an unknown key id fetches it
#: again, but a flood of made-up ids must not become a flood of fetches).
JWKS_REFETCH = 30.0
JWKS_TIMEOUT = 5.0
#: Room patterns a token may carry per service.
PATTERNS_MAX = 100


def room_granted(patterns: tuple[str, ...], room: str) -> bool:
    """Whether ``room`` matches one of ``patterns`` (a name, or a prefix ending in ``*``)."""
    return any(
        pattern == room or (pattern.endswith("*") and room.startswith(pattern[:-1]))
        for pattern in patterns
    )


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token says the client is, and what it may use."""

    sub: str
    name: str | None
    #: Room patterns per service (``chat``, ``cursors``, ``signal``).
    rooms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The apps it may use (``remote``, ``ticker``).
    apps: frozenset[str] = frozenset()
    #: When the token expires (Unix seconds).
    expires: float = 0.0

    @property
    def shown_name(self) -> str | None:
        """The name the user is shown by: the token's ``name``, else its ``sub`` when that is a
        valid display name (``alice``), else none (an opaque id is no name to show)."""
        if self.name is not None:
            return self.name
        try:
            return display_name(self.sub)
        except InputError:
            return None

    def may_enter(self, service: str, room: str) -> bool:
        return room_granted(self.rooms.get(service, ()), room)

    def may_use(self, app: str) -> bool:
        return app in self.apps


def identity_of(claims: Mapping[str, Any]) -> Identity:
    """The identity in verified ``claims``; InputError ``token_invalid`` for a claim that is
    not what docs/auth.md says."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 1 <= len(sub) <= 255:
        raise InputError(
            "token_invalid", "The token's sub must be a string of 1 to 255 characters."
        )
    name = claims.get("name")
    if name is not None:
        try:
            name = display_name(name)
        except InputError as error:
            raise InputError("token_invalid", f"The token's name: {error.message}") from None
    grants = claims.get("grants", {})
    if not isinstance(grants, dict):
        raise InputError("token_invalid", "The token's grants must be an object.")
    rooms: dict[str, tuple[str, ...]] = {}
    for service in ROOM_GRANTS:
        patterns = grants.get(service, [])
        if (
            not isinstance(patterns, list)
            or len(patterns) > PATTERNS_MAX
            or not all(isinstance(p, str) and 1 <= len(p) <= 65 for p in patterns)
        ):
            raise InputError(
                "token_invalid",
                f"The token's grants.{service} must be a list of at most {PATTERNS_MAX} room "
                "names or prefixes ending in *.",
            )
        rooms[service] = tuple(patterns)
    apps = set()
    for app in APP_GRANTS:
        allowed = grants.get(app, False)
        if not isinstance(allowed, bool):
            raise InputError("token_invalid", f"The token's grants.{app} must be true or false.")
        if allowed:
            apps.add(app)
    return Identity(sub, name, rooms, frozenset(apps), float(claims["exp"]))


class Keys:
    """The JWKS at ``url``: fetched when first needed, kept, fetched again for a key id it does
    not hold (not more often than :data:`JWKS_REFETCH`)."""

    def __init__(self, url: str, refetch: float = JWKS_REFETCH) -> None:
        self.url = url
        self.refetch = refetch
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = -math.inf
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK:
        found = self._find(kid)
        if found is None:
            async with self._lock:
                found = self._find(kid)
                if found is None and time.monotonic() - self._fetched >= self.refetch:
                    await self._fetch()
                    found = self._find(kid)
        if found is None:
            raise InputError("token_invalid", "The token is signed by a key we do not know.")
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            # A JWKS of one key may be used without key ids.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        self._fetched = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=JWKS_TIMEOUT) as http:
                answer = await http.get(self.url)
                answer.raise_for_status()
                found = jwt.PyJWKSet.from_dict(answer.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("auth: the JWKS at %s could not be read: %s", self.url, exc)
            return
        self._keys = {
            str(key.key_id or index): key
            for index, key in enumerate(found.keys)
            if key.public_key_use in (None, "sig")
        }
        log.info("auth: %d keys from the JWKS at %s", len(self._keys), self.url)


class Verifier:
    """Checks tokens with what the settings give: a shared secret, a JWKS, or both."""

    def __init__(
        self,
        *,
        secret: str | None,
        jwks_url: str | None,
        issuer: str | None,
        audience: str | None,
        leeway: float,
        refetch: float = JWKS_REFETCH,
    ) -> None:
        self.secret = secret
        self.keys = Keys(jwks_url, refetch) if jwks_url else None
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    @property
    def configured(self) -> bool:
        return self.secret is not None or self.keys is not None

    async def verify(self, token: Any) -> Identity:
        """The identity ``token`` proves; InputError ``token_invalid`` or ``token_expired``."""
        if not isinstance(token, str) or not 1 <= len(token) <= TOKEN_MAX:
            raise InputError("token_invalid", f"A token is a string of at most {TOKEN_MAX} bytes.")
        if not self.configured:
            raise InputError("token_invalid", "This service accepts no tokens (no key is set).")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InputError("token_invalid", "The token is not a JWT.") from None
        algorithm = header.get("alg")
        key: Any
        if algorithm == "HS256" and self.secret is not None:
            key = self.secret
        elif algorithm in ASYMMETRIC and self.keys is not None:
            kid = header.get("kid")
            key = await self.keys.key(kid if isinstance(kid, str) else None)
        else:
            raise InputError("token_invalid", f"Tokens signed with {algorithm!r} are not accepted.")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self.audience is not None,
                    "verify_iss": self.issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise InputError("token_expired", "The token has expired; get a new one.") from None
        except jwt.PyJWTError as exc:
            raise InputError("token_invalid", f"The token is not valid: {exc}.") from None
        return identity_of(claims)


#: How long before its token expires a connection is told so (``token_expiring``), to send a
#: fresh one (``refresh``); a token that lives less than twice this is told half-way.
EXPIRY_NOTICE = 60.0

#: Called with a connection's sid: its token expires soon, or has expired.
OnExpiry = Callable[[str], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class Admission:
    """A connection let in with a token: who, to what, and its two timers."""

    identity: Identity
    grant: str
    room: str | None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


class Admissions:
    """The connections of a namespace that came with a token. Each is told ``expiring`` before
    its token expires and ``expired`` when it has (with AUTH_LEEWAY's grace), unless a fresh
    token was given meanwhile (:meth:`renew`)."""

    def __init__(self, leeway: float, expiring: OnExpiry, expired: OnExpiry) -> None:
        self.leeway = leeway
        self.expiring = expiring
        self.expired = expired
        self._admitted: dict[str, Admission] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, sid: str) -> Admission | None:
        return self._admitted.get(sid)

    def add(self, sid: str, identity: Identity, grant: str, room: str | None) -> None:
        self.drop(sid)
        admission = self._admitted[sid] = Admission(identity, grant, room)
        self._schedule(sid, admission)

    def renew(self, sid: str, identity: Identity) -> None:
        admission = self._admitted[sid]
        admission.identity = identity
        self._schedule(sid, admission)

    def drop(self, sid: str) -> None:
        admission = self._admitted.pop(sid, None)
        if admission is not None:
            for timer in admission.timers:
                timer.cancel()

    def _schedule(self, sid: str, admission: Admission) -> None:
        for timer in admission.timers:
            timer.cancel()
        loop = asyncio.get_running_loop()
        left = admission.identity.expires - time.time()
        notice = min(EXPIRY_NOTICE, left / 2)
        admission.timers = [
            loop.call_later(max(0.0, left - notice), self._run, self.expiring, sid),
            loop.call_later(max(0.0, left + self.leeway), self._run, self.expired, sid),
        ]

    def _run(self, callback: OnExpiry, sid: str) -> None:
        task = asyncio.get_running_loop().create_task(callback(sid), name=f"auth:{sid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
