"""Who is connected, in which room, under which name: this process's memory, or Redis for
replicas.

The course's ``clients`` list, the ``people`` list with names (issue 16) and the check that a
message's addressee exists all read the roster, so with Redis they see the whole cluster
(issue 6). Entries carry the replica's id; an entry of a replica whose heartbeat stopped is
left out at once and reaped by a survivor's heartbeat, so a crashed replica's clients leave
the lists, and their names are free, within ``REPLICA_TTL``.

A name is unique in its room, compared by :func:`signalling_service.validation.name_key`;
who may take a name someone holds is :func:`contest`'s rule, kept the same in the Lua script.

Redis layout (keys under ``signal:``): ``room:<room>``, a hash sid -> replica id;
``people:<room>``, a hash sid -> key US user US proof US name for the named ones (US is the
unit separator, which no name holds); ``sessions:<replica id>``, a hash sid -> room, for
reaping the replica; plus the heartbeat's ``replica:<id>`` and ``replicas``
(switchboard.replicas).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal, Protocol

from redis.asyncio import Redis
from switchboard.components import Passive
from switchboard.replicas import Replica, ReplicaEntries

log = logging.getLogger(__name__)

US = "\x1f"


@dataclass(frozen=True, slots=True)
class Person:
    """The name a connection goes by: the name, its key (what another name must differ in),
    the signed-in user it belongs to (a digest of the token's ``sub``; empty for a name
    given by hand) and ``proof``, the digest of the token that lets the connection's tab take
    the name back from its own stale connection."""

    name: str
    key: str
    user: str = ""
    proof: str = ""

    def encode(self) -> str:
        return US.join((self.key, self.user, self.proof, self.name))

    @classmethod
    def decode(cls, text: str) -> Person:
        key, user, proof, name = text.split(US, 3)
        return cls(name, key, user, proof)


#: A room's connections and the names they go by (None: no name yet), in the order they came.
People = dict[str, Person | None]


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim of a name. Not ``ok``: another holds it, nothing was written.
    ``replaced``: stale connections of the claimant's own tab (it proved it with the name's
    token), to be let go; ``unnamed``: anonymous connections whose name a signed-in user
    took: they stay, without a name."""

    ok: bool
    replaced: tuple[str, ...] = ()
    unnamed: tuple[str, ...] = ()


def contest(
    held: Person, claimant: Person, proof: str
) -> Literal["share", "taken", "replaced", "unnamed"]:
    """What becomes of ``held`` when ``claimant`` (who showed ``proof``, the digest of a name
    token, or "") claims the same name: a signed-in user's connections share its name;
    nobody takes a signed-in user's name; a signed-in user takes an anonymous one's; the tab
    that got the name takes it back from its stale connection. (_JOIN is the same in Lua.)"""
    if claimant.user and held.user == claimant.user:
        return "share"
    if held.user:
        return "taken"
    if claimant.user:
        return "unnamed"
    if proof and held.proof == proof:
        return "replaced"
    return "taken"


class RoomEvents(Protocol):
    """What the roster tells the room when its members changed by themselves (a replica died
    or stopped, or wrote its clients back)."""

    async def announce(self, room: str, people: People) -> None: ...

    async def name_lost(self, sid: str, person: Person) -> None: ...


class Roster(Protocol):
    #: This replica's clients: sid -> room.
    rooms_of: dict[str, str]
    #: This replica's clients: sid -> the name it goes by.
    persons: dict[str, Person | None]

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def check(self) -> str | None: ...
    async def join(self, sid: str, room: str, person: Person | None, proof: str = "") -> Claim: ...
    async def rename(self, sid: str, person: Person) -> Claim: ...
    async def leave(self, sid: str) -> str | None: ...
    async def people(self, room: str) -> People: ...
    async def present(self, room: str, sid: str) -> bool: ...


class MemoryRoster(Passive):
    def __init__(self) -> None:
        self.rooms_of: dict[str, str] = {}
        self.persons: dict[str, Person | None] = {}
        self.rooms: dict[str, People] = {}

    def _claim(self, sid: str, room: str, person: Person, proof: str) -> Claim:
        members = self.rooms.get(room, {})
        replaced: list[str] = []
        unnamed: list[str] = []
        for other, held in members.items():
            if other == sid or held is None or held.key != person.key:
                continue
            verdict = contest(held, person, proof)
            if verdict == "taken":
                return Claim(False)
            if verdict == "replaced":
                replaced.append(other)
            elif verdict == "unnamed":
                unnamed.append(other)
        for other in (*replaced, *unnamed):
            members[other] = None
            self.persons[other] = None
        return Claim(True, tuple(replaced), tuple(unnamed))

    async def join(self, sid: str, room: str, person: Person | None, proof: str = "") -> Claim:
        claim = self._claim(sid, room, person, proof) if person else Claim(True)
        if claim.ok:
            self.rooms_of[sid] = room
            self.persons[sid] = person
            self.rooms.setdefault(room, {})[sid] = person
        return claim

    async def rename(self, sid: str, person: Person) -> Claim:
        return await self.join(sid, self.rooms_of[sid], person)

    async def leave(self, sid: str) -> str | None:
        room = self.rooms_of.pop(sid, None)
        self.persons.pop(sid, None)
        if room is not None:
            members = self.rooms.get(room, {})
            members.pop(sid, None)
            if not members:
                self.rooms.pop(room, None)
        return room

    async def people(self, room: str) -> People:
        return dict(self.rooms.get(room, {}))

    async def present(self, room: str, sid: str) -> bool:
        return sid in self.rooms.get(room, {})


