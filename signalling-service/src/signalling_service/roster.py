"""Who is connected, in which room: this process's memory, or Redis for replicas.

The course's ``clients`` list and the check that a message's addressee exists both read the
roster, so with Redis they see the whole cluster (issue 6). Entries carry the replica's id; an
entry of a replica whose heartbeat stopped is left out at once and reaped by a survivor's
heartbeat, so a crashed replica's clients leave the lists within ``REPLICA_TTL``.

Redis layout (keys under ``signal:``): ``room:<room>``, a hash sid -> replica id;
``sessions:<replica id>``, a hash sid -> room, for reaping the replica; plus the heartbeat's
``replica:<id>`` and ``replicas`` (switchboard.replicas).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.asyncio import Redis
from switchboard.components import Passive
from switchboard.replicas import Replica, ReplicaEntries

log = logging.getLogger(__name__)

#: Told a room and its members now, when they changed without anyone there leaving by
#: themselves (their replica died or stopped).
Announce = Callable[[str, list[str]], Awaitable[None]]


class Roster(Protocol):
    #: This replica's clients: sid -> room.
    rooms_of: dict[str, str]

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def check(self) -> str | None: ...
    async def join(self, sid: str, room: str) -> None: ...
    async def leave(self, sid: str) -> str | None: ...
    async def members(self, room: str) -> list[str]: ...
    async def present(self, room: str, sid: str) -> bool: ...


class MemoryRoster(Passive):
    def __init__(self) -> None:
        self.rooms_of: dict[str, str] = {}
        self.rooms: dict[str, dict[str, None]] = {}

    async def join(self, sid: str, room: str) -> None:
        self.rooms_of[sid] = room
        self.rooms.setdefault(room, {})[sid] = None

    async def leave(self, sid: str) -> str | None:
        room = self.rooms_of.pop(sid, None)
        if room is not None:
            members = self.rooms.get(room, {})
            members.pop(sid, None)
            if not members:
                self.rooms.pop(room, None)
        return room

    async def members(self, room: str) -> list[str]:
        return list(self.rooms.get(room, {}))

    async def present(self, room: str, sid: str) -> bool:
        return sid in self.rooms.get(room, {})


# KEYS[1] the room's hash. ARGV[1] the key prefix. The sids whose replica is alive.
_MEMBERS = """
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
  end
end
return out
"""

# KEYS[1] the room's hash. ARGV[1] the key prefix, ARGV[2] the sid. 1 when there and alive.
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
  if not rooms[room] then
    rooms[room] = true
    table.insert(out, room)
  end
end
redis.call('DEL', KEYS[2])
return out
"""


class RedisRoster(ReplicaEntries):
    """Replicas: who is in which room, whichever replica they are on. ``announce`` is told
    the rooms whose members changed by themselves: a replica died or stopped."""

    prefix = "signal:"

    def __init__(self, redis: Redis, replica: Replica, announce: Announce) -> None:
        super().__init__(redis, replica)
        self.announce = announce
        self.rooms_of: dict[str, str] = {}
        self._members = redis.register_script(_MEMBERS)
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
            await self.redis.hdel(self._key("room", room), sid)
        await self.redis.delete(self._key("sessions", self.rid))
        await self._announce(rooms)

    async def rejoin(self) -> None:
        log.warning("signal: re-registering %d clients in Redis", len(self.rooms_of))
        for sid, room in list(self.rooms_of.items()):
            await self._write(sid, room)

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
            await self.announce(room, await self.members(room))

    async def _write(self, sid: str, room: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key("room", room), sid, self.rid)
            pipe.hset(self._key("sessions", self.rid), sid, room)
            await pipe.execute()

    async def join(self, sid: str, room: str) -> None:
        await self._write(sid, room)
        self.rooms_of[sid] = room

    async def leave(self, sid: str) -> str | None:
        room = self.rooms_of.pop(sid, None)
        if room is None:
            return None

        async def remove() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._key("room", room), sid)
                pipe.hdel(self._key("sessions", self.rid), sid)
                await pipe.execute()

        async def remove_and_announce() -> None:
            await remove()  # when retried, the room is told here; at once, by the caller
            await self.announce(room, await self.members(room))

        await self.remove_entries(sid, remove, retry=remove_and_announce)
        return room

    async def members(self, room: str) -> list[str]:
        found = await self._members(keys=[self._key("room", room)], args=[self.prefix])
        return [str(sid) for sid in found]

    async def present(self, room: str, sid: str) -> bool:
        return bool(await self._present(keys=[self._key("room", room)], args=[self.prefix, sid]))
