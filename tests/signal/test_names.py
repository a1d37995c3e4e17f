"""People in a call room go by names (issue 16): given on connecting or with ``name``, unique in
the room whatever their case, a signed-in user's from its sign-in, listed in ``people`` beside
the course's ``clients``; and each side's camera and microphone state (``media``) reaches only
someone in the room. In one process and across two replicas sharing Redis."""

from __future__ import annotations

from typing import Any

import pytest
import socketio
from switchboard.token import mint

from tests.conftest import Cluster
from tests.harness import Client, until
from tests.signal.conftest import AUTH_SECRET
from tests.signal.peers import SIGNAL_PATH

pytestmark = pytest.mark.asyncio


async def join(opened: list[Client], url: str, room: str, **auth: Any) -> Client:
    client = Client(url, SIGNAL_PATH)
    opened.append(client)
    await client.connect(auth={"room": room, **auth})
    await client.wait("people", lambda people: client.sid in people)
    return client


def names(people: dict[str, Any]) -> dict[str, str | None]:
    """Who ``people`` lists, by name (None: no name), the echo peer aside."""
    return {sid: entry["name"] for sid, entry in people.items() if sid != "echo"}


async def listed(client: Client, expected: dict[str, str | None]) -> dict[str, Any]:
    """The first ``people`` that lists exactly ``expected``."""
    (people,) = await client.wait("people", lambda people: names(people) == expected)
    return dict(people)


