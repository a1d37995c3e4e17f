"""Issue 16: in a room, nobody's cursor looks like anyone else's. Each newcomer gets a colour (and,
past the palette, a pattern) nobody in the room has, in one process and across two replicas
joining at once; a leaver's look is free again. A name someone in the room already shows is
shown numbered ("Ann (2)"), never silently twice; a signed-in user's name is its token's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cursor_service.looks import PALETTE, PATTERNS
from switchboard.token import mint

from tests.conftest import Cluster, start_cursors
from tests.cursors.test_cursors import join
from tests.harness import Client, until

pytestmark = pytest.mark.asyncio


def look_of(client: Client) -> dict[str, Any]:
    """What the server told ``client`` of its own cursor on connecting (``look``)."""
    ((look,),) = client.received("look")
    return dict(look)


def seen(cursor: dict[str, Any]) -> tuple[str, str]:
    return cursor["color"], cursor["pattern"]


async def test_everyone_in_a_room_gets_a_look_of_their_own_and_a_leavers_is_free_again(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    entries = [cursor_cluster.a, cursor_cluster.b]
    # One more than the palette, all at once, half on each replica: no two alike.
    crowd = len(PALETTE) + 2
    people = await asyncio.gather(
        *(join(clients, entries[n % 2], room, name=f"p{n}") for n in range(crowd))
    )
    looks = [look_of(person) for person in people]
    assert len({seen(look) for look in looks}) == crowd, looks
    # The palette first, then its colours again with the next pattern.
    assert {seen(look) for look in looks} == {
        (PALETTE[slot % len(PALETTE)], PATTERNS[slot // len(PALETTE)]) for slot in range(crowd)
    }

    # As everyone else sees them: a newcomer's snapshot, once everyone is in it.
    watcher = await join(clients, cursor_cluster.b, room)
    ids = {person.sid for person in people}
    shown: dict[str, Any] = {}

    async def everyone() -> bool:
        shown.update((await watcher.call("snapshot"))["cursors"])
        return ids <= shown.keys()

    await until(everyone, "everyone in the watcher's snapshot")
    for person, look in zip(people, looks, strict=True):
        assert seen(shown[person.sid]) == seen(look)
        assert shown[person.sid]["name"] == look["name"]

    # The one with the first look leaves: once the room has seen it go, a newcomer gets it.
    first = next(
        p
        for p, look in zip(people, looks, strict=True)
        if look["color"] == PALETTE[0] and look["pattern"] == PATTERNS[0]
    )
    first_id = first.sid
    await first.close()
    await watcher.wait("delta", lambda f: first_id in f["left"])
    newcomer = await join(clients, cursor_cluster.a, room)
    assert seen(look_of(newcomer)) == (PALETTE[0], PATTERNS[0])


async def test_a_name_someone_in_the_room_shows_is_numbered_never_shown_twice(
    cursor_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await join(clients, cursor_cluster.a, room, name="Ann")
    assert look_of(ann) | {"color": "", "pattern": ""} == {
        "id": ann.sid,
        "name": "Ann",
        "asked": "Ann",
        "color": "",
        "pattern": "",
        "signed_in": False,
    }
    # The same name, on the other replica, in other cases: numbered, and told so.
    second = await join(clients, cursor_cluster.b, room, name="ann")
    assert (look_of(second)["name"], look_of(second)["asked"]) == ("ann (2)", "ann")
    third = await join(clients, cursor_cluster.a, room, name="ANN")
    assert look_of(third)["name"] == "ANN (3)"
    # A name that only looks numbered is a name like any other.
    literal = await join(clients, cursor_cluster.b, room, name="Ann (2)")
    assert look_of(literal)["name"] == "Ann (2) (2)"
    # Another room has its own Ann; people without a name are never numbered.
    elsewhere = await join(clients, cursor_cluster.b, f"other-{unique}", name="Ann")
    assert look_of(elsewhere)["name"] == "Ann"
    nameless = [await join(clients, cursor_cluster.a, room) for _ in range(2)]
    assert [look_of(client)["name"] for client in nameless] == ["", ""]

    # The second Ann leaves: her number is free for the next Ann.
    second_id = second.sid
    await second.close()
    await ann.wait("delta", lambda f: second_id in f["left"])
    again = await join(clients, cursor_cluster.b, room, name="Ann")
    assert look_of(again)["name"] == "Ann (2)"
    # Others see the names as their owners were told.
    snapshot = await again.call("snapshot")
    names = {sid: cursor["name"] for sid, cursor in snapshot["cursors"].items()}
    assert names[ann.sid] == "Ann" and names[third.sid] == "ANN (3)"


async def test_a_signed_in_users_name_is_its_tokens(
    tmp_path: Path, clients: list[Client], unique: str
) -> None:
    secret = "the-cursor-looks-secret-32-characters-long"
    service = start_cursors(tmp_path, {"AUTH_SECRET": secret})
    try:
        room = f"r-{unique}"
        grants = {"cursors": ["*"]}
        anonymous_ann = await join(clients, service.url, room, name="Ann")
        user = Client(service.url, "/api/cursors/socket.io")
        clients.append(user)
        token = mint(secret, sub=f"u-{unique}", name="Ann", rooms=grants)
        await user.connect(auth={"room": room, "name": "Mallory", "token": token})
        await user.wait("snapshot")
        # The token's name, not the one asked; numbered, as the room shows an Ann already.
        assert look_of(user) | {"color": "", "pattern": ""} == {
            "id": user.sid,
            "name": "Ann (2)",
            "asked": "Ann",
            "color": "",
            "pattern": "",
            "signed_in": True,
        }
        assert look_of(anonymous_ann)["name"] == "Ann"
        # A token without a name: its sub, when that is a name.
        bob = Client(service.url, "/api/cursors/socket.io")
        clients.append(bob)
        await bob.connect(auth={"room": room, "token": mint(secret, sub="bob", rooms=grants)})
        await bob.wait("snapshot")
        assert (look_of(bob)["name"], look_of(bob)["signed_in"]) == ("bob", True)
    finally:
        service.stop()
