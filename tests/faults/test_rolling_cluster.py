"""Issue 13, scenario 5: a rolling restart of every replica of every service, one at a time,
behind `make cluster`'s gateway, while people use every app: chat (numbered messages), the
cursors (moving), the remote (a phone pressing buttons), a call room (its roster) and the
ticker (trades from the simulator).

scripts/cluster.sh starts Redis, nginx (rendered from the one template), coturn and the
simulator, and writes the environment it gives every process; the test starts the eight replicas
itself with that environment, on the ports nginx routes to, as the Procfile would: honcho stops
everything when one process exits, so it cannot restart one at a time. Each replica is stopped
with SIGTERM (it drains for DRAIN_SECONDS, closes its connections as a restart and leaves
Redis) and started again on its port; its people reconnect through nginx to the other one.

At the end: no acknowledged chat message lost, none delivered twice once deduped by id; every
client connected; the chat room lists each person once; every screen shows exactly the live
cursors; the remote still paired, every press acknowledged delivered once; the call room lists
exactly its two people; each ticker client got every trade of the cluster's history after its
first subscription."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from tests.faults.users import (
    ChatUser,
    CursorUser,
    Presses,
    Side,
    duplicates,
    everyone_gets_every_acked,
    until_listed,
)
from tests.gateway.conftest import cluster_env, start_part
from tests.harness import PATIENCE, STARTUP, Client, Process, ServiceProcess, stop_together, until
from tests.signal.peers import SIGNAL_PATH

pytestmark = pytest.mark.asyncio

PACKAGES = {
    "chat": "chat_service",
    "cursors": "cursor_service",
    "signal": "signalling_service",
    "ticker": "ticker_service",
}
TICKER_PATH = "/api/ticker/socket.io"
#: Rounds of restarting every replica: 1 in make test, more by hand (make faults).
ROUNDS = int(os.environ.get("FAULT_ROUNDS", "1"))


@dataclass
class Deployment:
    """`make cluster` without its replicas, which the test starts and restarts itself."""

    log_dir: Path
    infra: Process
    env: dict[str, str]
    replicas: dict[str, ServiceProcess] = field(default_factory=dict)
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"https://localhost:{self.env['GATEWAY_HTTPS_PORT']}"

    def launch(self, service: str, side: str) -> ServiceProcess:
        """As the Procfile's line ``<service>-<side>`` runs it; not yet waited for."""
        replica = ServiceProcess(
            PACKAGES[service],
            self.log_dir,
            self.env,
            name=f"{service}-{side}-{self.restarts}",
            port=int(self.env[f"{service.upper()}_PORT_{side.upper()}"]),
        )
        self.replicas[f"{service}-{side}"] = replica
        return replica

    def start_all(self) -> None:
        """Every replica at once, as honcho starts them, then each waited for until ready."""
        for service in PACKAGES:
            for side in "ab":
                self.launch(service, side)
        for name, replica in self.replicas.items():
            replica.wait_ready(f"/api/{name.split('-')[0]}")

    def restart(self, service: str, side: str) -> None:
        self.replicas[f"{service}-{side}"].stop()  # SIGTERM: drain, close as a restart, leave
        self.restarts += 1
        self.launch(service, side).wait_ready(f"/api/{service}")

    def stop(self) -> None:
        try:
            # All at once: each drains (DRAIN_SECONDS) before it stops.
            stop_together(self.replicas.values())
        finally:
            self.infra.stop()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    env = cluster_env(tmp_path)
    env.update(
        {
            # Everyone here comes from 127.0.0.1 and reconnects at every restart.
            "GATEWAY_SOCKETS_PER_ADDRESS": "200",
            "GATEWAY_HANDSHAKES_PER_SECOND": "100",
            "GATEWAY_HANDSHAKE_BURST": "400",
            # People who talk fast, and a history that holds what they say while one of them
            # reconnects (with the default 50, a second of their talk: a resume would say
            # `complete: false`, and rightly).
            "CHAT_RATE_PER_SECOND": "1000",
            "CHAT_RATE_BURST": "1000",
            "CHAT_HISTORY_SIZE": "1000",
        }
    )
    infra, given = start_part(tmp_path, env, "redis gateway turn simulator")
    running = Deployment(tmp_path, infra, given)
    try:
        running.start_all()
        yield running
    finally:
        running.stop()


