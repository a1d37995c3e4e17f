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

from tests.conftest import CHAT_PATH, CURSORS_PATH, connect_chat
from tests.harness import PATIENCE, Client, until


class Acks:
    """Acks awaited on one connection at a time. python-socketio's ``call`` waits out its whole
    timeout for an ack its connection can no longer bring (the connection was lost under it);
    here a lost connection (:meth:`lost`, from the disconnect handler) ends every wait at once,
    as the pages' own timers would, and they move on to the next connection."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[Any]] = set()

    async def call(
        self,
        sio: socketio.AsyncClient,
        event: str,
        data: Any,
        namespace: str = "/",
        timeout: float = 10,
    ) -> Any:
        """As ``sio.call``: the ack's data, or socketio's TimeoutError after ``timeout``; and
        DisconnectedError as soon as the connection is lost."""
        acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def answered(*args: Any) -> None:
            if not acked.done():
                acked.set_result(args[0] if len(args) == 1 else (args or None))

        self._pending.add(acked)
        try:
            await sio.emit(event, data, namespace=namespace, callback=answered)
            try:
                async with asyncio.timeout(timeout):
                    return await acked
            except TimeoutError:
                raise socketio.exceptions.TimeoutError() from None
        finally:
            self._pending.discard(acked)

    def lost(self) -> None:
        """The connection is gone: every ack still awaited is given up."""
        for pending in self._pending:
            if not pending.done():
                pending.set_exception(socketio.exceptions.DisconnectedError())


class ChatUser:
    """A person in a chat room, as web/chat/chat.js is: when the connection is lost it connects
    again (to the next of ``urls``: what the gateway does for a dead replica) with ``last_id``
    and its ``name_token``, takes its name back, and keeps every message by id."""

    def __init__(
        self,
        urls: list[str],
        room: str,
        name: str,
        first: int = 0,
        transports: tuple[str, ...] = ("websocket",),
    ) -> None:
        #: The replicas to try, in turn from ``first``; a scenario may update the list.
        self.urls = urls
        #: socket.io's transports, as the client's options give them (its default is
        #: long-polling, then the upgrade to a websocket).
        self.transports = list(transports)
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
        #: Resumed histories that said they could not hold all we missed (``complete``
        #: false: more was said while we were away than the room's history keeps).
        self.incomplete = 0
        self.sio: socketio.AsyncClient | None = None
        self._next = first
        self._closing = False
        self._online = asyncio.Event()
        self._reconnecting: asyncio.Task[None] | None = None
        self._acks = Acks()

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
                # The gateway of the cluster scenarios has a self-signed certificate.
                sio = socketio.AsyncClient(reconnection=False, ssl_verify=False)
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
                        transports=self.transports,
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

    async def _on_history(self, messages: list[dict[str, Any]], info: dict[str, Any]) -> None:
        for message in messages:
            self._hold(message["id"])
        if info.get("after") is not None and not info.get("complete"):
            self.incomplete += 1

    async def _on_disconnect(self, *_reason: Any) -> None:
        self._online.clear()
        self._acks.lost()
        if not self._closing and (self._reconnecting is None or self._reconnecting.done()):
            self.reconnects += 1
            self._reconnecting = asyncio.get_running_loop().create_task(self.connect())

    async def say(self, text: str) -> str | None:
        """Send ``text`` once; the id the server acked, or None (no ack: not counted)."""
        async with asyncio.timeout(PATIENCE):
            await self._online.wait()
        assert self.sio is not None
        try:
            answer = await self._acks.call(self.sio, "message", text)
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
        shown = {name: ids[:5] + ["..."] * (len(ids) > 5) for name, ids in missing().items()}
        raise AssertionError(
            f"missing: {shown} ({sum(map(len, missing().values()))} in all); histories that "
            f"could not hold what was missed: {[p.incomplete for p in people]}; last ids "
            f"{[p.last_id for p in people]}"
        ) from None
    return acked


async def listed(clients: list[Client], url: str, room: str) -> list[str]:
    """The names a newcomer to ``room`` is shown (a fresh connection each time: the list comes
    once, on connecting)."""
    newcomer = await connect_chat(clients, url, room=room)
    users = newcomer.received("users")[-1][0]
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


#: A room's state as a screen holds it: socket id -> [x, y] ([None, None]: pointer off the page).
Screen = dict[str, list[float | None]]


class CursorUser:
    """A person on the shared cursors page, as web/cursors/cursors.js is: its screen is the
    room built from frames as docs/protocol.md says a client must (the connection's snapshot,
    then each delta applied to the state of the seq before it; on a gap or a move of a cursor
    it does not hold, a ``snapshot`` asked for, deltas ignored until it comes). When the
    connection is lost it connects again, to the next of ``urls`` (what the gateway does for a
    dead replica), and starts over from the snapshot the new connection brings.

    Unlike the page, the screen keeps this person's own cursor: the room as the server sees
    it, so that a scenario can compare every screen with who is connected."""

    def __init__(self, urls: list[str], room: str, name: str, first: int = 0) -> None:
        self.urls = urls
        self.room = room
        self.name = name
        self.screen: Screen = {}
        #: The seq of the state on screen; None until the connection's snapshot.
        self.seq: int | None = None
        #: Every socket id this person had, the current one last.
        self.ids: list[str] = []
        #: Ids the screen was told had left, and those of them shown again later: ghosts.
        self.gone: set[str] = set()
        self.returned: set[str] = set()
        self.frames = 0
        self.snapshots = 0
        #: Deltas whose seq was not the next one: each made us ask for a snapshot.
        self.gaps = 0
        #: Moves of a cursor not on screen (our state and the server's differ): each made us
        #: ask for a snapshot.
        self.unknown = 0
        #: Deltas that came on a connection before its snapshot (the protocol says none do).
        self.early = 0
        self.reconnects = 0
        #: Updates the server acked, and those sent that got no ack (the connection died).
        self.moves = 0
        self.unacked = 0
        #: The last position the server acked: (the socket id it was for, x, y).
        self.last: tuple[str, float, float] | None = None
        self.sio: socketio.AsyncClient | None = None
        self._next = first
        self._closing = False
        self._online = asyncio.Event()
        self._reconnecting: asyncio.Task[None] | None = None
        #: The snapshot asked for (its number), 0 when none: deltas wait for it.
        self._asking = 0
        self._asked = 0
        #: Snapshots asked for and refused (each asked again), and the task asking again.
        self.refusals = 0
        self._retry: asyncio.Task[None] | None = None
        #: Acks awaited on the current connection: a dropped connection answers them None.
        self._pending: set[asyncio.Future[Any]] = set()

    @property
    def sid(self) -> str:
        return self.ids[-1]

    async def connect(self) -> None:
        """Connect, to the replicas in turn, until one takes us (bounded)."""
        async with asyncio.timeout(PATIENCE):
            while True:
                url = self.urls[self._next % len(self.urls)]
                self._next += 1
                # The state on screen is the old connection's: the new one's snapshot replaces it.
                self.seq, self._asking = None, 0
                sio = socketio.AsyncClient(reconnection=False, ssl_verify=False)
                sio.on("snapshot", self._on_snapshot)
                sio.on("delta", self._on_delta)
                sio.on("disconnect", self._on_disconnect)
                try:
                    await sio.connect(
                        url,
                        socketio_path=CURSORS_PATH,
                        auth={"room": self.room, "name": self.name},
                        transports=["websocket"],
                        wait_timeout=10,
                    )
                except (socketio.exceptions.SocketIOError, OSError, TimeoutError):
                    with contextlib.suppress(Exception):
                        await sio.disconnect()
                    await asyncio.sleep(0.2)
                    continue
                self.sio = sio
                self.ids.append(str(sio.get_sid("/")))
                self._online.set()
                return

    # Handlers run in the order frames arrive (each is one task, started in order, that does
    # not wait before it has applied its frame): the state is built in the server's order.

    async def _on_snapshot(self, snapshot: dict[str, Any]) -> None:
        # Pushed (on connecting, or after we read too slowly): it replaces everything, an
        # answer to a snapshot of ours still on its way included.
        self._asking = 0
        self._apply_snapshot(snapshot)

    def _apply_snapshot(self, snapshot: dict[str, Any]) -> None:
        self.frames += 1
        self.snapshots += 1
        self.screen = {sid: [c["x"], c["y"]] for sid, c in snapshot["cursors"].items()}
        self.returned |= self.gone & self.screen.keys()
        self.seq = snapshot["seq"]

    async def _on_delta(self, delta: dict[str, Any]) -> None:
        self.frames += 1
        if self.seq is None and not self._asking:
            self.early += 1
            return
        if self._asking or self.seq is None:
            return  # a snapshot is on its way
        if delta["seq"] != self.seq + 1:
            self.gaps += 1  # frames missed: this delta cannot be applied to what we hold
            await self._ask()
            return
        self.seq = delta["seq"]
        for sid, cursor in delta["joined"].items():
            self.screen[sid] = [cursor["x"], cursor["y"]]
        self.returned |= self.gone & delta["joined"].keys()
        lost = False
        for sid, (x, y) in delta["moved"].items():
            if sid in self.screen:
                self.screen[sid] = [x, y]
            else:
                lost = True
        for sid in delta["left"]:
            self.screen.pop(sid, None)
            self.gone.add(sid)
        if lost:
            self.unknown += 1
            await self._ask()

    async def _ask(self) -> None:
        """Ask for the room now; deltas are ignored until the answer (taken in the order it
        arrives among the frames, as a callback, not after an await that frames could pass)."""
        assert self.sio is not None
        self._asked += 1
        request = self._asking = self._asked

        def answered(reply: dict[str, Any]) -> None:
            if self._asking != request:
                return  # superseded: a pushed snapshot, a new connection
            if reply.get("ok"):
                self._asking = 0
                self._apply_snapshot(reply)
            else:  # refused (rate_limited): deltas stay ignored until we have the room
                self.refusals += 1
                self._retry = asyncio.get_running_loop().create_task(self._ask_again())

        with contextlib.suppress(socketio.exceptions.SocketIOError):
            await self.sio.emit("snapshot", callback=answered)

    async def _ask_again(self) -> None:
        await asyncio.sleep(0.2)
        if self._asking:
            await self._ask()

    async def _on_disconnect(self, *_reason: Any) -> None:
        self._online.clear()
        for pending in self._pending:
            if not pending.done():
                pending.set_result(None)
        if not self._closing and (self._reconnecting is None or self._reconnecting.done()):
            self.reconnects += 1
            self._reconnecting = asyncio.get_running_loop().create_task(self.connect())

    async def move(self, x: float, y: float) -> bool:
        """Send where the pointer is, once; whether the server acked it."""
        async with asyncio.timeout(PATIENCE):
            await self._online.wait()
        assert self.sio is not None
        sid = self.sid
        acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.add(acked)

        def answered(answer: Any) -> None:
            if not acked.done():
                acked.set_result(answer)

        try:
            await self.sio.emit("update", {"x": x, "y": y}, callback=answered)
            async with asyncio.timeout(PATIENCE):
                answer = await acked
        except socketio.exceptions.SocketIOError:
            answer = None
        finally:
            self._pending.discard(acked)
        if not (isinstance(answer, dict) and answer.get("ok")):
            self.unacked += 1
            return False
        self.moves += 1
        self.last = (sid, x, y)
        return True

    async def close(self) -> None:
        self._closing = True
        for task in (self._reconnecting, self._retry):
            if task is not None:
                task.cancel()
        if self.sio is not None:
            with contextlib.suppress(Exception):
                await self.sio.disconnect()


class Side:
    """A remote-control page, desktop or controller: when its connection is lost it connects
    again, to the next of ``urls``, with the session secret it was given, as the pages do."""

    def __init__(self, urls: list[str], first: int = 0) -> None:
        self.urls = urls
        self.auth: dict[str, Any] = {}
        self.session = ""
        self.reconnects = 0
        #: Every event received, in order: (event, data).
        self.events: list[tuple[str, Any]] = []
        self.sio: socketio.AsyncClient | None = None
        self.next = first
        self._closing = False
        self._reconnecting: asyncio.Task[None] | None = None
        #: Acks this side awaits (a phone's presses).
        self.acks = Acks()

    def got(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def connect(self, auth: dict[str, Any]) -> None:
        self.auth = auth
        async with asyncio.timeout(PATIENCE):
            while True:
                url = self.urls[self.next % len(self.urls)]
                self.next += 1
                # The gateway of the cluster scenarios has a self-signed certificate.
                sio = socketio.AsyncClient(reconnection=False, ssl_verify=False)
                for event in (
                    "pairing",
                    "paired",
                    "controller_joined",
                    "controller_left",
                    "desktop_left",
                    "desktop_back",
                    "unpaired",
                    "press",
                ):
                    sio.on(event, self._recorder(event), namespace="/remote")
                sio.on("disconnect", self._on_disconnect, namespace="/remote")
                # What the page holds now: its session, never a used-up pairing link.
                auth = {"role": self.auth["role"], "session": self.session}
                if not self.session:
                    auth = self.auth
                try:
                    await sio.connect(
                        url,
                        socketio_path=CURSORS_PATH,
                        auth=auth,
                        transports=["websocket"],
                        namespaces=["/remote"],
                        wait_timeout=5,
                    )
                except (socketio.exceptions.SocketIOError, OSError, TimeoutError):
                    with contextlib.suppress(Exception):
                        await sio.disconnect()
                    await asyncio.sleep(0.2)  # a replica that is gone: the next one
                    continue
                self.sio = sio
                return

    def _recorder(self, event: str) -> Any:
        async def record(data: Any = None) -> Any:
            self.events.append((event, data))
            if event in ("pairing", "paired") and isinstance(data, dict) and "session" in data:
                self.session = data["session"]
            # As the desktop page does: a press is confirmed, the phone's ack waits for it.
            return {"ok": True} if event == "press" else None

        return record

    async def _on_disconnect(self, *args: Any) -> None:
        self.acks.lost()
        if not self._closing and self._reconnecting is None:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        self.reconnects += 1
        self.sio = None
        await self.connect(self.auth)
        self._reconnecting = None

    async def online(self) -> None:
        await until(lambda: self.sio is not None and self.sio.connected, "connected again")

    async def close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnecting
        if self.sio is not None:
            with contextlib.suppress(Exception):
                await self.sio.disconnect()


class Presses:
    """The phone pressing numbered buttons, one after the other, each when the last was
    answered; what the service acknowledged, refused, or never answered (the connection died)."""

    def __init__(self, phone: Side) -> None:
        self.phone = phone
        self.sent = 0
        self.acked: list[str] = []
        self.refused: dict[str, int] = {}
        self.unanswered = 0
        self.going = True

    async def run(self) -> None:
        while self.going:
            sio = self.phone.sio
            if sio is None or not sio.connected:
                await asyncio.sleep(0.05)
                continue
            button = f"b{self.sent}"
            self.sent += 1
            try:
                answer = await self.phone.acks.call(
                    sio, "press", {"button": button, "down": True}, namespace="/remote"
                )
            except socketio.exceptions.SocketIOError:
                # No answer (the connection died under it), or the namespace not connected
                # yet: counted, and a pause, never a loop that keeps the event loop busy.
                self.unanswered += 1
                await asyncio.sleep(0.05)
                continue
            if answer.get("ok"):
                self.acked.append(button)
            else:
                self.refused[answer["error"]] = self.refused.get(answer["error"], 0) + 1
                await asyncio.sleep(0.05)  # away: the phone waits for its screen
            await asyncio.sleep(0.01)
