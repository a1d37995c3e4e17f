"""Where chat keeps nicknames, presence and history: in memory for one process, or in Redis
for replicas, behind one interface.

Redis layout (all keys under ``chat:``):

- ``replica:<rid>``: liveness of a replica, a TTL refreshed by its heartbeat;
- ``replicas``: the replicas that have not been reaped;
- ``sessions:<rid>``: hash, a replica's connections, sid -> room US key US name US user;
- ``room:<room>``: hash, the named connections in a room, sid -> rid US name US user;
- ``names``: hash, nickname key -> rid US sid US token-hash for an anonymous connection's name,
  US user for a signed-in user's (held while any connection of the user lives);
- ``user:<user>``: hash, a signed-in user's connections, sid -> rid US room;
- ``members:<room>``: hash, the room's members, member id -> its connections there (1 for an
  anonymous one): its count is one HLEN;
- ``listed``: hash, room -> 1 or 0, whether the room's clients were last told who is in it
  (at most ``CHAT_PRESENCE_LIST_MAX`` members) or only how many: the one place a room's
  crossing of that size is decided, whichever replica sees it first;
- ``rev``: the newest rev of a change of presence (:mod:`chat_service.presence`), at least
  Redis's clock in microseconds;
- ``history:<room>``: stream of messages (sid, name, text), trimmed to the history size + 1,
  expiring ``CHAT_HISTORY_TTL`` after its last message;
- ``histories``: sorted set, the rooms with a history by the time of their last message: past
  ``CHAT_HISTORY_ROOMS`` of them, the quietest room's history is deleted, so that what history
  holds in Redis is bounded (rooms x size x message).

(US is the unit separator, \\x1f, which no nickname or room can hold.)

``user`` is a signed-in member's id (:func:`member_id`, empty for an anonymous connection):
the connections of one user share its name and are one member of a room's presence, which it
leaves with its last connection there.

Every write that must be atomic is a Lua script. A name whose owner's replica has stopped
heart-beating is free at once: the claim script checks the owner's liveness key, so a crashed
replica's names are free within its TTL even before a surviving replica reaps it. The reaper
then deletes its entries, and the named members that left are told (``presence``).

Every change of presence (a name taken, a member gone, a user's count of connections) is
recorded by the store that makes it, with its rev, in its :class:`Presence`, which tells the
rooms once a tick.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError
from switchboard.components import Passive
from switchboard.hashing import digest
from switchboard.redisclient import AckedWrites
from switchboard.replicas import Replica, ReplicaEntries

from chat_service.presence import Change, Herald, Kind, Presence, Roster, Tally, clock_rev
from chat_service.validation import id_order

log = logging.getLogger(__name__)
US = "\x1f"


#: A signed-in member's id starts so; a socket.io sid never does (its alphabet has no ':').
USER_PREFIX = "u:"


def member_id(sub: str) -> str:
    """The member id of the user a token names: the same for all its connections, and not its
    ``sub`` itself (which may be an email address) but a digest of it."""
    return USER_PREFIX + digest(sub)[:24]


@dataclass(frozen=True, slots=True)
class Member:
    """Someone in a room: an anonymous connection (its id is the sid), or a signed-in user
    (its id from :func:`member_id`) with ``connections`` in the room."""

    id: str
    name: str
    connections: int = 1

    @property
    def signed_in(self) -> bool:
        return self.id.startswith(USER_PREFIX)

    def wire(self) -> dict[str, Any]:
        """As in ``users`` and ``presence``."""
        if not self.signed_in:
            return {"id": self.id, "name": self.name}
        return {**self.author(), "connections": self.connections}

    def author(self) -> dict[str, Any]:
        """As a message's sender."""
        if not self.signed_in:
            return {"id": self.id, "name": self.name}
        return {"id": self.id, "name": self.name, "signed_in": True}


@dataclass(frozen=True, slots=True)
class ChatMessage:
    id: str
    sender: Member
    text: str

    @property
    def ts(self) -> int:
        return id_order(self.id)[0]

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "ts": self.ts, "sender": self.sender.author(), "text": self.text}


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
    #: The member id of the signed-in user whose connection this is; empty when anonymous.
    user: str = ""

    def member(self, sid: str, connections: int = 1) -> Member:
        return Member(self.user or sid, self.name, connections)