async def gateway_ready(deployment: Deployment) -> None:
    async with httpx.AsyncClient(verify=False, timeout=5) as http:

        async def every_service() -> bool:
            for service in PACKAGES:
                try:
                    answer = await http.get(f"{deployment.url}/api/{service}/readyz")
                except httpx.HTTPError:
                    return False
                if answer.status_code != 200:
                    return False
            return True

        await until(every_service, "every service ready through the gateway", timeout=STARTUP)


class Caller:
    """Someone on the call page: socket.io's own reconnection (as the page uses it), and the
    room's ``clients`` as last received."""

    def __init__(self, url: str, room: str) -> None:
        self.url = url
        self.room = room
        self.sio = socketio.AsyncClient(ssl_verify=False, reconnection_delay_max=2)
        self.clients: dict[str, Any] = {}
        self.sio.on("clients", self._on_clients)

    async def _on_clients(self, clients: dict[str, Any]) -> None:
        self.clients = clients

    @property
    def sid(self) -> str | None:
        return self.sio.get_sid("/") if self.sio.connected else None

    async def connect(self) -> None:
        await self.sio.connect(
            self.url,
            socketio_path=SIGNAL_PATH,
            auth={"room": self.room},
            transports=["websocket"],
            wait_timeout=int(PATIENCE),
        )


