"""Issue 13, scenario 2 (cursors): a cursor-service replica killed (SIGKILL) while everyone in a
room moves. Its people connect again to the other replica and start over from the snapshot it
sends; every screen, built from snapshot and deltas as a client must, comes to hold exactly the
people connected now, under their current ids: the killed connections' cursors leave within
REPLICA_TTL and never come back (no ghost); each connection's deltas follow its snapshot seq by
seq; and everyone's last move shows where it was made, on every screen."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.cursors.test_cursors import join
from tests.faults.users import CursorUser
from tests.harness import Client, RedisServer, start_together, until

pytestmark = pytest.mark.asyncio

PEOPLE = 6
#: Acked moves each person makes before the kill, and again on its connection after it.
MOVES = 20
#: Positions are numbered: x = n / STEPS (the server keeps 4 decimals, so each is exact).
STEPS = 10_000


def mismatches(people: list[CursorUser], killed: set[str]) -> dict[str, object]:
    """What differs between each screen and the room as it is: who is connected now, each at
    the last position the server acked for them. Empty when every screen is right."""
    live = {person.sid for person in people}
    found: dict[str, object] = {}
    for person in people:
        shown = set(person.screen)
        if shown != live:
            found[person.name] = {"missing": live - shown, "ghosts": shown - live}
        elif shown & killed:
            found[person.name] = {"killed": shown & killed}
        for other in people:
            if other is person or other.last is None:
                continue
            sid, x, y = other.last
            if sid == other.sid and person.screen.get(sid) != [x, y]:
                found[f"{person.name} sees {other.name}"] = (person.screen.get(sid), [x, y])
            elif sid != other.sid:
                found[f"{other.name} has not moved since reconnecting"] = sid
    return found


async def test_a_cursor_replica_killed_while_people_move_leaves_no_ghost(
    log_dir: Path, own_redis: RedisServer, clients: list[Client], unique: str
) -> None:
    # Beats every second: a dead replica's cursors are taken for gone within 3 s of its last.
    env = {"REDIS_URL": own_redis.url, "REPLICA_TTL": "3"}
    a, b = start_together(log_dir, (("cursors", env, f"cursors-kill-{side}") for side in "ab"))
    room = f"kill-{unique}"
    # Half start on A (and fall back to B), half on B.
    people = [
        CursorUser([a.url, b.url] if n % 2 == 0 else [b.url, a.url], room, f"p{n}")
        for n in range(PEOPLE)
    ]
    moving = True
    movers: asyncio.Future[list[None]] | None = None
    try:
        await asyncio.gather(*(person.connect() for person in people))
        await until(lambda: not mismatches(people, set()), "everyone on every screen")

        async def move(person: CursorUser, row: int) -> None:
            # A pointer that never stops: numbered positions, one after each ack.
            n = 0
            while moving and n < STEPS:
                n += 1
                await person.move(n / STEPS, (row + 1) / 10)
                await asyncio.sleep(0.03)

        movers = asyncio.gather(*(move(person, row) for row, person in enumerate(people)))
        await until(lambda: all(p.moves >= MOVES for p in people), f"{MOVES} moves each")

        killed = {person.sid for person in people[::2]}
        a.kill()

        moved_before = {person.name: person.moves for person in people}
        await until(
            lambda: all(p.reconnects == 1 and p.sid not in killed for p in people[::2]),
            "A's people connected again, to B",
        )
        # Still moving while the killed connections' cursors leave the screens.
        await until(
            lambda: not any(killed & person.screen.keys() for person in people),
            "the killed connections' cursors gone from every screen",
        )
        await until(
            lambda: all(p.moves >= moved_before[p.name] + MOVES for p in people),
            f"{MOVES} more moves each, after reconnecting",
        )
        moving = False
        await movers

        # (a) and (c): every screen holds exactly who is connected now, at their last moves.
        try:
            await until(lambda: not mismatches(people, killed), "every screen right")
        except AssertionError:
            raise AssertionError(f"screens wrong: {mismatches(people, killed)}") from None
        # Redis holds them alone too: B's heartbeat reaped A's entries.
        store = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
        try:
            live = {person.sid for person in people}

            async def reaped() -> bool:
                return set(await store.hkeys(f"cursors:room:{room}")) == live

            await until(reaped, "only the live cursors stored")
        finally:
            await store.aclose()

        # Once more after the reap: a move each, seen everywhere, and still nobody else.
        for row, person in enumerate(people):
            assert await person.move(1.0, (row + 1) / 10)
        await until(lambda: not mismatches(people, killed), "the last moves on every screen")
        newcomer = await join(clients, b.url, room)
        (snapshot,) = newcomer.received("snapshot")[0]
        assert set(snapshot["cursors"]) == live, snapshot

        # Only A's people lost their connection, once each.
        assert [p.reconnects for p in people] == [1, 0] * (PEOPLE // 2)
        # (b): each connection's deltas followed its snapshot, seq by seq.
        assert sum(p.early for p in people) == 0, "a delta before its connection's snapshot"
        assert sum(p.gaps for p in people) == 0, [(p.name, p.gaps) for p in people]
        assert sum(p.unknown for p in people) == 0, "a move of a cursor not on screen"
        # No ghost: no id a screen was told had left was ever shown again.
        ghosts = set().union(*(p.returned for p in people))
        assert not ghosts, ghosts
        told_gone = sum(len(killed & p.gone) for p in people)
        print(
            f"\ncursor replica killed: {PEOPLE} people, "
            f"{sum(p.reconnects for p in people)} reconnects, "
            f"{sum(p.frames for p in people)} frames "
            f"({sum(p.snapshots for p in people)} snapshots), "
            f"{sum(p.moves for p in people)} moves acked, "
            f"{sum(p.unacked for p in people)} unacked, "
            f"{sum(p.gaps for p in people)} gaps, "
            f"{told_gone} departures of killed ids seen, "
            f"{len(ghosts)} ghost ids seen"
        )
    finally:
        moving = False
        if movers is not None and not movers.done():
            movers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await movers
        for person in people:
            await person.close()
        a.stop()
        b.stop()
