"""A cursor service replica killed with SIGKILL: its cursors vanish from the other replica's
screens within 10 s."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import start_cursors
from tests.cursors.test_cursors import join, sees_at
from tests.harness import Client, RedisServer

pytestmark = pytest.mark.asyncio


async def test_a_killed_replicas_cursors_disappear_within_10_seconds(
    tmp_path: Path, redis_server: RedisServer, clients: list[Client], unique: str
) -> None:
    env = {"REDIS_URL": redis_server.url}  # the default REPLICA_TTL for cursors, 6 s
    doomed = start_cursors(tmp_path, env, name="doomed")
    survivor = start_cursors(tmp_path, env, name="survivor")
    try:
        room = f"r-{unique}"
        ann = await join(clients, doomed.url, room)
        bob = await join(clients, survivor.url, room)
        await ann.call("update", {"x": 0.5, "y": 0.5})
        ann_id = ann.sid
        await sees_at(bob, ann_id, 0.5, 0.5)

        doomed.kill()
        killed_at = time.monotonic()

        await bob.wait("delta", lambda f: ann_id in f["left"], timeout=10)
        gone_after = time.monotonic() - killed_at
        assert gone_after < 10
        assert ann_id not in (await bob.call("snapshot"))["cursors"]
        # The survivor keeps ticking for those who stayed.
        await bob.call("update", {"x": 0.2, "y": 0.2})
        await sees_at(bob, bob.sid, 0.2, 0.2)
        watcher = await join(clients, survivor.url, room)
        assert bob.sid in (await watcher.call("snapshot"))["cursors"]
    finally:
        doomed.stop()
        survivor.stop()
