"""The upstream: Bitstamp's WebSocket API v2, held open by one :class:`Feed`.

What the feed promises (issue 4; research: field survey E.4, reliability survey G15):

- every pair in ``TICKER_PAIRS`` is subscribed (``bts:subscribe`` to ``live_trades_<pair>``)
  before a connection counts as open, within ``TICKER_CONNECT_TIMEOUT``;
- ``bts:heartbeat`` every ``TICKER_HEARTBEAT_INTERVAL``; a connection silent for
  ``TICKER_SILENCE_TIMEOUT`` (no reply, no trade) is taken for dead and replaced;
- ``bts:request_reconnect`` is make-before-break: a second connection is opened and subscribed
  while the first still delivers, then the first is closed; a trade seen on both is delivered
  once, because the store keeps each trade id once;
- failed attempts wait a full-jitter backoff, ``uniform(0, min(cap, base * 2^(n-1)))``, and the
  count starts again after a connection succeeds;
- after a gap (a lost connection, a new leader, the first start), the trades Bitstamp's REST API
  still lists for the gap are fetched and merged, marked ``backfilled``.

Every event of the feed (a message, a connection that closed, an attempt that ended) goes
through one queue and is handled by one loop, so the state has a single writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson
import websockets
from prometheus_client import CollectorRegistry, Counter, Gauge
from switchboard.retry import backoff_delay
from websockets.asyncio.client import ClientConnection

from ticker_service.settings import TickerSettings
from ticker_service.trades import Trade, TradeError, from_rest, from_stream

log = logging.getLogger(__name__)

HEARTBEAT = orjson.dumps({"event": "bts:heartbeat"}).decode()
#: Failed attempts in a row after which the feed calls itself offline, not reconnecting.
OFFLINE_AFTER = 3
#: How long a heartbeat reply may take before the feed is called stale (it is replaced only
#: after TICKER_SILENCE_TIMEOUT).
HEARTBEAT_GRACE = 5.0
#: The spans Bitstamp's REST API lists transactions for, and their seconds: a gap longer than
#: the last cannot be filled whole.
SPANS = (("minute", 60), ("hour", 3600), ("day", 86_400))
#: Seconds the REST backfill may take.
REST_TIMEOUT = 10.0
#: Seconds a new connection delivers live before the backfill asks REST: a trade made just
#: after the reconnection then arrives live first, and only what was missed is marked
#: backfilled (REST lists trades made since the connection too).
BACKFILL_DELAY = 1.0
CHANNEL_PREFIX = "live_trades_"

#: Delivers trades to the store and the browsers; returns the ones that were new.
OnTrades = Callable[[str, list[Trade]], Awaitable[list[Trade]]]

#: Why the feed is not connected, or why its last connection ended, as a code a page can put
#: in its own words (issue 16: a person never sees an address or a close code; the words for
#: operators stay in ``detail`` and ``last_reason``). docs/protocol.md lists them.
Cause = Literal[
    "starting",  # the first connection is being opened
    "replica_stopped",  # the replica that held the connection stopped; this one takes over
    "closed",  # upstream closed the connection (a close frame)
    "dropped",  # the connection vanished without a close frame
    "silent",  # nothing heard for TICKER_SILENCE_TIMEOUT
    "reconnect_requested",  # bts:request_reconnect (replaced without a gap)
    "refused",  # the WebSocket handshake was answered with an HTTP error
    "unreachable",  # no connection could be made (refused, reset, no route)
    "dns",  # the host name did not resolve: offline, or no DNS
    "timeout",  # no answer, or subscriptions not confirmed, within TICKER_CONNECT_TIMEOUT
    "subscription_refused",  # bts:error in answer to a subscription
    "protocol",  # upstream spoke something other than the WebSocket protocol we expect
    "internal",  # a bug of ours (logged with its traceback)
    # Told by the status (ticker_service.status), not by a feed:
    "no_leader",  # no replica has refreshed the status: none holds the connection
    "no_answer",  # connected, but upstream has not answered a heartbeat in time
]


def channel(pair: str) -> str:
    return f"{CHANNEL_PREFIX}{pair}"


def describe(exc: BaseException) -> str:
    """An upstream failure in words a person can act on."""
    if isinstance(exc, websockets.InvalidStatus):
        return f"the server refused the WebSocket connection (HTTP {exc.response.status_code})"
    if isinstance(exc, websockets.ConnectionClosed):
        if exc.rcvd is None:
            return "the connection dropped without a close frame"
        return f"the server closed the connection (code {exc.rcvd.code} {exc.rcvd.reason!r})"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror}): is this machine offline?"
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def cause_of(exc: BaseException) -> Cause:
    """The :data:`Cause` of an upstream failure that :func:`describe` puts in words."""
    if isinstance(exc, websockets.InvalidStatus):
        return "refused"
    if isinstance(exc, websockets.ConnectionClosed):
        return "dropped" if exc.rcvd is None else "closed"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, OSError):
        return "unreachable"
    return "protocol"


class UpstreamError(Exception):
    """An attempt to open a connection failed; the message says why, for a person, and
    ``cause`` says it for a page."""

    def __init__(self, message: str, cause: Cause) -> None:
        super().__init__(message)
        self.cause: Cause = cause


@dataclass
class Connection:
    """One open, subscribed WebSocket to the upstream, reading into the feed's queue."""

    number: int
    socket: ClientConnection
    simulated: bool
    #: time.monotonic() and time.time() of the last message received.
    heard: float = field(default_factory=time.monotonic)
    heard_wall: float = field(default_factory=time.time)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.socket.close()


