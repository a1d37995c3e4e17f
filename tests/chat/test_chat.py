"""The chat as its users live it, against one process in memory and against two replicas that
share a real redis-server: whatever is said of A and B holds in both modes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.chat.presence import bare, seen, told
from tests.conftest import Cluster, connect_chat, start_chat
from tests.harness import PATIENCE, Client, until

pytestmark = pytest.mark.asyncio


async def named(opened: list[Client], url: str, name: str, room: str) -> Client:
    client = await connect_chat(opened, url, room=room)
    ack = await client.call("name", name)
    assert (ack["ok"], ack["name"]) == (True, name)
    assert len(ack["token"]) >= 16
    return client


async def test_a_message_sent_through_a_reaches_b_with_the_senders_name(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await named(clients, chat_cluster.a, f"ann-{unique}", room)
    bob = await named(clients, chat_cluster.b, f"bob-{unique}", room)

    ack = await ann.call("message", "  hello bob  ")

    assert ack["ok"] is True
    sender, text, meta = await bob.wait("message")
    assert sender == {"id": ann.sid, "name": f"ann-{unique}"}
    assert text == "hello bob"
    assert meta == {"id": ack["id"], "ts": ack["ts"]}
    # The course's behaviour: the sender sees its own message too.
    assert (await ann.wait("message"))[1] == "hello bob"


async def test_naming_echoes_the_name_as_in_the_course(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    ann = await connect_chat(clients, chat_cluster.a, room=f"r-{unique}")
    # NFC: "e" + combining acute becomes one character; spaces around are trimmed.
    ack = await ann.call("name", "  Rene\u0301e  ")
    assert (ack["ok"], ack["name"]) == (True, "Ren\u00e9e")
    name, about = await ann.wait("name")
    assert (name, about["id"]) == ("Ren\u00e9e", ann.sid)
    # The rev of the change the name made: what came before it is no news to the client.
    assert isinstance(about["rev"], int)


async def test_a_name_held_on_a_is_refused_on_b_whatever_its_case(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    await named(clients, chat_cluster.a, f"Ann-{unique}", f"r-{unique}")
    # Another room: names are unique in the whole cluster, not per room.
    other = await connect_chat(clients, chat_cluster.b, room=f"s-{unique}")

    ack = await other.call("name", f"ANN-{unique}")

    assert ack["ok"] is False
    assert ack["error"] == "taken"
    assert f"ANN-{unique}" in ack["message"]
    (event,) = await other.wait("name_error")
    assert event == {**ack, "event": "name"}
    assert other.received("name") == []


async def test_a_name_is_free_again_after_its_owner_leaves(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    ann = await named(clients, chat_cluster.a, f"ann-{unique}", f"r-{unique}")
    await ann.close()
    later = await connect_chat(clients, chat_cluster.b, room=f"r-{unique}")

    assert (await later.call("name", f"ann-{unique}"))["ok"] is True


async def test_renaming_frees_the_old_name_and_tells_the_room(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await named(clients, chat_cluster.a, f"ann-{unique}", room)
    watcher = await named(clients, chat_cluster.b, f"watcher-{unique}", room)

    await ann.call("name", f"anna-{unique}")

    # A rename is a join of the same id under its new name: it replaces the old.
    await watcher.wait("presence", told("joined", id=ann.sid, name=f"anna-{unique}"))
    assert seen(watcher).members[ann.sid]["name"] == f"anna-{unique}"
    newcomer = await connect_chat(clients, chat_cluster.b, room=room)
    assert (await newcomer.call("name", f"ann-{unique}"))["ok"] is True


async def test_presence_is_the_same_from_either_replica(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await named(clients, chat_cluster.a, f"ann-{unique}", room)
    bob = await named(clients, chat_cluster.b, f"bob-{unique}", room)
    await connect_chat(clients, chat_cluster.b, room=room)  # unnamed: not listed
    await named(clients, chat_cluster.a, f"eve-{unique}", f"elsewhere-{unique}")

    seen_from_a = await connect_chat(clients, chat_cluster.a, room=room)
    seen_from_b = await connect_chat(clients, chat_cluster.b, room=room)

    expected = {(ann.sid, f"ann-{unique}"), (bob.sid, f"bob-{unique}")}
    for observer in (seen_from_a, seen_from_b):
        users, info = observer.received("users")[0]
        assert {(u["id"], u["name"]) for u in users} == expected
        # A small room is listed; its count is its members, on every replica.
        assert (info["count"], info["listed"]) == (2, True)


async def test_the_room_hears_who_joins_and_who_leaves(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await named(clients, chat_cluster.a, f"ann-{unique}", room)
    bob = await named(clients, chat_cluster.b, f"bob-{unique}", room)

    bob_id = bob.sid
    (came,) = await ann.wait("presence", told("joined", id=bob_id))
    assert came["listed"] is True and came["count"] >= 1
    await bob.close()

    (went,) = await ann.wait("presence", told("left", id=bob_id))
    (left,) = [member for member in went["left"] if member["id"] == bob_id]
    assert bare(left) == {"id": bob_id, "name": f"bob-{unique}"}
    # Revs grow: the leave is newer than the join, and than what the count was read with.
    (joined,) = [member for member in came["joined"] if member["id"] == bob_id]
    assert came["rev"] >= joined["rev"] and left["rev"] > joined["rev"]


async def test_rooms_keep_their_messages_to_themselves(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    ann = await named(clients, chat_cluster.a, f"ann-{unique}", f"one-{unique}")
    # The room can come from the query string too, as in a shared link.
    outsider = Client(chat_cluster.b, "/api/chat/socket.io")
    clients.append(outsider)
    await outsider.connect(query=f"room=two-{unique}")
    await outsider.wait("history")
    listener = await named(clients, chat_cluster.b, f"bob-{unique}", f"one-{unique}")

    await ann.call("message", "for room one")

    await listener.wait("message")
    await outsider.call("name", f"out-{unique}")
    await outsider.call("message", "for room two")
    await outsider.wait("message")
    # Barrier: room one's next message reaches the listener after anything sent before it.
    await ann.call("message", "room one again")
    await listener.wait("message", lambda sender, text, meta: text == "room one again")
    assert [args[1] for args in outsider.received("message")] == ["for room two"]
    assert [args[1] for args in listener.received("message")] == [
        "for room one",
        "room one again",
    ]


async def test_history_is_the_same_from_either_replica(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await named(clients, chat_cluster.a, f"ann-{unique}", room)
    ids = [(await ann.call("message", f"m{i}"))["id"] for i in range(3)]

    for url in (chat_cluster.a, chat_cluster.b):
        late = await connect_chat(clients, url, room=room)
        messages, info = late.received("history")[0]
        assert [m["text"] for m in messages] == ["m0", "m1", "m2"]
        assert [m["id"] for m in messages] == ids
        assert messages[0]["sender"] == {"id": ann.sid, "name": f"ann-{unique}"}
        assert isinstance(messages[0]["ts"], int)
        assert info == {"room": room, "after": None, "complete": True}


async def test_a_client_that_comes_back_gets_what_it_missed_and_the_moments_before(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    ann = await named(clients, chat_cluster.a, f"ann-{unique}", room)
    first = (await ann.call("message", "before"))["id"]
    await ann.call("message", "missed 1")
    await ann.call("message", "missed 2")

    back = await connect_chat(clients, chat_cluster.b, room=room, last_id=first)

    # What came after its last id, and what came in the 5 s before it (messages of different
    # replicas can arrive out of the order of their ids): the client drops what it holds.
    messages, info = back.received("history")[0]
    assert [m["text"] for m in messages] == ["before", "missed 1", "missed 2"]
    assert info == {"room": room, "after": first, "complete": True}


async def test_a_client_that_missed_more_than_history_holds_is_told_so(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    # The cluster keeps 5 messages per room (CHAT_HISTORY_SIZE in conftest).
    room = f"r-{unique}"
    ann = await named(clients, chat_cluster.a, f"ann-{unique}", room)
    first = (await ann.call("message", "seen"))["id"]
    for i in range(7):
        await ann.call("message", f"later {i}")

    back = await connect_chat(clients, chat_cluster.b, room=room, last_id=first)
    fresh = await connect_chat(clients, chat_cluster.b, room=room)

    messages, info = back.received("history")[0]
    assert [m["text"] for m in messages] == [f"later {i}" for i in range(2, 7)]
    assert info["complete"] is False
    assert fresh.received("history")[0][1]["complete"] is False
    # Someone who had seen the oldest message still held missed nothing.
    held_oldest = messages[0]["id"]
    recent = await connect_chat(clients, chat_cluster.a, room=room, last_id=held_oldest)
    recent_messages, recent_info = recent.received("history")[0]
    missed = [m["text"] for m in recent_messages if m["id"] != held_oldest]
    assert missed == [f"later {i}" for i in range(3, 7)]
    assert recent_info["complete"] is True


@pytest.mark.parametrize("mode", ["memory", "redis"])
async def test_a_quiet_rooms_history_is_forgotten_after_its_ttl(
    mode: str, request: pytest.FixtureRequest, tmp_path: Path, clients: list[Client], unique: str
) -> None:
    ttl = 2.0
    env = {"CHAT_HISTORY_TTL": str(ttl)}
    if mode == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_server").url
    service = start_chat(tmp_path, env)
    try:
        room = f"r-{unique}"
        ann = await named(clients, service.url, f"ann-{unique}", room)
        sent = time.monotonic()  # the message is stored after this: it expires after sent + ttl
        await ann.call("message", "soon gone")

        # Newcomers see it until the TTL has passed, and then no longer. A look that ended
        # before sent + ttl was surely within the TTL; one that ended later may have been
        # either, so a slow look proves nothing instead of failing (the first look normally
        # ends a few ms after the message, well within it).
        while True:
            late = await connect_chat(clients, service.url, room=room)
            looked = time.monotonic() - sent
            messages = [m["text"] for m in late.received("history")[0][0]]
            await late.close()
            if looked < ttl:
                assert messages == ["soon gone"], looked
            elif not messages:
                break
            assert looked < ttl + PATIENCE, "the quiet room's history is still there"
            await asyncio.sleep(0.2)
    finally:
        service.stop()


async def test_a_client_that_comes_back_takes_its_name_back_from_its_old_connection(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    phone = await connect_chat(clients, chat_cluster.a, room=room)
    token = (await phone.call("name", f"ann-{unique}"))["token"]
    watcher = await connect_chat(clients, chat_cluster.a, room=room)
    old_id = phone.sid
    # The phone changed networks: its old connection is not seen to drop yet. A stranger
    # cannot take the name, and a wrong token does not help.
    stranger = await connect_chat(clients, chat_cluster.b, room=room, name_token="x" * 22)
    assert (await stranger.call("name", f"ANN-{unique}"))["error"] == "taken"

    back = await connect_chat(clients, chat_cluster.b, room=room, name_token=token)
    ack = await back.call("name", f"ann-{unique}")

    assert ack["ok"] is True
    assert ack["token"] != token
    (replaced,) = await phone.wait("name_error")
    assert replaced["error"] == "replaced"
    await watcher.wait("presence", told("left", id=old_id))
    await watcher.wait("presence", told("joined", id=back.sid))
    await until(lambda: not phone.sio.connected, "the replaced connection is still open")
    # The token was used up: the old one no longer proves anything.
    again = await connect_chat(clients, chat_cluster.a, room=room, name_token=token)
    assert (await again.call("name", f"ann-{unique}"))["error"] == "taken"
