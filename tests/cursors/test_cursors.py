"""Shared cursors as people see them, in one process and across two replicas sharing Redis:
a move on A shows on B once per tick, a leaver vanishes, bad input is refused."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.conftest import CURSORS_PATH, Cluster, start_cursors
from tests.harness import PATIENCE, Client

pytestmark = pytest.mark.asyncio

#: The clusters' tick (CURSORS_TICK_MS, 100 ms by default), in seconds. Ticks fall on the wall
#: clock's multiples of it, never two in one: in any window of E seconds a replica makes at most
#: E / TICK + 1 ticks whose slot lies in the window, plus the one running when the window opened.
TICK = 0.1


async def join(opened: list[Client], url: str, room: str, name: str | None = None) -> Client:
    client = Client(url, CURSORS_PATH)
    opened.append(client)
    auth: dict[str, Any] = {"room": room}
    if name is not None:
        auth["name"] = name
    await client.connect(auth=auth)
    await client.wait("snapshot")
    return client


def where(frame: dict[str, Any], sid: str) -> list[float | None] | None:
    """Where a delta puts ``sid``'s cursor, if it says anything of it."""
    if sid in frame["moved"]:
        return list(frame["moved"][sid])
    if sid in frame["joined"]:
        return [frame["joined"][sid]["x"], frame["joined"][sid]["y"]]
    return None


async def sees_at(client: Client, sid: str, x: float | None, y: float | None) -> dict[str, Any]:
    """Wait until ``client`` is told that ``sid``'s cursor is at (x, y): in its first snapshot,
    or by a delta. Returns the frame that said so."""
    (snapshot,) = client.received("snapshot")[0]
    cursor = snapshot["cursors"].get(sid)
    if cursor is not None and [cursor["x"], cursor["y"]] == [x, y]:
        return dict(snapshot)
    (frame,) = await client.wait("delta", lambda f: where(f, sid) == [x, y])
    return dict(frame)


def deltas(client: Client) -> list[dict[str, Any]]:
    return [args[0] for args in client.received("delta")]


