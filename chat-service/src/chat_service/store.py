"""Where chat keeps nicknames, presence and history: in memory for one process, or in Redis
for replicas, behind one interface.

Redis layout (all keys under ``chat:``):

- ``replica:<rid>``: liveness of a replica, a TTL refreshed by its heartbeat;
- ``replicas``: the replicas that have not been reaped;
- ``sessions:<rid>``: hash, a replica's connections, sid -> room US fold US name;
- ``room:<room>``: hash, the named members of a room, sid -> rid US name;
- ``names``: hash, nickname key (casefolded) -> rid US sid;
- ``history:<room>``: stream of messages (sid, name, text), trimmed to the history size + 1,
  expiring ``CHAT_HISTORY_TTL`` after its last message;
- ``histories``: sorted set, the rooms with a history by the time of their last message: past
  ``CHAT_HISTORY_ROOMS`` of them, the quietest room's history is deleted, so that what history
  holds in Redis is bounded (rooms x size x message).

(US is the unit separator, \\x1f, which no nickname or room can hold.)

Every write that must be atomic is a Lua script. A name whose owner's replica has stopped
heart-beating is free at once: the claim script checks the owner's liveness key, so a crashed
replica's names are free within its TTL even before a surviving replica reaps it. The reaper
then deletes its entries and reports the named members that left, for ``user_left``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from switchboard.components import Passive
from switchboard.redisclient import AckedWrites
from switchboard.replicas import Replica, ReplicaEntries

from chat_service.validation import id_order

log = logging.getLogger(__name__)
US = "\x1f"


@dataclass(frozen=True, slots=True)
class Member:
    sid: str
    name: str

    def wire(self) -> dict[str, str]:
        return {"id": self.sid, "name": self.name}


@dataclass(frozen=True, slots=True)
class ChatMessage:
    id: str
    sender: Member
    text: str

    @property
    def ts(self) -> int:
        return id_order(self.id)[0]

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "ts": self.ts, "sender": self.sender.wire(), "text": self.text}


@dataclass(frozen=True, slots=True)
class History:
    messages: list[ChatMessage]
    #: False when messages between the client's ``last_id`` (or the room's start) and the first
    #: message here are no longer held.
    complete: bool


@dataclass(slots=True)
class Session:
    """What this process knows of one of its connections."""

    room: str
    name: str = ""
    key: str = ""
    #: Hash of the name token the client connected with: it may take back a name it held.
    proof: str = ""
    #: Hash of the token given with the name this connection holds.
    token: str = ""


@dataclass(frozen=True, slots=True)
class Claimed:
    """The answer to a claim: refused, or held, and which connection held it before if it was
    this client's own (its name token proved it), to be disconnected."""

    ok: bool
    replaced: str = ""


class Announcer(Protocol):
    """Who tells clients what the Redis store learns by itself, after a heartbeat."""

    async def departed(self, departed: list[tuple[str, Member]]) -> None:
        """The named members (with their rooms) of a replica that died have left."""

    async def name_lost(self, sid: str, name: str, room: str) -> None:
        """Our connection ``sid`` lost its name: it was taken while Redis forgot us."""

    async def back(self, member: Member, room: str) -> None:
        """Our named ``member`` is written back after Redis forgot us: the others may have
        been told it left (this replica was taken for dead)."""

    async def heard_up_to_now(self) -> None:
        """Until what the other replicas broadcast before now has reached our clients (or
        never will): before we tell them anything after Redis forgot us."""