async def test_people_are_listed_by_name_beside_the_courses_clients(
    signal_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"names-{unique}"
    ann = await join(clients, signal_cluster.a, room, name="  Ann ")
    (name, about) = await ann.wait("name")
    assert name == "Ann" and about["id"] == ann.sid and about["signed_in"] is False
    assert 16 <= len(about["token"]) <= 64
    bob = await join(clients, signal_cluster.b, room, name="Bob")
    carol = await join(clients, signal_cluster.b, room)  # a course client: no name

    people = await listed(ann, {ann.sid: "Ann", bob.sid: "Bob", carol.sid: None})
    assert people[bob.sid] == {"id": bob.sid, "name": "Bob", "signed_in": False}
    assert people["echo"] == {"id": "echo", "echo": True}
    # The course's event is as it was: ids only.
    (course,) = await ann.wait("clients", lambda found: carol.sid in found)
    assert course == {
        **{sid: {"id": sid} for sid in (ann.sid, bob.sid, carol.sid)},
        "echo": {"id": "echo", "echo": True},
    }
    assert carol.received("name") == [] and carol.received("name_error") == []

    # Bob goes by another name: his old one is free, for Carol, whatever its case.
    renamed = await bob.call("name", "Robert")
    assert renamed["ok"] is True and renamed["name"] == "Robert" and renamed["token"]
    await listed(ann, {ann.sid: "Ann", bob.sid: "Robert", carol.sid: None})
    assert (await carol.call("name", "BOB"))["name"] == "BOB"
    await listed(bob, {ann.sid: "Ann", bob.sid: "Robert", carol.sid: "BOB"})
    # Someone leaves: the room is told, names and all.
    await bob.close()
    await listed(ann, {ann.sid: "Ann", carol.sid: "BOB"})


async def test_a_name_is_unique_in_its_room_whatever_its_case(
    signal_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"unique-{unique}"
    ann = await join(clients, signal_cluster.a, room, name="Ann")
    # Taken on connecting: the connection is let in all the same, without a name, and told.
    copycat = await join(clients, signal_cluster.b, room, name="ANN")
    (refused,) = await copycat.wait("name_error")
    assert refused["error"] == "taken" and refused["event"] == "name"
    assert copycat.received("name") == []
    await listed(ann, {ann.sid: "Ann", copycat.sid: None})
    # Taken with `name`: in capitals, in full-width letters.
    for taken in ("aNN", "\uff41\uff4e\uff4e"):
        answer = await copycat.call("name", taken)
        assert answer["error"] == "taken", answer
    # Free in another room, and once its holder has left.
    elsewhere = await join(clients, signal_cluster.b, f"{room}-2", name="ann")
    assert (await elsewhere.wait("name"))[0] == "ann"
    await ann.close()
    await listed(copycat, {copycat.sid: None})
    assert (await copycat.call("name", "ann"))["ok"] is True


async def test_names_are_refused_with_a_reason(
    signal_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"refused-{unique}"
    ann = await join(clients, signal_cluster.a, room)
    cases: list[tuple[Any, str]] = [
        (42, "invalid_type"),
        (None, "invalid_type"),
        ("   ", "empty"),
        ("x" * 33, "too_long"),
        ("a\x07b", "control_characters"),
        ("a\u2028b", "control_characters"),
        ("a\u200bb", "invisible_characters"),
        ("\u202eevil", "invisible_characters"),
    ]
    for value, code in cases:
        answer = await ann.call("name", value)
        assert answer["error"] == code, (value, answer)
    assert (await ann.call("name"))["error"] == "bad_arguments"
    assert (await ann.call("name", "Ann", "Bob"))["error"] == "bad_arguments"
    errors = ann.received("name_error")
    assert [e[0]["error"] for e in errors] == [code for _, code in cases] + ["bad_arguments"] * 2
    assert all(e[0]["event"] == "name" for e in errors)
    # On connecting: told on name_error, and in the room without a name.
    bob = await join(clients, signal_cluster.b, room, name="\u200b")
    (refused,) = await bob.wait("name_error")
    assert refused["error"] == "invisible_characters"
    await listed(ann, {ann.sid: None, bob.sid: None})
    # A name token that cannot be one refuses the connection.
    bad = Client(signal_cluster.a, SIGNAL_PATH)
    clients.append(bad)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await bad.connect(auth={"room": room, "name": "Carol", "name_token": "short"})
    assert bad.connect_error["data"]["error"] == "bad_name_token"


async def test_a_tab_takes_its_name_back_from_its_stale_connection(
    signal_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    """A phone that changed networks connects again before the server has seen its old
    connection drop: the token its name came with lets it take the name back, once."""
    room = f"back-{unique}"
    old = await join(clients, signal_cluster.a, room, name="Ann")
    (_, about) = await old.wait("name")
    token = about["token"]
    stranger = await join(clients, signal_cluster.b, room, name="Ann")
    assert (await stranger.wait("name_error"))[0]["error"] == "taken"

    new = await join(clients, signal_cluster.b, room, name="Ann", name_token=token)
    (name, fresh) = await new.wait("name")
    assert name == "Ann" and fresh["token"] != token
    (replaced,) = await old.wait("name_error")
    assert replaced["error"] == "replaced"
    await until(lambda: not old.sio.connected, "the stale connection let go")
    await listed(new, {new.sid: "Ann", stranger.sid: None})
    # Each token works once.
    again = await join(clients, signal_cluster.a, room, name="Ann", name_token=token)
    assert (await again.wait("name_error"))[0]["error"] == "taken"


async def test_a_signed_in_user_goes_by_its_sign_ins_name(
    signal_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"signed-{unique}"
    ann_token = mint(AUTH_SECRET, sub=f"ann-{unique}@example.org", name="Ann")
    squatter = await join(clients, signal_cluster.a, room, name="ann")
    # The sign-in's name, whatever the connection asks for; the squatter loses it, and stays.
    ann = await join(clients, signal_cluster.b, room, token=ann_token, name="Zed")
    (name, about) = await ann.wait("name")
    assert name == "Ann" and about == {"id": ann.sid, "signed_in": True}
    (lost,) = await squatter.wait("name_error")
    assert lost["error"] == "taken" and squatter.sio.connected
    people = await listed(ann, {squatter.sid: None, ann.sid: "Ann"})
    assert people[ann.sid]["signed_in"] is True
    assert (await ann.call("name", "Bob"))["error"] == "name_fixed"
    assert (await squatter.call("name", "ANN"))["error"] == "taken"
    # Her other tab shares it; another user whose sign-in says the same name is refused.
    tab = await join(clients, signal_cluster.a, room, token=ann_token)
    assert (await tab.wait("name"))[0] == "Ann"
    other = Client(signal_cluster.a, SIGNAL_PATH)
    clients.append(other)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await other.connect(auth={"room": room, "token": mint(AUTH_SECRET, sub="x", name="ANN")})
    assert other.connect_error["data"]["error"] == "taken"
    # A sign-in with no name to show (and a sub that is none) names itself like anyone.
    nameless = mint(AUTH_SECRET, sub="z" * 40)
    zoe = await join(clients, signal_cluster.b, room, token=nameless, name="Zoe")
    assert (await zoe.wait("name"))[1]["signed_in"] is False
    await listed(ann, {squatter.sid: None, ann.sid: "Ann", tab.sid: "Ann", zoe.sid: "Zoe"})


async def test_media_state_reaches_only_someone_in_the_room(
    signal_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"media-{unique}"
    ann = await join(clients, signal_cluster.a, room, name="Ann")
    bob = await join(clients, signal_cluster.b, room, name="Bob")
    carol = await join(clients, signal_cluster.b, f"{room}-2", name="Carol")
    await listed(ann, {ann.sid: "Ann", bob.sid: "Bob"})

    state = {"audio": False, "video": True}
    assert (await ann.call("media", bob.sid, state))["ok"] is True
    assert await bob.wait("media") == (bob.sid, state, ann.sid)
    # Only to someone in your room, never to yourself; the echo peer takes it and says nothing.
    refused = await ann.call("media", carol.sid, state)
    assert refused["error"] == "unknown_peer"
    assert (await ann.wait("peer_error"))[0]["event"] == "media"
    assert (await ann.call("media", ann.sid, state))["error"] == "self"
    assert (await ann.call("media", "echo", state))["ok"] is True
    # Booleans, both, and nothing else; nobody speaks for another.
    for bad in (
        {"audio": "off", "video": True},
        {"audio": 0, "video": 1},
        {"audio": True},
        {"audio": True, "video": True, "screen": True},
        [True, True],
        None,
    ):
        answer = await ann.call("media", bob.sid, bad)
        assert answer["error"] == "bad_media", (bad, answer)
    assert (await ann.call("media", bob.sid, state, carol.sid))["error"] == "bad_arguments"
    assert len(ann.received("signal_error")) == 7
    assert carol.received("media") == []
    assert len(bob.received("media")) == 1
