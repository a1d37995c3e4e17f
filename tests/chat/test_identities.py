"""Issue 15, chat with identities: a sign-in token's name belongs to its user (its ``sub``);
the user's connections (tabs, devices, on any replica) share it and are one member of the
room's presence, with their count; the member leaves with its last connection."""

from __future__ import annotations

from typing import Any

import pytest
import socketio
from switchboard.token import mint

from tests.chat.presence import bare, changes, seen, told
from tests.conftest import AUTH_SECRET, Cluster, connect_chat
from tests.harness import Client, until

pytestmark = pytest.mark.asyncio


def token(sub: str, name: str | None = None) -> str:
    return mint(AUTH_SECRET, sub=sub, name=name)


async def signed_in(
    opened: list[Client], url: str, room: str, sub: str, name: str | None
) -> Client:
    """A connection with ``sub``'s token: named by it as soon as it is in."""
    client = await connect_chat(opened, url, room=room, token=token(sub, name))
    await client.wait("name")
    return client


def one(users: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (member,) = [user for user in users if user["name"] == name]
    return member


async def test_two_connections_of_one_user_are_one_member_who_leaves_with_the_last(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room, name = f"r-{unique}", f"Ann {unique}"
    watcher = await connect_chat(clients, chat_cluster.a, room=room)
    laptop = await signed_in(clients, chat_cluster.a, room, f"ann-{unique}", name)
    await watcher.wait("presence", told("joined", name=name))
    (joined,) = changes(watcher, "joined", name=name)
    assert joined["signed_in"] is True
    assert joined["connections"] == 1
    assert joined["id"].startswith("u:") and f"ann-{unique}" not in joined["id"]
    # The rev of its coming: what changed before it is no news to this connection's page.
    assert (await laptop.wait("name")) == (name, {"id": joined["id"], "rev": joined["rev"]})

    phone = await signed_in(clients, chat_cluster.b, room, f"ann-{unique}", name)
    await watcher.wait("presence", told("updated", id=joined["id"]))
    (updated,) = changes(watcher, "updated", id=joined["id"])
    assert bare(updated) == {**bare(joined), "connections": 2}
    # Seen from either replica, the user is there once, with both connections.
    for url in (chat_cluster.a, chat_cluster.b):
        newcomer = await connect_chat(clients, url, room=room)
        users, info = await newcomer.wait("users")
        assert info["count"] == 1
        assert one(users, name)["connections"] == 2

    # Both connections speak as the one member.
    await phone.call("message", "from my phone")
    sender, _, _ = await watcher.wait("message")
    assert sender == {"id": joined["id"], "name": name, "signed_in": True}

    await laptop.close()
    await watcher.wait("presence", told("updated", id=joined["id"], connections=1))
    assert not changes(watcher, "left")
    assert seen(watcher).members[joined["id"]]["connections"] == 1
    await phone.close()
    await watcher.wait("presence", told("left", id=joined["id"]))
    (left,) = changes(watcher, "left")
    assert (left["id"], left["connections"]) == (joined["id"], 0)
    assert seen(watcher).members == {}


async def test_a_users_name_is_its_own_while_it_is_here(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room, name = f"r-{unique}", f"Ann {unique}"
    # An anonymous person had taken the name: a signed-in Ann takes it from them (they are
    # told why and let go; reconnected, they pick another).
    squatter = await connect_chat(clients, chat_cluster.b, room=room)
    assert (await squatter.call("name", name))["ok"] is True
    ann = await signed_in(clients, chat_cluster.a, room, f"ann-{unique}", name)
    (error,) = await squatter.wait("name_error")
    assert error["error"] == "taken" and "signed-in user" in error["message"]
    await until(lambda: not squatter.sio.connected, "the squatter let go")

    # While Ann is here nobody else takes her name: not anonymously, whatever its case...
    for url in (chat_cluster.a, chat_cluster.b):
        stranger = await connect_chat(clients, url, room=room)
        assert (await stranger.call("name", name.upper()))["error"] == "taken"
    # ...nor another signed-in user whose token says the same name.
    other = Client(chat_cluster.b, "/api/chat/socket.io")
    clients.append(other)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await other.connect(auth={"room": room, "token": token(f"other-{unique}", name)})
    assert other.connect_error["data"]["error"] == "taken"
    # And Ann's name is the one her sign-in gives.
    answer = await ann.call("name", f"someone-{unique}")
    assert answer["error"] == "name_fixed"
    assert (await ann.call("name", name))["ok"] is True

    # Once her last connection is gone, the name is free for others.
    await ann.close()
    later = await connect_chat(clients, chat_cluster.b, room=room)
    await until(lambda: later_takes(later, name), "the name free after Ann left", every=0.2)


async def later_takes(client: Client, name: str) -> bool:
    return bool((await client.call("name", name)).get("ok"))


async def test_a_token_without_a_name_names_its_user_by_its_sub_when_it_can(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    alice = await signed_in(clients, chat_cluster.a, room, f"alice-{unique}", None)
    assert (await alice.wait("name"))[0] == f"alice-{unique}"
    opaque = Client(chat_cluster.a, "/api/chat/socket.io")
    clients.append(opaque)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await opaque.connect(auth={"room": room, "token": token("x" * 40)})
    assert opaque.connect_error["data"]["error"] == "name_required"
