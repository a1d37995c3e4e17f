"""Issue 16: any socket.io client is welcome through the gateway. The socket.io JS client with
its default options (long-polling first, then the upgrade to a websocket), and the same client
on a network that blocks websockets (it stays on long-polling), chat with each other through
nginx in front of two replicas of the chat service."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page, WebSocketRoute

from tests.browser.conftest import new_context
from tests.gateway.conftest import Cluster

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]

#: A socket.io client as a page's script would make one, with socket.io's defaults: only its
#: path and the room are given. It takes a name, and keeps what it hears in window.heard.
CONNECT = """async ({room, name}) => {
  const { io } = await import("/vendor/socket.io.esm.min.js");
  window.heard = [];
  window.upgraded = false;
  const socket = (window.socket = io({ path: "/api/chat/socket.io", auth: { room } }));
  socket.io.on("open", () => socket.io.engine.on("upgrade", () => (window.upgraded = true)));
  socket.on("message", (sender, text) => window.heard.push(text));
  await new Promise((resolve, reject) => {
    socket.on("history", resolve);
    socket.on("connect_error", (error) => reject(new Error(String(error.message))));
  });
  const answer = await socket.emitWithAck("name", name);
  return { ok: answer.ok, transport: socket.io.engine.transport.name };
}"""

SAY = """async (text) => (await window.socket.emitWithAck("message", text)).ok"""


async def client_page(cluster: Cluster, browser: Any, *, block_websockets: bool) -> Page:
    context = await new_context(browser)
    if block_websockets:
        # A proxy on the way that lets no websocket through: each one is closed at once.
        async def refuse(socket: WebSocketRoute) -> None:
            await socket.close()

        await context.route_web_socket("**/socket.io/**", refuse)
    page = await context.new_page()
    await page.goto(f"{cluster.url}/")
    return page


async def test_the_js_client_with_default_options_and_without_websockets_chat(
    browser: Any, cluster: Cluster, unique: str
) -> None:
    room = f"polling-{unique}"
    upgrading = await client_page(cluster, browser, block_websockets=False)
    polling = await client_page(cluster, browser, block_websockets=True)
    joined = await upgrading.evaluate(CONNECT, {"room": room, "name": f"ann-{unique}"})
    assert joined["ok"] is True
    joined = await polling.evaluate(CONNECT, {"room": room, "name": f"bob-{unique}"})
    assert joined == {"ok": True, "transport": "polling"}

    # The default client upgrades to a websocket (its upgrade request, carrying its session id,
    # reached the replica that holds the session); the other stays on long-polling.
    await upgrading.wait_for_function("() => window.upgraded")
    assert await upgrading.evaluate("() => window.socket.io.engine.transport.name") == "websocket"
    assert await upgrading.evaluate(SAY, "over a websocket") is True
    assert await polling.evaluate(SAY, "over long-polling") is True
    for page in (upgrading, polling):
        await page.wait_for_function(
            "() => ['over a websocket', 'over long-polling'].every((t) => window.heard.includes(t))"
        )
    assert await polling.evaluate("() => window.socket.io.engine.transport.name") == "polling"
