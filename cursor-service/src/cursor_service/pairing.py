"""Pairings of desktops with controllers: in memory, or in Redis for replicas.

A desktop gets a token (128 random bits, for the QR code's link) and a short code (to type),
both single use and expiring together. Claiming either pairs a controller and gives it a
session secret to resume with after losing its connection, within a grace period. The desktop
has a session secret of its own, to resume the same way: a pairing outlives a replica that dies
or restarts under either side. Only hashes of tokens and sessions are stored. Every write that
must be atomic is one Lua script.

Redis layout (keys under ``remote:``): ``desktop:<id>``, a hash (sid, rid, token, code,
expires, guesses_at, controller, session, left, dsession, dleft); ``token:<sha256>``,
``code:<code>``, ``session:<sha256>`` and ``dsession:<sha256>`` (the desktop's), each naming a
desktop; ``guesses``, wrong codes seen by the cluster. A desktop is away from its connection's
end (``dleft``) or, when its replica died, from when a reader first saw that; it is gone once
away longer than the grace.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from redis.asyncio import Redis
from switchboard.components import Passive
from switchboard.hashing import digest

#: RFC 8628's alphabet for codes people type: no vowels (no words), no look-alikes.
CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
CODE_LENGTH = 8
#: A desktop record outlives its page by at most this much, should nobody close it.
DESKTOP_TTL_MS = 86_400_000


def new_token() -> str:
    return secrets.token_urlsafe(16)  # 128 bits


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(text: str) -> str:
    return "".join(ch for ch in text.upper() if not ch.isspace() and ch != "-")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Pairing:
    desktop: str
    token: str
    code: str
    expires: int
    #: scheme://host the desktop page was opened with, for the controller's link.
    base: str


class Presence(Enum):
    """Where a paired controller's desktop is."""

    HERE = "here"
    #: Its connection ended (or its replica died) within the grace: it may come back.
    AWAY = "away"
    #: Closed, or away longer than the grace.
    GONE = "gone"


class Outcome(Enum):
    PAIRED = "paired"
    #: Unknown, used, expired, or its desktop is gone or already paired.
    MISSING = "missing"
    #: Right code, but too many wrong ones were tried while it was valid: replaced.
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: Outcome
    desktop: str = ""
    desktop_sid: str = ""
    #: The controller connection a resume replaced, to be disconnected.
    replaced_sid: str = ""


@dataclass(frozen=True, slots=True)
class DesktopClaim:
    """A desktop resuming with its session: its id, its controller (connected, or within its
    grace since ``controller_left``, ms since epoch), and the desktop connection it replaced."""

    outcome: Outcome
    desktop: str = ""
    controller: str = ""
    session: bool = False
    controller_left: int = 0
    replaced_sid: str = ""


