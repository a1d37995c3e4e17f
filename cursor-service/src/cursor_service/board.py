"""Where the cursors of every room are: this process's memory, or Redis for replicas.

Each replica ticks on its own and sends its own clients what changed in their rooms since it
last looked, so every client gets one frame per tick from its replica and none is doubled by
two replicas ticking (issue 3). With Redis, a tick first writes the moves of this replica's
clients (coalesced: one entry per cursor per tick, however often it moved), then reads the
rooms its clients are in. Entries carry the replica's id; entries of a replica whose heartbeat
stopped are left out, so a crashed replica's cursors vanish within its TTL.

Redis layout (keys under ``cursors:``): ``room:<room>``, a hash sid -> rid US x US y US slot US
key US name (looks.py: the slot is the colour and pattern, the key the name as compared);
``version:<room>``, bumped by every write to the room; ``rooms:<rid>``, the rooms a replica wrote
to, for reaping it. A newcomer's look is chosen and its entry written in one script (_ENTER), so
that two replicas never hand out the same look or name at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT
from switchboard.components import Passive
from switchboard.replicas import Replica, ReplicaEntries

from cursor_service.looks import Look, choose, name_key

log = logging.getLogger(__name__)
US = "\x1f"
#: A room nobody wrote to for this long is dropped from Redis.
ROOM_IDLE_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Cursor:
    #: None and None: the client is here, its pointer is not on the page.
    x: float | None
    y: float | None
    look: Look

    def wire(self) -> dict[str, object]:
        look = self.look
        return {
            "x": self.x,
            "y": self.y,
            "color": look.color,
            "pattern": look.pattern,
            "name": look.name,
        }


View = dict[str, Cursor]
#: A cursor as read from Redis: (sid, replica id, cursor).
Row = tuple[str, str, Cursor]


class Board(Protocol):
    #: Whether other replicas write to this board too (then a tick waits for them).
    shared: bool

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def check(self) -> str | None: ...
    async def enter(self, room: str, sid: str, name: str) -> Look:
        """Put ``sid`` in ``room``, pointer off the page, with a look nobody else in the room
        has (looks.py) and ``name`` (numbered if someone there shows it already); at once,
        not at the next flush. Its look is freed by :meth:`remove`."""
        ...

    def place(self, room: str, sid: str, cursor: Cursor) -> None: ...
    def remove(self, room: str, sid: str) -> None: ...
    async def flush(self) -> None: ...
    async def views(self, rooms: Iterable[str]) -> dict[str, View]: ...


class MemoryBoard(Passive):
    """One process: the board is this dict."""

    shared = False

    def __init__(self) -> None:
        self.rooms: dict[str, View] = {}

    async def enter(self, room: str, sid: str, name: str) -> Look:
        cursors = self.rooms.setdefault(room, {})
        look = choose((c.look for other, c in cursors.items() if other != sid), name)
        cursors[sid] = Cursor(None, None, look)
        return look

    def place(self, room: str, sid: str, cursor: Cursor) -> None:
        self.rooms.setdefault(room, {})[sid] = cursor

    def remove(self, room: str, sid: str) -> None:
        cursors = self.rooms.get(room)
        if cursors is not None:
            cursors.pop(sid, None)
            if not cursors:
                del self.rooms[room]

    async def flush(self) -> None:
        pass

    async def views(self, rooms: Iterable[str]) -> dict[str, View]:
        return {room: dict(self.rooms.get(room, {})) for room in rooms}


_REAP = """
local rooms = redis.call('SMEMBERS', KEYS[1])
local prefix = ARGV[1] .. '\\31'
for _, room in ipairs(rooms) do
  local key = ARGV[2] .. 'room:' .. room
  local entries = redis.call('HGETALL', key)
  for i = 1, #entries, 2 do
    if string.sub(entries[i + 1], 1, #prefix) == prefix then
      redis.call('HDEL', key, entries[i])
    end
  end
end
redis.call('DEL', KEYS[1])
return #rooms
"""

#: looks.choose, in Redis, with the room's entry written in the same step. An entry of a replica
#: whose heartbeat stopped is not counted: readers leave it out too, and the reaper deletes it.
#: KEYS: the room's hash, its version, this replica's rooms. ARGV: sid, this replica's id, the
#: prefix of replicas' liveness keys, the name asked for, its key, the room, ROOM_IDLE_MS.
_ENTER = """
local entries = redis.call('HGETALL', KEYS[1])
local alive = {[ARGV[2]] = true}
local slots, keys = {}, {}
for i = 1, #entries, 2 do
  local rid, slot, key = string.match(
    entries[i + 1], '^([^\\31]*)\\31[^\\31]*\\31[^\\31]*\\31([^\\31]*)\\31([^\\31]*)\\31')
  if rid and entries[i] ~= ARGV[1] then
    if alive[rid] == nil then
      alive[rid] = redis.call('EXISTS', ARGV[3] .. rid) == 1
    end
    if alive[rid] and tonumber(slot) then
      slots[tonumber(slot)] = true
      if key ~= '' then keys[key] = true end
    end
  end
end
local slot = 0
while slots[slot] do slot = slot + 1 end
local name, key = ARGV[4], ARGV[5]
if key ~= '' and keys[key] then
  local number = 2
  while keys[key .. ' (' .. number .. ')'] do number = number + 1 end
  name = name .. ' (' .. number .. ')'
  key = key .. ' (' .. number .. ')'
end
redis.call('HSET', KEYS[1], ARGV[1], table.concat({ARGV[2], '', '', slot, key, name}, '\\31'))
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('SADD', KEYS[3], ARGV[6])
return {slot, name, key}
"""


class RedisBoard(ReplicaEntries):
    """Replicas: this replica's cursors are written to Redis on each tick, everyone's read."""

    prefix = "cursors:"
    shared = True

    def __init__(self, redis: Redis, replica: Replica) -> None:
        super().__init__(redis, replica)
        #: This replica's cursors, by room.
        self.local: dict[str, View] = {}
        self._moved: dict[str, set[str]] = {}
        self._removed: dict[str, set[str]] = {}
        #: What each room held when last read, and the room's version then.
        self._read: dict[str, tuple[object, list[Row]]] = {}
        self._reap = redis.register_script(_REAP)
        self._enter = redis.register_script(_ENTER)

    async def depart(self) -> None:
        # As a crashed replica would be reaped, only at once: others see our cursors go.
        await self.redis.delete(self.heartbeat.key(self.rid))
        await self._reap(keys=[f"{self.prefix}rooms:{self.rid}"], args=[self.rid, self.prefix])

    async def rejoin(self) -> None:
        for room, cursors in self.local.items():
            self._moved.setdefault(room, set()).update(cursors)

    async def reap(self, replica_id: str) -> None:
        if await self.heartbeat.forget(replica_id):
            await self._reap(
                keys=[f"{self.prefix}rooms:{replica_id}"], args=[replica_id, self.prefix]
            )

    async def enter(self, room: str, sid: str, name: str) -> Look:
        key = name_key(name) if name else ""
        slot, shown, shown_key = await self._enter(
            keys=[
                f"{self.prefix}room:{room}",
                f"{self.prefix}version:{room}",
                f"{self.prefix}rooms:{self.rid}",
            ],
            args=[sid, self.rid, self.heartbeat.key(""), name, key, room, ROOM_IDLE_MS],
        )
        look = Look(int(slot), str(shown), str(shown_key))
        self.local.setdefault(room, {})[sid] = Cursor(None, None, look)
        return look

    def place(self, room: str, sid: str, cursor: Cursor) -> None:
        self.local.setdefault(room, {})[sid] = cursor
        self._moved.setdefault(room, set()).add(sid)

    def remove(self, room: str, sid: str) -> None:
        cursors = self.local.get(room)
        if cursors is not None and cursors.pop(sid, None) is not None:
            self._removed.setdefault(room, set()).add(sid)
            if not cursors:
                del self.local[room]

    async def flush(self) -> None:
        if not self._moved and not self._removed:
            return
        moved, self._moved = self._moved, {}
        removed, self._removed = self._removed, {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for room, sids in moved.items():
                cursors = self.local.get(room, {})
                fields: dict[FieldT, EncodableT] = {
                    sid: _entry(self.rid, c) for sid in sids if (c := cursors.get(sid)) is not None
                }
                if fields:
                    pipe.hset(f"{self.prefix}room:{room}", mapping=fields)
                    pipe.pexpire(f"{self.prefix}room:{room}", ROOM_IDLE_MS)
                    pipe.sadd(f"{self.prefix}rooms:{self.rid}", room)
            for room, sids in removed.items():
                pipe.hdel(f"{self.prefix}room:{room}", *sids)
            for room in moved.keys() | removed.keys():
                # Readers re-read a room only when its version moved.
                pipe.incr(f"{self.prefix}version:{room}")
                pipe.pexpire(f"{self.prefix}version:{room}", ROOM_IDLE_MS)
            try:
                await pipe.execute()
            except BaseException:
                # Nothing is lost: the next tick writes it all again (a removal lost here
                # would leave a cursor on every screen).
                for pending, taken in ((self._moved, moved), (self._removed, removed)):
                    for room, sids in taken.items():
                        pending.setdefault(room, set()).update(sids)
                raise

    async def views(self, rooms: Iterable[str]) -> dict[str, View]:
        """Each room's cursors whose replica is alive. A room whose version has not moved
        since the last tick is not read again: an idle room costs one MGET, not a parse."""
        rooms = list(rooms)
        if not rooms:
            return {}
        versions = await self.redis.mget([f"{self.prefix}version:{room}" for room in rooms])
        stale = [
            (room, version)
            for room, version in zip(rooms, versions, strict=True)
            if room not in self._read or self._read[room][0] != version
        ]
        if stale:
            async with self.redis.pipeline(transaction=False) as pipe:
                for room, _ in stale:
                    pipe.hgetall(f"{self.prefix}room:{room}")
                raw = await pipe.execute()
            for (room, version), entries in zip(stale, raw, strict=True):
                self._read[room] = (version, [_row(sid, value) for sid, value in entries.items()])
        for room in self._read.keys() - set(rooms):
            del self._read[room]
        owners = {rid for room in rooms for _, rid, _ in self._read[room][1]}
        alive = {self.rid}
        alive |= await self.heartbeat.alive(owners - alive)
        return {
            room: {sid: cursor for sid, rid, cursor in self._read[room][1] if rid in alive}
            for room in rooms
        }


def _number(value: float | None) -> str:
    return "" if value is None else repr(value)


def _entry(rid: str, cursor: Cursor) -> str:
    look = cursor.look
    return US.join((rid, _number(cursor.x), _number(cursor.y), str(look.slot), look.key, look.name))


def _row(sid: str, value: str) -> Row:
    fields = value.split(US, 5)
    if len(fields) == 5:
        # Written by a replica of before looks (rid US x US y US colour US name), during a
        # rolling upgrade: shown plain until that replica is replaced.
        rid, x, y, _, name = fields
        look = Look(0, name, name_key(name) if name else "")
    else:
        rid, x, y, slot, key, name = fields
        look = Look(int(slot), name, key)
    return sid, rid, Cursor(float(x) if x else None, float(y) if y else None, look)