@dataclass
class Received:
    connection: Connection
    message: dict[str, Any]


@dataclass
class Closed:
    connection: Connection
    reason: str
    cause: Cause


@dataclass
class Opened:
    connection: Connection | None
    error: str | None = None
    cause: Cause = "internal"
    #: Messages received while the subscriptions were being confirmed.
    early: list[dict[str, Any]] = field(default_factory=list)


Event = Received | Closed | Opened


@dataclass
class FeedState:
    """What the leader knows of the upstream: written to the store as the status record."""

    upstream: str
    state: str = "reconnecting"
    detail: str = "connecting"
    #: Why the feed is not connected (None while it is): ``detail`` as a code.
    cause: Cause | None = "starting"
    simulated: bool = False
    reconnects: int = 0
    #: Failed attempts in a row to open the connection since it was last open (0 while open).
    attempts: int = 0
    #: Why the last connection ended (a failed attempt is told by ``detail``).
    last_reason: str | None = None
    last_cause: Cause | None = None
    #: Epoch seconds: when ``state`` began, when upstream was last heard, the next attempt.
    since: float = field(default_factory=time.time)
    heard_at: float | None = None
    retry_at: float | None = None
    #: The last gap in what upstream sent (it was not heard from ``from`` until ``to``) and
    #: whether the REST backfill could fill it whole.
    gap: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "state": self.state,
            "detail": self.detail,
            "cause": self.cause,
            "simulated": self.simulated,
            "reconnects": self.reconnects,
            "attempts": self.attempts,
            "last_reason": self.last_reason,
            "last_cause": self.last_cause,
            "since": self.since,
            "heard_at": self.heard_at,
            "retry_at": self.retry_at,
            "gap": self.gap,
            "updated_at": time.time(),
        }


