"""`make run`'s server: every service at its prefix, the pages at /, over HTTPS, with a
certificate made on first run for localhost and the machine's addresses."""

from __future__ import annotations

import ssl

import httpx
import pytest
import websockets
from cryptography import x509

from tests.conftest import CHAT_PATH, Embedded
from tests.harness import PATIENCE, Client

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("service", ["chat", "cursors", "signal", "ticker"])
async def test_every_service_answers_at_its_prefix_over_https(
    embedded: Embedded, service: str
) -> None:
    async with httpx.AsyncClient(base_url=embedded.url, verify=False, timeout=PATIENCE) as http:
        health = await http.get(f"/api/{service}/healthz")
        assert health.json() == {"status": "ok", "service": service}
        assert (await http.get(f"/api/{service}/readyz")).json()["status"] == "ready"
        assert "switchboard_connected_clients" in (await http.get(f"/api/{service}/metrics")).text
        missing = await http.get("/api/nothing/healthz")
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"


async def test_the_pages_and_the_socketio_client_are_served_from_web(embedded: Embedded) -> None:
    async with httpx.AsyncClient(base_url=embedded.url, verify=False, timeout=PATIENCE) as http:
        home = await http.get("/")
        assert home.status_code == 200
        assert 'href="/chat/"' in home.text
        chat = await http.get("/chat/")
        assert chat.status_code == 200
        assert "/vendor/socket.io.esm.min.js" in (await http.get("/chat/chat.js")).text
        vendor = await http.get("/vendor/socket.io.esm.min.js")
        assert vendor.status_code == 200
        assert "javascript" in vendor.headers["content-type"]
        favicon = await http.get("/favicon.ico")
        assert favicon.status_code == 200 and favicon.content.startswith(b"\x00\x00\x01\x00")
        assert (await http.get("/chat/nothing-here.js")).status_code == 404


async def test_the_certificate_covers_localhost_and_the_machines_addresses(
    embedded: Embedded,
) -> None:
    pem = (embedded.cert_dir / "localhost.crt").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
    # The server presents it: a client that trusts exactly this certificate connects.
    context = ssl.create_default_context(cadata=pem.decode())
    async with httpx.AsyncClient(verify=context, timeout=PATIENCE) as http:
        assert (await http.get(f"{embedded.url}/api/chat/healthz")).status_code == 200


async def test_chat_works_through_the_embedded_server(
    embedded: Embedded, clients: list[Client], unique: str
) -> None:
    ann = Client(embedded.url, CHAT_PATH)
    clients.append(ann)
    await ann.connect(auth={"room": f"r-{unique}"}, headers={"Origin": embedded.url})
    assert (await ann.call("name", f"ann-{unique}"))["ok"] is True
    await ann.call("message", "over https")
    assert (await ann.wait("message"))[1] == "over https"


async def test_a_foreign_page_cannot_open_a_socket_to_it(embedded: Embedded) -> None:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    url = embedded.url.replace("https", "wss") + CHAT_PATH + "/?EIO=4&transport=websocket"

    def open_socket(origin: str) -> websockets.connect:
        return websockets.connect(url, origin=origin, ssl=insecure, open_timeout=PATIENCE)  # type: ignore[arg-type]

    # Another site, and the same host under another scheme: both are other origins.
    for origin in ("https://evil.example", embedded.url.replace("https", "http")):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await open_socket(origin)
        assert refused.value.response.status_code == 403, origin
        async with httpx.AsyncClient(verify=False, timeout=PATIENCE) as http:
            polling = await http.get(
                f"{embedded.url}{CHAT_PATH}/?EIO=4&transport=polling", headers={"Origin": origin}
            )
            assert polling.status_code == 400, origin
    # The page's own origin gets in.
    async with open_socket(embedded.url) as socket:
        assert (await socket.recv()).startswith("0{")
