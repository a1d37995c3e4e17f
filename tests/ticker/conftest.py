"""The ticker against a scripted Bitstamp (fake_bitstamp.py) running in the test's own loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.harness import PATIENCE, Client, ServiceProcess
from tests.ticker.fake_bitstamp import FakeBitstamp

TICKER_PATH = "/api/ticker/socket.io"
PREFIX = "/api/ticker"
#: Timers for stories that are not about them (the defaults have stories of their own): quick
#: retries, so that a reconnection takes no time, and no limit a busy machine could reach by
#: being slow: a connection silent for 10 s (ten heartbeats missed) or an attempt still
#: subscribing after 60 s (a story may hold a subscription as long as it needs) would be a bug,
#: not a slow machine.
FAST = {
    "TICKER_HEARTBEAT_INTERVAL": "1",
    "TICKER_SILENCE_TIMEOUT": "10",
    "TICKER_BACKOFF_BASE": "0.1",
    "TICKER_BACKOFF_CAP": "0.5",
    "TICKER_CONNECT_TIMEOUT": str(int(PATIENCE)),
}


def launch(
    log_dir: Path,
    fake: FakeBitstamp | None,
    env: dict[str, str] | None = None,
    name: str = "ticker",
) -> ServiceProcess:
    """``python -m ticker_service`` pointed at the fake (or at ``env``'s upstream); not yet
    waited for."""
    settings = {"TICKER_UPSTREAM_URL": fake.url, "TICKER_REST_URL": fake.rest_url} if fake else {}
    settings.update(env or {})
    return ServiceProcess("ticker_service", log_dir, settings, name=name)


async def start_ticker(
    log_dir: Path, fake: FakeBitstamp, env: dict[str, str] | None = None, name: str = "ticker"
) -> ServiceProcess:
    process = launch(log_dir, fake, {**FAST, **(env or {})}, name)
    try:
        await process.ready(PREFIX)
    except BaseException:
        process.stop()
        raise
    return process


async def stop_tickers(*tickers: ServiceProcess) -> None:
    """Stop ``tickers`` (together), with this event loop running meanwhile: the fake exchange
    lives in it, and a ticker that stops closes its upstream connection and waits for the
    close to be answered. A plain ``stop()`` would block the loop, and each ticker would wait
    out its close timeout (2 s) before exiting."""
    await asyncio.gather(*(asyncio.to_thread(ticker.stop) for ticker in tickers))


async def watch(opened: list[Client], url: str, pair: str = "btcusd") -> tuple[Client, dict]:
    """A browser's socket subscribed to ``pair``; returns it and the subscribe ack."""
    client = Client(url, TICKER_PATH)
    opened.append(client)
    await client.connect()
    ack = await client.call("subscribe", pair)
    assert ack["ok"], ack
    return client, ack


def trade_ids(client: Client, pair: str = "btcusd") -> list[int]:
    return [t["id"] for (t,) in client.received("trade") if t["pair"] == pair]
