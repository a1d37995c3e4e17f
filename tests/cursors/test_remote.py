"""A phone as the remote control of a desktop page: pairing by link or typed code, input that
reaches the paired desktop only, on whichever replica it is, and resuming after a drop."""

from __future__ import annotations

import asyncio
import base64
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.conftest import CURSORS_PATH, Cluster, start_cursors
from tests.harness import Client, RedisServer

pytestmark = pytest.mark.asyncio


async def desktop(opened: list[Client], url: str) -> tuple[Client, dict[str, Any]]:
    client = Client(url, CURSORS_PATH, namespace="/remote")
    opened.append(client)
    await client.connect(auth={"role": "desktop"})
    (pairing,) = await client.wait("pairing")
    return client, pairing


def token_of(pairing: dict[str, Any]) -> str:
    return str(pairing["url"].split("#token=", 1)[1])


async def controller(opened: list[Client], url: str, **auth: Any) -> Client:
    client = Client(url, CURSORS_PATH, namespace="/remote")
    opened.append(client)
    await client.connect(auth={"role": "controller", **auth})
    await client.wait("paired")
    return client


async def refused(url: str, **auth: Any) -> dict[str, Any]:
    client = Client(url, CURSORS_PATH, namespace="/remote")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(auth={"role": "controller", **auth})
    data: dict[str, Any] = client.connect_error["data"]
    return data


async def test_the_desktop_gets_a_link_a_qr_code_and_a_short_code(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    _, pairing = await desktop(clients, cursor_cluster.a)

    link = urllib.parse.urlsplit(pairing["url"])
    assert f"{link.scheme}://{link.netloc}" == cursor_cluster.a  # the host the desktop used
    assert link.path == "/remote/controller.html"
    assert len(base64.urlsafe_b64decode(token_of(pairing) + "==")) >= 16  # 128 bits
    assert len(pairing["code"]) == 8
    assert set(pairing["code"]) <= set("BCDFGHJKLMNPQRSTVWXZ")
    assert pairing["qr"].startswith("data:image/svg+xml")
    assert "<svg" in urllib.parse.unquote(pairing["qr"])
    assert pairing["desktop"] not in pairing["url"]  # the socket id is never the secret


async def test_a_token_pairs_once(cursor_cluster: Cluster, clients: list[Client]) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)

    phone = await controller(clients, cursor_cluster.b, token=token_of(pairing))

    (paired,) = phone.received("paired")[0]
    assert paired["desktop"] == pairing["desktop"]
    assert paired["session"]
    (joined,) = await screen.wait("controller_joined")
    assert joined == {"controller": phone.sid, "resumed": False}
    again = await refused(cursor_cluster.b, token=token_of(pairing))
    assert again["error"] == "bad_token"
    # The code of a used pairing is used up too.
    assert (await refused(cursor_cluster.a, code=pairing["code"]))["error"] == "bad_code"


