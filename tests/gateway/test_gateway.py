"""Everything through the nginx gateway of `make cluster`, as a browser reaches it: pages over
HTTPS, every service's health and socket.io, messages crossing replicas, and the gateway's own
rules (redirect, TLS versions, origins, forwarded headers, websocket only)."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
import warnings

import httpx
import pytest
import socketio
import websockets
from switchboard.token import mint

from tests.conftest import CHAT_PATH, CURSORS_PATH
from tests.cursors.test_cursors import sees_at
from tests.gateway.conftest import (
    AUTH_SECRET,
    HANDSHAKE_BURST,
    HANDSHAKES_PER_SECOND,
    SERVICES,
    SOCKETS_PER_ADDRESS,
    Cluster,
)
from tests.harness import PATIENCE, Client, try_code, until

pytestmark = pytest.mark.asyncio

PAGES = ["/", "/chat/", "/cursors/", "/remote/", "/remote/controller.html", "/call/", "/ticker/"]


#: The address the long-polling test's clients come from: their handshakes spend no one
#: else's share of the gateway's per-address limits.
POLLING_SOURCE = "127.0.0.11"


async def connected(url: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    found = re.search(r"^switchboard_connected_clients\{[^}]*\} (\S+)$", text, re.MULTILINE)
    assert found
    return float(found.group(1))


async def test_every_page_loads_over_https_with_hsts(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, verify=False) as http:
        for page in PAGES:
            answer = await http.get(page)
            assert answer.status_code == 200, page
            assert answer.headers["strict-transport-security"] == "max-age=63072000"
        assert "Socket.IO" in (await http.get("/vendor/socket.io.esm.min.js")).text[:200]
        missing = await http.get("/api/nothing/healthz")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        home = (await http.get("/")).text
        for app in ("chat", "cursors", "remote", "call", "ticker"):
            assert f'href="/{app}/"' in home, app
        # Bodies over the services' largest limit stop at the gateway.
        big = await http.post("/api/chat/healthz", content=b"x" * 100_000)
        assert big.status_code == 413


@pytest.mark.parametrize("service", SERVICES)
async def test_every_service_answers_through_the_gateway(cluster: Cluster, service: str) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, verify=False) as http:
        assert (await http.get(f"/api/{service}/healthz")).json()["service"] == service
        assert (await http.get(f"/api/{service}/readyz")).json()["status"] == "ready"
        # Metrics and API docs are for operators: each replica serves them, the gateway not.
        for private in ("metrics", "docs", "openapi.json"):
            answer = await http.get(f"/api/{service}/{private}")
            assert answer.status_code == 404, private
            assert answer.json()["error"] == "not_found", private
    async with httpx.AsyncClient(base_url=cluster.replica(service, "a"), verify=False) as http:
        assert "switchboard_connected_clients" in (await http.get(f"/api/{service}/metrics")).text


@pytest.mark.parametrize(
    ("service", "first_event"),
    [("chat", "history"), ("cursors", "snapshot"), ("signal", "clients"), ("ticker", "status")],
)
async def test_socketio_works_for_every_service(
    cluster: Cluster, clients: list[Client], service: str, first_event: str
) -> None:
    client = Client(cluster.url, f"/api/{service}/socket.io")
    clients.append(client)
    await client.connect()
    await client.wait(first_event)


async def test_a_private_room_through_the_gateway_needs_a_token_granting_it(
    cluster: Cluster, clients: list[Client], unique: str
) -> None:
    """The token travels in socket.io's own connect packet, through nginx untouched: refused
    without it (``token_required``), let in with one that grants the room, on either replica."""
    room = f"private-{unique}"
    stranger = Client(cluster.url, CHAT_PATH)
    clients.append(stranger)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await stranger.connect(auth={"room": room})
    assert stranger.connect_error["data"]["error"] == "token_required"
    token = mint(AUTH_SECRET, sub="ann", rooms={"chat": [room]})
    first, second = await two_on_different_replicas(
        cluster, "chat", CHAT_PATH, clients, {"room": room, "token": token}
    )
    await first.call("name", f"ann-{unique}")
    await first.call("message", "only for us")
    await second.wait("message", lambda _sender, text, _meta: text == "only for us")


async def two_on_different_replicas(
    cluster: Cluster, service: str, path: str, opened: list[Client], auth: dict
) -> tuple[Client, Client]:
    """Two clients through the gateway, which puts them on different replicas (least_conn)."""
    first, second = Client(cluster.url, path), Client(cluster.url, path)
    opened += [first, second]
    await first.connect(auth=auth)
    await second.connect(auth=auth)

    # A replica counts a socket of the test before when it has seen it go, which a busy machine
    # delays: wait for the counts to settle rather than read them once.
    async def one_on_each() -> bool:
        urls = [cluster.replica(service, side) + f"/api/{service}" for side in "ab"]
        return [await connected(url) for url in urls] == [1, 1]

    await until(one_on_each, "one socket on each replica")
    return first, second


async def test_a_chat_message_crosses_replicas(
    cluster: Cluster, clients: list[Client], unique: str
) -> None:
    ann, bob = await two_on_different_replicas(
        cluster, "chat", CHAT_PATH, clients, {"room": f"r-{unique}"}
    )
    await ann.call("name", f"ann-{unique}")
    await bob.call("name", f"bob-{unique}")
    await ann.call("message", "over the gateway")
    sender, text, _meta = await bob.wait("message")
    assert (sender["name"], text) == (f"ann-{unique}", "over the gateway")


async def test_a_cursor_move_crosses_replicas(
    cluster: Cluster, clients: list[Client], unique: str
) -> None:
    ann, bob = await two_on_different_replicas(
        cluster, "cursors", CURSORS_PATH, clients, {"room": f"r-{unique}"}
    )
    await ann.call("update", {"x": 0.25, "y": 0.75})
    await sees_at(bob, ann.sid, 0.25, 0.75)


async def test_plain_http_redirects_to_https(cluster: Cluster) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{cluster.http_url}/chat/?room=x")
    assert answer.status_code == 301
    port = cluster.env["GATEWAY_HTTPS_PORT"]
    assert answer.headers["location"] == f"https://localhost:{port}/chat/?room=x"


def handshake(port: int, version: ssl.TLSVersion) -> str:
    """The TLS version agreed on, or the error, with a client that can speak only ``version``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Let the client offer old versions at all (OpenSSL's default security level forbids them).
    context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 and 1.1: that is the point
        context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return str(tls.version())
        except ssl.SSLError as exc:
            return f"refused: {exc.reason}"


async def test_tls_1_0_and_1_1_are_refused_1_2_and_1_3_taken(cluster: Cluster) -> None:
    port = int(cluster.env["GATEWAY_HTTPS_PORT"])
    assert handshake(port, ssl.TLSVersion.TLSv1).startswith("refused")
    assert handshake(port, ssl.TLSVersion.TLSv1_1).startswith("refused")
    assert handshake(port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(port, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


def wss(cluster: Cluster, headers: dict[str, str], source: str) -> websockets.connect:
    """A websocket to chat through the gateway from the loopback address ``source``: await it,
    or use it with ``async with``."""
    url = cluster.url.replace("https", "wss") + f"{CHAT_PATH}/?EIO=4&transport=websocket"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return websockets.connect(
        url,
        ssl=context,
        additional_headers=headers,
        local_addr=(source, 0),
        open_timeout=PATIENCE,
    )


async def open_socket(cluster: Cluster, headers: dict[str, str], source: str = "127.0.0.1") -> int:
    """A websocket handshake to chat through the gateway: 101 on success, else the status."""
    try:
        async with wss(cluster, headers, source):
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


async def test_origins_are_checked_and_forwarded_headers_cannot_be_spoofed(
    cluster: Cluster,
) -> None:
    own = cluster.url
    assert await open_socket(cluster, {"Origin": own}) == 101
    assert await open_socket(cluster, {"Origin": "https://evil.example"}) == 403
    # The gateway sets X-Forwarded-Host itself: a client claiming another host gains nothing,
    # and loses nothing either.
    spoofed = {"Origin": "https://evil.example", "X-Forwarded-Host": "evil.example"}
    assert await open_socket(cluster, spoofed) == 403
    also = {"Origin": own, "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}
    assert await open_socket(cluster, also) == 101


async def test_long_polling_clients_reach_their_session_replica_and_spread(
    cluster: Cluster, clients: list[Client], unique: str
) -> None:
    """socket.io's default (long-polling, then the upgrade to a websocket) and polling only (a
    network that blocks websockets), through nginx: every request of a session reaches the
    replica that holds it (a wrong one would answer 400, unknown session), and many clients
    from one address (one NAT) spread over both replicas rather than all landing on one."""
    room = f"poll-{unique}"
    listener = Client(cluster.url, CHAT_PATH, source=POLLING_SOURCE)
    clients.append(listener)
    await listener.connect(auth={"room": room})
    await listener.wait("history")
    people = [
        (Client(cluster.url, CHAT_PATH, source=POLLING_SOURCE), transports)
        for transports in [["polling", "websocket"], ["polling"]] * 8
    ]
    clients.extend(person for person, _ in people)
    await asyncio.gather(
        *(person.connect(auth={"room": room}, transports=t) for person, t in people)
    )
    for n, (person, transports) in enumerate(people):
        assert (await person.call("name", f"p{n}-{unique}"))["ok"] is True
        assert (await person.call("message", f"hello from {n}"))["ok"] is True
        # Those that may upgrade did; the others stay on long-polling.
        assert person.sio.transport() == transports[-1]
    for n in range(len(people)):
        await listener.wait("message", lambda _s, text, _m, n=n: text == f"hello from {n}")
    # Each polling client got everyone's messages: its polls reached its session every time.
    for person, _ in people:
        await person.wait("message", lambda _s, text, _m: text == f"hello from {len(people) - 1}")

    # The replicas' counts, once they are ours alone (the listener and the 16: sockets of
    # tests before may take a moment to be seen gone).
    async def ours() -> list[float]:
        counts = [await connected(cluster.replica("chat", side) + "/api/chat") for side in "ab"]
        return counts if sum(counts) == len(people) + 1 else []

    counts = await until(ours, "only this test's clients connected")
    # 16 sessions hashed by random ids: all on one replica would be one chance in 32,768.
    assert all(count >= 1 for count in counts), counts


async def test_one_address_is_limited_in_open_sockets(cluster: Cluster) -> None:
    # An address of its own (loopback is all of 127/8), so that no other test shares its count.
    source = "127.0.0.3"
    origin = {"Origin": cluster.url}
    held = []
    try:
        for _ in range(SOCKETS_PER_ADDRESS):
            held.append(await wss(cluster, origin, source))
        # One more from the same address is refused; the others are fine, and so is another
        # address.
        assert await open_socket(cluster, origin, source) == 429
        assert held[0].state is websockets.State.OPEN
        assert await open_socket(cluster, origin, "127.0.0.4") == 101
    finally:
        for socket_ in held:
            await socket_.close()


async def test_one_address_is_limited_in_handshakes(cluster: Cluster) -> None:
    """More handshakes at once than the burst allows: the excess is refused with 429, and no
    more are let through than the burst plus what the rate refilled while they were made."""
    source = "127.0.0.2"  # an address of its own: no other test spends its bucket
    attempts = HANDSHAKE_BURST + 40
    # Refused by the service for their origin (403) once past the gateway: no socket stays open.
    # At most half the open-socket limit in flight at once, so that only the handshake limit
    # can answer 429 (more at once would meet the socket limit first, which answers 429 too).
    evil = {"Origin": "https://evil.example"}
    in_flight = asyncio.Semaphore(SOCKETS_PER_ADDRESS // 2)

    async def attempt() -> int:
        async with in_flight:
            return await open_socket(cluster, evil, source)

    started = time.monotonic()
    statuses = await asyncio.gather(*(attempt() for _ in range(attempts)))
    elapsed = time.monotonic() - started
    passed = statuses.count(403)
    assert passed + statuses.count(429) == attempts, statuses
    # What the bucket can let through in the window this test measured: the first request and
    # `burst` more at once, plus the refill (and one for rounding). This holds however slow the
    # machine is, and it forces refusals unless the attempts took 38 s to make.
    allowed = 2 + HANDSHAKE_BURST + HANDSHAKES_PER_SECOND * elapsed
    assert HANDSHAKE_BURST <= passed <= allowed, (passed, elapsed, statuses)
    assert 429 in statuses or allowed >= attempts, (elapsed, statuses)
    # Another address is not touched by this one's limit.
    assert await open_socket(cluster, {"Origin": cluster.url}, "127.0.0.5") == 101


async def test_wrong_pairing_codes_are_counted_per_client_address_across_replicas(
    cluster: Cluster,
) -> None:
    """nginx passes each client's address on, the replicas believe it from nginx only, and
    count the tries of an address together (CURSORS_CODE_ATTEMPTS: 2 a minute here)."""

    # Addresses of their own: no other test spends their tries. Three at once (a try comes
    # back every 30 s), wherever nginx sends each; a forged X-Forwarded-For changes nothing:
    # nginx sets the header itself.
    answers = await asyncio.gather(
        *(try_code(cluster.url, "ZZZZZZZZ", "127.0.0.7", f"198.51.100.{n}") for n in range(3))
    )
    assert sorted(answers) == ["bad_code", "bad_code", "too_many_attempts"]
    assert await try_code(cluster.url, "ZZZZZZZZ", "127.0.0.8") == "bad_code"
