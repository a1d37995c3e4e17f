"""Issue 13: a client leaves while Redis refuses the removal of its entries. Nothing of it may
stay behind once Redis answers again: no name held, no one listed, no cursor on screens. Redis
is made to refuse exactly those commands (its ACL) while the client leaves, on a Redis of the
test's own; then it is let be, and the other replica must see the client gone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.chat.presence import told
from tests.conftest import connect_chat
from tests.cursors.test_cursors import join as join_cursors
from tests.cursors.test_cursors import sees_at
from tests.harness import Client, RedisServer, ServiceProcess, start_together, until
from tests.signal.test_safety import join as join_call

pytestmark = pytest.mark.asyncio


class Refusing:
    """Redis's default user refused ``commands`` (``-@scripting``, ``-hdel``) until undone."""

    def __init__(self, port: int) -> None:
        self.control = redis.Redis(port=port)

    def refuse(self, *commands: str) -> None:
        self.control.acl_log_reset()
        self.control.acl_setuser("default", enabled=True, reset=False, commands=list(commands))

    def refused(self, command: str) -> bool:
        """Whether Redis has refused ``command`` since :meth:`refuse` (its ACL log)."""
        return any(entry["object"] == command for entry in self.control.acl_log())

    def allow(self, *commands: str) -> None:
        self.refuse(*(f"+{command[1:]}" for command in commands))

    @contextlib.contextmanager
    def refusing(self, command: str) -> Iterator[None]:
        """``command`` (``-hdel``, ``-@scripting``) refused inside the block, allowed after."""
        self.refuse(command)
        try:
            yield
        finally:
            self.allow(command)


def pair(
    service: str, log_dir: Path, redis_url: str, name: str
) -> tuple[ServiceProcess, ServiceProcess]:
    # Beats every second: what waits for a beat does not wait long.
    env = {"REDIS_URL": redis_url, "REPLICA_TTL": "3"}
    a, b = start_together(log_dir, ((service, env, f"{name}-{side}") for side in "ab"))
    return a, b


async def test_chat_a_name_and_presence_go_once_redis_answers(
    log_dir: Path, own_redis: RedisServer, clients: list[Client], unique: str
) -> None:
    a, b = pair("chat", log_dir, own_redis.url, "chat-ghost")
    redis_acl = Refusing(own_redis.port)
    try:
        room = f"ghost-{unique}"
        ann = await connect_chat(clients, a.url, room=room)
        bob = await connect_chat(clients, b.url, room=room)
        assert (await ann.call("name", f"ann-{unique}"))["ok"] is True
        await bob.call("name", f"bob-{unique}")

        with redis_acl.refusing("-@scripting"):  # the leave script among them
            await ann.close()
            await bob.wait("presence", told("left", name=f"ann-{unique}"))

        async def gone() -> bool:
            newcomer = await connect_chat(clients, b.url, room=room)
            users = newcomer.received("users")[0][0]
            taken = await newcomer.call("name", f"ann-{unique}")
            await newcomer.close()
            return f"ann-{unique}" not in {user["name"] for user in users} and taken["ok"]

        await until(gone, "Ann is no longer listed and her name is free", every=0.5)
    finally:
        a.stop()
        b.stop()


async def test_signalling_a_peer_is_off_the_list_once_redis_answers(
    log_dir: Path, own_redis: RedisServer, clients: list[Client], unique: str
) -> None:
    a, b = pair("signal", log_dir, own_redis.url, "signal-ghost")
    redis_acl = Refusing(own_redis.port)
    try:
        room = f"ghost-{unique}"
        ann = await join_call(clients, a.url, room)
        bob = await join_call(clients, b.url, room)
        ann_id = ann.sid
        await bob.wait("clients", lambda listed: ann_id in listed)

        with redis_acl.refusing("-hdel"):
            await ann.close()
            await until(lambda: redis_acl.refused("hdel"), "her removal refused")

        # Told by the replica that retried, after a beat; and for good.
        await bob.wait("clients", lambda listed: ann_id not in listed and bob.sid in listed)
        newcomer = await join_call(clients, b.url, room)
        (listed,) = newcomer.received("clients")[-1]
        assert ann_id not in listed
    finally:
        a.stop()
        b.stop()


async def test_cursors_a_cursor_leaves_every_screen_once_redis_answers(
    log_dir: Path, own_redis: RedisServer, clients: list[Client], unique: str
) -> None:
    a, b = pair("cursors", log_dir, own_redis.url, "cursors-ghost")
    redis_acl = Refusing(own_redis.port)
    try:
        room = f"ghost-{unique}"
        ann = await join_cursors(clients, a.url, room)
        bob = await join_cursors(clients, b.url, room)
        await ann.call("update", {"x": 0.5, "y": 0.5})
        ann_id = ann.sid
        seen = await sees_at(bob, ann_id, 0.5, 0.5)

        with redis_acl.refusing("-hdel"):
            await ann.close()
            # A's ticks try to write her removal, and fail, until Redis takes it.
            await until(lambda: redis_acl.refused("hdel"), "her removal refused")

        await bob.wait("delta", lambda f: f["seq"] > seen["seq"] and ann_id in f["left"])
        assert ann_id not in (await bob.call("snapshot"))["cursors"]
    finally:
        a.stop()
        b.stop()
