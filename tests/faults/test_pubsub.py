"""Issue 13: a replica's socket.io listener cut off from Redis's pub/sub. It notices, subscribes
again on the one Redis client it keeps (no connection or pool left behind, however often), says
it is not ready while it hears nothing, and its clients get what they missed."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import redis

from tests.chat.presence import told
from tests.conftest import connect_chat
from tests.faults.conftest import chat_env, chat_replicas
from tests.harness import PATIENCE, Client, RedisServer, rss_kb, until

pytestmark = pytest.mark.asyncio

#: Listener reconnects in a row: 30 in make test (a pool left behind at each would be 30 more
#: Redis clients, three times what the test allows), 100 by hand with make faults.
RECONNECTS = int(os.environ.get("FAULT_RECONNECTS", "30"))


def deafen(control: redis.Redis) -> None:
    """No replica may subscribe (Redis's ACL), and those subscribed are cut off: every
    listener hears nothing, while Redis serves everything else (storing, publishing)."""
    control.acl_setuser("default", enabled=True, reset=False, commands=["-subscribe"])
    control.client_kill_filter(_type="pubsub")


def let_hear(control: redis.Redis) -> None:
    control.acl_setuser("default", enabled=True, reset=False, commands=["+subscribe"])


def subscribers(control: redis.Redis) -> int:
    return int(dict(control.pubsub_numsub("socketio:chat"))[b"socketio:chat"])


async def ready(url: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(timeout=PATIENCE) as http:
        answer = await http.get(f"{url}/api/chat/readyz")
        return answer.status_code, answer.json()


def texts(client: Client) -> set[str]:
    """Every message text ``client`` holds, from ``message`` events and ``history``."""
    held = {args[1] for args in client.received("message")}
    for messages, _info in client.received("history"):
        held.update(message["text"] for message in messages)
    return held


async def test_listener_reconnects_leave_no_connection_behind(
    log_dir: Path, own_redis: RedisServer, clients: list[Client], unique: str
) -> None:
    replicas = chat_replicas(log_dir, chat_env(own_redis.url), "chat-relisten")
    control = redis.Redis(port=own_redis.port)
    try:
        room = f"relisten-{unique}"
        ann = await connect_chat(clients, replicas[0].url, room=room)
        bob = await connect_chat(clients, replicas[1].url, room=room)
        await ann.call("name", f"ann-{unique}")
        await bob.call("name", f"bob-{unique}")

        async def round_trip(n: int) -> None:
            # Both ways: each replica publishes (on its client's pool) and hears the other.
            for sender, receiver in ((ann, bob), (bob, ann)):
                text = f"{n} from {sender.sio.sid}"
                answer = await sender.call("message", text)
                assert answer["ok"] is True, answer
                # Live, or, should the listener subscribe anew meanwhile (a heartbeat that came
                # late on a busy machine makes the replica hear up to now), in the catch-up.
                await until(
                    lambda text=text, receiver=receiver: text in texts(receiver),
                    f"{text} received",
                )

        await round_trip(0)
        for warm_up in range(-5, 0):  # the first reconnects warm up what a reconnect uses
            control.client_kill_filter(_type="pubsub")
            await until(lambda: subscribers(control) == 2, "both subscribe again")
            await round_trip(warm_up)
        before = control.info("clients")["connected_clients"]
        memory_before = [rss_kb(replica.pid) for replica in replicas]
        for n in range(1, RECONNECTS + 1):
            killed = control.client_kill_filter(_type="pubsub")
            assert killed == 2, f"round {n}: {killed} subscribers killed"
            await until(lambda: subscribers(control) == 2, f"round {n}: both subscribe again")
            await round_trip(n)
        after = control.info("clients")["connected_clients"]
        grown = [rss_kb(r.pid) - kb for r, kb in zip(replicas, memory_before, strict=True)]
        print(
            f"\n{RECONNECTS} listener reconnects: Redis clients {before} -> {after}, "
            f"RSS +{grown} kB"
        )
        # The control connection and the two replicas' pools: nothing piles up. A pool opens
        # a connection more when more commands run at once than before (on a busy machine,
        # a few); a pool left behind at each reconnect would be one more each time.
        assert after <= before + 10, f"Redis clients grew from {before} to {after}"
        # A pool left behind at each reconnect would be a client and its buffers each time.
        assert max(grown) < 8 * 1024, f"RSS grew by {grown} kB"
    finally:
        control.close()
        for replica in replicas:
            replica.stop()


async def test_a_deaf_replica_is_unready_and_its_clients_catch_up(
    log_dir: Path, own_redis: RedisServer, clients: list[Client], unique: str
) -> None:
    a, b = chat_replicas(log_dir, chat_env(own_redis.url), "chat-deaf")
    control = redis.Redis(port=own_redis.port)
    try:
        room = f"deaf-{unique}"
        ann = await connect_chat(clients, a.url, room=room)
        bob = await connect_chat(clients, b.url, room=room)
        await bob.call("name", f"bob-{unique}")
        assert (await bob.call("message", "before"))["ok"] is True
        await ann.wait("message", lambda _s, text, _m: text == "before")

        leaving = await connect_chat(clients, b.url, room=room)
        await leaving.call("name", f"leaving-{unique}")
        await ann.wait("presence", told("joined", name=f"leaving-{unique}"))

        deafen(control)
        try:
            sent = [f"while deaf {n}" for n in range(20)]
            for text in sent:
                # Stored, and published: Redis accepts it, only no subscriber hears it.
                answer = await bob.call("message", text)
                assert answer["ok"] is True, answer
            # Someone comes and someone goes while Ann's replica hears nothing.
            coming = await connect_chat(clients, b.url, room=room)
            await coming.call("name", f"coming-{unique}")
            await leaving.close()
            status, body = await ready(a.url)
            assert status == 503, body
            assert any("did not hear a probe" in reason for reason in body["reasons"]), body
        finally:
            let_hear(control)

        await until(lambda: set(sent) <= texts(ann), "Ann gets every message she missed")
        # And who is there now: the newcomer, without the one who left (`users`, the whole list).
        await ann.wait(
            "users",
            lambda users, _: {u["name"] for u in users} == {f"bob-{unique}", f"coming-{unique}"},
        )

        async def both_ready() -> bool:
            return (await ready(a.url))[0] == 200 and (await ready(b.url))[0] == 200

        await until(both_ready, "both replicas hear again and say so")
        missed = [
            text for text in sent if text not in {args[1] for args in ann.received("message")}
        ]
        print(f"\ndeaf replica: {len(sent)} sent, {len(missed)} came to Ann only by catching up")
    finally:
        control.close()
        a.stop()
        b.stop()


async def test_a_broadcast_redis_will_not_publish_is_acked_delayed_and_arrives_later(
    log_dir: Path, own_redis: RedisServer, clients: list[Client], unique: str
) -> None:
    a, b = chat_replicas(log_dir, chat_env(own_redis.url), "chat-unpublished")
    control = redis.Redis(port=own_redis.port)
    try:
        room = f"unpublished-{unique}"
        ann = await connect_chat(clients, a.url, room=room)
        bob = await connect_chat(clients, b.url, room=room)
        await ann.call("name", f"ann-{unique}")
        await bob.call("name", f"bob-{unique}")

        # Redis stores, but will not publish (its ACL): the other replica cannot be told.
        control.acl_setuser("default", enabled=True, reset=False, commands=["-publish"])
        try:
            held = ["held back", "held back too"]
            for text in held:
                answer = await ann.call("message", text)
                assert answer["ok"] is True and answer.get("delayed") is True, answer
                await ann.wait("message", lambda _s, t, _m, text=text: t == text)
            assert not set(held) & texts(bob), "Bob cannot have them yet"
        finally:
            control.acl_setuser("default", enabled=True, reset=False, commands=["+publish"])

        # Published once Redis takes them again, in the order they were sent.
        await until(lambda: set(held) <= texts(bob), "Bob gets what was held back")
        order = [args[1] for args in bob.received("message") if args[1] in held]
        assert order == held
        answer = await ann.call("message", "on time")
        assert answer["ok"] is True and "delayed" not in answer, answer
    finally:
        control.close()
        a.stop()
        b.stop()
