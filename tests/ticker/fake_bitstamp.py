"""A scripted Bitstamp for the tests: the WebSocket API v2 and the REST transactions route on one
loopback port, run in the test's own event loop so that a test says what happens when.

Messages follow Bitstamp's documented shapes (research: field survey E.1), including the float
``price``/``amount`` beside the exact ``price_str``/``amount_str``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.harness import PATIENCE, free_port


@dataclass
class Upstream:
    """One WebSocket connection the service opened to us."""

    socket: web.WebSocketResponse
    request: web.Request
    opened_at: float = field(default_factory=time.monotonic)
    subscribed: dict[str, float] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    closed_at: float | None = None
    closed_by: str | None = None
    #: Answer nothing on this connection (no heartbeat replies), keeping it open.
    silent: bool = False
    #: Subscriptions not answered yet (while the fake holds them).
    held: list[dict[str, Any]] = field(default_factory=list)
    #: time.monotonic() just before we last sent the service something on this connection:
    #: whatever it last heard from us, it heard after this.
    last_sent: float | None = None

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def heartbeats(self) -> int:
        return sum(1 for m in self.received if m.get("event") == "bts:heartbeat")

    async def send(self, message: dict[str, Any]) -> None:
        self.last_sent = time.monotonic()
        await self.socket.send_str(json.dumps(message))

    async def close(self, code: int, reason: str = "") -> None:
        """The server closes the connection with a close frame (1012: it is restarting)."""
        self.closed_by = "server"
        await self.socket.close(code=code, message=reason.encode())

    async def drop(self) -> None:
        """The connection vanishes: no close frame (a network cut, a crashed server)."""
        self.closed_by = "server"
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class FakeBitstamp:
    def __init__(self, pairs: tuple[str, ...] = ("btcusd", "btceur", "ethusd", "etheur")) -> None:
        self.pairs = pairs
        self.port = free_port()
        self.connections: list[Upstream] = []
        #: Handshakes still to refuse with HTTP 503, and when each handshake was attempted.
        self.refuse = 0
        self.attempts: list[float] = []
        #: Leave subscriptions unanswered until :meth:`release`.
        self.hold = False
        #: When set, a subscription is answered with this bts:error instead.
        self.subscription_error: str | None = None
        #: Every trade "on the exchange", newest last: what the REST route lists.
        self.history: dict[str, list[dict[str, Any]]] = {pair: [] for pair in pairs}
        self.rest_requests: list[tuple[str, str]] = []
        self.most_open = 0
        self._ids = itertools.count(500_000_000, 3)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._stream)
        app.router.add_get("/api/v2/transactions/{pair}/", self._transactions)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        for connection in self.open():
            with contextlib.suppress(Exception):
                await connection.socket.close()
        if self._runner:
            await self._runner.cleanup()

    def open(self) -> list[Upstream]:
        return [c for c in self.connections if c.open]

    def subscribed(self) -> list[Upstream]:
        """Open connections subscribed to every pair."""
        return [c for c in self.open() if len(c.subscribed) == len(self.pairs)]

    async def until(self, condition: Any, timeout: float = PATIENCE, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"fake Bitstamp: not {what or condition} within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.1))

    async def successor(self, of: Upstream, timeout: float = PATIENCE) -> Upstream:
        """The next connection subscribed to every pair, other than ``of``."""
        found: list[Upstream] = await self.until(
            lambda: [c for c in self.subscribed() if c is not of],
            timeout,
            "a new connection subscribed to every pair",
        )
        return found[0]

    def make_trade(
        self,
        pair: str = "btcusd",
        *,
        price: str = "91234.56",
        amount: str = "0.01500000",
        side: int = 0,
        trade_id: int | None = None,
    ) -> dict[str, Any]:
        """A trade on the exchange, listed by REST from now on (not sent to anyone yet)."""
        now_us = time.time_ns() // 1000
        data = {
            "id": trade_id if trade_id is not None else next(self._ids),
            "timestamp": str(now_us // 1_000_000),
            "amount": float(amount),
            "amount_str": amount,
            "price": float(price),
            "price_str": price,
            "type": side,
            "microtimestamp": str(now_us),
            "buy_order_id": 1207733769326592,
            "sell_order_id": 1207733765476352,
        }
        self.history[pair].append(data)
        return data

    async def publish(
        self, data: dict[str, Any], pair: str = "btcusd", to: list[Upstream] | None = None
    ) -> None:
        """Send a trade on ``live_trades_<pair>`` to the subscribed connections (or ``to``)."""
        channel = f"live_trades_{pair}"
        message = {"data": data, "event": "trade", "channel": channel}
        for connection in to if to is not None else self.open():
            if channel in connection.subscribed and connection.open:
                await connection.send(message)

    async def trade(self, pair: str = "btcusd", **fields: Any) -> dict[str, Any]:
        data = self.make_trade(pair, **fields)
        await self.publish(data, pair)
        return data

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.attempts.append(time.monotonic())
        self._changed.set()
        if self.refuse > 0:
            self.refuse -= 1
            return web.Response(status=503, text="maintenance")
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        connection = Upstream(socket, request)
        self.connections.append(connection)
        self.most_open = max(self.most_open, len(self.open()))
        self._changed.set()
        try:
            async for frame in socket:
                if frame.type != WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                connection.received.append(message)
                self._changed.set()
                if connection.silent:
                    continue
                if self.hold and message.get("event") == "bts:subscribe":
                    connection.held.append(message)
                    continue
                await self._answer(connection, message)
        finally:
            connection.closed_at = time.monotonic()
            connection.closed_by = connection.closed_by or "client"
            self._changed.set()
        return socket

    async def release(self, connection: Upstream, channel: str | None = None) -> None:
        """Answer the held subscriptions (only ``channel``'s, when given)."""
        for message in list(connection.held):
            if channel is None or message["data"]["channel"] == channel:
                connection.held.remove(message)
                await self._answer(connection, message)

    async def _answer(self, connection: Upstream, message: dict[str, Any]) -> None:
        event = message.get("event")
        data = message.get("data") or {}
        if event == "bts:heartbeat":
            await connection.send(
                {"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}}
            )
        elif event == "bts:subscribe":
            if self.subscription_error:
                await connection.send(
                    {
                        "event": "bts:error",
                        "channel": "",
                        "data": {"code": None, "message": self.subscription_error},
                    }
                )
                return
            channel = data.get("channel")
            connection.subscribed[channel] = time.monotonic()
            await connection.send(
                {"event": "bts:subscription_succeeded", "channel": channel, "data": {}}
            )

    async def _transactions(self, request: web.Request) -> web.Response:
        pair = request.match_info["pair"]
        span = request.query.get("time", "hour")
        self.rest_requests.append((pair, span))
        self._changed.set()
        seconds = {"minute": 60, "hour": 3600, "day": 86_400}[span]
        since = time.time() - seconds
        rows = [
            {
                "date": t["timestamp"],
                "tid": str(t["id"]),
                "price": t["price_str"],
                "amount": t["amount_str"],
                "type": str(t["type"]),
            }
            for t in reversed(self.history.get(pair, []))
            if int(t["timestamp"]) >= since
        ]
        return web.json_response(rows)
