"""Issue 13, scenario 7: a chat replica cut off from Redis by the network while Redis stays up
for the others. Replica A runs in a network namespace of the test's own; every packet between
it and Redis is dropped for 20 s (silently, both ways), then let through, while its clients
still reach it and its people keep trying to talk. A acknowledges nothing it cannot store (it
refuses with `unavailable`); B frees A's names after REPLICA_TTL; when the network is back A
writes its live clients back, each once, under the names they held, every page shows everyone
(B's `left` of A's people, held back by the cut, must not reach A's pages after A's
`joined`), and every acknowledged message reaches everyone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import socketio
from chat_service.validation import nickname_key

from tests.conftest import connect_chat
from tests.faults import netns
from tests.faults.conftest import chat_env
from tests.faults.users import ChatUser, duplicates, everyone_gets_every_acked, until_listed
from tests.harness import PATIENCE, Client, RedisServer, ServiceProcess, until

pytestmark = pytest.mark.asyncio

#: People on each replica.
EACH = 2
#: How long A stays cut off (the issue's 20 s: a fault's duration, not a bound of a wait). It
#: lasts longer on a machine too busy for B to free A's names by then.
CUT = 20.0
#: Messages each person sends before the cut and after it.
BEFORE = AFTER = 5
#: Most messages each of B's people sends while A is cut off, one every PACE s: fewer in all
#: than history holds (CHAT_HISTORY_SIZE below), so that what A's people get on catching up
#: is whole.
WHILE_CUT, PACE = 40, 0.5


@pytest.fixture
def namespace() -> Iterator[netns.Namespace]:
    with netns.own_namespace() as made:
        yield made


class Roster:
    """Who is in the room as a person's page shows it (web/chat/chat.js): by id, from
    ``presence``'s ``joined`` and ``left``; a change no newer (by its rev) than the last of its
    id is skipped. It starts from ``everyone``, once the room lists everyone."""

    def __init__(self, person: ChatUser, everyone: dict[str, str]) -> None:
        self.users = dict(everyone)
        self.revs: dict[str, int] = {}
        #: What it was told, in order: what a failure shows.
        self.told: list[str] = []
        assert person.sio is not None
        person.sio.on("presence", self._presence)

    async def _presence(self, diff: dict[str, Any]) -> None:
        for kind, sign in (("left", "-"), ("joined", "+")):
            for user in diff.get(kind, []):
                self.told.append(f"{sign}{user['name']}")
                if user["rev"] <= self.revs.get(user["id"], 0):
                    continue
                self.revs[user["id"]] = user["rev"]
                if kind == "left":
                    self.users.pop(user["id"], None)
                else:
                    self.users[user["id"]] = user["name"]

    async def until_shows(self, users: dict[str, str], whose: str) -> None:
        try:
            await until(lambda: self.users == users, f"{whose} page shows {sorted(users.values())}")
        except AssertionError as failed:
            raise AssertionError(f"{failed}; it shows {self.users}, told {self.told}") from None


def unavailable(answer: Any) -> bool:
    """The refusal docs/protocol.md promises when storage cannot be reached."""
    if not isinstance(answer, dict):
        return False
    return answer.get("ok") is False and answer.get("error") == "unavailable"


def sid(person: ChatUser) -> str:
    assert person.sio is not None
    return str(person.sio.get_sid())


async def test_a_replica_cut_off_from_redis_comes_back_without_doubles(
    log_dir: Path, clients: list[Client], unique: str, namespace: netns.Namespace
) -> None:
    # Redis in the root namespace, on loopback for B and on the veth for A.
    server = RedisServer(log_dir, also_bind=(namespace.host_address,))
    control = redis.Redis(port=server.port, password=server.password, decode_responses=True)
    env = {"CHAT_HISTORY_SIZE": "200"}
    replicas: list[ServiceProcess] = []
    people: list[ChatUser] = []
    trying: asyncio.Future[Any] | None = None
    try:
        a = ServiceProcess(
            "chat_service",
            log_dir,
            chat_env(server.url_at(namespace.host_address), **env),
            "chat-cut-a",
            host=namespace.address,
            wrapper=namespace.wrapper(),
        )
        replicas.append(a)
        b = ServiceProcess("chat_service", log_dir, chat_env(server.url, **env), "chat-cut-b")
        replicas.append(b)
        a.wait_ready("/api/chat")
        b.wait_ready("/api/chat")

        room = f"cut-{unique}"
        # Each stays on its replica: A's people are the live clients A must write back.
        on_a = [ChatUser([a.url], room, f"a{n}-{unique}") for n in range(EACH)]
        on_b = [ChatUser([b.url], room, f"b{n}-{unique}") for n in range(EACH)]
        people = on_a + on_b
        names = [person.name for person in people]
        await asyncio.gather(*(person.connect() for person in people))
        await until_listed(clients, b.url, room, names)
        everyone = {sid(person): person.name for person in people}
        rosters = {person.name: Roster(person, everyone) for person in people}

        async def talk(person: ChatUser, when: str, count: int) -> None:
            for n in range(count):
                assert await person.say(f"{person.name} {when} {n}"), f"{person.name} {when} {n}"

        await asyncio.gather(*(talk(person, "before", BEFORE) for person in people))

        # The cut. A's people keep trying (each try answered before the next), B's talk.
        lifted = asyncio.Event()
        answered_while_cut: list[tuple[str, Any]] = []
        answered_after: list[tuple[str, Any]] = []

        async def keep_trying(person: ChatUser) -> None:
            assert person.sio is not None
            n = 0
            while not lifted.is_set():
                text = f"{person.name} while cut {n}"
                n += 1
                try:
                    answer = await person.sio.call("message", text, timeout=PATIENCE)
                except socketio.exceptions.TimeoutError:
                    raise AssertionError(
                        f"{person.name}: no answer from A within {PATIENCE} s while cut off"
                    ) from None
                if isinstance(answer, dict) and answer.get("ok"):
                    person.acked[answer["id"]] = text
                (answered_after if lifted.is_set() else answered_while_cut).append(
                    (person.name, answer)
                )

        async def talk_while_cut(person: ChatUser) -> None:
            for n in range(WHILE_CUT):
                if lifted.is_set():
                    return
                assert await person.say(f"{person.name} while cut {n}")
                await asyncio.sleep(PACE)

        namespace.cut(namespace.host_address, server.port)
        cut_at = time.monotonic()
        trying = asyncio.gather(
            *(keep_trying(person) for person in on_a),
            *(talk_while_cut(person) for person in on_b),
        )
        try:
            # B takes A for dead after REPLICA_TTL: A's people are no longer listed, their
            # names are free (reaped from Redis), and B's people are told they left.
            await until_listed(clients, b.url, room, [person.name for person in on_b])
            a_keys = {person.name: nickname_key(person.name) for person in on_a}

            def names_held() -> list[str]:
                return [name for name, key in a_keys.items() if control.hexists("chat:names", key)]

            await until(lambda: not names_held(), "B frees A's names")
            b_only = {sid(person): person.name for person in on_b}
            for person in on_b:
                await rosters[person.name].until_shows(b_only, person.name)
            await asyncio.sleep(max(0.0, CUT - (time.monotonic() - cut_at)))
            dropped = namespace.dropped()
        finally:
            namespace.mend()
            lifted.set()
        cut_for = time.monotonic() - cut_at
        await trying

        # (a) While cut off, A acknowledged nothing: each try was refused as unavailable (a
        # try answered once the network was back may be stored and acked: checked below).
        assert dropped > 0, "the cut dropped no packet"
        refused = [(name, answer) for name, answer in answered_while_cut if unavailable(answer)]
        assert refused == answered_while_cut, f"A answered while cut off: {answered_while_cut}"
        for person in on_a:
            assert any(name == person.name for name, _ in refused), f"{person.name} never refused"
        assert all(answer.get("ok") or unavailable(answer) for _, answer in answered_after), (
            answered_after
        )

        # (c) Back: A's people talk again, on the connections they kept.
        for person in on_a:
            await until(
                lambda person=person: person.say(f"{person.name} back"),
                f"{person.name} talks again",
            )
        await asyncio.gather(*(talk(person, "after", AFTER) for person in people))
        acked = await everyone_gets_every_acked(people)
        stored = {mid for mid, _ in control.xrange(f"chat:history:{room}")}
        assert acked <= stored, f"acked, not stored: {sorted(acked - stored)}"

        # Everyone listed once, on both replicas; A's people hold their names again, from
        # the connections they had all along; every page shows everyone.
        await until_listed(clients, b.url, room, names)
        await until_listed(clients, a.url, room, names)
        assert [p.reconnects for p in people] == [0] * len(people)
        for person in on_a:
            # names: key -> replica US sid US token
            owner = control.hget("chat:names", nickname_key(person.name)) or ""
            assert owner.split("\x1f")[1:2] == [sid(person)], (person.name, owner)
        newcomer = await connect_chat(clients, b.url, room=room)
        for person in on_a:
            assert (await newcomer.call("name", person.name))["error"] == "taken"
        for person in people:
            await rosters[person.name].until_shows(everyone, person.name)

        # A try refused for a timeout may still reach Redis once the network is back (TCP
        # sends it again): stored, though its sender was told it was not. Counted, not lost.
        acked_texts = {text for person in people for text in person.acked.values()}
        refused_stored = [
            fields["text"]
            for _, fields in control.xrange(f"chat:history:{room}")
            if fields["text"] not in acked_texts
        ]
        acked_after = sum(bool(answer.get("ok")) for _, answer in answered_after)
        print(
            f"\nnetwork cut {cut_for:.0f} s: {len(acked)} acked, "
            f"{len(refused)} refused while cut, {len(answered_after)} answered after it "
            f"({acked_after} acked), "
            f"{len(refused_stored)} refused yet stored, {dropped} packets dropped, "
            f"{sum(p.reconnects for p in people)} reconnects, 0 lost, "
            f"{duplicates(people)} delivered twice (dropped by id)"
        )
    finally:
        if trying is not None:
            trying.cancel()
        for person in people:
            await person.close()
        namespace.mend()  # so that A stops as promptly as it would with Redis there
        for replica in replicas:
            replica.stop()
        control.close()
        server.stop()
