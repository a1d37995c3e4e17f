"""Issue 15 across replicas and through the gateway: every refusal of a token, with its code, on
each replica of every service directly and through nginx, and a private room shared by two
people whose same token puts them on different replicas. `make cluster` runs in AUTH_MODE=open
with the tests' AUTH_SECRET and AUTH_LEEWAY 5 s: the times here are hours off.
One process is covered by tests/foundation/test_auth.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import socketio
from switchboard.token import mint

from tests.conftest import CHAT_PATH, CURSORS_PATH
from tests.cursors.test_cursors import sees_at
from tests.foundation.test_auth import unsigned
from tests.gateway.conftest import AUTH_SECRET, Cluster
from tests.gateway.test_gateway import two_on_different_replicas
from tests.harness import Client
from tests.signal.peers import SIGNAL_PATH

pytestmark = pytest.mark.asyncio

OTHER_SECRET = "not-the-gateway-tests-secret-32-characters"
TICKER_PATH = "/api/ticker/socket.io"
#: The services with rooms: where their socket.io is, and the first event a client let in gets.
ROOM_SERVICES = {
    "chat": (CHAT_PATH, "history"),
    "cursors": (CURSORS_PATH, "snapshot"),
    "signal": (SIGNAL_PATH, "clients"),
}
#: Each replica directly, and nginx.
ENTRIES = ("a", "b", "gateway")
#: The loopback address this module's clients connect from: the gateway limits handshakes and
#: open sockets per address, and no other test spends this one's.
SOURCE = "127.0.0.9"


def entry_url(cluster: Cluster, service: str, entry: str) -> str:
    return cluster.url if entry == "gateway" else cluster.replica(service, entry)


Case = tuple[str, dict[str, Any], str | None]


async def each_answered(
    url: str, path: str, cases: list[Case], opened: list[Client], namespace: str = "/"
) -> dict[str, Client]:
    """Every ``(what, auth, code)`` at once: each is refused with ``code``, or let in for None.
    The clients let in, by ``what``."""

    async def outcome(auth: dict[str, Any]) -> tuple[Client, str | None]:
        client = Client(url, path, namespace=namespace, source=SOURCE)
        opened.append(client)
        try:
            await client.connect(auth=auth)
        except socketio.exceptions.ConnectionError as exc:
            data = (client.connect_error or {}).get("data")
            return client, data["error"] if isinstance(data, dict) else f"no refusal: {exc!r}"
        return client, None

    answers = await asyncio.gather(*(outcome(auth) for _, auth, _ in cases))
    got = {what: code for (what, _, _), (_, code) in zip(cases, answers, strict=True)}
    assert got == {what: code for what, _, code in cases}
    return {
        what: client
        for (what, _, code), (client, _) in zip(cases, answers, strict=True)
        if code is None
    }


def minted(secret: str = AUTH_SECRET, **claims: Any) -> str:
    """A token for Ann (``switchboard.token.mint``'s arguments)."""
    return mint(secret, sub="ann", **claims)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("service", sorted(ROOM_SERVICES))
async def test_a_private_room_refuses_each_bad_token_with_its_code(
    cluster: Cluster, clients: list[Client], unique: str, service: str, entry: str
) -> None:
    path, first_event = ROOM_SERVICES[service]
    room = f"private-{unique}"
    now = time.time()
    grant = {service: [room]}
    other_service = "chat" if service != "chat" else "signal"
    unsigned_claims = {"sub": "ann", "aud": "switchboard", "exp": int(now) + 600, "grants": grant}
    tokens: list[tuple[str, str | None, str | None]] = [
        ("no token", None, "token_required"),
        ("forged", minted(OTHER_SECRET, rooms=grant), "token_invalid"),
        ("alg none", unsigned(unsigned_claims), "token_invalid"),
        ("expired", minted(rooms=grant, now=now - 7200, ttl=60), "token_expired"),
        ("not yet valid", minted(rooms=grant, now=now + 3600), "token_invalid"),
        ("wrong audience", minted(rooms=grant, audience="another"), "token_invalid"),
        ("other rooms", minted(rooms={service: [f"private-x{unique}"]}), "room_forbidden"),
        ("another service's", minted(rooms={other_service: [room]}), "room_forbidden"),
        ("granting", minted(rooms=grant), None),
    ]
    cases: list[Case] = [
        (what, {"room": room} if token is None else {"room": room, "token": token}, code)
        for what, token, code in tokens
    ]
    url = entry_url(cluster, service, entry)
    admitted = await each_answered(url, path, cases, clients)
    await admitted["granting"].wait(first_event)


@pytest.mark.parametrize("entry", ENTRIES)
async def test_the_ticker_and_the_remote_refuse_bad_tokens_with_their_codes(
    cluster: Cluster, clients: list[Client], entry: str
) -> None:
    now = time.time()
    ticker: list[Case] = [
        ("forged", {"token": minted(OTHER_SECRET, apps=("ticker",))}, "token_invalid"),
        ("expired", {"token": minted(apps=("ticker",), now=now - 7200, ttl=60)}, "token_expired"),
        ("good", {"token": minted(apps=("ticker",))}, None),
    ]
    forged = {"role": "desktop", "token": minted(OTHER_SECRET, apps=("remote",))}
    remote: list[Case] = [("forged", forged, "token_invalid")]
    admitted, _ = await asyncio.gather(
        each_answered(entry_url(cluster, "ticker", entry), TICKER_PATH, ticker, clients),
        each_answered(
            entry_url(cluster, "cursors", entry), CURSORS_PATH, remote, clients, "/remote"
        ),
    )
    await admitted["good"].wait("status")


def granting(service: str, room: str) -> dict[str, Any]:
    return {"room": room, "token": minted(rooms={service: [room]})}


async def test_a_private_chat_room_is_shared_across_replicas(
    cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"private-{unique}"
    ann, bob = await two_on_different_replicas(
        cluster, "chat", CHAT_PATH, clients, granting("chat", room)
    )
    await ann.call("name", f"ann-{unique}")  # a signed-in user's name may come with the token
    assert (await ann.call("message", "only for us"))["ok"] is True
    await bob.wait("message", lambda _sender, text, _meta: text == "only for us")


async def test_a_private_cursor_room_is_shared_across_replicas(
    cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"private-{unique}"
    ann, bob = await two_on_different_replicas(
        cluster, "cursors", CURSORS_PATH, clients, granting("cursors", room)
    )
    await bob.wait("snapshot")
    await ann.call("update", {"x": 0.25, "y": 0.75})
    await sees_at(bob, ann.sid, 0.25, 0.75)


async def test_a_private_call_room_lists_both_across_replicas(
    cluster: Cluster, clients: list[Client], unique: str
) -> None:
    room = f"private-{unique}"
    ann, bob = await two_on_different_replicas(
        cluster, "signal", SIGNAL_PATH, clients, granting("signal", room)
    )
    for one, other in ((ann, bob), (bob, ann)):
        await one.wait("clients", lambda listed, sid=other.sid: sid in listed)
