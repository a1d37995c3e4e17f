"""The ticker's settings, its backoff, its bad-input answers, and the offline simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
from pathlib import Path

import httpx
import pytest
import websockets
from prometheus_client import CollectorRegistry
from ticker_service.settings import TickerSettings
from ticker_service.simulator import Exchange
from ticker_service.status import view
from ticker_service.trades import Trade, from_stream
from ticker_service.upstream import Feed, FeedMetrics, backoff_delay

from tests.harness import (
    PATIENCE,
    Client,
    Process,
    free_port,
    settings_refusal,
    wait_for_port,
)
from tests.ticker.conftest import PREFIX, TICKER_PATH, launch, start_ticker, stop_tickers
from tests.ticker.fake_bitstamp import FakeBitstamp


def test_the_defaults_are_bitstamp_and_the_issues_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in os.environ:
        if variable.startswith("TICKER_"):
            monkeypatch.delenv(variable)
    settings = TickerSettings()
    assert settings.upstream_url == "wss://ws.bitstamp.net"
    assert settings.rest_url == "https://www.bitstamp.net"
    assert settings.pairs == ("btcusd", "btceur", "ethusd", "etheur")
    assert (settings.heartbeat_interval, settings.silence_timeout) == (10, 30)
    assert (settings.backoff_base, settings.backoff_cap) == (1, 30)
    # Subscribe and unsubscribe events: 5 a second, 20 at once.
    assert (settings.rate_per_second, settings.rate_burst) == (5, 20)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"TICKER_UPSTREAM_URL": "https://ws.bitstamp.net"}, "TICKER_UPSTREAM_URL: Value error"),
        ({"TICKER_PAIRS": "btcusd,BTC USD"}, "'btc usd' is not a Bitstamp pair"),
        ({"TICKER_PAIRS": ","}, "TICKER_PAIRS: Value error, name at least one pair"),
        (
            {"TICKER_HEARTBEAT_INTERVAL": "30", "TICKER_SILENCE_TIMEOUT": "20"},
            "TICKER_SILENCE_TIMEOUT must be longer than TICKER_HEARTBEAT_INTERVAL",
        ),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], said: str
) -> None:
    assert said in settings_refusal(monkeypatch, TickerSettings, env)


def test_backoff_is_full_jitter_capped_and_not_in_lockstep() -> None:
    rng = random.Random(4)
    for failures in range(1, 12):
        ceiling = min(30.0, 1.0 * 2 ** (failures - 1))
        delays = [backoff_delay(failures, 1.0, 30.0, rng) for _ in range(2000)]
        assert all(0 <= d <= ceiling for d in delays)
        # Uniform over the whole range: about half the ceiling on average, reaching near it.
        assert 0.45 * ceiling < sum(delays) / len(delays) < 0.55 * ceiling
        assert max(delays) > 0.95 * ceiling
    # Ten replicas failing together retry at ten different moments.
    first_retries = {backoff_delay(3, 1.0, 30.0, random.Random(seed)) for seed in range(10)}
    assert len(first_retries) == 10


@pytest.mark.asyncio
async def test_the_feed_waits_the_backoff_it_draws(
    fake: FakeBitstamp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed in this process, with a seeded generator: the waits it must draw after each
    refused attempt are known, so each gap between two attempts is checked against its own
    wait. Not shorter (a timer never fires early): the count of failures grows and sets the
    ceiling, as a ceiling that did not grow would make the later waits far shorter. Not much
    longer: a busy machine adds a timer's lateness and a refused handshake, milliseconds, so a
    second is far above it, while without the cap the last two waits would be 4 and 8 times
    theirs, seconds more."""
    for variable in os.environ:
        if variable.startswith("TICKER_"):
            monkeypatch.delenv(variable)
    fake.refuse = 10**6
    base, cap, seed = 0.05, 0.8, 0
    settings = TickerSettings(
        upstream_url=fake.url,
        rest_url=fake.rest_url,
        pairs=fake.pairs,
        backoff_base=base,
        backoff_cap=cap,
        connect_timeout=PATIENCE,
    )
    draws = random.Random(seed)
    waits = [backoff_delay(failures, base, cap, draws) for failures in range(1, 9)]

    async def deliver(_pair: str, trades: list[Trade]) -> list[Trade]:
        return trades

    feed = Feed(settings, deliver, FeedMetrics(CollectorRegistry()), rng=random.Random(seed))
    running = asyncio.get_running_loop().create_task(feed.run())
    try:
        await fake.until(lambda: len(fake.attempts) > len(waits), what="9 attempts")
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    gaps = [b - a for a, b in zip(fake.attempts, fake.attempts[1:], strict=False)]
    for failures, (gap, wait) in enumerate(zip(gaps, waits, strict=False), start=1):
        assert wait - 0.001 <= gap < wait + 1.0, (failures, gaps, waits)
    assert feed.state.state == "offline" and "HTTP 503" in feed.state.detail
    # The refused attempts counted (the page says "Tried 8 times"), none a reconnection.
    assert feed.state.cause == "refused" and feed.state.reconnects == 0
    assert feed.state.attempts >= len(waits)


