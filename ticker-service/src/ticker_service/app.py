"""The ticker service: Bitstamp's live trades, from one upstream connection per cluster, to every
browser that subscribed to a pair. docs/protocol.md is the contract this module keeps."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse
from prometheus_client import Counter, Gauge
from switchboard.errors import InputError
from switchboard.namespace import RateLimit, ServiceNamespace
from switchboard.service import Service
from switchboard.validation import connect_auth, one_argument

from ticker_service.leader import Leadership
from ticker_service.settings import TickerSettings
from ticker_service.status import StatusBoard
from ticker_service.trades import MemoryTradeStore, RedisTradeStore, Trade, TradeStore
from ticker_service.upstream import Feed, FeedMetrics

log = logging.getLogger(__name__)

#: Trades in a subscribe acknowledgement, and by default from REST.
RECENT = 50
#: Currencies Bitstamp quotes in, longest first, to split a pair for people.
QUOTES = ("usdt", "usdc", "pyusd", "usd", "eur", "gbp", "btc", "eth")


def room(pair: str) -> str:
    return f"pair:{pair}"


def split_pair(pair: str) -> tuple[str, str]:
    for quote in QUOTES:
        if pair.endswith(quote) and len(pair) > len(quote):
            return pair[: -len(quote)], quote
    return pair, ""


def listing(pair: str, last: Trade | None) -> dict[str, Any]:
    """A pair as ``GET /pairs`` lists it."""
    base, quote = split_pair(pair)
    return {"pair": pair, "base": base, "quote": quote, "last": last.wire() if last else None}


class Ticker:
    """What the namespace and the routes share: the pairs, the store, the status, the feed's
    way to deliver trades."""

    def __init__(
        self, service: Service, settings: TickerSettings, store: TradeStore, status: StatusBoard
    ) -> None:
        self.service = service
        self.settings = settings
        self.store = store
        self.status = status
        registry = service.metrics.registry
        self.trades_counter = Counter(
            "switchboard_ticker_trades",
            "trades delivered to browsers, by source (live or backfill)",
            ["source"],
            registry=registry,
        )
        self.duplicates = Counter(
            "switchboard_ticker_duplicate_trades",
            "trades received again (make-before-break overlap, backfill) and not delivered",
            registry=registry,
        )
        self.leader = Gauge(
            "switchboard_ticker_leader",
            "1 while this replica holds the upstream connection's lock",
            registry=registry,
        )
        self.feed_metrics = FeedMetrics(registry)

    def pair(self, value: Any) -> str:
        """A pair this service follows, from what a person may type: BTC/USD, btc-usd, btcusd."""
        if not isinstance(value, str):
            raise InputError("invalid_type", "A pair is a string like btcusd.")
        pair = value.strip().lower().replace("/", "").replace("-", "").replace("_", "")
        if pair not in self.settings.pairs:
            raise InputError(
                "unknown_pair",
                f"{value[:40]!r} is not a pair this ticker follows; "
                f"it follows {', '.join(self.settings.pairs)}.",
                details={"pairs": list(self.settings.pairs)},
            )
        return pair

    async def deliver(self, pair: str, trades: list[Trade]) -> list[Trade]:
        """The leader's feed hands over trades: the new ones go to every replica's browsers."""
        added = await self.store.add(pair, trades)
        self.duplicates.inc(len(trades) - len(added))
        for trade in added:
            self.trades_counter.labels("backfill" if trade.backfilled else "live").inc()
            await self.service.sio.emit("trade", trade.wire(), room=room(pair))
        return added

    async def lead(self) -> None:
        """Run the feed for as long as this replica leads."""
        previous = None
        if isinstance(self.store, RedisTradeStore):
            previous = await self.store.read_status()
            if previous is None and (heard := await self.store.read_heard_at()) is not None:
                # Every replica was away for longer than the status record lasts: the gap
                # still starts where the last leader last heard upstream.
                previous = {"heard_at": heard}
        feed = Feed(self.settings, self.deliver, self.feed_metrics, on_change=self.status.changed)
        try:
            await feed.run(previous)
        finally:
            self.status.changed(None)


class TickerNamespace(ServiceNamespace):
    error_event = "ticker_error"

    def __init__(self, ticker: Ticker) -> None:
        settings = ticker.settings
        rate = RateLimit(settings.rate_per_second, settings.rate_burst)
        super().__init__(ticker.service, rate=rate)
        self.ticker = ticker
        self.settings = settings

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await self.admit(sid, connect_auth(auth), "ticker")
        await self.emit("status", await self.ticker.status.look(), to=sid)

    async def on_subscribe(self, sid: str, *args: Any) -> dict[str, Any]:
        pair = self.ticker.pair(one_argument(args))
        await self.enter_room(sid, room(pair))
        trades = await self.ticker.store.recent(pair, RECENT)
        return {"ok": True, "pair": pair, "trades": [trade.wire() for trade in trades]}

    async def on_unsubscribe(self, sid: str, *args: Any) -> dict[str, Any]:
        pair = self.ticker.pair(one_argument(args))
        await self.leave_room(sid, room(pair))
        return {"ok": True, "pair": pair}


def _add_routes(ticker: Ticker) -> None:
    http, prefix = ticker.service.http, ticker.service.prefix

    @http.get(f"{prefix}/pairs", tags=["ticker"])
    async def pairs() -> dict[str, Any]:
        """The pairs this ticker follows, each with its last trade, and the feed's status."""
        latest = await ticker.store.latest(ticker.settings.pairs)
        return {
            "pairs": [listing(pair, trade) for pair, trade in latest.items()],
            "status": await ticker.status.look(),
        }

    @http.get(f"{prefix}/trades/{{pair}}", tags=["ticker"], response_model=None)
    async def trades(pair: str, limit: int = RECENT) -> dict[str, Any] | JSONResponse:
        """The newest ``limit`` trades of ``pair`` (1 to TICKER_HISTORY_SIZE), newest first."""
        most = ticker.settings.history_size
        if not 1 <= limit <= most:
            error = InputError("bad_request", f"limit: must be between 1 and {most}")
            return JSONResponse(error.payload(), status_code=400)
        try:
            name = ticker.pair(pair)
        except InputError as error:
            return JSONResponse(error.payload(), status_code=404)
        found = await ticker.store.recent(name, limit)
        return {"pair": name, "trades": [trade.wire() for trade in found]}

    @http.get(f"{prefix}/status", tags=["ticker"])
    async def status() -> dict[str, Any]:
        """The upstream feed's status, as the ``status`` event tells it."""
        return await ticker.status.look()


def create_service(settings: TickerSettings | None = None) -> Service:
    """Build the ticker service from ``settings`` (read from the environment when omitted)."""
    settings = settings or TickerSettings.from_env()
    service = Service(settings)
    size = settings.history_size
    store: TradeStore = service.store(
        memory=lambda: MemoryTradeStore(size), redis=lambda redis: RedisTradeStore(redis, size)
    )
    status = StatusBoard(
        service,
        store,
        settings.pairs,
        heartbeat_interval=settings.heartbeat_interval,
        upstream=settings.upstream_url,
    )
    service.add_component(status)
    ticker = Ticker(service, settings, store, status)
    leadership = Leadership(
        ticker.lead,
        redis=service.redis,
        replica_id=service.replica.id,
        ttl=settings.leader_ttl,
        on_change=lambda leading: ticker.leader.set(1 if leading else 0),
    )
    service.add_component(leadership)
    service.sio.register_namespace(TickerNamespace(ticker))
    _add_routes(ticker)
    return service
