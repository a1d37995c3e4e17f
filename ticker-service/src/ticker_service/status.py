"""The feed's status as every replica tells it: to its browsers (``status``), to ``/readyz``
and to ``GET /api/ticker/status``.

The leader writes its :class:`~ticker_service.upstream.FeedState` to the store every second;
every replica (the leader too) reads it back every second, so all replicas tell the same story,
and a status nobody refreshed says that no replica holds the upstream connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError
from switchboard.components import cancel
from switchboard.fanout import deliver_locally
from switchboard.service import Service

from ticker_service.trades import Trade, TradeStore
from ticker_service.upstream import HEARTBEAT_GRACE, FeedState

log = logging.getLogger(__name__)

#: Seconds between two looks at the status.
INTERVAL = 1.0
#: A status the leader has not refreshed for this long was left by a leader that is gone.
ORPHANED_AFTER = 5.0
#: Browsers get the status at least this often, to refresh the ages of the last trades.
REFRESH = 10.0


def view(
    record: dict[str, Any] | None,
    latest: dict[str, Trade | None],
    *,
    heartbeat_interval: float,
    upstream: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The status event's payload (docs/protocol.md, ticker ``status``). Times are epoch ms."""
    now = time.time() if now is None else now
    record = dict(record or {})
    state = str(record.get("state") or "reconnecting")
    detail = str(record.get("detail") or "waiting for a replica to connect to upstream")
    cause = record.get("cause") if record else "starting"
    updated = record.get("updated_at")
    heard = record.get("heard_at")
    if isinstance(updated, int | float) and now - updated > ORPHANED_AFTER:
        state, detail, cause = "stale", "no replica holds the upstream connection", "no_leader"
    elif (
        state == "connected"
        and isinstance(heard, int | float)
        and now - heard > heartbeat_interval + HEARTBEAT_GRACE
    ):
        state, detail, cause = "stale", "upstream has not answered our heartbeat", "no_answer"
    return {
        "state": state,
        "detail": detail,
        "cause": cause,
        "upstream": record.get("upstream") or upstream,
        "simulated": bool(record.get("simulated")),
        "reconnects": int(record.get("reconnects") or 0),
        "attempts": int(record.get("attempts") or 0),
        "last_reason": record.get("last_reason"),
        "last_cause": record.get("last_cause"),
        "since": _ms(record.get("since")),
        "heard_at": _ms(heard),
        "retry_at": _ms(record.get("retry_at")),
        "gap": _gap(record.get("gap")),
        "pairs": {
            pair: {
                "last_trade_at": trade.ts if trade else None,
                "age": round(max(0.0, now - trade.ts / 1000), 1) if trade else None,
            }
            for pair, trade in latest.items()
        },
        "now": _ms(now),
    }


def _ms(seconds: Any) -> int | None:
    return int(seconds * 1000) if isinstance(seconds, int | float) else None


def _headline(status: dict[str, Any]) -> tuple[Any, ...]:
    """What changes a status enough to tell browsers at once."""
    return tuple(
        status[k]
        for k in (
            "state",
            "detail",
            "cause",
            "simulated",
            "reconnects",
            "attempts",
            "last_reason",
            "retry_at",
        )
    )


class StatusBoard:
    """A service component: keeps :attr:`current` and tells this replica's browsers."""

    def __init__(
        self,
        service: Service,
        store: TradeStore,
        pairs: Iterable[str],
        *,
        heartbeat_interval: float,
        upstream: str,
    ) -> None:
        self.service = service
        self.store = store
        self.pairs = list(pairs)
        self.heartbeat_interval = heartbeat_interval
        self.upstream = upstream
        #: The state of this replica's feed while it leads; None otherwise.
        self.feed: FeedState | None = None
        self.current = view(None, {}, heartbeat_interval=heartbeat_interval, upstream=upstream)
        self._sent: tuple[Any, ...] = ()
        self._sent_at = 0.0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: str | None = None

    async def start(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ticker:status")

    async def stop(self) -> None:
        await cancel(self._task)

    async def check(self) -> str | None:
        if self._error:
            return self._error
        if self.current["state"] != "connected":
            return f"upstream {self.current['state']}: {self.current['detail']}"
        return None

    def changed(self, feed: FeedState | None) -> None:
        """This replica's feed changed state, or stopped (None): look now rather than at the
        next second."""
        self.feed = feed
        self._changed.set()

    def leader_record(self) -> dict[str, Any] | None:
        """The record to write, when this replica leads."""
        return self.feed.record() if self.feed else None

    async def look(self) -> dict[str, Any]:
        """The status now (for a request; the loop below keeps :attr:`current`)."""
        record = self.leader_record()
        if record is None:
            record = await self.store.read_status()
        latest = await self.store.latest(self.pairs)
        return view(
            record, latest, heartbeat_interval=self.heartbeat_interval, upstream=self.upstream
        )

    async def refresh(self) -> dict[str, Any]:
        record = self.leader_record()
        if record is not None:
            await self.store.write_status(record)
        self.current = await self.look()
        return self.current

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
            # comes as the event is set (the feed stopping as the service stops), and the
            # service would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INTERVAL):
                    await self._changed.wait()
            self._changed.clear()
            try:
                status = await self.refresh()
                self._error = None
            except (RedisError, OSError) as exc:
                self.service.metrics.redis_errors.inc()
                self._error = f"ticker status: Redis failed: {exc or type(exc).__name__}"
                continue
            headline = _headline(status)
            now = time.monotonic()
            if headline != self._sent or now - self._sent_at >= REFRESH:
                self._sent, self._sent_at = headline, now
                # Each replica tells its own browsers: every replica reads the same record.
                self.service.metrics.sent("status")
                await deliver_locally(self.service.sio.manager, "status", [status], "/", None, None)


def _gap(gap: Any) -> dict[str, Any] | None:
    if not isinstance(gap, dict):
        return None
    return {
        "from": _ms(gap.get("from")),
        "to": _ms(gap.get("to")),
        "filled": bool(gap.get("filled")),
    }
