"""Trades: normalised from Bitstamp's exact fields, and kept per pair in memory or in Redis.

Prices and amounts are Bitstamp's decimal strings (``price_str``, ``amount_str``), never its
floats, which carry binary artefacts (issue 4; research: field survey E.1). The store is the one
place that says whether a trade is new: a trade seen twice (on both connections of a
make-before-break, live and then backfilled, by two leaders in turn) is kept and delivered once.

Trades are ordered by id: Bitstamp's ids grow with time, and the REST API gives times only to
the second. Redis layout (keys under ``ticker:``): ``trades:<pair>``, a sorted set of trades as
JSON scored by id; ``status``, the leader's view of the upstream as JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from switchboard.components import Passive

DECIMAL = re.compile(r"\d{1,30}(\.\d{1,30})?")
SIDES = {0: "buy", 1: "sell"}
#: A status record older than this was written by a leader that is gone.
STATUS_TTL_MS = 60_000


class TradeError(ValueError):
    """Upstream sent a trade we cannot read; the message says which field."""


@dataclass(frozen=True, slots=True)
class Trade:
    pair: str
    id: int
    #: Exact decimal strings, as Bitstamp sent them.
    price: str
    amount: str
    #: The taker's side: "buy" or "sell".
    side: str
    #: Milliseconds since the epoch.
    ts: int
    #: Fetched from the REST API after a gap rather than received live.
    backfilled: bool = False

    def wire(self) -> dict[str, Any]:
        return asdict(self)


def _decimal(data: Mapping[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not DECIMAL.fullmatch(value):
        raise TradeError(f"{field} is not a decimal string: {value!r}")
    return value


def _integer(data: Mapping[str, Any], field: str) -> int:
    value = data.get(field)
    # The WebSocket API sends ids as numbers and times as strings; the REST API sends strings.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TradeError(f"{field} is not an integer: {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise TradeError(f"{field} is not an integer: {value!r}") from None
    if number < 0:
        raise TradeError(f"{field} is negative: {value!r}")
    return number


def _side(data: Mapping[str, Any]) -> str:
    kind = _integer(data, "type")
    if kind not in SIDES:
        raise TradeError(f"type is neither 0 (buy) nor 1 (sell): {kind!r}")
    return SIDES[kind]


def from_stream(pair: str, data: Any) -> Trade:
    """A ``trade`` event's ``data`` from ``live_trades_<pair>``."""
    if not isinstance(data, dict):
        raise TradeError(f"trade data is not an object: {data!r}")
    return Trade(
        pair=pair,
        id=_integer(data, "id"),
        price=_decimal(data, "price_str"),
        amount=_decimal(data, "amount_str"),
        side=_side(data),
        ts=_integer(data, "microtimestamp") // 1000,
    )


def from_rest(pair: str, row: Any) -> Trade:
    """One entry of ``GET /api/v2/transactions/<pair>/``: date, tid, price, amount, type."""
    if not isinstance(row, dict):
        raise TradeError(f"transaction is not an object: {row!r}")
    return Trade(
        pair=pair,
        id=_integer(row, "tid"),
        price=_decimal(row, "price"),
        amount=_decimal(row, "amount"),
        side=_side(row),
        ts=_integer(row, "date") * 1000,
        backfilled=True,
    )


