"""A phone as the remote control of a desktop page: pairing by link or typed code, input that
reaches the paired desktop only, on whichever replica it is, and resuming after a drop."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import socketio
from cursor_service.settings import CursorSettings
from switchboard.settings import SettingsError

from tests.conftest import CURSORS_PATH, Cluster, start_cursors
from tests.harness import Client, RawSocket, RedisServer, start_together, try_code, until

pytestmark = pytest.mark.asyncio

#: How often a controller's moves and turns go out at most (remote.COALESCE_S).
COALESCE = 0.016


async def desktop(opened: list[Client], url: str) -> tuple[Client, dict[str, Any]]:
    client = Client(url, CURSORS_PATH, namespace="/remote")
    opened.append(client)
    await client.connect(auth={"role": "desktop"})
    (pairing,) = await client.wait("pairing")
    return client, pairing


def pair_of(pairing: dict[str, Any]) -> str:
    """The pairing secret in the link's fragment (``#pair=``)."""
    return str(pairing["url"].split("#pair=", 1)[1])


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
    assert len(base64.urlsafe_b64decode(pair_of(pairing) + "==")) >= 16  # 128 bits
    assert len(pairing["code"]) == 8
    assert set(pairing["code"]) <= set("BCDFGHJKLMNPQRSTVWXZ")
    assert pairing["qr"].startswith("data:image/svg+xml")
    assert "<svg" in urllib.parse.unquote(pairing["qr"])
    assert pairing["desktop"] not in pairing["url"]  # the socket id is never the secret


async def test_a_link_pairs_once(cursor_cluster: Cluster, clients: list[Client]) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)

    phone = await controller(clients, cursor_cluster.b, pair=pair_of(pairing))

    (paired,) = phone.received("paired")[0]
    assert paired["desktop"] == pairing["desktop"]
    assert paired["session"]
    (joined,) = await screen.wait("controller_joined")
    assert joined == {"controller": phone.sid, "resumed": False}
    again = await refused(cursor_cluster.b, pair=pair_of(pairing))
    assert again["error"] == "bad_pair"
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
    phone = await controller(clients, cursor_cluster.b, pair=pair_of(pairing))

    assert await phone.call("update", {"x": 0.2, "y": 0.8}) == {"ok": True}
    assert await phone.call("press", {"button": "a", "down": True}) == {"ok": True}
    turn = {"alpha": 10.5, "beta": -20, "gamma": None}
    assert await phone.call("orientation", turn) == {"ok": True}
    # The course's form names the desktop: the right one works, another is refused.
    assert (await phone.call("update", pairing["desktop"], {"x": 0.3, "y": 0.3}))["ok"]
    wrong = await phone.call("update", other_pairing["desktop"], {"x": 0.9, "y": 0.9})
    assert wrong["error"] == "not_paired"
    # Barriers. A press goes the way the refused move would have gone, after it (a press sends
    # the move waiting to go first). Anything sent to the other desktop while the phone's call
    # was handled is on its way before the answer to a call of its own.
    await phone.call("press", {"button": "last", "down": False})
    await other.call("renew")

    await mine.wait("update", lambda u: u == {"x": 0.3, "y": 0.3})
    assert (await mine.wait("press"))[0] == {"button": "a", "down": True}
    assert (await mine.wait("orientation"))[0] == turn
    await mine.wait("press", lambda p: p["button"] == "last")
    assert {"x": 0.9, "y": 0.9} not in [args[0] for args in mine.received("update")]
    for event in ("update", "press", "orientation"):
        assert other.received(event) == []


