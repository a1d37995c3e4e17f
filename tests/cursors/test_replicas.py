"""A cursor service replica killed with SIGKILL: its cursors vanish from the other replica's
screens once its heartbeat's key expires (REPLICA_TTL after its last beat; with the default 6 s,
within 10 s of the crash), with nobody left to say it has gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import start_cursors
from tests.cursors.test_cursors import join, sees_at
from tests.harness import Client, RedisServer

pytestmark = pytest.mark.asyncio


async def test_a_killed_replicas_cursors_disappear_once_its_heartbeat_expires(
    tmp_path: Path, redis_server: RedisServer, clients: list[Client], unique: str
) -> None:
    # A short TTL keeps the story short; how long after the crash is the TTL's business (and
    # the load of the machine's), not this test's: it waits for the outcome, bounded by PATIENCE.
    env = {"REDIS_URL": redis_server.url, "REPLICA_TTL": "3"}
    doomed = start_cursors(tmp_path, env, name="doomed")
    survivor = start_cursors(tmp_path, env, name="survivor")
    try:
        room = f"r-{unique}"
        ann = await join(clients, doomed.url, room)
        bob = await join(clients, survivor.url, room)
        await ann.call("update", {"x": 0.5, "y": 0.5})
        ann_id = ann.sid
        seen = await sees_at(bob, ann_id, 0.5, 0.5)

        doomed.kill()

        await bob.wait("delta", lambda f: f["seq"] > seen["seq"] and ann_id in f["left"])
        assert ann_id not in (await bob.call("snapshot"))["cursors"]
        # The survivor keeps ticking for those who stayed.
        await bob.call("update", {"x": 0.2, "y": 0.2})
        await sees_at(bob, bob.sid, 0.2, 0.2)
        watcher = await join(clients, survivor.url, room)
        assert bob.sid in (await watcher.call("snapshot"))["cursors"]
    finally:
        doomed.stop()
        survivor.stop()
