"""Issue 13: a replica told to stop (SIGTERM) first says it is not ready while it goes on
serving (DRAIN_SECONDS), then closes its clients' connections in a way that makes them
reconnect elsewhere, and then frees what it held in Redis at once, not after REPLICA_TTL."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import connect_chat
from tests.harness import PATIENCE, Client, RedisServer, start_together, until

pytestmark = pytest.mark.asyncio

DRAIN = 10.0


async def unready(url: str) -> bool:
    async with httpx.AsyncClient(timeout=PATIENCE) as http:
        return (await http.get(f"{url}/api/chat/readyz")).status_code == 503


async def test_a_stopping_replica_drains_then_hands_its_clients_over(
    log_dir: Path, redis_server: RedisServer, clients: list[Client], unique: str
) -> None:
    shared = {"REDIS_URL": redis_server.url}
    a, b = start_together(
        log_dir,
        [
            ("chat", {**shared, "DRAIN_SECONDS": str(DRAIN)}, "chat-drain-a"),
            ("chat", shared, "chat-drain-b"),
        ],
    )
    try:
        room = f"drain-{unique}"
        ann = await connect_chat(clients, a.url, room=room)
        bob = await connect_chat(clients, b.url, room=room)
        await ann.call("name", f"ann-{unique}")
        await bob.call("name", f"bob-{unique}")

        told = time.monotonic()
        a.popen.send_signal(signal.SIGTERM)
        # At once not ready, for whatever routes by readiness; and still serving.
        await until(lambda: unready(a.url), "the replica says it is not ready")
        assert ann.sio.connected
        assert (await ann.call("message", "while draining"))["ok"] is True
        await bob.wait("message", lambda _s, text, _m: text == "while draining")

        # After the drain: Ann's connection is closed as a transport loss (socket.io clients
        # reconnect after that; after a socket.io disconnect they would not), and the
        # replica leaves: her name is free at once and Bob sees her go.
        await until(lambda: not ann.sio.connected, "Ann's connection is closed")
        assert time.monotonic() - told >= DRAIN - 0.5
        a.popen.wait(PATIENCE)
        await bob.wait(
            "presence", lambda diff: any(m["name"] == f"ann-{unique}" for m in diff.get("left", []))
        )
        again = await connect_chat(clients, b.url, room=room)
        assert (await again.call("name", f"ann-{unique}"))["ok"] is True
    finally:
        a.stop()
        b.stop()