def test_the_status_names_why_for_pages_in_a_code() -> None:
    """The status's ``cause`` (docs/protocol.md): what a page words for people, while
    ``detail`` keeps the operator's words. The status itself decides two of them."""
    now = 1_000_000.0
    common = {"heartbeat_interval": 10.0, "upstream": "ws://10.0.0.5:9100", "now": now}
    nobody_yet = view(None, {}, **common)
    assert (nobody_yet["state"], nobody_yet["cause"], nobody_yet["attempts"]) == (
        "reconnecting",
        "starting",
        0,
    )
    failing = {"state": "offline", "detail": "x", "cause": "dns", "attempts": 4, "updated_at": now}
    assert (view(failing, {}, **common)["cause"], view(failing, {}, **common)["attempts"]) == (
        "dns",
        4,
    )
    orphaned = {**failing, "updated_at": now - 60}
    assert (view(orphaned, {}, **common)["state"], view(orphaned, {}, **common)["cause"]) == (
        "stale",
        "no_leader",
    )
    unanswered = {"state": "connected", "cause": None, "updated_at": now, "heard_at": now - 16}
    assert view(unanswered, {}, **common)["cause"] == "no_answer"


@pytest.mark.asyncio
async def test_bad_input_gets_clear_errors(
    tmp_path: Path, fake: FakeBitstamp, clients: list[Client]
) -> None:
    rate = {"TICKER_RATE_PER_SECOND": "0.001", "TICKER_RATE_BURST": "20"}
    ticker = await start_ticker(tmp_path, fake, rate)
    try:
        client = Client(ticker.url, TICKER_PATH)
        clients.append(client)
        await client.connect()
        unknown = await client.call("subscribe", "dogeusd")
        assert unknown["error"] == "unknown_pair" and unknown["pairs"] == list(fake.pairs)
        assert "btcusd" in unknown["message"]
        assert (await client.call("subscribe", 42))["error"] == "invalid_type"
        assert (await client.call("subscribe"))["error"] == "bad_arguments"
        assert (await client.call("unsubscribe", "btcusd", "x"))["error"] == "bad_arguments"
        assert (await client.call("trades", "btcusd"))["error"] == "unknown_event"
        (error,) = await client.wait("ticker_error", lambda e: e["event"] == "subscribe")
        assert error["error"] == "unknown_pair"
        # 20 at once, and one more every 1000 s (more than any test lasts): of the 25 below,
        # those past the burst (less the 5 events above: every event costs, the unknown one
        # too) are refused, however long they take.
        answers = [await client.call("subscribe", "btcusd") for _ in range(25)]
        assert [a["ok"] for a in answers] == [True] * 15 + [False] * 10, answers
        limited = answers[15:]
        assert {a["error"] for a in limited} == {"rate_limited"}
        assert all(a["retry_after"] > 0 for a in limited)
        assert client.sio.connected

        async with httpx.AsyncClient(base_url=ticker.url) as http:
            missing = await http.get(f"{PREFIX}/trades/dogeusd")
            assert missing.status_code == 404 and missing.json()["error"] == "unknown_pair"
            for limit in ("0", "501", "many"):
                bad = await http.get(f"{PREFIX}/trades/btcusd", params={"limit": limit})
                assert bad.status_code == 400, limit
                assert bad.json()["error"] == "bad_request" and "limit" in bad.json()["message"]
    finally:
        await stop_tickers(ticker)


@pytest.mark.asyncio
async def test_the_simulator_speaks_bitstamp_and_the_page_is_told_it_is_simulated(
    tmp_path: Path, clients: list[Client]
) -> None:
    port = free_port()
    simulator = Process(
        "simulator",
        [sys.executable, "-m", "ticker_service.simulator", "--port", str(port), "--rate", "5"],
        tmp_path,
        dict(os.environ),
    )
    try:
        wait_for_port(port, process=simulator)
        async with websockets.connect(f"ws://127.0.0.1:{port}") as upstream:
            for sent, expected in [
                ('{"event": "bts:heartbeat"}', {"event": "bts:heartbeat", "channel": ""}),
                ("{oops", {"event": "bts:error"}),
                ('{"event": "bts:subscribe", "data": {"channel": "nope"}}', {"event": "bts:error"}),
            ]:
                await upstream.send(sent)
                reply = json.loads(await asyncio.wait_for(upstream.recv(), PATIENCE))
                assert expected.items() <= reply.items(), reply

        ticker = launch(
            tmp_path,
            None,
            {
                "TICKER_UPSTREAM_URL": f"ws://127.0.0.1:{port}",
                "TICKER_REST_URL": f"http://127.0.0.1:{port}",
            },
        )
        try:
            await ticker.ready(PREFIX)
            client = Client(ticker.url, TICKER_PATH)
            clients.append(client)
            await client.connect()
            (status,) = await client.wait("status")
            assert status["simulated"] is True and status["state"] == "connected"
            await client.call("subscribe", "btcusd")
            (trade,) = await client.wait("trade")
            assert trade["pair"] == "btcusd" and trade["side"] in ("buy", "sell")
            assert float(trade["price"]) > 1000 and len(trade["amount"].split(".")[1]) == 8
        finally:
            ticker.stop()
    finally:
        simulator.stop()


def test_the_simulators_trades_are_readable_to_the_ticker() -> None:
    """Every trade the simulator makes passes the ticker's own reading of Bitstamp's fields,
    the smallest amounts too (one once came out as "4.5E-7")."""

    class SmallAmounts(random.Random):
        def expovariate(self, lambd: float) -> float:
            return 4.5e-7

    for rng in (random.Random(7), SmallAmounts(7)):
        exchange = Exchange(["btcusd", "ethbtc"], 1.0, rng)
        for _ in range(2000):
            pair = exchange.rng.choice(exchange.pairs)
            from_stream(pair, exchange.trade(pair))