class TradeStore(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def check(self) -> str | None: ...

    async def add(self, pair: str, trades: list[Trade]) -> list[Trade]:
        """Keep the trades not seen before and return them, in the order given. A trade older
        than every kept one when the pair's history is full is taken as seen (it may have been
        delivered and since dropped)."""
        ...

    async def recent(self, pair: str, limit: int) -> list[Trade]:
        """The newest ``limit`` trades of ``pair``, newest first."""
        ...

    async def latest(self, pairs: Iterable[str]) -> dict[str, Trade | None]: ...
    async def write_status(self, record: dict[str, Any]) -> None: ...
    async def read_status(self) -> dict[str, Any] | None: ...


class MemoryTradeStore(Passive):
    """One process: a dict of trades by id per pair."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.trades: dict[str, dict[int, Trade]] = {}
        self.status: dict[str, Any] | None = None

    async def add(self, pair: str, trades: list[Trade]) -> list[Trade]:
        kept = self.trades.setdefault(pair, {})
        added = []
        for trade in trades:
            if trade.id in kept or (len(kept) >= self.size and trade.id < min(kept)):
                continue
            kept[trade.id] = trade
            added.append(trade)
            if len(kept) > self.size:
                del kept[min(kept)]
        return added

    async def recent(self, pair: str, limit: int) -> list[Trade]:
        kept = self.trades.get(pair, {})
        return [kept[i] for i in sorted(kept, reverse=True)[:limit]]

    async def latest(self, pairs: Iterable[str]) -> dict[str, Trade | None]:
        found: dict[str, Trade | None] = {}
        for pair in pairs:
            kept = self.trades.get(pair)
            found[pair] = kept[max(kept)] if kept else None
        return found

    async def write_status(self, record: dict[str, Any]) -> None:
        self.status = record

    async def read_status(self) -> dict[str, Any] | None:
        return self.status


# KEYS[1]: the pair's sorted set. ARGV[1]: how many to keep; then id, JSON, id, JSON, ...
# Returns the 0-based positions of the trades that were added.
_ADD = """
local size = tonumber(ARGV[1])
local added = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('ZCOUNT', KEYS[1], id, id) == 0 then
    local count = redis.call('ZCARD', KEYS[1])
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    if count < size or tonumber(id) > tonumber(oldest[2]) then
      redis.call('ZADD', KEYS[1], id, ARGV[i + 1])
      added[#added + 1] = (i - 2) / 2
      if count >= size then
        redis.call('ZREMRANGEBYRANK', KEYS[1], 0, 0)
      end
    end
  end
end
return added
"""


class RedisTradeStore(Passive):
    """Replicas: every replica serves the same history; the leader writes it."""

    prefix = "ticker:"

    def __init__(self, redis: Redis, size: int) -> None:
        self.redis = redis
        self.size = size
        self._add = redis.register_script(_ADD)

    def key(self, pair: str) -> str:
        return f"{self.prefix}trades:{pair}"

    async def add(self, pair: str, trades: list[Trade]) -> list[Trade]:
        if not trades:
            return []
        args: list[Any] = [self.size]
        for trade in trades:
            args += [trade.id, orjson.dumps(trade.wire())]
        positions = await self._add(keys=[self.key(pair)], args=args)
        return [trades[int(position)] for position in positions]

    async def recent(self, pair: str, limit: int) -> list[Trade]:
        rows = await self.redis.zrange(self.key(pair), 0, limit - 1, desc=True)
        return [_trade(str(row)) for row in rows]

    async def latest(self, pairs: Iterable[str]) -> dict[str, Trade | None]:
        names = list(pairs)
        async with self.redis.pipeline(transaction=False) as pipe:
            for pair in names:
                pipe.zrange(self.key(pair), 0, 0, desc=True)
            answers = await pipe.execute()
        return {
            pair: _trade(rows[0]) if rows else None
            for pair, rows in zip(names, answers, strict=True)
        }

    async def write_status(self, record: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.prefix}status", orjson.dumps(record), px=STATUS_TTL_MS)
            if isinstance(record.get("heard_at"), int | float):
                # Kept until superseded, however long every replica is away: a leader that
                # comes after the status record expired still knows where the gap begins.
                pipe.set(f"{self.prefix}heard_at", str(record["heard_at"]))
            await pipe.execute()

    async def read_heard_at(self) -> float | None:
        """When a leader last heard upstream, however long ago; None if none ever did."""
        raw = await self.redis.get(f"{self.prefix}heard_at")
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None

    async def read_status(self) -> dict[str, Any] | None:
        raw = await self.redis.get(f"{self.prefix}status")
        if raw is None:
            return None
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RedisError("the ticker status in Redis is not JSON") from None
        return record if isinstance(record, dict) else None


def _trade(row: str | bytes) -> Trade:
    fields = orjson.loads(row)
    return Trade(**fields)
