"""Presence that scales (issue 17): who comes, goes and changes in a room is collected by the
replica where it happens and told as one ``presence`` event per room per tick
(``CHAT_PRESENCE_INTERVAL``), diffs as Phoenix Presence sends them, not one event per join to
everyone (1,000 people joining one room made a million deliveries). A room of more than
``CHAT_PRESENCE_LIST_MAX`` members is told its count, not who is in it.

Every change carries a *rev*: a number that grows with every change of presence in the service
(stamped by the store in the write that makes the change: in Redis by its script, from Redis's
clock, so that it keeps growing even after Redis forgot everything). A client keeps, for each
member id, the newest change it applied and skips an older one, and skips what the ``users``
it holds already shows (its rev): whatever order the diffs of different replicas reach it in,
it ends with the room as it is (docs/protocol.md, "Members").
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from redis.exceptions import RedisError
from switchboard.components import cancel

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from chat_service.store import Member

log = logging.getLogger(__name__)

#: What became of a member: it came (or came back, or renamed: a new name for its id), its
#: signed-in user's count of connections changed, it left.
Kind = Literal["joined", "updated", "left"]


def clock_rev() -> int:
    """A rev from this process's clock (microseconds), for what it tells without its store."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    member: Member
    rev: int

    def wire(self) -> dict[str, Any]:
        return {**self.member.wire(), "rev": self.rev}


def merged(earlier: Change | None, later: Change) -> Change:
    """One member's changes within a tick, as one: its newest state (the highest rev), told as
    a join when it was not here before one of them and is here now."""
    if earlier is None:
        return later
    newer, older = (later, earlier) if later.rev >= earlier.rev else (earlier, later)
    if newer.kind == "updated" and older.kind != "updated":
        return replace(newer, kind="joined")
    return newer


@dataclass(frozen=True, slots=True)
class Tally:
    """A room's presence in figures, as a tick reads it."""

    #: Named members in the room, on every replica.
    count: int
    #: Whether its clients are sent who is in it (``count`` <= ``CHAT_PRESENCE_LIST_MAX``).
    listed: bool
    #: ``listed`` changed with this tally (the one change the whole service makes once).
    crossed: bool
    #: The newest rev given when the tally was read.
    rev: int


@dataclass(frozen=True, slots=True)
class Roster:
    """Who is in a room (``members``, when it is listed), as ``users`` tells it: every change
    up to ``rev`` is in it."""

    members: list[Member]
    count: int
    listed: bool
    rev: int

    def wire(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        info = {"count": self.count, "listed": self.listed, "rev": self.rev}
        return [member.wire() for member in self.members], info


class Herald(Protocol):
    """Who tells a room's clients about its presence."""

    async def presence(self, room: str, diff: dict[str, Any]) -> None:
        """``presence`` to everyone in ``room``, on every replica."""

    async def users(self, room: str, roster: Roster) -> None:
        """``users`` to everyone in ``room``, on every replica."""


class Presence:
    """The changes of presence not told yet, by room and member, and the tick that tells them:
    started by the first change after a quiet spell, it runs while there is something to tell.

    ``tally(room)`` reads the room's figures (and takes note of a crossing of the list size),
    ``roster(room)`` who is in it: both the store's."""

    def __init__(
        self,
        herald: Herald,
        *,
        interval: float,
        tally: Callable[[str], Awaitable[Tally]],
        roster: Callable[[str], Awaitable[Roster]],
    ) -> None:
        self.herald = herald
        self.interval = interval
        self._tally = tally
        self._roster = roster
        #: Room -> member id -> its changes since the last tick, as one.
        self._pending: dict[str, dict[str, Change]] = {}
        #: Rooms small enough to list again whose ``users`` could not be read yet: their
        #: crossing is noted in the store already, so the next tick must send it.
        self._owed: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def record(self, room: str, change: Change) -> None:
        """``change`` happened in ``room``: told at the next tick."""
        changes = self._pending.setdefault(room, {})
        changes[change.member.id] = merged(changes.get(change.member.id), change)
        if not self._stopped and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._tick(), name="presence")

    async def _tick(self) -> None:
        while self._pending:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:
                log.exception("chat: telling the rooms who came and went failed")

    async def stop(self) -> None:
        """Tell what is left at once (the people of a replica that stops leave every room) and
        stop ticking."""
        self._stopped = True
        await cancel(self._task)
        await self.flush()

    async def flush(self) -> None:
        """One event to each room with changes: ``presence``, or ``users`` when the room has
        just become small enough to be listed (its clients hold a count, not a list)."""
        for room in list(self._pending):
            changes = self._pending.pop(room)
            try:
                await self._tell(room, changes)
            except (RedisError, OSError) as exc:
                log.warning("chat: presence of %r waits for Redis: %s", room, exc)
                self._put_back(room, changes)
            except BaseException:
                # Cancelled while telling (the service stops): told again by stop(); clients
                # take a change twice as once.
                self._put_back(room, changes)
                raise

    def _put_back(self, room: str, changes: dict[str, Change]) -> None:
        pending = self._pending.setdefault(room, {})
        for member_id, change in changes.items():
            pending[member_id] = merged(pending.get(member_id), change)

    async def _tell(self, room: str, changes: dict[str, Change]) -> None:
        try:
            tally: Tally | None = await self._tally(room)
        except (RedisError, OSError) as exc:
            # Who came and went is told all the same (the clients of this replica, and of the
            # others if Redis publishes), without the figures: the next tick with changes that
            # reads them tells them.
            log.warning("chat: presence of %r told without its count: %s", room, exc)
            tally = None
        if tally is not None and not tally.listed:
            self._owed.discard(room)
            counted = {"count": tally.count, "listed": False, "rev": tally.rev}
            await self.herald.presence(room, counted)
            return
        if tally is not None and (tally.crossed or room in self._owed):
            self._owed.add(room)
            await self.herald.users(room, await self._roster(room))
            self._owed.discard(room)
            return
        diff: dict[str, Any] = {"joined": [], "left": [], "updated": []}
        for change in sorted(changes.values(), key=lambda c: c.rev):
            diff[change.kind].append(change.wire())
        if tally is not None:
            diff.update(count=tally.count, listed=True, rev=tally.rev)
        await self.herald.presence(room, diff)