class Watcher:
    """Someone on the ticker page: subscribes to btcusd on every connection; every trade id it
    was shown, in the subscription's answer or live."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.AsyncClient(ssl_verify=False, reconnection_delay_max=2)
        self.seen: set[int] = set()
        self.first: int | None = None
        self.subscriptions = 0
        self.sio.on("connect", self._on_connect)
        self.sio.on("trade", self._on_trade)

    async def _on_connect(self) -> None:
        self.sio.start_background_task(self._subscribe)

    async def _subscribe(self) -> None:
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            answer = await self.sio.call("subscribe", "btcusd", timeout=PATIENCE)
            if answer.get("ok"):
                self.subscriptions += 1
                ids = [trade["id"] for trade in answer["trades"]]
                self.seen.update(ids)
                if self.first is None:
                    self.first = max(ids, default=0)

    async def _on_trade(self, trade: dict[str, Any]) -> None:
        self.seen.add(trade["id"])

    async def connect(self) -> None:
        await self.sio.connect(
            self.url,
            socketio_path=TICKER_PATH,
            transports=["websocket"],
            wait_timeout=int(PATIENCE),
        )


async def test_a_rolling_restart_of_every_replica_behind_the_gateway_loses_nothing(
    deployment: Deployment, unique: str
) -> None:
    await gateway_ready(deployment)
    url = deployment.url
    urls = [url]
    # Two on websockets, one with socket.io's default (long-polling, then the upgrade), one on
    # long-polling only (issue 16): each reconnects through nginx when its replica goes.
    transports = [("websocket",), ("websocket",), ("polling", "websocket"), ("polling",)]
    people = [
        ChatUser(urls, f"roll-{unique}", f"p{n}-{unique}", transports=transports[n])
        for n in range(4)
    ]
    pointers = [CursorUser(urls, f"roll-{unique}", f"c{n}") for n in range(2)]
    screen, phone = Side(urls), Side(urls)
    callers = [Caller(url, f"roll-{unique}") for _ in range(2)]
    watchers = [Watcher(url) for _ in range(2)]
    clients: list[Client] = []
    presses = Presses(phone)
    going = True

    async def talk(person: ChatUser) -> None:
        n = 0
        while going:
            await person.say(f"{person.name} says {n}")
            n += 1
            await asyncio.sleep(0.1)

    async def point(pointer: CursorUser) -> None:
        n = 0
        while going:
            await pointer.move((n % 1000) / 1000, 0.5)
            n += 1
            await asyncio.sleep(0.05)

    load: list[asyncio.Task[None]] = []
    try:
        await asyncio.gather(*(p.connect() for p in people), *(p.connect() for p in pointers))
        await screen.connect({"role": "desktop"})
        (pairing,) = await until(lambda: screen.got("pairing"), "a pairing")
        await phone.connect({"role": "controller", "pair": pairing["url"].split("#pair=")[1]})
        await asyncio.gather(*(c.connect() for c in callers), *(w.connect() for w in watchers))
        load = [asyncio.create_task(talk(p)) for p in people]
        load += [asyncio.create_task(point(p)) for p in pointers]
        load.append(asyncio.create_task(presses.run()))

        def progress() -> tuple[int, int, int]:
            return (
                sum(len(p.acked) for p in people),
                sum(p.moves for p in pointers),
                len(presses.acked),
            )

        async def some_progress() -> None:
            before = progress()
            await until(
                lambda: all(n >= b + 10 for n, b in zip(progress(), before, strict=True)),
                "every app in use",
            )

        for _ in range(ROUNDS):
            for service in PACKAGES:
                for side in "ab":
                    await some_progress()
                    await asyncio.to_thread(deployment.restart, service, side)
        await some_progress()
        going = presses.going = False
        await asyncio.gather(*load)

        # Chat: every acked message reached everyone once, everyone is back and listed once.
        acked = await everyone_gets_every_acked(people)
        assert all(p.sio is not None and p.sio.connected for p in people)
        assert not any(p.incomplete for p in people), "a resume was longer than the history"
        await until_listed(clients, url, f"roll-{unique}", [p.name for p in people])
        # Cursors: every screen shows the live cursors, each where its owner last put it.
        for pointer in pointers:
            await until(
                lambda pointer=pointer: pointer.screen.keys() == {p.sid for p in pointers},
                "every screen shows exactly the live cursors",
            )
        assert not any(p.returned for p in pointers), "a cursor that left came back"
        # The remote: still paired, never unpaired, the last press through.
        await until(lambda: delivered(screen)[-1:] == presses.acked[-1:], "the last press")
        assert not phone.got("unpaired") and len(screen.got("pairing")) == 1
        got = delivered(screen)
        assert len(got) == len(set(got)), "a press was delivered twice"
        assert [p for p in got if p in set(presses.acked)] == presses.acked, "a press lost"
        # The call room: exactly its two people, under their connections now.
        live = {c.sid for c in callers}
        for caller in callers:
            await until(
                lambda caller=caller: set(caller.clients) - {"echo"} == live,
                "the call room lists exactly its people",
            )
        # The ticker: every trade of the cluster's history after each one's first subscription.
        latest = Watcher(url)
        await latest.connect()
        await until(lambda: latest.subscriptions, "the history")
        for watcher in watchers:
            await until(
                lambda w=watcher: w.sio.connected and w.subscriptions and w.first is not None,
                "the watcher connected and subscribed again",
            )
            wanted = {t for t in latest.seen if t > watcher.first}
            await until(lambda w=watcher, t=wanted: t <= w.seen, "every trade after the first")
        await latest.sio.disconnect()

        print(
            f"\nrolling restart of 8 replicas behind the gateway, {ROUNDS} round(s), "
            f"{deployment.restarts} restarts: chat {len(acked)} acked, "
            f"0 lost, {duplicates(people)} delivered twice (dropped by id), "
            f"{sum(p.reconnects for p in people)} reconnects; cursors "
            f"{sum(p.moves for p in pointers)} moves, {sum(p.reconnects for p in pointers)} "
            f"reconnects, no ghost; remote {len(presses.acked)} presses acked, 0 lost, "
            f"refused {presses.refused}, {screen.reconnects}+{phone.reconnects} reconnects, "
            f"still paired; call room exact; ticker "
            f"{sum(w.subscriptions for w in watchers)} subscriptions, no trade missed"
        )
    finally:
        going = False
        presses.going = False
        await asyncio.gather(*load, return_exceptions=True)
        for person in people:
            await person.close()
        for pointer in pointers:
            await pointer.close()
        await phone.close()
        await screen.close()
        for client in [*callers, *watchers]:
            with contextlib.suppress(Exception):
                await client.sio.disconnect()
        for opened in clients:
            await opened.close()


def delivered(side: Side) -> list[str]:
    return [data["button"] for data in side.got("press")]