@dataclass(frozen=True, slots=True)
class Claimed:
    """The answer to a claim: refused, or held, and which connection held it before if it was
    this client's own (its name token proved it), to be disconnected."""

    ok: bool
    replaced: str = ""
    #: A signed-in user's connections in the room, this one included.
    connections: int = 1
    #: The rev of the change of presence the claim made.
    rev: int = 0


class Announcer(Herald, Protocol):
    """Who tells clients what the Redis store learns by itself, after a heartbeat: presence,
    as every store does, and what concerns one connection."""

    async def name_lost(self, sid: str, session: Session) -> None:
        """Our connection ``sid`` lost its name (``session.name``): it was taken while Redis
        forgot us (the room is told by the store)."""

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

    async def join(self, sid: str, room: str, proof: str = "", user: str = "") -> None: ...
    async def leave(self, sid: str) -> None:
        """Forget ``sid`` here at once, then wherever else it is known (a RedisError leaves
        it forgotten here, and the rest is done once Redis answers)."""
        ...

    async def claim(self, sid: str, name: str, key: str, token: str) -> Claimed:
        """An anonymous connection takes ``name``: refused while someone else holds it."""
        ...

    async def claim_user(self, sid: str, name: str, key: str) -> Claimed:
        """A signed-in user's connection takes the user's ``name``: its own while any of its
        connections holds it; taken from an anonymous connection (``replaced``, to be
        disconnected); refused while another user holds it."""
        ...

    async def roster(self, room: str) -> Roster:
        """Who is in ``room`` (its members when it is listed), for ``users``."""
        ...

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
    """One process, no Redis: the embedded default. Rooms of more than ``list_max`` members
    are not listed; changes of presence are told by ``herald`` every ``presence_interval``."""

    def __init__(
        self,
        history_size: int,
        history_ttl: float,
        history_rooms: int,
        *,
        herald: Herald,
        presence_interval: float,
        list_max: int,
    ) -> None:
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.history_rooms = history_rooms
        self.list_max = list_max
        self.presence = Presence(
            herald, interval=presence_interval, tally=self._tally, roster=self.roster
        )
        self.sessions: dict[str, Session] = {}
        #: Nickname key -> (holder, hash of its name token): the holder is a sid, or a
        #: signed-in user's member id (and no token).
        self._names: dict[str, tuple[str, str]] = {}
        #: Room -> sid -> (name, user) of its named connections.
        self._rooms: dict[str, dict[str, tuple[str, str]]] = {}
        #: A signed-in user's member id -> its connections.
        self._users: dict[str, set[str]] = {}
        #: Rooms' messages, the room with the oldest last message first.
        self._history: OrderedDict[str, deque[ChatMessage]] = OrderedDict()
        self._clock = _IdClock()
        #: Whether each room with members was last told who is in it (see :meth:`_tally`).
        self._listed: dict[str, bool] = {}
        self._rev = 0

    async def stop(self) -> None:
        await self.presence.stop()

    def _next_rev(self) -> int:
        """As Redis makes them: growing, and at least the clock's microseconds (so that a
        restarted process never gives a page a rev it holds already)."""
        self._rev = max(self._rev + 1, clock_rev())
        return self._rev

    def session(self, sid: str) -> Session | None:
        return self.sessions.get(sid)

    async def join(self, sid: str, room: str, proof: str = "", user: str = "") -> None:
        self.sessions[sid] = Session(room, proof=proof, user=user)

    async def leave(self, sid: str) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        members = self._rooms.get(session.room)
        if members is not None:
            members.pop(sid, None)
            if not members:
                del self._rooms[session.room]
        holder = session.user or sid
        if session.user:
            others = self._users.get(session.user, set())
            others.discard(sid)
            if others:
                holder = ""  # the user's other connections keep its name
            else:
                self._users.pop(session.user, None)
        if session.key and holder and self._names.get(session.key, ("",))[0] == holder:
            del self._names[session.key]
        if session.name:
            remaining = self._connections(session.room, session.user)
            kind: Kind = "updated" if remaining else "left"
            change = Change(kind, session.member(sid, remaining), self._next_rev())
            self.presence.record(session.room, change)

    def _connections(self, room: str, user: str) -> int:
        if not user:
            return 0
        return sum(1 for _, of in self._rooms.get(room, {}).values() if of == user)

    async def claim(self, sid: str, name: str, key: str, token: str) -> Claimed:
        session = self.sessions[sid]
        owner, owner_token = self._names.get(key, (sid, ""))
        replaced = ""
        if owner != sid:
            if owner.startswith(USER_PREFIX) or not (
                session.proof and session.proof == owner_token
            ):
                return Claimed(False)
            replaced = owner
        if session.key and session.key != key:
            self._names.pop(session.key, None)
        self._names[key] = (sid, token)
        self._rooms.setdefault(session.room, {})[sid] = (name, "")
        session.name, session.key = name, key
        rev = self._next_rev()
        self.presence.record(session.room, Change("joined", Member(sid, name), rev))
        return Claimed(True, replaced, rev=rev)

    async def claim_user(self, sid: str, name: str, key: str) -> Claimed:
        session = self.sessions[sid]
        user = session.user
        owner, _ = self._names.get(key, (user, ""))
        if owner != user and owner.startswith(USER_PREFIX):
            return Claimed(False)
        replaced = "" if owner == user else owner
        self._names[key] = (user, "")
        self._users.setdefault(user, set()).add(sid)
        self._rooms.setdefault(session.room, {})[sid] = (name, user)
        session.name, session.key = name, key
        connections = self._connections(session.room, user)
        rev = self._next_rev()
        kind: Kind = "joined" if connections == 1 else "updated"
        self.presence.record(session.room, Change(kind, Member(user, name, connections), rev))
        return Claimed(True, replaced, connections, rev)

    def _count(self, room: str) -> int:
        return len({user or sid for sid, (_, user) in self._rooms.get(room, {}).items()})

    async def _tally(self, room: str) -> Tally:
        """The room's count, and whether it is listed: what its clients were last told unless
        the count crossed ``list_max`` (a room nobody is in is forgotten: listed)."""
        count = self._count(room)
        listed = count <= self.list_max
        was = self._listed.get(room, True)
        if count:
            self._listed[room] = listed
        else:
            self._listed.pop(room, None)
        return Tally(count, listed, listed != was, self._rev or self._next_rev())

    async def roster(self, room: str) -> Roster:
        count = self._count(room)
        listed = self._listed.setdefault(room, count <= self.list_max) if count else True
        members = (
            group_members(
                (sid, name, user) for sid, (name, user) in self._rooms.get(room, {}).items()
            )
            if listed
            else []
        )
        # A first rev from the clock: a page that held a room of an earlier process keeps
        # nothing of it (revs always grow).
        return Roster(members, count, listed, self._rev or self._next_rev())

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


