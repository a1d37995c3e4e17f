"""Shared cursors as people see them, in one process and across two replicas sharing Redis:
a move on A shows on B once per tick, a leaver vanishes, bad input is refused."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
import socketio

from tests.conftest import CURSORS_PATH, Cluster
from tests.harness import Client

pytestmark = pytest.mark.asyncio


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
    ann = await join(clients, cursor_cluster.a, room, name="ann")
    bob = await join(clients, cursor_cluster.b, room)

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
    await ann.call("update", {"x": 0.1, "y": 0.2})
    watcher = await join(clients, cursor_cluster.b, room)
    await sees_at(watcher, ann.sid, 0.1, 0.2)

    late = await join(clients, cursor_cluster.b, room)

    (snapshot,) = late.received("snapshot")[0]
    assert snapshot["cursors"][ann.sid] == {
        "x": 0.1,
        "y": 0.2,
        "color": snapshot["cursors"][ann.sid]["color"],
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

    # Both move at about 100 Hz for a second: ten ticks, so about ten frames, not 200.
    for step in range(100):
        await ann.emit("update", {"x": step / 100, "y": 0.1})
        await bob.emit("update", {"x": step / 100, "y": 0.9})
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    frames = deltas(watcher)
    assert 6 <= len(frames) <= 13, len(frames)
    # Never two frames for one tick: ticks are 100 ms apart. A frame's t is taken when its tick
    # has read the board, so a busy machine moves it by tens of ms; two frames of one tick
    # would be a few ms apart.
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(frames)]
    assert min(gaps) >= 50, gaps
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none doubled, none missing
    # Both cursors are there, wherever each is, and end where they stopped.
    final = (await watcher.call("snapshot"))["cursors"]
    assert final[ann.sid]["x"] == 0.99
    assert final[bob.sid]["y"] == 0.9

    quiet_since = len(deltas(watcher))
    await asyncio.sleep(0.5)
    assert len(deltas(watcher)) == quiet_since  # nothing changed, nothing sent


async def test_moves_within_a_tick_cost_one_entry(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, cursor_cluster.a, room)
    watcher = await join(clients, cursor_cluster.b, room)
    await ann.call("update", {"x": 0.0, "y": 0.0})
    await sees_at(watcher, ann.sid, 0.0, 0.0)

    for step in range(1, 31):
        await ann.emit("update", {"x": step / 100, "y": 0.5})
    await ann.call("update", {"x": 0.31, "y": 0.5})

    await watcher.wait("delta", lambda f: f["moved"].get(ann.sid) == [0.31, 0.5])
    moves = [f["moved"][ann.sid] for f in deltas(watcher) if ann.sid in f["moved"]]
    assert len(moves) <= 3, moves


async def test_rooms_do_not_see_each_other(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    ann = await join(clients, cursor_cluster.a, f"one-{unique}")
    other = await join(clients, cursor_cluster.b, f"two-{unique}")
    mine = await join(clients, cursor_cluster.b, f"one-{unique}")
    await ann.call("update", {"x": 0.4, "y": 0.4})
    await sees_at(mine, ann.sid, 0.4, 0.4)
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
    client = await join(clients, cursor_cluster.a, f"r-{unique}")
    ack = await client.call("update", value)
    assert ack["ok"] is False
    assert ack["error"] == "bad_position"
    (event,) = await client.wait("cursor_error")
    assert event["event"] == "update"
    await asyncio.sleep(0.2)
    cursors = (await client.call("snapshot"))["cursors"]
    assert all(c["x"] is None and c["y"] is None for c in cursors.values())


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
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    client = await join(clients, cursor_cluster.a, f"r-{unique}")
    acks = [await client.call("update", {"x": 0.5, "y": 0.5}) for _ in range(200)]
    refused = [ack for ack in acks if not ack["ok"]]
    assert refused and {ack["error"] for ack in refused} == {"rate_limited"}
    await asyncio.sleep(0.2)
    assert 1 <= len(client.received("cursor_error")) <= 2
    assert client.sio.connected