class ChatStore(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def check(self) -> str | None: ...
    def session(self, sid: str) -> Session | None:
        """A connection of this process that joined and has not left."""
        ...

    async def join(self, sid: str, room: str, proof: str = "") -> None: ...
    async def leave(self, sid: str) -> Session | None:
        """Forget ``sid`` here at once, then wherever else it is known (a RedisError leaves
        it forgotten here); the session it had, if any."""
        ...

    async def claim(self, sid: str, name: str, key: str, token: str) -> Claimed: ...
    async def members(self, room: str) -> list[Member]: ...
    async def append(self, room: str, sender: Member, text: str) -> ChatMessage: ...
    async def history(self, room: str, after: str | None) -> History: ...


class _IdClock:
    """Message ids as Redis streams make them: milliseconds, then a sequence within the ms."""

    def __init__(self) -> None:
        self._last = (0, 0)

    def next(self) -> str:
        ms = time.time_ns() // 1_000_000
        last_ms, seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        return f"{self._last[0]}-{self._last[1]}"


class MemoryChatStore(Passive):
    """One process, no Redis: the embedded default."""

    def __init__(self, history_size: int, history_ttl: float, history_rooms: int) -> None:
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.history_rooms = history_rooms
        self.sessions: dict[str, Session] = {}
        #: Nickname key -> (sid, hash of its name token).
        self._names: dict[str, tuple[str, str]] = {}
        self._rooms: dict[str, dict[str, str]] = {}
        #: Rooms' messages, the room with the oldest last message first.
        self._history: OrderedDict[str, deque[ChatMessage]] = OrderedDict()
        self._clock = _IdClock()

    def session(self, sid: str) -> Session | None:
        return self.sessions.get(sid)

    async def join(self, sid: str, room: str, proof: str = "") -> None:
        self.sessions[sid] = Session(room, proof=proof)

    async def leave(self, sid: str) -> Session | None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return None
        if session.key and self._names.get(session.key, ("",))[0] == sid:
            del self._names[session.key]
        members = self._rooms.get(session.room)
        if members is not None:
            members.pop(sid, None)
            if not members:
                del self._rooms[session.room]
        return session

    async def claim(self, sid: str, name: str, key: str, token: str) -> Claimed:
        session = self.sessions[sid]
        owner, owner_token = self._names.get(key, (sid, ""))
        replaced = ""
        if owner != sid:
            if not (session.proof and session.proof == owner_token):
                return Claimed(False)
            replaced = owner
        if session.key and session.key != key:
            self._names.pop(session.key, None)
        self._names[key] = (sid, token)
        self._rooms.setdefault(session.room, {})[sid] = name
        session.name, session.key = name, key
        return Claimed(True, replaced)

    async def members(self, room: str) -> list[Member]:
        return [Member(sid, name) for sid, name in self._rooms.get(room, {}).items()]

    async def append(self, room: str, sender: Member, text: str) -> ChatMessage:
        message = ChatMessage(self._clock.next(), sender, text)
        self._forget_quiet_rooms()
        held = self._history.get(room)
        if held is None:
            # One more than we show, as in Redis: see held_history().
            held = self._history[room] = deque(maxlen=self.history_size + 1)
        held.append(message)
        self._history.move_to_end(room)
        while len(self._history) > self.history_rooms:
            self._history.popitem(last=False)  # the room quiet the longest
        return message

    def _forget_quiet_rooms(self) -> None:
        """Drop the history of rooms whose last message is older than the TTL, as Redis does."""
        horizon = (time.time() - self.history_ttl) * 1000
        while self._history:
            room, held = next(iter(self._history.items()))
            if held and held[-1].ts >= horizon:
                break
            del self._history[room]

    async def history(self, room: str, after: str | None) -> History:
        self._forget_quiet_rooms()
        held = self._history.get(room, ())
        start = id_order(after) if after else (-1, -1)
        newer = [m for m in held if id_order(m.id) > start][-self.history_size or len(held) :]
        return held_history(
            newer if self.history_size else [],
            length=len(held),
            oldest=held[0].id if held else None,
            after=after,
            size=self.history_size,
        )


def held_history(
    messages: list[ChatMessage], *, length: int, oldest: str | None, after: str | None, size: int
) -> History:
    """A room holds at most ``size + 1`` messages and shows at most ``size``; the extra oldest
    one tells whether anything was trimmed. Nothing was if fewer than ``size + 1`` are held;
    otherwise the client missed nothing only if it had seen that oldest message."""
    if length <= size:
        return History(messages, True)
    complete = after is not None and oldest is not None and id_order(oldest) <= id_order(after)
    return History(messages, complete)


# --- Redis ----------------------------------------------------------------------------------

# KEYS[1]: history:<room>, KEYS[2]: histories. ARGV: room, sid, name, text, maxlen, TTL ms,
# most rooms, key prefix. Appends, and forgets the histories past the most rooms (the quietest
# first) and those expired: the one key it names itself is a history, under the same prefix.
_APPEND = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[5], '*',
  'sid', ARGV[2], 'name', ARGV[3], 'text', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local now = tonumber(string.match(id, '^(%d+)'))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[6])))
redis.call('ZADD', KEYS[2], now, ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], over)  -- room, score, room, score, ...
  for i = 1, #popped, 2 do redis.call('DEL', ARGV[8] .. 'history:' .. popped[i]) end