async def test_a_move_on_a_shows_on_b_with_colour_and_name(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    bob = await join(clients, cursor_cluster.b, room)
    ann = await join(clients, cursor_cluster.a, room, name="ann")

    # Before it moves, ann is there, pointer not on the page: people can be counted.
    present = await sees_at(bob, ann.sid, None, None)
    joined = {**present.get("joined", {}), **present.get("cursors", {})}[ann.sid]
    assert joined["name"] == "ann"
    assert joined["color"].startswith("#")

    assert await ann.call("update", {"x": 0.25, "y": 0.75}) == {"ok": True}

    frame = await sees_at(bob, ann.sid, 0.25, 0.75)
    assert isinstance(frame["t"], int)
    await ann.call("update", {"x": 0.5, "y": 0.5})
    moved = await sees_at(bob, ann.sid, 0.5, 0.5)
    assert moved["moved"][ann.sid] == [0.5, 0.5]
    assert moved["seq"] > frame["seq"]


async def test_a_newcomer_gets_everyone_in_a_snapshot(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, cursor_cluster.a, room, name="ann")
    watcher = await join(clients, cursor_cluster.b, room)
    await ann.call("update", {"x": 0.1, "y": 0.2})
    await sees_at(watcher, ann.sid, 0.1, 0.2)

    late = await join(clients, cursor_cluster.b, room)

    (snapshot,) = late.received("snapshot")[0]
    ((look,),) = ann.received("look")
    assert snapshot["cursors"][ann.sid] == {
        "x": 0.1,
        "y": 0.2,
        "color": look["color"],
        "pattern": look["pattern"],
        "name": "ann",
    }
    asked = await late.call("snapshot")
    assert asked["ok"] is True
    assert ann.sid in asked["cursors"]


async def test_a_client_that_leaves_disappears_from_every_screen(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, cursor_cluster.a, room)
    bob = await join(clients, cursor_cluster.b, room)
    await ann.call("update", {"x": 0.3, "y": 0.3})
    ann_id = ann.sid
    await sees_at(bob, ann_id, 0.3, 0.3)

    await ann.close()

    await bob.wait("delta", lambda f: ann_id in f["left"])
    assert ann_id not in (await bob.call("snapshot"))["cursors"]


async def test_a_pointer_that_leaves_the_page_hides_its_cursor(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, cursor_cluster.a, room)
    bob = await join(clients, cursor_cluster.b, room)
    await ann.call("update", {"x": 0.6, "y": 0.6})
    await sees_at(bob, ann.sid, 0.6, 0.6)

    assert await ann.call("update", None) == {"ok": True}

    await sees_at(bob, ann.sid, None, None)
    assert ann.sid in (await bob.call("snapshot"))["cursors"]  # hidden, still here


async def test_frames_come_once_per_tick_and_only_when_something_changed(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, cursor_cluster.a, room)
    bob = await join(clients, cursor_cluster.b, room)
    watcher = await join(clients, cursor_cluster.b, room)
    # The window: frames whose tick was stamped (server time, ms) from here on.
    started = time.time()

    def window() -> list[dict[str, Any]]:
        return [frame for frame in deltas(watcher) if frame["t"] >= started * 1000]

    # Both move at about 50 Hz (within the rate limit, 60 a second), so a few times a tick,
    # until the watcher has had ten frames: however long that takes on this machine.
    step = 0
    while len(window()) < 10:
        assert time.time() - started < PATIENCE, f"frames: {deltas(watcher)}"
        step += 1
        await ann.emit("update", {"x": step % 100 / 100, "y": 0.1})
        await bob.emit("update", {"x": step % 100 / 100, "y": 0.9})
        await asyncio.sleep(0.02)
    assert await ann.call("update", {"x": 0.995, "y": 0.1}) == {"ok": True}
    assert await bob.call("update", {"x": 0.995, "y": 0.9}) == {"ok": True}
    await sees_at(watcher, ann.sid, 0.995, 0.1)
    await sees_at(watcher, bob.sid, 0.995, 0.9)
    elapsed = time.time() - started

    frames = window()
    # One frame a tick at most, not one a move (2 * step moves were sent).
    assert len(frames) <= elapsed / TICK + 2, (len(frames), elapsed, step)
    # Never two frames for one tick, none doubled by two replicas, none missing: the room's
    # sequence numbers go up by one a frame, and each frame's server time is later.
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    times = [frame["t"] for frame in frames]
    assert all(a < b for a, b in itertools.pairwise(times)), times
    # Both cursors are there and end where they stopped.
    final = (await watcher.call("snapshot"))["cursors"]
    assert [final[ann.sid]["x"], final[ann.sid]["y"]] == [0.995, 0.1]
    assert [final[bob.sid]["x"], final[bob.sid]["y"]] == [0.995, 0.9]

    # Nothing changes for about five ticks: nothing is sent. A slower machine only makes this
    # wait hold fewer ticks, never fail; the move after it is the barrier: its frame must be
    # the very next one.
    quiet_since = len(deltas(watcher))
    await asyncio.sleep(5 * TICK)
    assert await ann.call("update", {"x": 0.5, "y": 0.5}) == {"ok": True}
    (frame,) = await watcher.wait("delta", lambda f: where(f, ann.sid) == [0.5, 0.5])
    assert deltas(watcher)[quiet_since:] == [frame]
    assert frame["seq"] == seqs[-1] + 1


async def test_moves_within_a_tick_cost_one_entry(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, cursor_cluster.a, room)
    watcher = await join(clients, cursor_cluster.b, room)
    await ann.call("update", {"x": 0.0, "y": 0.0})
    await sees_at(watcher, ann.sid, 0.0, 0.0)
    before = len(deltas(watcher))

    started = time.monotonic()
    for step in range(1, 31):
        await ann.emit("update", {"x": step / 100, "y": 0.5})
    await ann.call("update", {"x": 0.31, "y": 0.5})
    await watcher.wait("delta", lambda f: f["moved"].get(ann.sid) == [0.31, 0.5])
    elapsed = time.monotonic() - started

    # Not one entry a move: one a tick at most, however many ticks these 31 moves spanned (on
    # a machine that is not busy, one or two).
    moves = [f["moved"][ann.sid] for f in deltas(watcher)[before:] if ann.sid in f["moved"]]
    assert len(moves) <= elapsed / TICK + 2, (moves, elapsed)


async def test_rooms_do_not_see_each_other(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    ann = await join(clients, cursor_cluster.a, f"one-{unique}")
    other = await join(clients, cursor_cluster.b, f"two-{unique}")
    mine = await join(clients, cursor_cluster.b, f"one-{unique}")
    await ann.call("update", {"x": 0.4, "y": 0.4})
    await sees_at(mine, ann.sid, 0.4, 0.4)
    # Barrier: other's own move shows in a later tick than the one that showed ann's move, and
    # ticks reach a client in order.
    await other.call("update", {"x": 0.7, "y": 0.7})
    await sees_at(other, other.sid, 0.7, 0.7)
    assert [f for f in deltas(other) if where(f, ann.sid) is not None] == []


@pytest.mark.parametrize(
    "value",
    [
        "0.5,0.5",
        [0.5, 0.5],
        {"x": 0.5},
        {"x": 0.5, "y": 0.5, "z": 1},
        {"x": "0.5", "y": 0.5},
        {"x": True, "y": 0.5},
        {"x": None, "y": 0.5},
    ],
)
async def test_bad_coordinates_are_refused(
    cursor_cluster: Cluster, clients: list[Client], unique: str, value: Any
) -> None:
    room = f"r-{unique}"
    client = await join(clients, cursor_cluster.a, room)
    ack = await client.call("update", value)
    assert ack["ok"] is False
    assert ack["error"] == "bad_position"
    (event,) = await client.wait("cursor_error")
    assert event["event"] == "update"
    # Barrier: a tick that read the board after the refusal is one that shows a later move.
    witness = await join(clients, cursor_cluster.b, room)
    await witness.call("update", {"x": 0.1, "y": 0.1})
    await sees_at(client, witness.sid, 0.1, 0.1)
    assert all(where(f, client.sid) in (None, [None, None]) for f in deltas(client))
    cursor = (await client.call("snapshot"))["cursors"][client.sid]
    assert (cursor["x"], cursor["y"]) == (None, None)


async def test_coordinates_outside_the_screen_are_clamped(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, cursor_cluster.a, room)
    watcher = await join(clients, cursor_cluster.b, room)
    await ann.call("update", {"x": 7, "y": -0.123456789})
    await sees_at(watcher, ann.sid, 1.0, 0.0)


@pytest.mark.parametrize(
    ("auth", "error"),
    [({"room": "bad room"}, "bad_room"), ({"name": "x" * 33}, "too_long"), ("x", "bad_auth")],
)
async def test_bad_rooms_and_names_are_refused_at_connection(
    cursor_cluster: Cluster, auth: Any, error: str
) -> None:
    client = Client(cursor_cluster.a, CURSORS_PATH)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(auth=auth)
    assert client.connect_error["data"]["error"] == error


async def test_a_flood_is_refused_with_one_error_a_second(
    tmp_path: Path, clients: list[Client], unique: str
) -> None:
    # Bursts of 5 and one more update every 1000 s: the same refusals however fast this runs.
    env = {"CURSORS_RATE_PER_SECOND": "0.001", "CURSORS_RATE_BURST": "5"}
    service = start_cursors(tmp_path, env)
    try:
        client = await join(clients, service.url, f"r-{unique}")
        started = time.monotonic()
        acks = [await client.call("update", {"x": 0.5, "y": 0.5}) for _ in range(30)]
        elapsed = time.monotonic() - started

        assert [ack["ok"] for ack in acks] == [True] * 5 + [False] * 25, acks
        assert {ack["error"] for ack in acks[5:]} == {"rate_limited"}
        # The error event goes out before its refusal's ack, on the same socket: all have
        # arrived. 25 refusals, one event a second at most (one, unless this took over 1 s).
        errors = client.received("cursor_error")
        assert 1 <= len(errors) <= 1 + elapsed, (len(errors), elapsed)
        assert {error["error"] for (error,) in errors} == {"rate_limited"}
        assert client.sio.connected
    finally:
        service.stop()