class PairingStore(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def check(self) -> str | None: ...
    async def open(
        self,
        desktop: str,
        desktop_sid: str,
        ttl: float,
        base: str | None = None,
        session: str = "",
    ) -> Pairing: ...
    async def close(self, desktop: str) -> str: ...
    async def desktop_gone(self, desktop: str, desktop_sid: str, grace: float) -> None: ...
    async def resume_desktop(
        self, session: str, desktop_sid: str, grace: float
    ) -> DesktopClaim: ...
    async def presence(self, desktops: list[str], grace: float) -> list[Presence]: ...
    def sweep(self, grace: float) -> None: ...
    async def claim_token(self, token: str, controller_sid: str, session: str) -> Claim: ...
    async def claim_code(
        self, code: str, controller_sid: str, session: str, guesses: int
    ) -> Claim: ...
    async def resume(self, session: str, controller_sid: str, grace: float) -> Claim: ...
    async def controller_gone(self, desktop: str, controller_sid: str) -> bool: ...
    async def unpair(self, desktop: str) -> str: ...
    async def controller_of(self, desktop: str) -> str: ...
    async def wrong_guess(self) -> None: ...


@dataclass(slots=True)
class _Desktop:
    sid: str
    base: str
    token: str = ""
    code: str = ""
    expires: int = 0
    guesses_at: int = 0
    controller: str = ""
    session: str = ""
    left: int = 0
    dsession: str = ""
    dleft: int = 0

    def gone(self, grace: float) -> bool:
        return bool(self.dleft) and self.dleft + int(grace * 1000) < now_ms()


class MemoryPairings(Passive):
    """One process: the same rules, in dicts."""

    def __init__(self) -> None:
        self.desktops: dict[str, _Desktop] = {}
        self.tokens: dict[str, str] = {}
        self.codes: dict[str, str] = {}
        self.sessions: dict[str, str] = {}
        self.desktop_sessions: dict[str, str] = {}
        self.guesses = 0

    async def open(
        self,
        desktop: str,
        desktop_sid: str,
        ttl: float,
        base: str | None = None,
        session: str = "",
    ) -> Pairing:
        record = self.desktops.get(desktop) or _Desktop(desktop_sid, base or "")
        record.base = base or record.base
        if session:
            record.dsession = digest(session)
            self.desktop_sessions[record.dsession] = desktop
        # A new pairing ends the old one: a controller within its grace cannot resume.
        self._forget_secrets(record)
        self.sessions.pop(record.session, None)
        record.controller = record.session = ""
        record.left = 0
        token, code = new_token(), new_code()
        while code in self.codes:
            code = new_code()
        record.token, record.code = digest(token), code
        record.expires = now_ms() + int(ttl * 1000)
        record.guesses_at = self.guesses
        self.desktops[desktop] = record
        self.tokens[record.token] = desktop
        self.codes[code] = desktop
        return Pairing(desktop, token, code, record.expires, record.base)

    def _forget_secrets(self, record: _Desktop) -> None:
        self.tokens.pop(record.token, None)
        self.codes.pop(record.code, None)
        record.token = record.code = ""

    async def close(self, desktop: str) -> str:
        record = self.desktops.pop(desktop, None)
        if record is None:
            return ""
        self._forget_secrets(record)
        self.sessions.pop(record.session, None)
        self.desktop_sessions.pop(record.dsession, None)
        return record.controller

    async def desktop_gone(self, desktop: str, desktop_sid: str, grace: float) -> None:
        record = self.desktops.get(desktop)
        if record is None or record.sid != desktop_sid:
            return  # it resumed on another connection already
        if not record.session:
            await self.close(desktop)  # no controller to keep: a new page pairs anew
        else:
            record.dleft = now_ms()

    def sweep(self, grace: float) -> None:
        """Forget the desktops away longer than the grace (Redis expires its own)."""
        for desktop in [d for d, record in self.desktops.items() if record.gone(grace)]:
            record = self.desktops.pop(desktop)
            self._forget_secrets(record)
            self.sessions.pop(record.session, None)
            self.desktop_sessions.pop(record.dsession, None)

    async def resume_desktop(self, session: str, desktop_sid: str, grace: float) -> DesktopClaim:
        desktop = self.desktop_sessions.get(digest(session), "")
        record = self.desktops.get(desktop)
        if record is None or record.gone(grace):
            return DesktopClaim(Outcome.MISSING)
        replaced = "" if record.dleft else record.sid
        record.sid, record.dleft = desktop_sid, 0
        return DesktopClaim(
            Outcome.PAIRED,
            desktop,
            record.controller,
            bool(record.session),
            record.left,
            replaced,
        )

    async def presence(self, desktops: list[str], grace: float) -> list[Presence]:
        found = [self.desktops.get(desktop) for desktop in desktops]
        return [
            Presence.GONE
            if record is None or record.gone(grace)
            else Presence.AWAY
            if record.dleft
            else Presence.HERE
            for record in found
        ]

    def _pair(self, desktop: str, controller_sid: str, session: str) -> Claim:
        record = self.desktops.get(desktop)
        if (
            record is None
            or record.dleft
            or record.expires < now_ms()
            or record.controller
            or record.session
        ):
            return Claim(Outcome.MISSING)
        self._forget_secrets(record)
        record.controller, record.session, record.left = controller_sid, digest(session), 0
        self.sessions[record.session] = desktop
        return Claim(Outcome.PAIRED, desktop, record.sid)

    async def claim_token(self, token: str, controller_sid: str, session: str) -> Claim:
        desktop = self.tokens.get(digest(token))
        return self._pair(desktop, controller_sid, session) if desktop else Claim(Outcome.MISSING)

    async def claim_code(self, code: str, controller_sid: str, session: str, guesses: int) -> Claim:
        desktop = self.codes.get(code)
        if desktop is None:
            return Claim(Outcome.MISSING)
        record = self.desktops[desktop]
        if self.guesses - record.guesses_at > guesses:
            return Claim(Outcome.RETIRED, desktop, record.sid)
        return self._pair(desktop, controller_sid, session)

    async def resume(self, session: str, controller_sid: str, grace: float) -> Claim:
        desktop = self.sessions.get(digest(session))
        record = self.desktops.get(desktop) if desktop else None
        if desktop is None or record is None or record.gone(grace):
            return Claim(Outcome.MISSING)
        if not record.controller and record.left + int(grace * 1000) < now_ms():
            return Claim(Outcome.MISSING)
        replaced, record.controller, record.left = record.controller, controller_sid, 0
        return Claim(Outcome.PAIRED, desktop, record.sid, replaced)

    async def controller_gone(self, desktop: str, controller_sid: str) -> bool:
        record = self.desktops.get(desktop)
        if record is None or record.controller != controller_sid:
            return False
        record.controller, record.left = "", now_ms()
        return True

    async def unpair(self, desktop: str) -> str:
        record = self.desktops.get(desktop)
        if record is None:
            return ""
        controller = record.controller
        self.sessions.pop(record.session, None)
        record.controller = record.session = ""
        record.left = 0
        return controller

    async def controller_of(self, desktop: str) -> str:
        record = self.desktops.get(desktop)
        return record.controller if record else ""

    async def wrong_guess(self) -> None:
        self.guesses += 1


_CLAIM = """
local desktop = redis.call('GET', KEYS[1])
if not desktop then return {'missing'} end
local dkey = ARGV[4] .. 'desktop:' .. desktop
local d = redis.call('HMGET', dkey, 'sid', 'rid', 'token', 'code', 'expires', 'guesses_at',
                     'controller', 'session')
if not d[1] or redis.call('EXISTS', ARGV[5] .. 'replica:' .. d[2]) == 0
   or tonumber(d[5]) < tonumber(ARGV[3]) or d[7] ~= '' or d[8] ~= '' then
  return {'missing'}
end
if ARGV[6] ~= '' then
  local guesses = tonumber(redis.call('GET', ARGV[4] .. 'guesses') or '0')
  if guesses - tonumber(d[6]) > tonumber(ARGV[6]) then return {'retired', desktop, d[1]} end
end
redis.call('DEL', ARGV[4] .. 'token:' .. d[3], ARGV[4] .. 'code:' .. d[4])
redis.call('HSET', dkey, 'controller', ARGV[1], 'session', ARGV[2], 'left', '0',
           'token', '', 'code', '')
redis.call('SET', ARGV[4] .. 'session:' .. ARGV[2], desktop, 'PX', ARGV[7])
return {'paired', desktop, d[1]}
"""

# A desktop away longer than the grace is gone (its record expires by itself soon after).
_AWAY_TOO_LONG = """
local function gone(dleft, now, grace)
  dleft = tonumber(dleft or '0') or 0
  return dleft > 0 and dleft + tonumber(grace) < tonumber(now)
end
"""

# A controller resumes even while its desktop is away (both may have been on a replica that
# died): the desktop has the grace to come back.
_RESUME = (
    _AWAY_TOO_LONG
    + """
local desktop = redis.call('GET', KEYS[1])
if not desktop then return {'missing'} end
local dkey = ARGV[4] .. 'desktop:' .. desktop
local d = redis.call('HMGET', dkey, 'sid', 'controller', 'left', 'dleft')
if not d[1] or gone(d[4], ARGV[2], ARGV[3]) then return {'missing'} end
if d[2] == '' and tonumber(d[3]) + tonumber(ARGV[3]) < tonumber(ARGV[2]) then
  return {'missing'}
end
redis.call('HSET', dkey, 'controller', ARGV[1], 'left', '0')
return {'paired', desktop, d[1], d[2]}
"""
)

_DESKTOP_GONE = """
local d = redis.call('HMGET', KEYS[1], 'sid', 'session', 'token', 'code', 'dsession')
if d[1] ~= ARGV[1] then return 0 end
if not d[2] or d[2] == '' then
  -- No controller to keep: forget the desktop; a new page pairs anew.
  if d[3] and d[3] ~= '' then redis.call('DEL', ARGV[4] .. 'token:' .. d[3]) end
  if d[4] and d[4] ~= '' then redis.call('DEL', ARGV[4] .. 'code:' .. d[4]) end
  if d[5] and d[5] ~= '' then redis.call('DEL', ARGV[4] .. 'dsession:' .. d[5]) end
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'dleft', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_RESUME_DESKTOP = (
    _AWAY_TOO_LONG
    + """
local desktop = redis.call('GET', KEYS[1])
if not desktop then return {'missing'} end
local dkey = ARGV[4] .. 'desktop:' .. desktop
local d = redis.call('HMGET', dkey, 'sid', 'controller', 'session', 'left', 'dleft', 'rid')
if not d[1] or gone(d[5], ARGV[2], ARGV[3]) then return {'missing'} end
local replaced = ''
if tonumber(d[5] or '0') == 0 and redis.call('EXISTS', ARGV[5] .. 'replica:' .. d[6]) == 1 then
  replaced = d[1]
end
redis.call('HSET', dkey, 'sid', ARGV[1], 'rid', ARGV[6], 'dleft', '0')
redis.call('PEXPIRE', dkey, ARGV[7])
return {'paired', desktop, d[2], d[3] ~= '' and 1 or 0, d[4], replaced}
"""
)

# Where a desktop is; one whose replica died is away from the first time this is asked.
_PRESENCE = (
    _AWAY_TOO_LONG
    + """
local d = redis.call('HMGET', KEYS[1], 'rid', 'dleft')
if not d[1] then return 'gone' end
if gone(d[2], ARGV[1], ARGV[2]) then return 'gone' end
if tonumber(d[2] or '0') > 0 then return 'away' end
if redis.call('EXISTS', ARGV[3] .. 'replica:' .. d[1]) == 1 then return 'here' end
redis.call('HSET', KEYS[1], 'dleft', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 'away'
"""
)

_GONE = """
if redis.call('HGET', KEYS[1], 'controller') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'controller', '', 'left', ARGV[2])
return 1
"""

_UNPAIR = """
local d = redis.call('HMGET', KEYS[1], 'controller', 'session', 'token', 'code', 'dsession')
if d[2] and d[2] ~= '' then redis.call('DEL', ARGV[1] .. 'session:' .. d[2]) end
if ARGV[2] == 'close' then
  if d[3] and d[3] ~= '' then redis.call('DEL', ARGV[1] .. 'token:' .. d[3]) end
  if d[4] and d[4] ~= '' then redis.call('DEL', ARGV[1] .. 'code:' .. d[4]) end
  if d[5] and d[5] ~= '' then redis.call('DEL', ARGV[1] .. 'dsession:' .. d[5]) end
  redis.call('DEL', KEYS[1])
elseif d[1] then
  redis.call('HSET', KEYS[1], 'controller', '', 'session', '', 'left', '0')
end
return d[1] or ''
"""


class RedisPairings(Passive):
    """Replicas: a controller and its desktop may be on different replicas."""

    prefix = "remote:"

    def __init__(self, redis: Redis, *, replica_id: str, replica_prefix: str) -> None:
        self.redis = redis
        self.rid = replica_id
        self.replica_prefix = replica_prefix
        self._claim = redis.register_script(_CLAIM)
        self._resume = redis.register_script(_RESUME)
        self._gone = redis.register_script(_GONE)
        self._unpair = redis.register_script(_UNPAIR)
        self._desktop_gone = redis.register_script(_DESKTOP_GONE)
        self._resume_desktop = redis.register_script(_RESUME_DESKTOP)
        self._presence = redis.register_script(_PRESENCE)

    def _desktop_key(self, desktop: str) -> str:
        return f"{self.prefix}desktop:{desktop}"

    async def open(
        self,
        desktop: str,
        desktop_sid: str,
        ttl: float,
        base: str | None = None,
        session: str = "",
    ) -> Pairing:
        key = self._desktop_key(desktop)
        old_token, old_code, old_base, old_session = await self.redis.hmget(
            key, ["token", "code", "base", "session"]
        )
        base = base or str(old_base or "")
        token, expires, ttl_ms = new_token(), now_ms() + int(ttl * 1000), int(ttl * 1000)
        code = new_code()
        while not await self.redis.set(f"{self.prefix}code:{code}", desktop, px=ttl_ms, nx=True):
            code = new_code()
        guesses = int(await self.redis.get(f"{self.prefix}guesses") or 0)
        async with self.redis.pipeline(transaction=True) as pipe:
            if old_token:
                pipe.delete(f"{self.prefix}token:{old_token!s}")
            if old_code:
                pipe.delete(f"{self.prefix}code:{old_code!s}")
            if old_session:
                # A new pairing ends the old one: a controller within its grace cannot resume.
                pipe.delete(f"{self.prefix}session:{old_session!s}")
            pipe.set(f"{self.prefix}token:{digest(token)}", desktop, px=ttl_ms)
            if session:
                pipe.set(f"{self.prefix}dsession:{digest(session)}", desktop, px=DESKTOP_TTL_MS)
                pipe.hset(key, mapping={"dsession": digest(session), "dleft": 0})
            pipe.hset(
                key,
                mapping={
                    "sid": desktop_sid,
                    "rid": self.rid,
                    "base": base,
                    "token": digest(token),
                    "code": code,
                    "expires": expires,
                    "guesses_at": guesses,
                    "controller": "",
                    "session": "",
                    "left": 0,
                },
            )
            pipe.pexpire(key, DESKTOP_TTL_MS)
            await pipe.execute()
        return Pairing(desktop, token, code, expires, base)

    async def close(self, desktop: str) -> str:
        return str(
            await self._unpair(keys=[self._desktop_key(desktop)], args=[self.prefix, "close"])
        )

    async def _claim_by(self, key: str, controller_sid: str, session: str, guesses: str) -> Claim:
        result = await self._claim(
            keys=[key],
            args=[
                controller_sid,
                digest(session),
                now_ms(),
                self.prefix,
                self.replica_prefix,
                guesses,
                DESKTOP_TTL_MS,
            ],
        )
        return Claim(Outcome(result[0]), *result[1:])

    async def claim_token(self, token: str, controller_sid: str, session: str) -> Claim:
        return await self._claim_by(
            f"{self.prefix}token:{digest(token)}", controller_sid, session, ""
        )

    async def claim_code(self, code: str, controller_sid: str, session: str, guesses: int) -> Claim:
        return await self._claim_by(
            f"{self.prefix}code:{code}", controller_sid, session, str(guesses)
        )

    async def desktop_gone(self, desktop: str, desktop_sid: str, grace: float) -> None:
        await self._desktop_gone(
            keys=[self._desktop_key(desktop)],
            args=[desktop_sid, now_ms(), self._away_ttl(grace), self.prefix],
        )

    @staticmethod
    def _away_ttl(grace: float) -> int:
        """How long an away desktop's record is kept: its grace, and a minute for readers
        to see it gone (and tell its controller) rather than missing."""
        return int(grace * 1000) + 60_000

    async def resume_desktop(self, session: str, desktop_sid: str, grace: float) -> DesktopClaim:
        result = await self._resume_desktop(
            keys=[f"{self.prefix}dsession:{digest(session)}"],
            args=[
                desktop_sid,
                now_ms(),
                int(grace * 1000),
                self.prefix,
                self.replica_prefix,
                self.rid,
                DESKTOP_TTL_MS,
            ],
        )
        if result[0] != Outcome.PAIRED.value:
            return DesktopClaim(Outcome.MISSING)
        _, desktop, controller, session_held, left, replaced = result
        return DesktopClaim(
            Outcome.PAIRED,
            str(desktop),
            str(controller),
            bool(session_held),
            int(left),
            str(replaced),
        )

    async def presence(self, desktops: list[str], grace: float) -> list[Presence]:
        args: list[str | int] = [
            now_ms(),
            int(grace * 1000),
            self.replica_prefix,
            self._away_ttl(grace),
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for desktop in desktops:
                await self._presence(keys=[self._desktop_key(desktop)], args=args, client=pipe)
            found = await pipe.execute()
        return [Presence(str(state)) for state in found]

    def sweep(self, grace: float) -> None:
        pass  # Redis expires the records of desktops away too long

    async def resume(self, session: str, controller_sid: str, grace: float) -> Claim:
        result = await self._resume(
            keys=[f"{self.prefix}session:{digest(session)}"],
            args=[controller_sid, now_ms(), int(grace * 1000), self.prefix],
        )
        return Claim(Outcome(result[0]), *result[1:])

    async def controller_gone(self, desktop: str, controller_sid: str) -> bool:
        return bool(
            await self._gone(keys=[self._desktop_key(desktop)], args=[controller_sid, now_ms()])
        )

    async def unpair(self, desktop: str) -> str:
        return str(
            await self._unpair(keys=[self._desktop_key(desktop)], args=[self.prefix, "unpair"])
        )

    async def controller_of(self, desktop: str) -> str:
        return str(await self.redis.hget(self._desktop_key(desktop), "controller") or "")

    async def wrong_guess(self) -> None:
        await self.redis.incr(f"{self.prefix}guesses")
