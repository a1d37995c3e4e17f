"""People for the fault scenarios (issue 13): clients that behave as the web pages do when a
part fails (reconnect, to the next replica, resume with what they hold) and count what they
got, by id, so that a scenario can say what was lost, what came twice and what converged."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import socketio
from chat_service.validation import id_order

from tests.conftest import CHAT_PATH, connect_chat
from tests.harness import PATIENCE, Client, until


class ChatUser:
    """A person in a chat room, as web/chat/chat.js is: when the connection is lost it connects
    again (to the next of ``urls``: what the gateway does for a dead replica) with ``last_id``
    and its ``name_token``, takes its name back, and keeps every message by id."""

    def __init__(self, urls: list[str], room: str, name: str, first: int = 0) -> None:
        #: The replicas to try, in turn from ``first``; a scenario may update the list.
        self.urls = urls
        self.room = room
        self.name = name
        self.token: str | None = None
        self.last_id: str | None = None
        #: How many times each message id was delivered (a client dedupes by id).
        self.received: Counter[str] = Counter()
        #: What the server acknowledged to us: message id -> text.
        self.acked: dict[str, str] = {}
        #: Messages sent that got no ack (the connection died under them).
        self.unacked = 0
        self.reconnects = 0
        self.sio: socketio.AsyncClient | None = None
        self._next = first
        self._closing = False
        self._online = asyncio.Event()
        self._reconnecting: asyncio.Task[None] | None = None

    def _hold(self, message_id: str) -> None:
        self.received[message_id] += 1
        if self.last_id is None or id_order(message_id) > id_order(self.last_id):
            self.last_id = message_id

    async def connect(self) -> None:
        """Connect, to the replicas in turn, and take the name, until it works (bounded)."""
        async with asyncio.timeout(PATIENCE):
            while True:
                url = self.urls[self._next % len(self.urls)]
                self._next += 1
                sio = socketio.AsyncClient(reconnection=False)
                sio.on("message", self._on_message)
                sio.on("history", self._on_history)
                sio.on("disconnect", self._on_disconnect)
                auth: dict[str, Any] = {"room": self.room}
                if self.last_id:
                    auth["last_id"] = self.last_id
                if self.token:
                    auth["name_token"] = self.token
                try:
                    await sio.connect(
                        url,
                        socketio_path=CHAT_PATH,
                        auth=auth,
                        transports=["websocket"],
                        wait_timeout=10,
                    )
                    named = await self._take_name(sio)
                except (socketio.exceptions.SocketIOError, OSError, TimeoutError):
                    named = False
                if named:
                    self.sio = sio
                    self._online.set()
                    return
                with contextlib.suppress(Exception):
                    await sio.disconnect()
                await asyncio.sleep(0.2)

    async def _take_name(self, sio: socketio.AsyncClient) -> bool:
        # Our old connection's name is freed when its replica is taken for dead (or at once
        # with our token): ask until it is ours.
        for _ in range(50):
            answer = await sio.call("name", self.name, timeout=10)
            if answer.get("ok"):
                self.token = answer.get("token") or self.token
                return True
            if answer.get("error") != "taken":
                raise AssertionError(f"{self.name}: name refused: {answer}")
            await asyncio.sleep(0.2)
        return False

    async def _on_message(self, _sender: Any, _text: str, meta: dict[str, Any]) -> None:
        self._hold(meta["id"])

    async def _on_history(self, messages: list[dict[str, Any]], _info: Any) -> None:
        for message in messages:
            self._hold(message["id"])

    async def _on_disconnect(self, *_reason: Any) -> None:
        self._online.clear()
        if not self._closing and (self._reconnecting is None or self._reconnecting.done()):
            self.reconnects += 1
            self._reconnecting = asyncio.get_running_loop().create_task(self.connect())

    async def say(self, text: str) -> str | None:
        """Send ``text`` once; the id the server acked, or None (no ack: not counted)."""
        async with asyncio.timeout(PATIENCE):
            await self._online.wait()
        assert self.sio is not None
        try:
            answer = await self.sio.call("message", text, timeout=10)
        except (socketio.exceptions.SocketIOError, TimeoutError):
            self.unacked += 1
            return None
        if not answer.get("ok"):
            self.unacked += 1
            return None
        self.acked[answer["id"]] = text
        return str(answer["id"])

    async def close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self.sio is not None:
            with contextlib.suppress(Exception):
                await self.sio.disconnect()


async def everyone_gets_every_acked(people: list[ChatUser]) -> set[str]:
    """Until every person holds every message any of them got acked; those ids."""
    acked = {mid for person in people for mid in person.acked}

    def missing() -> dict[str, list[str]]:
        return {
            p.name: sorted(acked - p.received.keys(), key=id_order)
            for p in people
            if not acked <= p.received.keys()
        }

    try:
        await until(lambda: not missing(), "every acked message reaches everyone")
    except AssertionError:
        raise AssertionError(
            f"missing: {missing()}; last ids {[p.last_id for p in people]}"
        ) from None
    return acked


async def listed(clients: list[Client], url: str, room: str) -> list[str]:
    """The names a newcomer to ``room`` is shown (a fresh connection each time: the list comes
    once, on connecting)."""
    newcomer = await connect_chat(clients, url, room=room)
    (users,) = newcomer.received("users")[-1]
    await newcomer.close()
    return sorted(user["name"] for user in users)


async def until_listed(clients: list[Client], url: str, room: str, names: list[str]) -> None:
    """Until a newcomer to ``room`` is shown exactly ``names``, each once."""

    async def shown() -> bool:
        return await listed(clients, url, room) == sorted(names)

    await until(shown, f"the room lists {sorted(names)} once", every=0.5)


def duplicates(people: list[ChatUser]) -> int:
    """Deliveries of an id a person already held (each dropped by id)."""
    return sum(n - 1 for person in people for n in person.received.values())
