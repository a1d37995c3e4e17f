"""Shared cursors (namespace ``/``): the course's ``update`` {x, y}, sent to everyone in the
room on a fixed tick as deltas, with snapshots for newcomers, askers and slow readers."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from switchboard.components import cancel
from switchboard.errors import InputError
from switchboard.fanout import (
    Encoded,
    behind,
    deliver_locally,
    encode_event,
    participants,
    send_encoded,
)
from switchboard.namespace import RateLimit, ServiceNamespace
from switchboard.service import Service
from switchboard.validation import connect_auth, display_name, one_argument, room_of

from cursor_service.board import Board, Cursor, View
from cursor_service.looks import Look
from cursor_service.settings import CursorSettings
from cursor_service.validation import position

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def diff(before: View, after: View) -> dict[str, Any] | None:
    """What changed between two views of a room; None when nothing did."""
    moved = {
        sid: [cursor.x, cursor.y]
        for sid, cursor in after.items()
        if (old := before.get(sid)) is not None and (old.x, old.y) != (cursor.x, cursor.y)
    }
    joined = {sid: cursor.wire() for sid, cursor in after.items() if sid not in before}
    left = [sid for sid in before if sid not in after]
    if not (moved or joined or left):
        return None
    return {"moved": moved, "joined": joined, "left": left}


@dataclass(slots=True)
class Member:
    room: str
    look: Look


@dataclass(slots=True)
class RoomState:
    """What this replica last sent a room: deltas are relative to it, snapshots are it."""

    seq: int = 0
    view: View = field(default_factory=dict)
    #: Server time (ms) of the tick that made ``view``.
    t: int = field(default_factory=lambda: now_ms())

    def snapshot(self) -> dict[str, Any]:
        cursors = {sid: cursor.wire() for sid, cursor in self.view.items()}
        return {"seq": self.seq, "t": self.t, "cursors": cursors}


class CursorNamespace(ServiceNamespace):
    error_event = "cursor_error"

    def __init__(self, service: Service, board: Board, settings: CursorSettings) -> None:
        rate = RateLimit(settings.rate_per_second, settings.rate_burst, tell_every=1.0)
        super().__init__(service, "/", rate=rate)
        self.board = board
        self.settings = settings
        self.members: dict[str, Member] = {}
        self.rooms: dict[str, set[str]] = {}
        self.states: dict[str, RoomState] = {}
        #: Clients skipped because they read too slowly; each gets a snapshot when caught up.
        self.behind: set[str] = set()
        self._ticker: asyncio.Task[None] | None = None

    # -- the service component: the tick ------------------------------------------------------

    async def start(self) -> None:
        self._ticker = self.service.background(self._tick_forever, "cursor tick")

    async def stop(self) -> None:
        await cancel(self._ticker)

    async def check(self) -> str | None:
        if self._ticker is None or self._ticker.done():
            return "the cursor tick is not running"
        return None

    async def _tick_forever(self) -> None:
        """Tick on the wall clock's multiples of the interval, so that every replica ticks at
        the same moments: each writes its clients' moves, waits a moment for the others to
        have written theirs, then reads and sends. A move then reaches clients on another
        replica in the same tick as clients on its own, instead of up to a tick later."""
        interval = self.settings.tick_ms / 1000
        settle = min(0.02, interval / 5) if self.board.shared else 0.0
        slot = 0
        while True:
            # The next slot of the wall clock, and never the same one twice (a sleep may end a
            # hair early); whole ticks are skipped, not bunched up, when one ran late.
            slot = max(math.floor(time.time() / interval) + 1, slot + 1)
            await asyncio.sleep(max(0.0, slot * interval - time.time()))
            try:
                await self.board.flush()
                if settle:
                    await asyncio.sleep(settle)
                await self.tick()
            except RedisError as exc:  # a Redis blip must not stop the cursors for good
                self.metrics.redis_errors.inc()
                log.warning("cursors: tick failed, Redis: %s", exc)
            except Exception:  # nor a bug of ours, which shows with its traceback
                log.exception("cursors: tick failed")

    async def tick(self) -> None:
        """Send each room of this replica's clients what changed since the last tick."""
        rooms = list(self.rooms)
        views = await self.board.views(rooms)
        stamp = now_ms()
        for room in rooms:
            state = self.states.setdefault(room, RoomState())
            view = views.get(room, {})
            changes = diff(state.view, view)
            state.view, state.t = view, stamp
            if changes is not None:
                state.seq += 1
                self.metrics.sent("delta")
            await self._deliver(room, state, changes, stamp)
        for room in set(self.states) - set(rooms):
            del self.states[room]

    async def _deliver(
        self, room: str, state: RoomState, changes: dict[str, Any] | None, stamp: int
    ) -> None:
        server = self.server
        delta: Encoded | None = None
        snapshot: Encoded | None = None
        for sid, eio_sid in participants(server, room):
            if behind(server, eio_sid, self.settings.max_queued):
                self.behind.add(sid)
            elif sid in self.behind:
                self.behind.discard(sid)
                if snapshot is None:
                    snapshot = encode_event(server, "/", "snapshot", [state.snapshot()])
                await send_encoded(server, eio_sid, snapshot)
            elif changes is not None:
                if delta is None:
                    frame = {"seq": state.seq, "t": stamp, **changes}
                    delta = encode_event(server, "/", "delta", [frame])
                await send_encoded(server, eio_sid, delta)

    # -- events -------------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        auth = connect_auth(auth)
        room = room_of(auth, environ)
        identity = await self.admit(sid, auth, "cursors", room)
        asked = display_name(auth["name"]) if auth.get("name") is not None else ""
        signed_in = identity.shown_name if identity else None
        name = asked if signed_in is None else signed_in
        # Here from the start, pointer not on the page yet: everyone can count who is in. With
        # a look nobody else in the room has, and a name numbered if someone shows it already.
        look = await self.board.enter(room, sid, name)
        self.members[sid] = Member(room, look)
        you = {
            "id": sid,
            "name": look.name,
            "asked": name,
            "color": look.color,
            "pattern": look.pattern,
            "signed_in": signed_in is not None,
        }
        await deliver_locally(self.server.manager, "look", [you], "/", sid, None)
        self.metrics.sent("look")
        # The snapshot first, then the room: every delta this client gets follows it. Both with
        # no wait between them: the snapshot goes straight to this process's socket (the client
        # is here), not through Redis, whose publish would let a tick send the room a delta
        # that this client, not yet in it, never gets.
        state = self.states.get(room) or RoomState()
        await deliver_locally(self.server.manager, "snapshot", [state.snapshot()], "/", sid, None)
        self.metrics.sent("snapshot")
        self.rooms.setdefault(room, set()).add(sid)
        await self.enter_room(sid, room)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        member = self.members.pop(sid, None)
        if member is None:
            return
        self.behind.discard(sid)
        self.board.remove(member.room, sid)
        sids = self.rooms.get(member.room)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self.rooms[member.room]

    async def on_update(self, sid: str, *args: Any) -> dict[str, Any]:
        member = self.members[sid]
        where = one_argument(args)
        # null: the pointer left the page (or the finger lifted): the cursor is hidden.
        x, y = (None, None) if where is None else position(where)
        self.board.place(member.room, sid, Cursor(x, y, member.look))
        return {"ok": True}

    async def on_snapshot(self, sid: str, *args: Any) -> dict[str, Any]:
        if args:
            raise InputError("bad_arguments", "snapshot takes no arguments.")
        room = self.members[sid].room
        state = self.states.get(room) or RoomState()
        return {"ok": True, **state.snapshot()}