def group_members(connections: Iterable[tuple[str, str, str]]) -> list[Member]:
    """The members of a room from its named connections ``(sid, name, user)``: one per
    anonymous connection, one per signed-in user with the count of its connections."""
    anonymous: list[Member] = []
    users: dict[str, Member] = {}
    for sid, name, user in connections:
        if not user:
            anonymous.append(Member(sid, name))
        else:
            known = users.get(user)
            users[user] = Member(user, name, known.connections + 1 if known else 1)
    return [*anonymous, *users.values()]


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

# What the scripts below share: splitting a value at US, a replica's liveness (asked once per
# script run), the live connections of a signed-in user, in all and in one room, and the next
# rev of a change of presence: one more than the last, and at least Redis's clock in
# microseconds, so that revs keep growing when Redis has forgotten the last one (returned as a
# string: a Lua number would not survive the reply as such).
_LIB = """
local US = '\\31'
local function split(value)
  local out = {}
  local start = 1
  while true do
    local at = string.find(value, US, start, true)
    if not at then
      table.insert(out, string.sub(value, start))
      return out
    end
    table.insert(out, string.sub(value, start, at - 1))
    start = at + 1
  end
end
local alive = {}
local function live(prefix, rid)
  if alive[rid] == nil then
    alive[rid] = redis.call('EXISTS', prefix .. 'replica:' .. rid) == 1
  end
  return alive[rid]
end
local function user_connections(prefix, user, room)
  local entries = redis.call('HGETALL', prefix .. 'user:' .. user)
  local all, here = 0, 0
  for i = 1, #entries, 2 do
    local f = split(entries[i + 1])
    if live(prefix, f[1]) then
      all = all + 1
      if f[2] == room then here = here + 1 end
    end
  end
  return all, here
end
local function next_rev(key)
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  local rev = string.format('%.0f', math.max(now, tonumber(redis.call('GET', key) or '0') + 1))
  redis.call('SET', key, rev)
  return rev
end
"""

