"""``python -m ticker_service.simulator``: a stand-in for Bitstamp, for demos without internet.

It speaks the part of Bitstamp's protocol the ticker uses, on one local port: the WebSocket API
v2 at ``/`` (``bts:subscribe`` to ``live_trades_<pair>``, ``trade`` events with Bitstamp's
fields, ``bts:heartbeat`` replies, ``bts:error`` for bad requests) and the REST route
``GET /api/v2/transactions/<pair>/?time=minute|hour|day``. Prices follow a random walk from
plausible levels. Its ``bts:subscription_succeeded`` carries ``{"simulated": true}`` (Bitstamp's
carries ``{}``), so the ticker can tell people the feed is simulated.

Point the ticker at it with ``TICKER_UPSTREAM_URL=ws://127.0.0.1:9100`` and
``TICKER_REST_URL=http://127.0.0.1:9100``; ``make run-simulated`` does both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from switchboard.logs import configure_logging

log = logging.getLogger(__name__)

#: Where the random walks start (roughly where the markets were in late 2026).
START_PRICES = {"btc": Decimal("91000"), "eth": Decimal("3100"), "xrp": Decimal("2.1")}
FX = {"usd": Decimal(1), "eur": Decimal("0.87"), "gbp": Decimal("0.76")}
SPANS = {"minute": 60, "hour": 3600, "day": 86_400}
KEPT = 5000


class Exchange:
    """The simulated market: trades for every pair, and who listens to which channel."""

    def __init__(self, pairs: list[str], rate: float, rng: random.Random) -> None:
        self.pairs = pairs
        self.rate = rate
        self.rng = rng
        self.prices = {pair: _start_price(pair) for pair in pairs}
        self.trades: dict[str, deque[dict[str, Any]]] = {p: deque(maxlen=KEPT) for p in pairs}
        self.listeners: dict[str, set[WebSocket]] = {f"live_trades_{p}": set() for p in pairs}
        # Ids grow with time, as Bitstamp's do, also across restarts of the simulator: a ticker
        # that outlives it must not see new trades with older ids.
        self.next_id = time.time_ns() // 1_000_000

    def trade(self, pair: str) -> dict[str, Any]:
        price = self.prices[pair] * Decimal(1 + self.rng.gauss(0, 0.0004))
        price = price.quantize(_places(price))
        self.prices[pair] = price
        amount = Decimal(str(round(self.rng.expovariate(8), 8))).quantize(Decimal("0.00000001"))
        amount = max(amount, Decimal("0.00000001"))
        now_us = time.time_ns() // 1000
        self.next_id += self.rng.randint(1, 3)
        data = {
            "id": self.next_id,
            "timestamp": str(now_us // 1_000_000),
            "amount": float(amount),
            # Fixed-point, as Bitstamp writes them: str() of a small Decimal is "4.5E-7".
            "amount_str": format(amount, "f"),
            "price": float(price),
            "price_str": format(price, "f"),
            "type": self.rng.randint(0, 1),
            "microtimestamp": str(now_us),
            "buy_order_id": self.rng.randrange(10**15, 2 * 10**15),
            "sell_order_id": self.rng.randrange(10**15, 2 * 10**15),
        }
        self.trades[pair].append(data)
        return data

    async def run(self) -> None:
        """Trades arrive as a Poisson process, ``rate`` per second per pair on average."""
        while True:
            await asyncio.sleep(self.rng.expovariate(self.rate * len(self.pairs)))
            pair = self.rng.choice(self.pairs)
            name = f"live_trades_{pair}"
            message = orjson.dumps({"data": self.trade(pair), "event": "trade", "channel": name})
            for socket in list(self.listeners[name]):
                with contextlib.suppress(Exception):
                    await socket.send_text(message.decode())

    def transactions(self, pair: str, span: int) -> list[dict[str, str]]:
        """The REST API's shape: strings throughout, newest first."""
        since = time.time() - span
        return [
            {
                "date": t["timestamp"],
                "tid": str(t["id"]),
                "price": t["price_str"],
                "amount": t["amount_str"],
                "type": str(t["type"]),
            }
            for t in reversed(self.trades[pair])
            if int(t["timestamp"]) >= since
        ]


def _places(price: Decimal) -> Decimal:
    """Bitstamp quotes big prices in whole units and small ones with more decimals."""
    if price > 1000:
        return Decimal(1)
    return Decimal("0.01") if price > 10 else Decimal("0.00001")


def _start_price(pair: str) -> Decimal:
    base, quote = pair[:3], pair[3:]
    price = START_PRICES.get(base, Decimal(100))
    if quote in FX:
        return price * FX[quote]
    return price / START_PRICES.get(quote, Decimal(1))


def create_app(exchange: Exchange) -> Starlette:
    async def stream(socket: WebSocket) -> None:
        await socket.accept()
        joined: set[str] = set()
        try:
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text") or message.get("bytes") or b""
                reply = _answer(exchange, socket, joined, text)
                await socket.send_text(orjson.dumps(reply).decode())
        except WebSocketDisconnect:
            pass
        finally:
            for name in joined:
                exchange.listeners[name].discard(socket)

    async def transactions(request: Request) -> JSONResponse:
        pair = request.path_params["pair"]
        span = SPANS.get(request.query_params.get("time", "hour"))
        if pair not in exchange.trades or span is None:
            return JSONResponse({"status": "error", "reason": "Invalid request."}, 404)
        return JSONResponse(exchange.transactions(pair, span))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(exchange.run())
        yield
        task.cancel()

    return Starlette(
        routes=[
            WebSocketRoute("/", stream),
            Route("/api/v2/transactions/{pair}/", transactions),
        ],
        lifespan=lifespan,
    )


def _answer(
    exchange: Exchange, socket: WebSocket, joined: set[str], text: str | bytes
) -> dict[str, Any]:
    """Bitstamp's reply to one client message (field survey E.1)."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        message = None
    if not isinstance(message, dict):
        return _error("Incorrect JSON format.")
    event = message.get("event")
    data = message.get("data")
    name = data.get("channel") if isinstance(data, dict) else None
    if event == "bts:heartbeat":
        return {"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}}
    if event in ("bts:subscribe", "bts:unsubscribe"):
        if name not in exchange.listeners:
            return _error("Bad subscription string.")
        if event == "bts:subscribe":
            exchange.listeners[name].add(socket)
            joined.add(name)
            succeeded = {"simulated": True}
            return {"event": "bts:subscription_succeeded", "channel": name, "data": succeeded}
        exchange.listeners[name].discard(socket)
        joined.discard(name)
        return {"event": "bts:unsubscription_succeeded", "channel": name, "data": {}}
    return _error("Bad event.")


def _error(text: str) -> dict[str, Any]:
    return {"event": "bts:error", "channel": "", "data": {"code": None, "message": text}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9100, help="port to listen on")
    parser.add_argument(
        "--pairs", default="btcusd,btceur,ethusd,etheur", help="comma-separated pairs"
    )
    parser.add_argument("--rate", type=float, default=1.0, help="trades per second per pair")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable runs")
    options = parser.parse_args()
    configure_logging("info")
    pairs = [p.strip().lower() for p in options.pairs.split(",") if p.strip()]
    exchange = Exchange(pairs, options.rate, random.Random(options.seed))
    log.info("simulated Bitstamp at ws://%s:%d (REST on the same port)", options.host, options.port)
    uvicorn.run(create_app(exchange), host=options.host, port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