class FeedMetrics:
    """What the feed counts, on the service's Prometheus registry (one set per process, shared
    by the feeds of successive leadership terms)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reconnects = Counter(
            "switchboard_ticker_upstream_reconnects",
            "upstream connections opened after a first one (lost, replaced or taken over)",
            registry=registry,
        )
        self.failed_attempts = Counter(
            "switchboard_ticker_upstream_failed_attempts",
            "attempts to open the upstream connection that failed",
            registry=registry,
        )
        self.bad_messages = Counter(
            "switchboard_ticker_upstream_bad_messages",
            "upstream messages that were not JSON objects or not readable trades",
            registry=registry,
        )
        self.upstream_errors = Counter(
            "switchboard_ticker_upstream_errors", "bts:error messages received", registry=registry
        )
        self.backfill_failures = Counter(
            "switchboard_ticker_backfill_failures",
            "REST backfill requests that failed, per pair",
            registry=registry,
        )
        self.connected = Gauge(
            "switchboard_ticker_upstream_connected",
            "1 while this replica holds a subscribed upstream connection",
            registry=registry,
        )


class Feed:
    """The upstream connection and everything that keeps it alive. :meth:`run` until cancelled
    (the leader runs it; it closes its connections when cancelled)."""

    def __init__(
        self,
        settings: TickerSettings,
        on_trades: OnTrades,
        metrics: FeedMetrics,
        *,
        on_change: Callable[[FeedState], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.on_trades = on_trades
        self.on_change = on_change
        self.rng = rng or random.Random()
        self.state = FeedState(upstream=settings.upstream_url)
        self.metrics = metrics
        self.channels = {channel(pair): pair for pair in settings.pairs}
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._current: Connection | None = None
        self._opening: asyncio.Task[None] | None = None
        self._opened = 0
        self._failures = 0
        self._backfills: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

    def _set(self, state: str, detail: str, cause: Cause | None, **changes: Any) -> None:
        if state != self.state.state:
            self.state.since = time.time()
        self.state.state = state
        self.state.detail = detail
        self.state.cause = cause
        for name, value in changes.items():
            setattr(self.state, name, value)
        if self.on_change:
            self.on_change(self.state)

    async def run(self, previous: dict[str, Any] | None = None) -> None:
        """Hold the upstream connection until cancelled. ``previous`` is the status record the
        last leader left, when this replica takes over from another."""
        self._http = httpx.AsyncClient(timeout=REST_TIMEOUT, follow_redirects=True)
        # Trades may have been missed since this moment: None on the first start (fetch the
        # last minute, so that the history is not empty).
        gap_from: float | None = None
        try:
            if previous:
                # Taking over: the cluster's count goes on, and the gap starts when the last
                # leader last heard from upstream.
                self.state.reconnects = int(previous.get("reconnects") or 0)
                self.state.last_reason = "the replica holding the upstream connection stopped"
                self.state.last_cause = "replica_stopped"
                heard = previous.get("heard_at")
                gap_from = float(heard) if isinstance(heard, int | float) else None
                self._opened = 1
            self._set(
                "reconnecting",
                f"connecting to {self.settings.upstream_url}",
                "replica_stopped" if previous else "starting",
            )
            while True:
                if self._current is None and self._opening is None:
                    if self._failures:
                        await self._wait_before_retry()
                    self._opening = self._open_in_background()
                event = await self._next_event()
                if event is None:
                    continue
                if isinstance(event, Opened):
                    gap_from = await self._opened_event(event, gap_from)
                elif isinstance(event, Closed):
                    if event.connection is self._current:
                        gap_from = event.connection.heard_wall
                        self._lost(event.reason, event.cause)
                elif isinstance(event, Received):
                    await self._handle(event.connection, event.message)
        finally:
            await self._shut()

    async def _shut(self) -> None:
        for task in [*self._backfills, *([self._opening] if self._opening else [])]:
            task.cancel()
        if self._current:
            await self._current.close()
            self._current = None
        self.metrics.connected.set(0)
        # An attempt that finished while we were being cancelled left its connection here.
        while not self._events.empty():
            event = self._events.get_nowait()
            if isinstance(event, Opened) and event.connection:
                await event.connection.close()
        if self._http:
            await self._http.aclose()

    async def _wait_before_retry(self) -> None:
        delay = backoff_delay(
            self._failures, self.settings.backoff_base, self.settings.backoff_cap, self.rng
        )
        self.state.retry_at = time.time() + delay
        if self.on_change:
            self.on_change(self.state)
        await asyncio.sleep(delay)
        self.state.retry_at = None

    async def _next_event(self) -> Event | None:
        """The next event, or None when it is time to look at the silence of the connection."""
        timeout = None
        if self._current is not None:
            silent = time.monotonic() - self._current.heard
            if silent >= self.settings.silence_timeout:
                # Open but silent (no heartbeat reply either): as good as closed.
                await self._current.close()
                reason = f"no message from upstream for {self.settings.silence_timeout:g} s"
                return Closed(self._current, reason, "silent")
            timeout = self.settings.silence_timeout - silent
        try:
            async with asyncio.timeout(timeout):
                return await self._events.get()
        except TimeoutError:
            return None

    def _lost(self, reason: str, cause: Cause) -> None:
        log.warning("upstream connection lost: %s", reason)
        self._current = None
        self.metrics.connected.set(0)
        self._set(
            "reconnecting", f"reconnecting: {reason}", cause, last_reason=reason, last_cause=cause
        )

    async def _opened_event(self, event: Opened, gap_from: float | None) -> float | None:
        self._opening = None
        if event.connection is None:
            reason = event.error or "unknown error"
            if self._current is not None:
                # The second connection of a make-before-break failed: the first goes on
                # until it closes, and then the usual reconnect takes over.
                log.warning("second upstream connection failed: %s", reason)
                return gap_from
            self._failures += 1
            self.metrics.failed_attempts.inc()
            log.warning("upstream connection attempt %d failed: %s", self._failures, reason)
            state = "offline" if self._failures >= OFFLINE_AFTER else "reconnecting"
            self._set(state, reason, event.cause, attempts=self._failures)
            return gap_from
        connection, previous = event.connection, self._current
        self._current = connection
        self.metrics.connected.set(1)
        self._failures = 0
        self._opened += 1
        if self._opened > 1:
            self.state.reconnects += 1
            self.metrics.reconnects.inc()
        self._set(
            "connected",
            f"subscribed to {len(self.channels)} pairs",
            None,
            attempts=0,
            simulated=connection.simulated,
            heard_at=connection.heard_wall,
            retry_at=None,
        )
        log.info("upstream connection %d open and subscribed", connection.number)
        for message in event.early:
            await self._handle(connection, message)
        if previous is not None:
            # Make-before-break: the new connection is subscribed, so nothing falls between.
            await previous.close()
            return gap_from
        self._backfill_in_background(gap_from)
        return None

    def _open_in_background(self) -> asyncio.Task[None]:
        async def attempt() -> None:
            try:
                opened = await self._open()
            except UpstreamError as exc:
                opened = Opened(None, str(exc), exc.cause)
            except Exception as exc:
                log.exception("opening the upstream connection failed")
                opened = Opened(None, f"internal error: {exc!r}", "internal")
            await self._events.put(opened)

        return asyncio.get_running_loop().create_task(attempt(), name="ticker:upstream-open")

    async def _open(self) -> Opened:
        url = self.settings.upstream_url
        number = self._opened + 1
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                ws = await websockets.connect(
                    url, open_timeout=None, ping_interval=None, close_timeout=2, max_size=2**20
                )
                try:
                    simulated, early = await self._subscribe(ws)
                except BaseException:
                    await ws.close()
                    raise
        except TimeoutError:
            raise UpstreamError(
                f"{url} did not answer and confirm the subscriptions within "
                f"{self.settings.connect_timeout:g} s",
                "timeout",
            ) from None
        except (OSError, websockets.WebSocketException) as exc:
            raise UpstreamError(f"{url}: {describe(exc)}", cause_of(exc)) from None
        connection = Connection(number, ws, simulated)
        loop = asyncio.get_running_loop()
        connection.tasks = [
            loop.create_task(self._read(connection), name=f"ticker:upstream-read-{number}"),
            loop.create_task(self._beat(connection), name=f"ticker:upstream-beat-{number}"),
        ]
        return Opened(connection, early=early)

    async def _subscribe(self, ws: ClientConnection) -> tuple[bool, list[dict[str, Any]]]:
        for name in self.channels:
            await ws.send(_subscription(name))
        pending = set(self.channels)
        simulated = False
        early: list[dict[str, Any]] = []
        while pending:
            message = self._decode(await ws.recv())
            if message is None:
                continue
            event = message.get("event")
            if event == "bts:subscription_succeeded":
                pending.discard(str(message.get("channel")))
                data = message.get("data")
                # Our simulator says so here; Bitstamp sends {} (field survey E.1).
                simulated = simulated or (isinstance(data, dict) and data.get("simulated") is True)
            elif event == "bts:error":
                raise UpstreamError(
                    f"Bitstamp refused the subscription: {_error_text(message)}",
                    "subscription_refused",
                )
            else:
                early.append(message)
        return simulated, early

    async def _read(self, connection: Connection) -> None:
        try:
            async for raw in connection.socket:
                connection.heard = time.monotonic()
                connection.heard_wall = time.time()
                message = self._decode(raw)
                if message is not None:
                    await self._events.put(Received(connection, message))
        except websockets.ConnectionClosed as exc:
            reason, cause = describe(exc), cause_of(exc)
        except OSError as exc:
            # On an open connection (a reset), not a connection that could not be made.
            reason, cause = f"the connection failed: {exc.strerror or exc}", "dropped"
        else:
            code, why = connection.socket.close_code, connection.socket.close_reason
            reason, cause = f"the server closed the connection (code {code} {why!r})", "closed"
        await self._events.put(Closed(connection, reason, cause))

    async def _beat(self, connection: Connection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, OSError):
            while True:
                await asyncio.sleep(self.settings.heartbeat_interval)
                await connection.socket.send(HEARTBEAT)

    def _decode(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            self.metrics.bad_messages.inc()
            log.warning("upstream sent something that is not a JSON object: %.200r", raw)
            return None
        return message

    async def _handle(self, connection: Connection, message: dict[str, Any]) -> None:
        event = message.get("event")
        name = str(message.get("channel") or "")
        if connection is self._current:
            self.state.heard_at = connection.heard_wall
        if event == "trade":
            pair = self.channels.get(name)
            if pair is None:
                return
            try:
                trade = from_stream(pair, message.get("data"))
            except TradeError as exc:
                self.metrics.bad_messages.inc()
                log.warning("upstream sent a trade we cannot read (%s): %.300r", exc, message)
                return
            await self.on_trades(pair, [trade])
        elif event == "bts:request_reconnect":
            if connection is self._current and self._opening is None:
                log.info("upstream asked us to reconnect: opening a second connection first")
                self.state.last_reason = "Bitstamp asked us to reconnect (bts:request_reconnect)"
                self.state.last_cause = "reconnect_requested"
                self._opening = self._open_in_background()
        elif event == "bts:error":
            self.metrics.upstream_errors.inc()
            log.warning("upstream error: %s", _error_text(message))
        elif event == "bts:unsubscription_succeeded" and name in self.channels:
            # Not asked for by us: subscribe again rather than silently lose the pair.
            log.warning("upstream unsubscribed us from %s: subscribing again", name)
            with contextlib.suppress(websockets.ConnectionClosed):
                await connection.socket.send(_subscription(name))
        # bts:heartbeat replies and late subscription_succeeded only count as signs of life.

    def _backfill_in_background(self, gap_from: float | None) -> None:
        task = asyncio.get_running_loop().create_task(
            self._backfill(gap_from), name="ticker:backfill"
        )
        self._backfills.add(task)
        task.add_done_callback(self._backfills.discard)

    async def _backfill(self, gap_from: float | None) -> None:
        """Fetch what Bitstamp's REST API still lists for the gap, for every pair, and say in
        the status whether that was all of it."""
        await asyncio.sleep(BACKFILL_DELAY)
        now = time.time()
        gap = 0.0 if gap_from is None else now - gap_from
        # The API offers the last minute, hour or day; ask for the smallest that covers it
        # (a little short of each, for the time the request takes).
        span = next((name for name, seconds in SPANS if gap < seconds - 5), "day")
        filled = gap < SPANS[-1][1] - 5
        for pair in self.settings.pairs:
            url = f"{self.settings.rest_url}/api/v2/transactions/{pair}/"
            try:
                assert self._http is not None
                response = await self._http.get(url, params={"time": span})
                response.raise_for_status()
                rows = response.json()
                if not isinstance(rows, list):
                    raise TradeError(f"expected a list, got {type(rows).__name__}")
            except (httpx.HTTPError, ValueError) as exc:
                self.metrics.backfill_failures.inc()
                log.warning("backfill of %s from %s failed: %s", pair, url, exc)
                filled = False
                continue
            trades = []
            for row in rows:
                # One row we cannot read costs that row, not the rest of the gap.
                try:
                    trades.append(from_rest(pair, row))
                except TradeError as exc:
                    self.metrics.bad_messages.inc()
                    log.warning("backfill of %s: a transaction we cannot read (%s)", pair, exc)
            # The API lists newest first; browsers get them oldest first, as they happened. What
            # arrived before the gap is in the store already and is not delivered again.
            trades.sort(key=lambda trade: trade.id)
            added = await self.on_trades(pair, trades)
            if added:
                log.info("backfilled %d %s trades (gap of %.1f s)", len(added), pair, gap)
        if gap_from is not None:
            if not filled:
                log.warning("the gap of %.0f s since upstream was last heard is not filled", gap)
            self.state.gap = {"from": gap_from, "to": now, "filled": filled}
            self._set(self.state.state, self.state.detail, self.state.cause)


def _subscription(name: str) -> str:
    # A text frame: Bitstamp's API speaks JSON text.
    return orjson.dumps({"event": "bts:subscribe", "data": {"channel": name}}).decode()


def _error_text(message: dict[str, Any]) -> str:
    data = message.get("data")
    if isinstance(data, dict):
        code = data.get("code")
        text = str(data.get("message") or "no message")
        return f"{text} (code {code})" if code is not None else text
    return repr(data)