# An anonymous connection takes a name. KEYS: names, room:<room>, sessions:<rid>,
# members:<room>, rev. ARGV: rid, sid, key, the key it held, name, prefix, room, proof, token
# hash. {ok, sid replaced, rev}.
_CLAIM = (
    _LIB
    + """
local me = ARGV[1] .. US .. ARGV[2]
local replaced = ''
local owner = redis.call('HGET', KEYS[1], ARGV[3])
if owner then
  local f = split(owner)
  if f[1] == '' then
    if user_connections(ARGV[6], f[2], '') > 0 then return {0, '', ''} end
  elseif f[2] ~= ARGV[2] and live(ARGV[6], f[1])
     and redis.call('HEXISTS', ARGV[6] .. 'sessions:' .. f[1], f[2]) == 1 then
    if ARGV[8] == '' or ARGV[8] ~= (f[3] or '') then return {0, '', ''} end
    replaced = f[2]
  end
end
if ARGV[4] ~= '' and ARGV[4] ~= ARGV[3] then
  local old = redis.call('HGET', KEYS[1], ARGV[4])
  if old and string.sub(old, 1, #me + 1) == me .. US then
    redis.call('HDEL', KEYS[1], ARGV[4])
  end
end
redis.call('HSET', KEYS[1], ARGV[3], me .. US .. ARGV[9])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1] .. US .. ARGV[5] .. US)
redis.call('HSET', KEYS[3], ARGV[2], ARGV[7] .. US .. ARGV[3] .. US .. ARGV[5] .. US)
redis.call('HSET', KEYS[4], ARGV[2], 1)
return {1, replaced, next_rev(KEYS[5])}
"""
)

# A signed-in user's connection takes the user's name. KEYS: names, room:<room>,
# sessions:<rid>, user:<user>, members:<room>, rev. ARGV: rid, sid, key, name, prefix, room,
# user. {ok, anonymous sid replaced, the user's connections in the room, rev}.
_CLAIM_USER = (
    _LIB
    + """
local replaced = ''
local owner = redis.call('HGET', KEYS[1], ARGV[3])
if owner then
  local f = split(owner)
  if f[1] == '' then
    if f[2] ~= ARGV[7] and user_connections(ARGV[5], f[2], '') > 0 then
      return {0, '', 0, ''}
    end
  elseif live(ARGV[5], f[1])
     and redis.call('HEXISTS', ARGV[5] .. 'sessions:' .. f[1], f[2]) == 1 then
    replaced = f[2]
  end
end
redis.call('HSET', KEYS[1], ARGV[3], US .. ARGV[7])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1] .. US .. ARGV[6])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1] .. US .. ARGV[4] .. US .. ARGV[7])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[6] .. US .. ARGV[3] .. US .. ARGV[4] .. US .. ARGV[7])
local _, here = user_connections(ARGV[5], ARGV[7], ARGV[6])
redis.call('HSET', KEYS[5], ARGV[7], here)
return {1, replaced, here, next_rev(KEYS[6])}
"""
)

# KEYS: names, room:<room>, sessions:<rid>, user:<user> (when signed in), members:<room>, rev.
# ARGV: rid, sid, key, prefix, user, room, 1 when the connection had a name. {the user's
# connections left in the room (0 when anonymous), rev ('' when it had no name)}.
_LEAVE = (
    _LIB
    + """
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
if ARGV[5] == '' then
  if ARGV[3] ~= '' then
    local me = ARGV[1] .. US .. ARGV[2] .. US
    local owner = redis.call('HGET', KEYS[1], ARGV[3])
    if owner and string.sub(owner, 1, #me) == me then redis.call('HDEL', KEYS[1], ARGV[3]) end
  end
  if ARGV[7] ~= '1' then return {0, ''} end
  redis.call('HDEL', KEYS[5], ARGV[2])
  return {0, next_rev(KEYS[6])}
end
redis.call('HDEL', KEYS[4], ARGV[2])
local all, here = user_connections(ARGV[4], ARGV[5], ARGV[6])
if all == 0 and ARGV[3] ~= '' and redis.call('HGET', KEYS[1], ARGV[3]) == US .. ARGV[5] then
  redis.call('HDEL', KEYS[1], ARGV[3])
end
if ARGV[7] ~= '1' then return {here, ''} end
if here == 0 then
  redis.call('HDEL', KEYS[5], ARGV[5])
else
  redis.call('HSET', KEYS[5], ARGV[5], here)
end
return {here, next_rev(KEYS[6])}
"""
)

