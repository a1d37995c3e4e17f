"""Every rule of the chat, tried with a bad value: each gets its error, nothing reaches other
people unvalidated, and the service stays healthy. In both modes: with Redis, the refusals must
not leave half-written state behind either."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest
import socketio

from tests.chat.presence import told
from tests.conftest import CHAT_PATH, Cluster, connect_chat, start_chat
from tests.harness import PATIENCE, Client

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, "invalid_type"),
        (42, "invalid_type"),
        (["ann"], "invalid_type"),
        ({"name": "ann"}, "invalid_type"),
        ("", "empty"),
        ("   \t ", "empty"),
        ("x" * 33, "too_long"),
        ("ann\x00", "control_characters"),
        ("a\u0007b", "control_characters"),
        ("line\u2028break", "control_characters"),
        ("ann\u200b", "invisible_characters"),  # zero-width space
        ("\u202eann", "invisible_characters"),  # right-to-left override
        ("an\u2066n", "invisible_characters"),  # left-to-right isolate
        ("ann\U000e0041", "invisible_characters"),  # a tag character
        ("\u3164", "invisible_characters"),  # Hangul filler: a letter drawn blank
    ],
)
async def test_bad_names_are_refused_with_their_reason(
    chat_cluster: Cluster, clients: list[Client], value: object, error: str
) -> None:
    client = await connect_chat(clients, chat_cluster.a)

    ack = await client.call("name", value)

    assert ack["ok"] is False
    assert ack["error"] == error
    assert ack["message"]
    (event,) = await client.wait("name_error")
    assert event["error"] == error


@pytest.mark.parametrize(
    ("first", "lookalike"),
    [
        ("ann", "\u0430nn"),  # a Cyrillic a
        ("ann", "ANN"),
        ("ann", "\uff41\uff4e\uff4e"),  # full-width letters, plain after NFKC
        ("mia", "rnia"),
        ("lola", "1ola"),
    ],
)
async def test_a_name_that_looks_like_a_taken_one_is_taken(
    chat_cluster: Cluster, clients: list[Client], unique: str, first: str, lookalike: str
) -> None:
    client = await connect_chat(clients, chat_cluster.a)
    other = await connect_chat(clients, chat_cluster.b)
    assert (await client.call("name", f"{first}-{unique}"))["ok"] is True

    ack = await other.call("name", f"{lookalike}-{unique}")

    assert ack["error"] == "taken", ack


async def test_a_name_of_exactly_32_characters_is_fine(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    client = await connect_chat(clients, chat_cluster.a)
    name = (unique * 6)[:32]
    assert (await client.call("name", name))["ok"] is True


async def test_messages_need_a_name_first(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"r-{unique}"
    anonymous = await connect_chat(clients, chat_cluster.a, room=room)
    listener = await connect_chat(clients, chat_cluster.a, room=room)

    ack = await anonymous.call("message", "hi")

    assert ack["error"] == "no_name"
    (event,) = await anonymous.wait("chat_error")
    assert event == {**ack, "event": "message"}
    # Barrier: once named, its next message reaches the listener after anything sent before.
    await anonymous.call("name", f"ann-{unique}")
    await anonymous.call("message", "named now")
    await listener.wait("message")
    assert [args[1] for args in listener.received("message")] == ["named now"]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, "invalid_type"),
        (3.5, "invalid_type"),
        ({"text": "hi"}, "invalid_type"),
        ("", "empty"),
        ("  \n ", "empty"),
        ("x" * 2001, "too_long"),
        ("bell\x07", "control_characters"),
    ],
)
async def test_bad_messages_are_refused_and_reach_nobody(
    chat_cluster: Cluster, clients: list[Client], unique: str, value: object, error: str
) -> None:
    room = f"r-{unique}"
    sender = await connect_chat(clients, chat_cluster.a, room=room)
    await sender.call("name", f"ann-{unique}")
    listener = await connect_chat(clients, chat_cluster.a, room=room)

    ack = await sender.call("message", value)

    assert ack["error"] == error
    await sender.call("message", "a good one")  # delivered after the bad one, if that were
    await listener.wait("message")
    assert [args[1] for args in listener.received("message")] == ["a good one"]


async def test_multi_line_messages_of_2000_characters_pass(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    sender = await connect_chat(clients, chat_cluster.a, room=f"r-{unique}")
    await sender.call("name", f"ann-{unique}")
    text = ("line\n\tindented " * 200)[:1999] + "!"
    assert (await sender.call("message", text))["ok"] is True
    assert (await sender.wait("message"))[1] == text


@pytest.mark.parametrize("args", [(), ("one", "two"), ("one", {"extra": 1}, 3)])
async def test_missing_or_extra_arguments_are_refused(
    chat_cluster: Cluster, clients: list[Client], unique: str, args: tuple[object, ...]
) -> None:
    client = await connect_chat(clients, chat_cluster.a)
    await client.call("name", f"ann-{unique}")

    for event in ("name", "message"):
        ack = await client.call(event, *args)
        assert ack["error"] == "bad_arguments", event


async def test_unknown_events_get_an_error_not_silence(
    chat_cluster: Cluster, clients: list[Client]
) -> None:
    client = await connect_chat(clients, chat_cluster.a)

    ack = await client.call("shout", "hi")

    assert ack["error"] == "unknown_event"
    assert "shout" in ack["message"]
    await client.emit("not an identifier!", 1)
    await client.wait(
        "chat_error", lambda e: e["message"] == "there is no event 'not an identifier!'"
    )


@pytest.mark.parametrize(
    ("auth", "query", "error"),
    [
        ({"room": "has space"}, "", "bad_room"),
        ({"room": "x" * 65}, "", "bad_room"),
        ({"room": 7}, "", "bad_room"),
        ({"room": ""}, "", "bad_room"),
        (None, "room=%2Fetc%2Fpasswd", "bad_room"),
        ({"last_id": "yesterday"}, "", "bad_last_id"),
        ({"last_id": 5}, "", "bad_last_id"),
        ("just a string", "", "bad_auth"),
        ({"name_token": 42}, "", "bad_name_token"),
        ({"name_token": "short"}, "", "bad_name_token"),
    ],
)
async def test_bad_rooms_and_resume_points_are_refused_at_connection(
    chat_cluster: Cluster, auth: object, query: str, error: str
) -> None:
    client = Client(chat_cluster.a, CHAT_PATH)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(auth=auth, query=query)
    refusal = client.connect_error
    assert refusal["data"]["error"] == error
    assert refusal["data"]["ok"] is False
    assert refusal["message"] == refusal["data"]["message"]


async def test_a_one_megabyte_frame_is_refused_and_the_service_stays_healthy(
    chat_cluster: Cluster, clients: list[Client], unique: str
) -> None:
    flooder = await connect_chat(clients, chat_cluster.a, room=f"r-{unique}")
    await flooder.call("name", f"flood-{unique}")
    bystander = await connect_chat(clients, chat_cluster.a, room=f"r-{unique}")

    await flooder.emit("message", "x" * 1_000_000)

    await bystander.wait("presence", told("left", name=f"flood-{unique}"))
    assert not flooder.sio.connected
    assert bystander.received("message") == []
    async with httpx.AsyncClient(timeout=PATIENCE) as http:
        health = await http.get(f"{chat_cluster.a}/api/chat/healthz")
        assert health.json() == {"status": "ok", "service": "chat"}
        assert (await http.get(f"{chat_cluster.a}/api/chat/readyz")).status_code == 200
    # A long-polling body over the limit is refused too.
    polling = Client(chat_cluster.a, CHAT_PATH)
    clients.append(polling)
    await polling.connect(transports=["polling"])
    await polling.emit("message", "y" * 100_000)
    assert (await connect_chat(clients, chat_cluster.a)).sio.connected


async def test_the_rate_limit_answers_with_an_error_not_a_disconnect(
    tmp_path: Path, clients: list[Client], unique: str
) -> None:
    # Bursts of 5 and one more event every 1000 s: the same refusals however fast this runs.
    # (The defaults, 5 a second and bursts of 10, are tests/foundation/test_settings.py's.)
    service = start_chat(tmp_path, {"CHAT_RATE_PER_SECOND": "0.001", "CHAT_RATE_BURST": "5"})
    try:
        client = await connect_chat(clients, service.url)
        assert (await client.call("name", f"fast-{unique}"))["ok"] is True  # one of the five
        acks = [await client.call("message", f"m{i}") for i in range(15)]

        assert [ack["ok"] for ack in acks] == [True] * 4 + [False] * 11, acks
        refused = acks[4:]
        assert {ack["error"] for ack in refused} == {"rate_limited"}
        assert "wait" in refused[0]["message"]
        assert 0 < refused[0]["retry_after"] <= 1000
        assert client.sio.connected
        await client.wait("chat_error", lambda e: e["error"] == "rate_limited")
    finally:
        service.stop()


async def test_rejections_are_counted_in_the_metrics(
    chat_cluster: Cluster, clients: list[Client]
) -> None:
    client = await connect_chat(clients, chat_cluster.a)
    await client.call("name", 42)
    async with httpx.AsyncClient(timeout=PATIENCE) as http:
        text = (await http.get(f"{chat_cluster.a}/api/chat/metrics")).text
    assert (
        'switchboard_rejected_inputs_total{error="invalid_type",event="name",service="chat"}'
        in text
    )
    assert 'switchboard_events_received_total{event="name",service="chat"}' in text
    assert "switchboard_connected_clients" in text


async def test_a_proposed_session_id_is_taken_only_as_the_gateway_writes_it(
    chat_cluster: Cluster,
) -> None:
    """The gateway proposes each engine.io session's id (X-Switchboard-Session, issue 16). A
    replica takes it only when it is 32 hex digits and no session has it: anything else a
    client sends there gets the library's own random id."""

    async def handshake(http: httpx.AsyncClient, proposed: str) -> str:
        answer = await http.get(
            f"{chat_cluster.a}{CHAT_PATH}/",
            params={"EIO": 4, "transport": "polling"},
            headers={"X-Switchboard-Session": proposed},
        )
        assert answer.status_code == 200
        sid: str = json.loads(answer.text[1:])["sid"]  # "0{...}": engine.io's OPEN packet
        return sid

    good = secrets.token_hex(16)
    async with httpx.AsyncClient(timeout=PATIENCE) as http:
        assert await handshake(http, good) == good
        # The same id again is taken already: the second session gets another.
        assert await handshake(http, good) != good
        for hostile in ["short", good.upper(), good + "0", "../" + good[3:], "a" * 4096]:
            assert await handshake(http, hostile) != hostile