# KEYS[1] the room's hash, KEYS[2] the room's people, KEYS[3] this replica's sessions.
# ARGV[1] the key prefix, ARGV[2] the sid, ARGV[3] the replica id, ARGV[4] the room, ARGV[5]
# the person's entry ('' for no name), ARGV[6] its key, ARGV[7] its user, ARGV[8] the proof
# shown. {'taken'} and nothing written, or {'ok', 'replaced'|'unnamed', sid, ...}: contest()'s
# rule against every live holder of the key.
_JOIN = r"""
local function alive(sid)
  local rid = redis.call('HGET', KEYS[1], sid)
  return rid and redis.call('EXISTS', ARGV[1] .. 'replica:' .. rid) == 1
end
local out = {'ok'}
if ARGV[5] ~= '' then
  local drop = {}
  local entries = redis.call('HGETALL', KEYS[2])
  for i = 1, #entries, 2 do
    local other = entries[i]
    local key, user, proof = string.match(entries[i + 1], '^([^\31]*)\31([^\31]*)\31([^\31]*)\31')
    if other ~= ARGV[2] and key == ARGV[6] and alive(other) then
      if ARGV[7] ~= '' and user == ARGV[7] then
        -- the same signed-in user: its connections share the name
      elseif user ~= '' then
        return {'taken'}
      elseif ARGV[7] ~= '' then
        table.insert(drop, other)
        table.insert(out, 'unnamed')
        table.insert(out, other)
      elseif ARGV[8] ~= '' and proof == ARGV[8] then
        table.insert(drop, other)
        table.insert(out, 'replaced')
        table.insert(out, other)
      else
        return {'taken'}
      end
    end
  end
  for _, other in ipairs(drop) do
    redis.call('HDEL', KEYS[2], other)
  end
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[5])
else
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
return out
"""

# KEYS[1] the room's hash, KEYS[2] its people. ARGV[1] the key prefix. sid, entry ('' for no
# name), ... of the members whose replica is alive.
_PEOPLE = """
local entries = redis.call('HGETALL', KEYS[1])
local alive = {}
local out = {}
for i = 1, #entries, 2 do
  local rid = entries[i + 1]
  if alive[rid] == nil then
    alive[rid] = redis.call('EXISTS', ARGV[1] .. 'replica:' .. rid) == 1
  end
  if alive[rid] then
    table.insert(out, entries[i])
    table.insert(out, redis.call('HGET', KEYS[2], entries[i]) or '')
  end
end
return out
"""

# KEYS[1] the room's hash. ARGV[1] the key prefix, ARGV[2] the sid. 1 when there and alive.
#: Seconds a relay's addressee on another replica, once found in its room, is believed there.
PRESENT_REMEMBERED = 1.0
#: Addressees remembered at most (expired ones are dropped first, then all).
PRESENT_REMEMBERED_MOST = 100_000

_PRESENT = """
local rid = redis.call('HGET', KEYS[1], ARGV[2])
if not rid then return 0 end
return redis.call('EXISTS', ARGV[1] .. 'replica:' .. rid)
"""

# KEYS[1] the replicas set, KEYS[2] the dead replica's sessions. ARGV[1] its id, ARGV[2] the
# prefix. Takes its clients out of their rooms; returns those rooms (once, by the one caller
# that took the replica off the list).
_REAP = """
if redis.call('EXISTS', ARGV[2] .. 'replica:' .. ARGV[1]) == 1 then return {} end
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return {} end
local entries = redis.call('HGETALL', KEYS[2])
local rooms = {}
local out = {}
for i = 1, #entries, 2 do
  local room = entries[i + 1]
  redis.call('HDEL', ARGV[2] .. 'room:' .. room, entries[i])
  redis.call('HDEL', ARGV[2] .. 'people:' .. room, entries[i])
  if not rooms[room] then
    rooms[room] = true
    table.insert(out, room)
  end
end
redis.call('DEL', KEYS[2])
return out
"""