# Whether a room is listed: what its clients were last told, or, for a room nobody told of
# (or nobody was in then), whether it has at most the most listed members.
_LISTED = """
local function listed(flags, room, count, most)
  if count == 0 then return true end
  local flag = redis.call('HGET', flags, room)
  if flag then return flag == '1' end
  return count <= most
end
"""

# Who is in a room. KEYS: room:<room>, members:<room>, listed, rev. ARGV: prefix, room, most
# listed. {count, 1 if listed, rev, then sid, name, user of each live named connection when
# listed}; the room's flag is set when it had none, so that the next tick tells its crossing.
# A rev is made when Redis has none (it forgot everything): what a client is given as the rev
# of a roster is never one a later change could have.
_ROSTER = (
    _LIB
    + _LISTED
    + """
local count = redis.call('HLEN', KEYS[2])
local shown = listed(KEYS[3], ARGV[2], count, tonumber(ARGV[3]))
if count > 0 then redis.call('HSET', KEYS[3], ARGV[2], shown and '1' or '0') end
local out = {count, shown and 1 or 0, redis.call('GET', KEYS[4]) or next_rev(KEYS[4])}
if not shown then return out end
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local f = split(entries[i + 1])
  if live(ARGV[1], f[1]) then
    table.insert(out, entries[i])
    table.insert(out, f[2])
    table.insert(out, f[3] or '')
  end
end
return out
"""
)

# A tick's figures for a room. KEYS: members:<room>, listed, rev. ARGV: room, most listed.
# {count, 1 if listed, 1 if that changed, rev}: a room is listed while it has at most the most
# members; the flag keeps what its clients were told (dropped when nobody is left: listed).
_TALLY = (
    _LIB
    + """
local count = redis.call('HLEN', KEYS[1])
local was = redis.call('HGET', KEYS[2], ARGV[1]) ~= '0'
local shown = count <= tonumber(ARGV[2])
if count > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], shown and '1' or '0')
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
local rev = redis.call('GET', KEYS[3]) or next_rev(KEYS[3])
return {count, shown and 1 or 0, (shown ~= was) and 1 or 0, rev}
"""
)

# KEYS: rev. The next rev, for a change of presence made without another write.
_REV = (
    _LIB
    + """
return next_rev(KEYS[1])
"""
)

# KEYS: replicas, sessions:<rid>, names. ARGV: rid, prefix. Removes a dead replica's entries;
# room, member id, name, the member's connections left there, and the rev, of each named one.
_REAP = (
    _LIB
    + """
if live(ARGV[2], ARGV[1]) then return {} end
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return {} end
local entries = redis.call('HGETALL', KEYS[2])
local out = {}
for i = 1, #entries, 2 do
  local sid = entries[i]
  local f = split(entries[i + 1])
  local room, key, name, user = f[1], f[2] or '', f[3] or '', f[4] or ''
  local members = ARGV[2] .. 'members:' .. room
  redis.call('HDEL', ARGV[2] .. 'room:' .. room, sid)
  if user == '' then
    if key ~= '' then
      local owner = redis.call('HGET', KEYS[3], key)
      local me = ARGV[1] .. US .. sid .. US
      if owner and string.sub(owner, 1, #me) == me then redis.call('HDEL', KEYS[3], key) end
      redis.call('HDEL', members, sid)
      table.insert(out, room)
      table.insert(out, sid)
      table.insert(out, name)
      table.insert(out, 0)
      table.insert(out, next_rev(ARGV[2] .. 'rev'))
    end
  else
    redis.call('HDEL', ARGV[2] .. 'user:' .. user, sid)
    local all, here = user_connections(ARGV[2], user, room)
    if all == 0 and key ~= '' and redis.call('HGET', KEYS[3], key) == US .. user then
      redis.call('HDEL', KEYS[3], key)
    end
    if key ~= '' then
      if here == 0 then
        redis.call('HDEL', members, user)
      else
        redis.call('HSET', members, user, here)
      end
      table.insert(out, room)
      table.insert(out, user)
      table.insert(out, name)
      table.insert(out, here)
      table.insert(out, next_rev(ARGV[2] .. 'rev'))
    end
  end
end
redis.call('DEL', KEYS[2])
return out
"""
)