async def test_presses_are_never_dropped_while_moves_are_coalesced(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    phone = await controller(clients, cursor_cluster.b, pair=pair_of(pairing))

    started = time.monotonic()
    for step in range(200):
        await phone.emit("update", {"x": step / 200, "y": 0.5})
        if step % 20 == 0:
            await phone.emit("press", {"button": "b", "down": step % 40 == 0})
    await phone.call("update", {"x": 1, "y": 1})

    await screen.wait("update", lambda u: u == {"x": 1.0, "y": 1.0})
    elapsed = time.monotonic() - started
    presses = [args[0]["down"] for args in screen.received("press")]
    assert presses == [step % 40 == 0 for step in range(0, 200, 20)]
    # Moves go out once per COALESCE at most, plus one sent early by each of the 10 presses:
    # not one per move (201), however long the 201 moves took to arrive.
    moves = len(screen.received("update"))
    assert moves <= elapsed / COALESCE + 1 + len(presses), (moves, elapsed)


async def test_a_press_the_desktop_does_not_confirm_is_refused_not_delivered(
    tmp_path: Path, clients: list[Client]
) -> None:
    service = start_cursors(tmp_path, {"CURSORS_PRESS_ACK_SECONDS": "0.5"})
    confirming = asyncio.Event()
    try:
        screen, pairing = await desktop(clients, service.url)
        held: list[dict[str, Any]] = []

        async def hold(event: dict[str, Any]) -> dict[str, Any]:
            # The page gets the press but does not answer it (a frozen tab, say) until told to.
            held.append(event)
            await confirming.wait()
            return {"ok": True}

        screen.sio.on("press", hold, namespace="/remote")
        phone = await controller(clients, service.url, pair=pair_of(pairing))

        answer = await phone.call("press", {"button": "a", "down": True})
        assert answer["error"] == "not_delivered"
        # Several at once: each is refused in turn (one connection's events are handled in
        # order), none is left waiting.
        buttons = [f"b{n}" for n in range(8)]
        answers = await asyncio.gather(
            *(phone.call("press", {"button": button, "down": True}) for button in buttons)
        )
        assert [answer["error"] for answer in answers] == ["not_delivered"] * len(buttons)
        # Every press reached the page: only its confirmation was missing.
        await until(lambda: len(held) == 1 + len(buttons), "every press reached the page")
        assert sorted(event["button"] for event in held) == sorted(["a", *buttons])

        confirming.set()  # the page answers again: so does the phone's next press
        assert await phone.call("press", {"button": "a", "down": False}) == {"ok": True}
    finally:
        confirming.set()
        service.stop()


async def test_the_wait_for_a_press_confirmation_is_a_bounded_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in list(os.environ):
        if key.startswith("CURSORS_"):
            monkeypatch.delenv(key)
    assert CursorSettings.from_env().press_ack_seconds == 5.0
    monkeypatch.setenv("CURSORS_PRESS_ACK_SECONDS", "0.5")
    assert CursorSettings.from_env().press_ack_seconds == 0.5
    for value in ("0", "11", "soon"):
        monkeypatch.setenv("CURSORS_PRESS_ACK_SECONDS", value)
        with pytest.raises(SettingsError, match=f"CURSORS_PRESS_ACK_SECONDS: .*'{value}'"):
            CursorSettings.from_env()


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
    phone = await controller(clients, cursor_cluster.b, pair=pair_of(pairing))

    assert (await phone.call(event, value))["error"] == error
    # Barrier: a press goes the way the refused input would have gone, after it (a press sends
    # the move or turn waiting to go first).
    barrier = {"button": "barrier", "down": True}
    await phone.call("press", barrier)
    await screen.wait("press", lambda p: p == barrier)
    assert [args[0] for args in screen.received(event)] == ([barrier] if event == "press" else [])


async def test_a_controller_that_drops_resumes_without_scanning_again(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    phone = await controller(clients, cursor_cluster.b, pair=pair_of(pairing))
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
    phone = await controller(clients, cursor_cluster.b, pair=pair_of(pairing))
    session = phone.received("paired")[0][0]["session"]

    fresh = await screen.call("unpair")

    assert fresh["ok"] is True
    assert fresh["code"] != pairing["code"]
    assert (await phone.wait("unpaired"))[0] == {"reason": "desktop_unpaired"}
    await until(lambda: not phone.sio.connected, "the unpaired phone is still connected")
    assert (await refused(cursor_cluster.b, session=session))["error"] == "bad_session"
    await controller(clients, cursor_cluster.b, pair=pair_of(fresh))


async def test_a_desktop_that_drops_resumes_its_pairing_with_its_session(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    phone = await controller(clients, cursor_cluster.b, pair=pair_of(pairing))
    assert pairing["session"] != pair_of(pairing)

    await screen.close()  # the page reloaded, or its replica went away
    (away,) = await phone.wait("desktop_left")
    assert away["grace"] > 0
    refused_press = await phone.call("press", {"button": "a", "down": True})
    assert refused_press["error"] == "desktop_away"

    back = Client(cursor_cluster.b, CURSORS_PATH, namespace="/remote")
    clients.append(back)
    await back.connect(auth={"role": "desktop", "session": pairing["session"]})
    (joined,) = await back.wait("controller_joined")
    assert joined == {"controller": phone.sid, "resumed": True}
    await phone.wait("desktop_back")
    await phone.call("press", {"button": "b", "down": True})
    assert (await back.wait("press"))[0] == {"button": "b", "down": True}
    assert not back.received("pairing"), "the pairing goes on: no new code"

    stranger = Client(cursor_cluster.a, CURSORS_PATH, namespace="/remote")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await stranger.connect(auth={"role": "desktop", "session": "made-up"})
    assert stranger.connect_error["data"]["error"] == "bad_session"


@pytest.mark.parametrize("replicas", [1, 2])
async def test_a_desktop_that_does_not_come_back_ends_the_pairing_after_its_grace(
    tmp_path: Path, redis_server: RedisServer, clients: list[Client], replicas: int
) -> None:
    env = {"CURSORS_RESUME_GRACE": "1"}
    if replicas == 2:
        env["REDIS_URL"] = redis_server.url
    services = start_together(tmp_path, [("cursors", env, f"grace-{n}") for n in range(replicas)])
    try:
        screen, pairing = await desktop(clients, services[0].url)
        phone = await controller(clients, services[-1].url, pair=pair_of(pairing))
        await screen.close()
        assert (await phone.wait("desktop_left"))[0] == {"grace": 1.0}
        assert (await phone.wait("unpaired"))[0] == {"reason": "desktop_left"}
        await until(lambda: not phone.sio.connected, "the unpaired phone is still connected")
        late = Client(services[0].url, CURSORS_PATH, namespace="/remote")
        with pytest.raises(socketio.exceptions.ConnectionError):
            await late.connect(auth={"role": "desktop", "session": pairing["session"]})
        assert late.connect_error["data"]["error"] == "bad_session"
    finally:
        for service in services:
            service.stop()


async def test_a_desktop_left_alone_is_forgotten_at_once(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    """No controller to keep: nothing waits for the page; a new page pairs anew."""
    screen, pairing = await desktop(clients, cursor_cluster.a)
    await screen.close()
    again = Client(cursor_cluster.b, CURSORS_PATH, namespace="/remote")
    await until_refused(again, {"role": "desktop", "session": pairing["session"]}, "bad_session")
    assert (await refused(cursor_cluster.b, pair=pair_of(pairing)))["error"] == "bad_pair"


async def until_refused(client: Client, auth: dict[str, Any], error: str) -> None:
    """Connecting is refused with ``error``, once the server has seen the last one leave."""

    async def refused_now() -> bool:
        try:
            await client.connect(auth=auth)
        except socketio.exceptions.ConnectionError:
            return bool(client.connect_error["data"]["error"] == error)
        await client.close()
        return False

    await until(refused_now, f"connecting with {auth} refused with {error}")


async def test_renewing_replaces_the_link_and_the_code(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    fresh = await screen.call("renew")
    assert (await refused(cursor_cluster.b, pair=pair_of(pairing)))["error"] == "bad_pair"
    await controller(clients, cursor_cluster.b, code=fresh["code"])
    assert (await screen.call("renew"))["error"] == "paired"


async def test_only_a_desktop_renews_and_only_a_controller_steers(
    cursor_cluster: Cluster, clients: list[Client]
) -> None:
    screen, pairing = await desktop(clients, cursor_cluster.a)
    phone = await controller(clients, cursor_cluster.b, pair=pair_of(pairing))
    assert (await screen.call("update", {"x": 0.1, "y": 0.1}))["error"] == "wrong_role"
    assert (await phone.call("renew"))["error"] == "wrong_role"
    assert (await refused(cursor_cluster.a))["error"] == "bad_auth"
    stranger = Client(cursor_cluster.a, CURSORS_PATH, namespace="/remote")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await stranger.connect(auth={"role": "admin"})
    assert stranger.connect_error["data"]["error"] == "bad_role"


#: What a client may send where a secret belongs: another type, nothing, too much, or what no
#: secret of ours looks like. 60 000 characters still fit in a frame (64 KiB).
MALFORMED = [7, 1.5, True, ["secret"], {"secret": "x"}, "", "x" * 65, "not a secret!", "x" * 60_000]


@pytest.mark.parametrize("value", MALFORMED, ids=lambda value: repr(value)[:16])
@pytest.mark.parametrize(
    ("role", "field", "error"),
    [
        ("desktop", "session", "bad_session"),
        ("controller", "session", "bad_session"),
        ("controller", "pair", "bad_pair"),
    ],
)
async def test_a_malformed_secret_is_refused_before_it_is_looked_up(
    cursor_cluster: Cluster, role: str, field: str, error: str, value: Any
) -> None:
    client = Client(cursor_cluster.a, CURSORS_PATH, namespace="/remote")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(auth={"role": role, field: value})
    refusal = client.connect_error
    assert refusal["data"]["error"] == error
    assert refusal["data"]["ok"] is False
    assert refusal["message"] == refusal["data"]["message"]
    # Refused for its shape, not after looking for a pairing ("This pairing has ended").
    assert f"auth.{field}" in refusal["message"]
    assert not client.received("pairing"), "a desktop with a bad session got a new pairing"


async def test_a_malformed_code_is_refused_and_not_counted_as_a_wrong_one(
    tmp_path: Path, clients: list[Client]
) -> None:
    # One wrong code a minute: had any of these been counted, even the right code would then
    # be refused (too_many_attempts).
    service = start_cursors(tmp_path, {"CURSORS_CODE_ATTEMPTS": "1"})
    try:
        _, pairing = await desktop(clients, service.url)
        for value in [12345678, True, [pairing["code"]], {}, "", "B" * 33, "x" * 60_000]:
            refusal = await refused(service.url, code=value)
            assert refusal["error"] == "bad_code", value
            assert "auth.code" in refusal["message"], value
        await controller(clients, service.url, code=pairing["code"])
    finally:
        service.stop()


async def test_a_null_session_is_no_session(cursor_cluster: Cluster, clients: list[Client]) -> None:
    screen = Client(cursor_cluster.a, CURSORS_PATH, namespace="/remote")
    clients.append(screen)
    await screen.connect(auth={"role": "desktop", "session": None})
    await screen.wait("pairing")
    assert (await refused(cursor_cluster.a, session=None))["error"] == "bad_auth"


@pytest.mark.parametrize("role", ["desktop", "controller"])
async def test_a_session_bigger_than_a_frame_closes_the_connection_and_nothing_else(
    cursor_cluster: Cluster, clients: list[Client], role: str
) -> None:
    socket = RawSocket(cursor_cluster.a, CURSORS_PATH, origin=cursor_cluster.a)
    try:
        await socket.open()
        auth = {"role": role, "session": "x" * 100_000}
        await socket.send(f"40/remote,{json.dumps(auth)}")
        # Over the 64 KiB frame limit, the service never reads it: the socket is closed.
        assert await socket.closed()
    finally:
        await socket.close()
    await desktop(clients, cursor_cluster.a)  # and the service goes on


async def test_links_expire_unused(tmp_path: Path, clients: list[Client]) -> None:
    service = start_cursors(tmp_path, {"CURSORS_PAIRING_TTL": "1"})
    try:
        _, pairing = await desktop(clients, service.url)
        # Until the service's clock is past the expiry it announced (in ms; 10 ms more for
        # rounding): a slower machine only waits less.
        await asyncio.sleep(max(0.0, (pairing["expires"] + 10) / 1000 - time.time()))
        assert (await refused(service.url, pair=pair_of(pairing)))["error"] == "bad_pair"
        assert (await refused(service.url, code=pairing["code"]))["error"] == "bad_code"
    finally:
        service.stop()


async def test_guessing_codes_is_stopped(tmp_path: Path, clients: list[Client]) -> None:
    per_minute = 5
    env = {"CURSORS_CODE_ATTEMPTS": str(per_minute), "CURSORS_CODE_GUESSES": "3"}
    service = start_cursors(tmp_path, env)
    try:
        _, pairing = await desktop(clients, service.url)
        wrong = "BBBBBBBB" if pairing["code"] != "BBBBBBBB" else "CCCCCCCC"
        # Five wrong codes a minute from one address, then no more tries at all: not even the
        # right code (past 3 wrong guesses it is retired, so no try here can pair). The
        # address's bucket holds 5 tries at first, loses one per wrong code and regains 5 a
        # minute: what each answer must be follows from the tries counted so far and the time
        # since the first. Within 12 s (always, unless this machine crawls) that is exactly
        # 5 x bad_code, then too_many_attempts.
        started = time.monotonic()
        counted = 0
        answers = []
        for code in [wrong] * 8 + [pairing["code"]]:
            answer = await refused(service.url, code=code)
            answers.append(answer["error"])
            fewest = per_minute - counted
            most = fewest + (time.monotonic() - started) * per_minute / 60
            if fewest >= 1:
                assert answer["error"] == "bad_code", answers
            elif most < 1:
                assert answer["error"] == "too_many_attempts", answers
            if answer["error"] == "too_many_attempts":
                # The wait until the bucket holds a try again, to 0.1 s.
                assert (1 - most) * 60 / per_minute - 0.05 <= answer["retry_after"], answer
                assert answer["retry_after"] <= 60 / per_minute, answer
            else:
                assert answer["error"] == "bad_code", answers
                counted += 1
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
    phone = await controller(clients, cursor_cluster.b, pair=pair_of(pairing))
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


async def test_wrong_codes_are_counted_per_client_address(
    tmp_path: Path, clients: list[Client]
) -> None:
    # Two wrong codes a minute per address, and the first comes back after 30 s: the same
    # answers however slowly this runs (up to 30 s).
    service = start_cursors(tmp_path, {"CURSORS_CODE_ATTEMPTS": "2"})
    try:
        _, pairing = await desktop(clients, service.url)
        wrong = "BBBBBBBB" if pairing["code"] != "BBBBBBBB" else "CCCCCCCC"
        first = [await try_code(service.url, wrong, "127.0.0.2") for _ in range(3)]
        assert first == ["bad_code", "bad_code", "too_many_attempts"]
        # Before, every client had the address 127.0.0.1 and this was too_many_attempts.
        assert await try_code(service.url, wrong, "127.0.0.3") == "bad_code"
        # The right code is not a wrong one: it pairs, and costs this address nothing.
        assert await try_code(service.url, pairing["code"], "127.0.0.3") == "paired"
    finally:
        service.stop()


async def test_racing_wrong_codes_get_no_more_tries_than_the_limit(
    tmp_path: Path, clients: list[Client]
) -> None:
    own_redis = RedisServer(tmp_path)
    env = {"REDIS_URL": own_redis.url, "CURSORS_CODE_ATTEMPTS": "3"}
    service = start_cursors(tmp_path, env)
    try:
        _, pairing = await desktop(clients, service.url)
        wrong = "BBBBBBBB" if pairing["code"] != "BBBBBBBB" else "CCCCCCCC"
        answers = await asyncio.gather(
            *(try_code(service.url, wrong, "127.0.0.4") for _ in range(12))
        )
        # Before, each passed the check before any was counted: 12 x bad_code.
        assert sorted(answers) == ["bad_code"] * 3 + ["too_many_attempts"] * 9
    finally:
        service.stop()
        own_redis.stop()


async def test_only_a_trusted_proxy_may_say_which_client_it_carries(
    tmp_path: Path, clients: list[Client]
) -> None:
    env = {"CURSORS_CODE_ATTEMPTS": "1", "TRUSTED_PROXIES": "127.0.0.5"}
    service = start_cursors(tmp_path, env)
    try:
        _, pairing = await desktop(clients, service.url)
        wrong = "BBBBBBBB" if pairing["code"] != "BBBBBBBB" else "CCCCCCCC"
        # Through the proxy, each client its own address and its own tries.
        proxy = "127.0.0.5"
        assert await try_code(service.url, wrong, proxy, "198.51.100.1") == "bad_code"
        assert await try_code(service.url, wrong, proxy, "198.51.100.2") == "bad_code"
        assert await try_code(service.url, wrong, proxy, "198.51.100.1") == "too_many_attempts"
        # The same IPv4 address written as IPv6 is the same client.
        mapped = await try_code(service.url, wrong, proxy, "::ffff:198.51.100.1")
        assert mapped == "too_many_attempts"
        # An IPv6 client counts by its /64, which it holds whole: a fresh address is no escape.
        assert await try_code(service.url, wrong, proxy, "2001:db8:1::1") == "bad_code"
        assert await try_code(service.url, wrong, proxy, "2001:db8:1::2") == "too_many_attempts"
        assert await try_code(service.url, wrong, proxy, "2001:db8:2::1") == "bad_code"
        # From anywhere else the header is not believed: a client cannot pick a fresh address.
        assert await try_code(service.url, wrong, "127.0.0.6", "198.51.100.3") == "bad_code"
        forged = await try_code(service.url, wrong, "127.0.0.6", "198.51.100.4")
        assert forged == "too_many_attempts"
    finally:
        service.stop()


async def test_every_remote_event_is_rate_limited_and_renewing_costs_more(
    tmp_path: Path, clients: list[Client]
) -> None:
    # 120 tokens a connection, one back every 1000 s; a renew costs 50.
    env = {"CURSORS_REMOTE_RATE_PER_SECOND": "0.001", "CURSORS_REMOTE_RATE_BURST": "120"}
    service = start_cursors(tmp_path, env)
    try:
        screen, _ = await desktop(clients, service.url)
        renewals = [await screen.call("renew") for _ in range(3)]
        assert [answer["ok"] for answer in renewals] == [True, True, False]
        assert renewals[2]["error"] == "rate_limited"

        phone = await controller(clients, service.url, pair=pair_of(renewals[1]))
        presses = [
            await phone.call("press", {"button": "a", "down": n % 2 == 0}) for n in range(121)
        ]
        assert [p["ok"] for p in presses] == [True] * 120 + [False]
        assert presses[-1]["error"] == "rate_limited"
        # What was refused never reached the desktop.
        await until(lambda: len(screen.received("press")) >= 120, "120 presses")
        assert len(screen.received("press")) == 120
    finally:
        service.stop()