end
return id
"""

_CLAIM = """
local me = ARGV[1] .. '\\31' .. ARGV[2]
local replaced = ''
local owner = redis.call('HGET', KEYS[1], ARGV[3])
if owner then
  local a = string.find(owner, '\\31', 1, true)
  local b = string.find(owner, '\\31', a + 1, true)
  local orid = string.sub(owner, 1, a - 1)
  local osid = string.sub(owner, a + 1, (b or 0) - 1)
  local otoken = b and string.sub(owner, b + 1) or ''
  if osid ~= ARGV[2] and redis.call('EXISTS', ARGV[6] .. 'replica:' .. orid) == 1
     and redis.call('HEXISTS', ARGV[6] .. 'sessions:' .. orid, osid) == 1 then
    if ARGV[8] == '' or ARGV[8] ~= otoken then return {0, ''} end
    replaced = osid
  end
end
if ARGV[4] ~= '' and ARGV[4] ~= ARGV[3] then
  local old = redis.call('HGET', KEYS[1], ARGV[4])
  if old and string.sub(old, 1, #me + 1) == me .. '\\31' then
    redis.call('HDEL', KEYS[1], ARGV[4])
  end
end
redis.call('HSET', KEYS[1], ARGV[3], me .. '\\31' .. ARGV[9])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1] .. '\\31' .. ARGV[5])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[7] .. '\\31' .. ARGV[3] .. '\\31' .. ARGV[5])
return {1, replaced}
"""

_LEAVE = """
local me = ARGV[1] .. '\\31' .. ARGV[2] .. '\\31'
if ARGV[3] ~= '' then
  local owner = redis.call('HGET', KEYS[1], ARGV[3])
  if owner and string.sub(owner, 1, #me) == me then redis.call('HDEL', KEYS[1], ARGV[3]) end
end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
"""

_MEMBERS = """
local entries = redis.call('HGETALL', KEYS[1])
local alive = {}
local out = {}
for i = 1, #entries, 2 do
  local sid = entries[i]
  local value = entries[i + 1]
  local sep = string.find(value, '\\31', 1, true)
  local rid = string.sub(value, 1, sep - 1)
  if alive[rid] == nil then
    alive[rid] = redis.call('EXISTS', ARGV[1] .. 'replica:' .. rid) == 1
  end
  if alive[rid] then
    table.insert(out, sid)
    table.insert(out, string.sub(value, sep + 1))
  end
end
return out
"""

_REAP = """
if redis.call('EXISTS', ARGV[2] .. 'replica:' .. ARGV[1]) == 1 then return {} end
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return {} end
local entries = redis.call('HGETALL', KEYS[2])
local out = {}
for i = 1, #entries, 2 do
  local sid = entries[i]
  local value = entries[i + 1]
  local a = string.find(value, '\\31', 1, true)
  local b = string.find(value, '\\31', a + 1, true)
  local room = string.sub(value, 1, a - 1)
  local key = string.sub(value, a + 1, b - 1)
  redis.call('HDEL', ARGV[2] .. 'room:' .. room, sid)
  if key ~= '' then
    local owner = redis.call('HGET', KEYS[3], key)
    local me = ARGV[1] .. '\\31' .. sid .. '\\31'
    if owner and string.sub(owner, 1, #me) == me then
      redis.call('HDEL', KEYS[3], key)
    end
    table.insert(out, room)
    table.insert(out, sid)
    table.insert(out, string.sub(value, b + 1))
  end
end
redis.call('DEL', KEYS[2])
return out
"""


class RedisChatStore(ReplicaEntries):
    """State shared by every replica through Redis. After each heartbeat it writes our
    entries back when Redis forgot them, and reaps the entries of replicas that died; the
    ``announcer`` tells clients what that changed."""

    prefix = "chat:"

    def __init__(
        self,
        redis: Redis,
        replica: Replica,
        announcer: Announcer,
        *,
        acked: AckedWrites,
        history_size: int,
        history_ttl: float,
        history_rooms: int,
    ) -> None:
        super().__init__(redis, replica)
        self.announcer = announcer
        #: Messages and names: a client is told they are stored once a replica has them too.
        self.acked = acked
        self.history_size = history_size
        self.history_ttl_ms = int(history_ttl * 1000)
        self.history_rooms = history_rooms
        self.sessions: dict[str, Session] = {}
        self._append = redis.register_script(_APPEND)
        self._claim = redis.register_script(_CLAIM)
        self._leave = redis.register_script(_LEAVE)
        self._members = redis.register_script(_MEMBERS)
        self._reap = redis.register_script(_REAP)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def _sessions_key(self) -> str:
        return self._key("sessions", self.rid)

    # -- the replica's life ------------------------------------------------------------------

    async def depart(self) -> None:
        # As a crashed replica would be reaped, only at once: others see our members go.
        await self.redis.delete(self._key("replica", self.rid))
        await self.reap(self.rid)

    async def rejoin(self) -> None:
        # Write our sessions again and find out which names we lost.
        log.warning("chat: re-registering %d sessions in Redis", len(self.sessions))
        lost: list[tuple[str, str, str]] = []
        back: list[tuple[Session, Member]] = []
        for sid, session in list(self.sessions.items()):
            await self.redis.hset(self._sessions_key, sid, f"{session.room}{US}{US}")
            if not session.key:
                continue
            held = await self._claim_for(sid, session, session.name, session.key, session.token)
            if not held.ok:
                lost.append((sid, session.name, session.room))
                session.name = session.key = ""
            else:
                back.append((session, Member(sid, session.name)))
        # If the others took us for dead, they told the rooms our people left, and that may
        # still be on its way to our listener (a network cut holds it back): our clients must
        # hear it before they hear that our people are back, not after (issue 13, scenario 7).
        await self.announcer.heard_up_to_now()
        for sid, name, room in lost:
            await self.announcer.name_lost(sid, name, room)
        for session, member in back:
            if self.sessions.get(member.sid) is session and session.name == member.name:
                await self.announcer.back(member, session.room)

    async def reap(self, rid: str) -> None:
        flat = await self._reap(
            keys=[self._key("replicas"), self._key("sessions", rid), self._key("names")],
            args=[rid, self.prefix],
        )
        departed = [(flat[i], Member(flat[i + 1], flat[i + 2])) for i in range(0, len(flat), 3)]
        if departed:
            log.info("chat: replica %s is gone; %d named members left", rid, len(departed))
            await self.announcer.departed(departed)

    # -- sessions, names, presence ------------------------------------------------------------

    def session(self, sid: str) -> Session | None:
        return self.sessions.get(sid)

    async def join(self, sid: str, room: str, proof: str = "") -> None:
        await self.redis.hset(self._sessions_key, sid, f"{room}{US}{US}")
        self.sessions[sid] = Session(room, proof=proof)

    async def leave(self, sid: str) -> Session | None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return None

        async def remove() -> None:
            await self._leave(
                keys=[self._key("names"), self._key("room", session.room), self._sessions_key],
                args=[self.rid, sid, session.key],
            )

        await self.remove_entries(sid, remove)
        return session

    async def claim(self, sid: str, name: str, key: str, token: str) -> Claimed:
        session = self.sessions[sid]
        claimed = await self._claim_for(sid, session, name, key, token)
        if claimed.ok:
            session.name, session.key, session.token = name, key, token
        return claimed

    async def _claim_for(
        self, sid: str, session: Session, name: str, key: str, token: str
    ) -> Claimed:
        ok, replaced = await self.acked.run(
            self._claim,
            keys=[self._key("names"), self._key("room", session.room), self._sessions_key],
            args=[
                self.rid,
                sid,
                key,
                session.key,
                name,
                self.prefix,
                session.room,
                session.proof,
                token,
            ],
        )
        return Claimed(bool(ok), str(replaced or ""))

    async def members(self, room: str) -> list[Member]:
        flat = await self._members(keys=[self._key("room", room)], args=[self.prefix])
        return [Member(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    # -- history ------------------------------------------------------------------------------

    async def append(self, room: str, sender: Member, text: str) -> ChatMessage:
        message_id = await self.acked.run(
            self._append,
            keys=[self._key("history", room), self._key("histories")],
            args=[
                room,
                sender.sid,
                sender.name,
                text,
                # One more than we show, so that we can tell whether anything was ever trimmed.
                self.history_size + 1,
                self.history_ttl_ms,
                self.history_rooms,
                self.prefix,
            ],
        )
        return ChatMessage(str(message_id), sender, text)

    async def history(self, room: str, after: str | None) -> History:
        key = self._key("history", room)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xlen(key)
            pipe.xrange(key, "-", "+", count=1)
            pipe.xrevrange(key, "+", f"({after}" if after else "-", count=max(1, self.history_size))
            length, oldest, newest = await pipe.execute()
        messages = [
            ChatMessage(str(mid), Member(f["sid"], f["name"]), f["text"])
            for mid, f in reversed(newest)
        ]
        return held_history(
            messages if self.history_size else [],
            length=length,
            oldest=oldest[0][0] if oldest else None,
            after=after,
            size=self.history_size,
        )