class RedisChatStore(ReplicaEntries):
    """State shared by every replica through Redis. After each heartbeat it writes our
    entries back when Redis forgot them, and reaps the entries of replicas that died; the
    ``announcer`` tells clients what that changed, and presence every ``presence_interval``.
    Rooms of more than ``list_max`` members are not listed."""

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
        presence_interval: float,
        list_max: int,
    ) -> None:
        super().__init__(redis, replica)
        self.announcer = announcer
        self.list_max = list_max
        self.presence = Presence(
            announcer, interval=presence_interval, tally=self._tally, roster=self.roster
        )
        #: Messages and names: a client is told they are stored once a replica has them too.
        self.acked = acked
        self.history_size = history_size
        self.history_ttl_ms = int(history_ttl * 1000)
        self.history_rooms = history_rooms
        self.sessions: dict[str, Session] = {}
        self._append = redis.register_script(_APPEND)
        self._claim = redis.register_script(_CLAIM)
        self._claim_user = redis.register_script(_CLAIM_USER)
        self._leave = redis.register_script(_LEAVE)
        self._roster = redis.register_script(_ROSTER)
        self._tally_script = redis.register_script(_TALLY)
        self._rev = redis.register_script(_REV)
        self._reap = redis.register_script(_REAP)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def _sessions_key(self) -> str:
        return self._key("sessions", self.rid)

    # -- the replica's life ------------------------------------------------------------------

    async def stop(self) -> None:
        await super().stop()  # our people leave every room (depart), told below
        await self.presence.stop()

    async def depart(self) -> None:
        # As a crashed replica would be reaped, only at once: others see our members go.
        await self.redis.delete(self._key("replica", self.rid))
        await self.reap(self.rid)

    async def rejoin(self) -> None:
        # Write our sessions again and find out which names we lost.
        log.warning("chat: re-registering %d sessions in Redis", len(self.sessions))
        lost: list[tuple[str, Session]] = []
        back: list[tuple[str, Session, Change]] = []
        for sid, session in list(self.sessions.items()):
            await self.redis.hset(self._sessions_key, sid, f"{session.room}{US}{US}")
            if not session.key:
                continue
            if session.user:
                held = await self._claim_user_for(sid, session, session.name, session.key)
            else:
                held = await self._claim_for(sid, session, session.name, session.key, session.token)
            if not held.ok:
                lost.append((sid, replace(session)))
                if not session.user:  # unnamed from now; a user's connection is let go
                    session.name = session.key = ""
            else:
                member = session.member(sid, held.connections)
                back.append((sid, session, Change("joined", member, held.rev)))
        # If the others took us for dead, they told the rooms our people left, and that may
        # still be on its way to our listener (a network cut holds it back): our clients must
        # hear it before they hear that our people are back, not after (issue 13, scenario 7;
        # the revs would put it right in the end, the wait keeps a page from showing it).
        await self.announcer.heard_up_to_now()
        for sid, session in lost:
            await self.announcer.name_lost(sid, session)
            if not session.user:  # a user's connection goes: its leaving is told
                rev = int(await self._rev(keys=[self._key("rev")]))
                gone = Change("left", Member(sid, session.name), rev)
                self.presence.record(session.room, gone)
        # Told again, even to those who never heard they left: the others may have been told
        # so (this replica was taken for dead).
        for sid, session, change in back:
            if self.sessions.get(sid) is session and session.name == change.member.name:
                self.presence.record(session.room, change)

    async def reap(self, rid: str) -> None:
        flat = await self._reap(
            keys=[self._key("replicas"), self._key("sessions", rid), self._key("names")],
            args=[rid, self.prefix],
        )
        # A user with several connections on the replica is reported once per connection, with
        # fewer left each time: the presence merges them, the last (newest rev) counts.
        for i in range(0, len(flat), 5):
            room, member = flat[i], Member(flat[i + 1], flat[i + 2], int(flat[i + 3]))
            kind: Kind = "updated" if member.connections else "left"
            self.presence.record(room, Change(kind, member, int(flat[i + 4])))
        if flat:
            log.info("chat: replica %s is gone; its named members left", rid)

    # -- sessions, names, presence ------------------------------------------------------------

    def session(self, sid: str) -> Session | None:
        return self.sessions.get(sid)

    async def join(self, sid: str, room: str, proof: str = "", user: str = "") -> None:
        await self.redis.hset(self._sessions_key, sid, f"{room}{US}{US}")
        self.sessions[sid] = Session(room, proof=proof, user=user)

    async def leave(self, sid: str) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return

        async def remove() -> None:
            remaining, rev = await self._leave(
                keys=[
                    self._key("names"),
                    self._key("room", session.room),
                    self._sessions_key,
                    self._key("user", session.user or "-"),
                    self._key("members", session.room),
                    self._key("rev"),
                ],
                args=[
                    self.rid,
                    sid,
                    session.key,
                    self.prefix,
                    session.user,
                    session.room,
                    "1" if session.name else "",
                ],
            )
            if rev:
                kind: Kind = "updated" if remaining else "left"
                change = Change(kind, session.member(sid, int(remaining)), int(rev))
                self.presence.record(session.room, change)

        try:
            await self.remove_entries(sid, remove)
        except (RedisError, OSError):
            # Its removal is tried again after each beat, and told then; an anonymous
            # member's leaving is told at once too, with a rev of our clock's (a signed-in
            # user's other connections are not known until Redis answers).
            if session.name and not session.user:
                self.presence.record(session.room, Change("left", session.member(sid), clock_rev()))
            raise

    async def claim(self, sid: str, name: str, key: str, token: str) -> Claimed:
        session = self.sessions[sid]
        claimed = await self._claim_for(sid, session, name, key, token)
        if claimed.ok:
            session.name, session.key, session.token = name, key, token
            self.presence.record(session.room, Change("joined", Member(sid, name), claimed.rev))
        return claimed

    async def _claim_for(
        self, sid: str, session: Session, name: str, key: str, token: str
    ) -> Claimed:
        ok, replaced, rev = await self.acked.run(
            self._claim,
            keys=[
                self._key("names"),
                self._key("room", session.room),
                self._sessions_key,
                self._key("members", session.room),
                self._key("rev"),
            ],
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
        return Claimed(bool(ok), str(replaced or ""), rev=int(rev or 0))

    async def claim_user(self, sid: str, name: str, key: str) -> Claimed:
        session = self.sessions[sid]
        claimed = await self._claim_user_for(sid, session, name, key)
        if claimed.ok:
            session.name, session.key = name, key
            member = session.member(sid, claimed.connections)
            kind: Kind = "joined" if claimed.connections == 1 else "updated"
            self.presence.record(session.room, Change(kind, member, claimed.rev))
        return claimed

    async def _claim_user_for(self, sid: str, session: Session, name: str, key: str) -> Claimed:
        ok, replaced, connections, rev = await self.acked.run(
            self._claim_user,
            keys=[
                self._key("names"),
                self._key("room", session.room),
                self._sessions_key,
                self._key("user", session.user),
                self._key("members", session.room),
                self._key("rev"),
            ],
            args=[self.rid, sid, key, name, self.prefix, session.room, session.user],
        )
        return Claimed(bool(ok), str(replaced or ""), int(connections), int(rev or 0))

    async def roster(self, room: str) -> Roster:
        count, listed, rev, *flat = await self._roster(
            keys=[
                self._key("room", room),
                self._key("members", room),
                self._key("listed"),
                self._key("rev"),
            ],
            args=[self.prefix, room, self.list_max],
        )
        members = group_members((flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3))
        return Roster(members, int(count), bool(listed), int(rev))

    async def _tally(self, room: str) -> Tally:
        count, listed, crossed, rev = await self._tally_script(
            keys=[self._key("members", room), self._key("listed"), self._key("rev")],
            args=[room, self.list_max],
        )
        return Tally(int(count), bool(listed), bool(crossed), int(rev))

    # -- history ------------------------------------------------------------------------------

    async def append(self, room: str, sender: Member, text: str) -> ChatMessage:
        message_id = await self.acked.run(
            self._append,
            keys=[self._key("history", room), self._key("histories")],
            args=[
                room,
                sender.id,
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