class RedisRoster(ReplicaEntries):
    """Replicas: who is in which room under which name, whichever replica they are on.
    ``events`` is told the rooms whose members changed by themselves, and the clients whose
    name went to someone else while this replica was taken for dead."""

    prefix = "signal:"

    def __init__(self, redis: Redis, replica: Replica, events: RoomEvents) -> None:
        super().__init__(redis, replica)
        self.events = events
        self.rooms_of: dict[str, str] = {}
        self.persons: dict[str, Person | None] = {}
        #: (room, sid) of other replicas' clients found present, until when it is believed.
        self.seen: dict[tuple[str, str], float] = {}
        self._join = redis.register_script(_JOIN)
        self._people = redis.register_script(_PEOPLE)
        self._present = redis.register_script(_PRESENT)
        self._reap = redis.register_script(_REAP)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def depart(self) -> None:
        # Our clients are disconnected as the server stops; take them off the lists now
        # rather than after REPLICA_TTL.
        rooms = set(self.rooms_of.values())
        for sid in list(self.rooms_of):
            room = self.rooms_of.pop(sid)
            self.persons.pop(sid, None)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._key("room", room), sid)
                pipe.hdel(self._key("people", room), sid)
                await pipe.execute()
        await self.redis.delete(self._key("sessions", self.rid))
        await self._announce(rooms)

    async def rejoin(self) -> None:
        """Our clients written back, each under its name unless someone took it meanwhile
        (we were taken for dead): then it goes on without, and is told. The rooms are told
        who is there, as those we left may have been told we were gone."""
        log.warning("signal: re-registering %d clients in Redis", len(self.rooms_of))
        for sid, room in list(self.rooms_of.items()):
            person = self.persons.get(sid)
            claim = await self._write(sid, room, person)
            if not claim.ok and person is not None:
                await self._write(sid, room, None)
                self.persons[sid] = None
                await self.events.name_lost(sid, person)
        await self._announce(set(self.rooms_of.values()))

    async def reap(self, replica_id: str) -> None:
        rooms = await self._reap(
            keys=[self._key("replicas"), self._key("sessions", replica_id)],
            args=[replica_id, self.prefix],
        )
        if rooms:
            log.info(
                "signal: replica %s is gone; its clients left %d rooms", replica_id, len(rooms)
            )
            await self._announce({str(room) for room in rooms})

    async def _announce(self, rooms: set[str]) -> None:
        for room in rooms:
            await self.events.announce(room, await self.people(room))

    async def _write(self, sid: str, room: str, person: Person | None, proof: str = "") -> Claim:
        found = await self._join(
            keys=[
                self._key("room", room),
                self._key("people", room),
                self._key("sessions", self.rid),
            ],
            args=[
                self.prefix,
                sid,
                self.rid,
                room,
                person.encode() if person else "",
                person.key if person else "",
                person.user if person else "",
                proof,
            ],
        )
        answer = [str(item) for item in found]
        if answer[0] != "ok":
            return Claim(False)
        pairs = list(zip(answer[1::2], answer[2::2], strict=True))
        claim = Claim(
            True,
            tuple(other for what, other in pairs if what == "replaced"),
            tuple(other for what, other in pairs if what == "unnamed"),
        )
        for other in (*claim.replaced, *claim.unnamed):
            if other in self.persons:
                self.persons[other] = None
        return claim

    async def join(self, sid: str, room: str, person: Person | None, proof: str = "") -> Claim:
        claim = await self._write(sid, room, person, proof)
        if claim.ok:
            self.rooms_of[sid] = room
            self.persons[sid] = person
        return claim

    async def rename(self, sid: str, person: Person) -> Claim:
        return await self.join(sid, self.rooms_of[sid], person)

    async def leave(self, sid: str) -> str | None:
        room = self.rooms_of.pop(sid, None)
        self.persons.pop(sid, None)
        if room is None:
            return None

        async def remove() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._key("room", room), sid)
                pipe.hdel(self._key("people", room), sid)
                pipe.hdel(self._key("sessions", self.rid), sid)
                await pipe.execute()

        async def remove_and_announce() -> None:
            await remove()  # when retried, the room is told here; at once, by the caller
            await self.events.announce(room, await self.people(room))

        await self.remove_entries(sid, remove, retry=remove_and_announce)
        return room

    async def people(self, room: str) -> People:
        found = await self._people(
            keys=[self._key("room", room), self._key("people", room)], args=[self.prefix]
        )
        items = [str(item) for item in found]
        return {
            sid: Person.decode(entry) if entry else None
            for sid, entry in zip(items[::2], items[1::2], strict=True)
        }

    async def present(self, room: str, sid: str) -> bool:
        """Whether ``sid`` is in ``room`` (a relay's addressee): known here for this replica's
        own clients; for another replica's, asked of Redis, and a yes remembered for
        :data:`PRESENT_REMEMBERED` s, so that the candidates of one call (tens a second) cost
        one round trip, not one each. A peer that leaves meanwhile is relayed to for that
        long: the relay goes nowhere, as one sent just before it left would."""
        if sid in self.rooms_of:
            return self.rooms_of[sid] == room
        now = time.monotonic()
        if self.seen.get((room, sid), 0.0) > now:
            return True
        found = bool(await self._present(keys=[self._key("room", room)], args=[self.prefix, sid]))
        if found:
            if len(self.seen) >= PRESENT_REMEMBERED_MOST:
                self.seen = {key: until for key, until in self.seen.items() if until > now}
                if len(self.seen) >= PRESENT_REMEMBERED_MOST:
                    self.seen.clear()
            self.seen[(room, sid)] = now + PRESENT_REMEMBERED
        return found
