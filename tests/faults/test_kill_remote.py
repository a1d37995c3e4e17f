"""Issue 13, scenario 2 (the remote): the replica of one side of a pairing killed (SIGKILL) while
the phone presses buttons. The side that lost its replica connects to the other one and resumes
with its session secret, as the pages do; the pairing goes on without scanning again, and the
other side is never left paired with a ghost.

Presses are numbered. Killed under the controller, every press the service acknowledged reaches
the desktop once and in order. Killed under the desktop, presses acknowledged between the death
of its replica and its return are lost: nothing tells a replica that a room it sends to is empty
for a moment (docs/faults.md says so); every press sent once it is back arrives, once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.conftest import CURSORS_PATH, start_cursors
from tests.harness import PATIENCE, RedisServer, ServiceProcess, until

pytestmark = pytest.mark.asyncio


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
        self._next = first
        self._closing = False
        self._reconnecting: asyncio.Task[None] | None = None

    def got(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def connect(self, auth: dict[str, Any]) -> None:
        self.auth = auth
        async with asyncio.timeout(PATIENCE):
            while True:
                url = self.urls[self._next % len(self.urls)]
                self._next += 1
                sio = socketio.AsyncClient(reconnection=False)
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
                # What the page holds now: its session, never a used-up token.
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
        async def record(data: Any = None) -> None:
            self.events.append((event, data))
            if event in ("pairing", "paired") and isinstance(data, dict) and "session" in data:
                self.session = data["session"]

        return record

    async def _on_disconnect(self, *args: Any) -> None:
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
                answer = await sio.call(
                    "press", {"button": button, "down": True}, namespace="/remote", timeout=10
                )
            except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
                self.unanswered += 1
                continue
            if answer.get("ok"):
                self.acked.append(button)
            else:
                self.refused[answer["error"]] = self.refused.get(answer["error"], 0) + 1
                await asyncio.sleep(0.05)  # away: the phone waits for its screen
            await asyncio.sleep(0.01)


def replicas(log_dir: Path, redis: RedisServer, label: str) -> list[ServiceProcess]:
    env = {"REDIS_URL": redis.url, "REPLICA_TTL": "3"}
    return [start_cursors(log_dir, env, name=f"{label}-{n}") for n in range(2)]


async def paired(a: ServiceProcess, b: ServiceProcess, desktop_on: int) -> tuple[Side, Side]:
    urls = [a.url, b.url]
    screen = Side(urls, first=desktop_on)
    await screen.connect({"role": "desktop"})
    (pairing,) = await until(lambda: screen.got("pairing"), "a pairing")
    token = pairing["url"].split("#token=", 1)[1]
    phone = Side(urls, first=1 - desktop_on)
    await phone.connect({"role": "controller", "token": token})
    await until(lambda: phone.got("paired"), "paired")
    return screen, phone


def delivered(screen: Side) -> list[str]:
    return [data["button"] for data in screen.got("press")]


async def test_a_killed_controller_replica_the_phone_resumes_and_no_acked_press_is_lost(
    log_dir: Path, own_redis: RedisServer
) -> None:
    a, b = replicas(log_dir, own_redis, "remote-kill-phone")
    screen, phone = await paired(a, b, desktop_on=1)  # the phone on A
    presses = Presses(phone)
    pressing = asyncio.create_task(presses.run())
    try:
        await until(lambda: len(presses.acked) >= 30, "presses before")
        first_phone = phone.sio.get_sid("/remote") if phone.sio else None
        a.kill()
        await until(lambda: phone.reconnects == 1 and phone.sio, "the phone connected again")
        acked_then = len(presses.acked)
        await until(lambda: len(presses.acked) >= acked_then + 30, "presses after")
        presses.going = False
        await pressing
        await until(lambda: delivered(screen)[-1:] == presses.acked[-1:], "the last press")

        got = delivered(screen)
        assert len(got) == len(set(got)), "a press was delivered twice"
        assert [p for p in got if p in set(presses.acked)] == presses.acked, "lost or reordered"
        resumed = [j for j in screen.got("controller_joined") if j["resumed"]]
        assert resumed and resumed[-1]["controller"] != first_phone
        assert not phone.got("unpaired") and screen.reconnects == 0
        print(
            f"\nremote, controller's replica killed: {len(presses.acked)} presses acked, "
            f"0 lost, {presses.unanswered} unanswered, refused {presses.refused}, "
            f"{phone.reconnects} reconnect with the session"
        )
    finally:
        presses.going = False
        await asyncio.gather(pressing, return_exceptions=True)
        await phone.close()
        await screen.close()
        a.stop()
        b.stop()


async def test_a_killed_desktop_replica_the_screen_resumes_its_pairing(
    log_dir: Path, own_redis: RedisServer
) -> None:
    a, b = replicas(log_dir, own_redis, "remote-kill-screen")
    screen, phone = await paired(a, b, desktop_on=0)  # the screen on A
    presses = Presses(phone)
    pressing = asyncio.create_task(presses.run())
    try:
        await until(lambda: len(presses.acked) >= 30, "presses before")
        a.kill()
        await until(lambda: screen.reconnects == 1 and screen.sio, "the screen connected again")
        await until(
            lambda: any(j["resumed"] for j in screen.got("controller_joined")),
            "the pairing resumed",
        )
        sent_when_back = presses.sent
        await until(lambda: presses.sent >= sent_when_back + 30, "presses after")
        presses.going = False
        await pressing
        await until(lambda: delivered(screen)[-1:] == presses.acked[-1:], "the last press")

        got = delivered(screen)
        assert len(got) == len(set(got)), "a press was delivered twice"
        assert got == [p for p in presses.acked if p in set(got)], "reordered"
        after = [p for p in presses.acked if int(p[1:]) >= sent_when_back]
        assert after and set(after) <= set(got), "a press sent after the screen was back was lost"
        lost = [p for p in presses.acked if p not in set(got)]
        assert not screen.got("pairing")[1:], "the screen got a new code: the pairing ended"
        assert not phone.got("unpaired") and phone.reconnects == 0
        print(
            f"\nremote, desktop's replica killed: {len(presses.acked)} presses acked, "
            f"{len(lost)} lost while the screen was away, refused {presses.refused}, "
            f"{presses.unanswered} unanswered, the screen resumed its pairing"
        )
    finally:
        presses.going = False
        await asyncio.gather(pressing, return_exceptions=True)
        await phone.close()
        await screen.close()
        a.stop()
        b.stop()