async def test_a_typed_code_pairs_whatever_its_case_and_spacing(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    code = pairing["code"].lower()
    typed = f"{code[:4]} {code[4:]}"

    await controller(clients, cursor_cluster.b, code=typed)

    await screen.wait("controller_joined")


async def test_input_reaches_the_paired_desktop_and_nobody_else(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    mine, pairing = await desktop(clients, cursor_cluster.a)
    other, other_pairing = await desktop(clients, cursor_cluster.b)
    phone = await controller(clients, cursor_cluster.b, token=token_of(pairing))

    assert await phone.call("update", {"x": 0.2, "y": 0.8}) == {"ok": True}
    assert await phone.call("press", {"button": "a", "down": True}) == {"ok": True}
    turn = {"alpha": 10.5, "beta": -20, "gamma": None}
    assert await phone.call("orientation", turn) == {"ok": True}
    # The course's form names the desktop: the right one works, another is refused.
    assert (await phone.call("update", pairing["desktop"], {"x": 0.3, "y": 0.3}))["ok"]
    wrong = await phone.call("update", other_pairing["desktop"], {"x": 0.9, "y": 0.9})
    assert wrong["error"] == "not_paired"

    await mine.wait("update", lambda u: u == {"x": 0.3, "y": 0.3})
    assert (await mine.wait("press"))[0] == {"button": "a", "down": True}
    assert (await mine.wait("orientation"))[0] == turn
    await asyncio.sleep(0.2)
    assert {"x": 0.9, "y": 0.9} not in [args[0] for args in mine.received("update")]
    for event in ("update", "press", "orientation"):
        assert other.received(event) == []


async def test_presses_are_never_dropped_while_moves_are_coalesced(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    phone = await controller(clients, cursor_cluster.b, token=token_of(pairing))

    for step in range(200):
        await phone.emit("update", {"x": step / 200, "y": 0.5})
        if step % 20 == 0:
            await phone.emit("press", {"button": "b", "down": step % 40 == 0})
    await phone.call("update", {"x": 1, "y": 1})

    await screen.wait("update", lambda u: u == {"x": 1.0, "y": 1.0})
    presses = [args[0]["down"] for args in screen.received("press")]
    assert presses == [step % 40 == 0 for step in range(0, 200, 20)]
    assert len(screen.received("update")) < 200


@pytest.mark.parametrize(
    ("event", "value", "error"),
    [
        ("update", {"x": "left"}, "bad_position"),
        ("press", {"button": "<b>", "down": True}, "bad_press"),
        ("press", {"button": "a", "down": "yes"}, "bad_press"),
        ("orientation", {"alpha": "up", "beta": 0, "gamma": 0}, "bad_orientation"),
        ("orientation", [1, 2, 3], "bad_orientation"),
    ],
)
async def test_bad_input_is_refused_and_not_forwarded(
    cursor_cluster: Cluster, clients: list[Client], event: str, value: Any, error: str
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    phone = await controller(clients, cursor_cluster.b, token=token_of(pairing))

    assert (await phone.call(event, value))["error"] == error
    await asyncio.sleep(0.1)
    assert screen.received(event) == []


async def test_a_controller_that_drops_resumes_without_scanning_again(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    phone = await controller(clients, cursor_cluster.b, token=token_of(pairing))
    session = phone.received("paired")[0][0]["session"]
    first_id = phone.sid

    await phone.close()  # the phone slept
    (left,) = await screen.wait("controller_left")
    assert left["controller"] == first_id
    assert left["grace"] > 0
    woken = await controller(clients, cursor_cluster.a, session=session)

    (joined,) = await screen.wait("controller_joined", lambda j: j["resumed"])
    assert joined["controller"] == woken.sid
    await woken.call("press", {"button": "a", "down": True})
    await screen.wait("press")
    assert (await refused(cursor_cluster.a, session="made-up"))["error"] == "bad_session"


async def test_the_desktop_can_unpair_its_controller(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    phone = await controller(clients, cursor_cluster.b, token=token_of(pairing))
    session = phone.received("paired")[0][0]["session"]

    fresh = await screen.call("unpair")

    assert fresh["ok"] is True
    assert fresh["code"] != pairing["code"]
    assert (await phone.wait("unpaired"))[0] == {"reason": "desktop_unpaired"}
    for _ in range(50):
        if not phone.sio.connected:
            break
        await asyncio.sleep(0.05)
    assert not phone.sio.connected
    assert (await refused(cursor_cluster.b, session=session))["error"] == "bad_session"
    await controller(clients, cursor_cluster.b, token=token_of(fresh))


async def test_a_desktop_that_leaves_ends_the_pairing(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    phone = await controller(clients, cursor_cluster.b, token=token_of(pairing))
    await screen.close()
    assert (await phone.wait("unpaired"))[0] == {"reason": "desktop_left"}


async def test_renewing_replaces_the_token_and_the_code(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    fresh = await screen.call("renew")
    assert (await refused(cursor_cluster.b, token=token_of(pairing)))["error"] == "bad_token"
    await controller(clients, cursor_cluster.b, code=fresh["code"])
    assert (await screen.call("renew"))["error"] == "paired"


async def test_only_a_desktop_renews_and_only_a_controller_steers(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    phone = await controller(clients, cursor_cluster.b, token=token_of(pairing))
    assert (await screen.call("update", {"x": 0.1, "y": 0.1}))["error"] == "wrong_role"
    assert (await phone.call("renew"))["error"] == "wrong_role"
    assert (await refused(cursor_cluster.a))["error"] == "bad_auth"
    stranger = Client(cursor_cluster.a, CURSORS_PATH, namespace="/remote")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await stranger.connect(auth={"role": "admin"})
    assert stranger.connect_error["data"]["error"] == "bad_role"


async def test_tokens_expire_unused(tmp_path: Path, clients: list[Client]) -> None:
    service = start_cursors(tmp_path, {"CURSORS_PAIRING_TTL": "1"})
    try:
        _, pairing = await desktop(clients, service.url)
        await asyncio.sleep(1.2)
        assert (await refused(service.url, token=token_of(pairing)))["error"] == "bad_token"
        assert (await refused(service.url, code=pairing["code"]))["error"] == "bad_code"
    finally:
        service.stop()


async def test_guessing_codes_is_stopped(tmp_path: Path, clients: list[Client]) -> None:
    service = start_cursors(tmp_path, {"CURSORS_CODE_ATTEMPTS": "5", "CURSORS_CODE_GUESSES": "3"})
    try:
        _, pairing = await desktop(clients, service.url)
        wrong = "BBBBBBBB" if pairing["code"] != "BBBBBBBB" else "CCCCCCCC"
        errors = [(await refused(service.url, code=wrong))["error"] for _ in range(7)]
        # Five wrong codes a minute from one address, then no more tries at all.
        assert errors == ["bad_code"] * 5 + ["too_many_attempts"] * 2
        assert 0 < (await refused(service.url, code=wrong))["retry_after"] <= 12
        assert (await refused(service.url, code=pairing["code"]))["error"] == "too_many_attempts"
    finally:
        service.stop()


async def test_a_code_guessed_at_too_often_is_replaced(
    tmp_path: Path, clients: list[Client]
) -> None:
    service = start_cursors(tmp_path, {"CURSORS_CODE_ATTEMPTS": "100", "CURSORS_CODE_GUESSES": "3"})
    try:
        screen, pairing = await desktop(clients, service.url)
        wrong = "BBBBBBBB" if pairing["code"] != "BBBBBBBB" else "CCCCCCCC"
        for _ in range(4):
            await refused(service.url, code=wrong)
        # Even the right code is refused now, and the desktop shows a new one.
        assert (await refused(service.url, code=pairing["code"]))["error"] == "bad_code"
        (renewed,) = await screen.wait("pairing", lambda p: p["code"] != pairing["code"])
        await controller(clients, service.url, code=renewed["code"])
    finally:
        service.stop()


async def test_a_new_pairing_ends_the_one_in_its_grace(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    phone = await controller(clients, cursor_cluster.b, token=token_of(pairing))
    session = phone.received("paired")[0][0]["session"]
    await phone.close()
    await screen.wait("controller_left")

    fresh = await screen.call("renew")

    assert fresh["ttl"] > 0
    assert (await refused(cursor_cluster.b, session=session))["error"] == "bad_session"
    await controller(clients, cursor_cluster.b, code=fresh["code"])


async def test_without_redis_a_desktop_is_refused_clearly(tmp_path: Path) -> None:
    own_redis = RedisServer(tmp_path)
    service = start_cursors(tmp_path, {"REDIS_URL": own_redis.url})
    try:
        own_redis.stop()
        screen = Client(service.url, CURSORS_PATH, namespace="/remote")
        with pytest.raises(socketio.exceptions.ConnectionError):
            await screen.connect(auth={"role": "desktop"})
        assert screen.connect_error["data"]["error"] == "unavailable"
    finally:
        service.stop()
        own_redis.stop()
