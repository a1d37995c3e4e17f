"""The ticker page follows a pair's trades from a scripted Bitstamp, and says when the feed is down,
in words a person reads: never an upstream address or a close code (issue 16; those stay in
``GET /api/ticker/status``). axe-core is run on each state the page reaches.

What the tests look at in web/ticker/: ``#status[data-state]`` (our connection to the server),
``#feed[data-state]`` (the upstream feed: connected | reconnecting | stale | offline) with
``#feed-title`` ("Bitstamp feed: Connected", "Simulated feed: ..."), ``#feed-detail`` (why, in
words), ``#attempts`` (the failed attempts while it is down) and ``#reconnects`` (how often it
came back, once up), ``#pair`` (the picker, a <select> of pair names like btcusd),
``#last-price`` (the price of the trade with the highest id, its exact string with thousands
separators), ``#trades tr.trade`` (one row per trade, newest first, with ``data-id``,
``data-side`` = buy | sell and ``data-backfilled``; ``.col-price`` and ``.col-amount`` cells).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import (
    Browser,
    Page,
    WebSocketRoute,
    expect,
)

from tests.browser.conftest import Cluster, accessibility, new_context
from tests.harness import ServiceProcess
from tests.ticker.conftest import FAST, stop_tickers
from tests.ticker.fake_bitstamp import FakeBitstamp

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]

#: What a person must never be shown: the upstream's address, a WebSocket close code, an HTTP
#: status (issue 16). GET /api/ticker/status keeps them for operators.
INTERNALS = re.compile(r"wss?://|127\.0\.0\.1|\bcode \d|HTTP \d")


def start_embedded(fake: FakeBitstamp, tmp_path: Path) -> ServiceProcess:
    env = {
        "CERT_DIR": str(tmp_path / "certs"),
        "HOST": "127.0.0.1",
        "TICKER_UPSTREAM_URL": fake.url,
        "TICKER_REST_URL": fake.rest_url,
        # Quick retries, and an attempt held by the fake stays held (tests/ticker/conftest.py).
        **FAST,
    }
    return ServiceProcess("switchboard.embedded", tmp_path, env, name="embedded-ticker")


async def shows_no_internals(page: Page, *codes: str) -> None:
    """Nothing of INTERNALS in the page's text, nor any of ``codes`` (a test that knows its
    prices can look for a bare 1012 or 503)."""
    text = await page.locator("body").inner_text()
    found = INTERNALS.search(text)
    assert not found, f"the page shows {found.group()!r}: {text[:600]}"
    for code in codes:
        assert code not in text, f"the page shows {code!r}: {text[:600]}"


async def open_ticker(browser: Browser, process: ServiceProcess, query: str = "") -> Page:
    context = await new_context(browser, viewport={"width": 390, "height": 844})
    page = await context.new_page()
    await page.goto(f"https://localhost:{process.port}/ticker/{query}")
    return page


async def test_trades_of_the_picked_pair_show_with_exact_prices_and_sides(
    browser: Browser, fake: FakeBitstamp, tmp_path: Path
) -> None:
    process = start_embedded(fake, tmp_path)
    try:
        await process.ready("/api/ticker", scheme="https")
        await fake.until(fake.subscribed, what="the service subscribed to every pair")
        page = await open_ticker(browser, process, "?pair=btcusd")
        await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
        await expect(page.locator("#feed")).to_have_attribute("data-state", "connected")
        # Bitstamp (not the simulator): said so, with no badge; no address shown.
        await expect(page.locator("#feed-title")).to_have_text("Bitstamp feed: Connected")
        await expect(page.locator("#feed-detail")).to_have_text("Live trades, following 4 pairs.")
        await expect(page.locator("#simulated")).to_be_hidden()
        await expect(page.locator("#reconnects")).to_be_empty()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Ticker")
        await expect(page.locator("#pair")).to_have_value("btcusd")
        await expect(page.locator("#trades-empty")).to_contain_text("No BTC/USD trades yet")

        sell = await fake.trade("btcusd", price="91234.56", amount="0.00000001", side=1)
        buy = await fake.trade("btcusd", price="91240.5", amount="0.01500000", side=0)
        other = await fake.trade("ethusd", price="3101.07", amount="1.20000000", side=0)

        # The last price is the exact string of the newest trade, with a thousands separator.
        await expect(page.locator("#last-price")).to_have_text("91,240.5")
        await expect(page.locator("#base")).to_have_text("BTC")
        await expect(page.locator("#quote")).to_have_text("USD")
        rows = page.locator("#trades tr.trade")
        await expect(rows).to_have_count(2)
        # Newest first; the sides told apart by an attribute and by a word, not only a colour.
        await expect(rows.nth(0)).to_have_attribute("data-id", str(buy["id"]))
        await expect(rows.nth(0)).to_have_attribute("data-side", "buy")
        await expect(rows.nth(0).locator(".col-side")).to_have_text(re.compile(r"^▲\s*Buy$"))
        await expect(rows.nth(0).locator(".col-price")).to_have_text("91,240.5")
        await expect(rows.nth(0).locator(".col-amount")).to_have_text("0.01500000")
        await expect(rows.nth(1)).to_have_attribute("data-id", str(sell["id"]))
        await expect(rows.nth(1)).to_have_attribute("data-side", "sell")
        await expect(rows.nth(1).locator(".col-side")).to_have_text(re.compile(r"^▼\s*Sell$"))
        await expect(rows.nth(1).locator(".col-price")).to_have_text("91,234.56")
        await expect(rows.nth(1).locator(".col-amount")).to_have_text("0.00000001")
        await expect(rows.nth(1)).to_have_attribute("data-backfilled", "false")
        # A trade that comes late (a lower id) goes where its id says; the last price stays.
        late = await fake.trade(
            "btcusd", price="91200", amount="0.25000000", side=1, trade_id=sell["id"] - 1
        )
        await expect(rows).to_have_count(3)
        await expect(rows.nth(2)).to_have_attribute("data-id", str(late["id"]))
        await expect(page.locator("#last-price")).to_have_text("91,240.5")
        # The ethusd trade is not btcusd's.
        await expect(page.locator(f'#trades tr[data-id="{other["id"]}"]')).to_have_count(0)
        await expect(page.locator("#last-age")).to_contain_text("last trade")
        await page.screenshot(path=str(tmp_path / "ticker-btcusd.png"))
        # A buy and a sell in the list, one of them just arrived (its row lit up).
        await accessibility(page, "ticker, phone, connected, buys and sells")
        await page.emulate_media(color_scheme="dark")
        await accessibility(page, "ticker, phone, connected, buys and sells, dark")
        await page.emulate_media(color_scheme="light")
        await shows_no_internals(page)
        picker = await page.locator("#pair").bounding_box()
        assert picker and picker["height"] >= 44, f"the pair picker is a touch target: {picker}"

        # Another pair: its own trades only, and the pick is kept in the URL.
        await page.select_option("#pair", "ethusd")
        assert await page.evaluate("localStorage.getItem('switchboard.ticker.pair')") == "ethusd"
        await expect(page.locator("#last-price")).to_have_text("3,101.07")
        await expect(rows).to_have_count(1)
        await expect(rows.nth(0)).to_have_attribute("data-id", str(other["id"]))
        await expect(page.locator("#base")).to_have_text("ETH")
        assert page.url.endswith("?pair=ethusd")

        # Live btcusd trades no longer reach us; ethusd ones do. Trades come in the order they
        # were sent: once the ethusd one shows, the btcusd one sent before it would have too.
        left = await fake.trade("btcusd", price="99999.99", side=0)
        newer = await fake.trade("ethusd", price="3100", amount="0.50000000", side=1)
        await expect(rows.nth(0)).to_have_attribute("data-id", str(newer["id"]))
        await expect(rows).to_have_count(2)
        await expect(page.locator(f'#trades tr[data-id="{left["id"]}"]')).to_have_count(0)
        await expect(rows.nth(0)).to_have_attribute("data-side", "sell")
        await expect(page.locator("#last-price")).to_have_text("3,100")
        await page.screenshot(path=str(tmp_path / "ticker-ethusd.png"))
    finally:
        await stop_tickers(process)


async def test_a_dropped_connection_loses_and_doubles_no_trade(
    browser: Browser, fake: FakeBitstamp, tmp_path: Path
) -> None:
    process = start_embedded(fake, tmp_path)
    # The page's WebSockets to the ticker go through us, so that we can cut one, and hold the
    # next until a trade has happened while the page was away.
    gate = asyncio.Event()
    gate.set()
    routes: list[WebSocketRoute] = []

    async def through_us(route: WebSocketRoute) -> None:
        await gate.wait()
        route.connect_to_server()
        routes.append(route)

    try:
        await process.ready("/api/ticker", scheme="https")
        await fake.until(fake.subscribed, what="the service subscribed to every pair")
        before = [await fake.trade("btcusd", price=f"9100{i}.5", side=i % 2) for i in range(3)]
        context = await new_context(browser)
        page = await context.new_page()
        await page.route_web_socket(re.compile(r"/api/ticker/socket\.io/"), through_us)
        await page.goto(f"https://localhost:{process.port}/ticker/?pair=btcusd")
        await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
        rows = page.locator("#trades tr.trade")
        await expect(rows).to_have_count(3)

        await accessibility(page, "ticker, desktop, connected")

        gate.clear()
        await routes[-1].close()
        await expect(page.locator("#status")).to_have_attribute("data-state", "reconnecting")
        # What the page shows is what it last knew, greyed, as readable as before.
        await accessibility(page, "ticker, desktop, reconnecting to the server")
        missed = await fake.trade("btcusd", price="92000.01", amount="0.00100000", side=0)
        gate.set()

        await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
        await expect(rows).to_have_count(4)
        ids = [await row.get_attribute("data-id") for row in await rows.all()]
        assert ids == [str(t["id"]) for t in [missed, *reversed(before)]]
        await expect(page.locator("#last-price")).to_have_text("92,000.01")

        # Subscribed again after the reconnect: live trades come as before.
        after = await fake.trade("btcusd", price="92001", side=1)
        await expect(rows.first).to_have_attribute("data-id", str(after["id"]))
        await expect(rows).to_have_count(5)
    finally:
        gate.set()
        await stop_tickers(process)


async def test_a_cut_feed_is_told_in_words_its_retries_counted_and_missed_trades_backfilled(
    browser: Browser, fake: FakeBitstamp, tmp_path: Path
) -> None:
    process = start_embedded(fake, tmp_path)
    try:
        await process.ready("/api/ticker", scheme="https")
        first = (await fake.until(fake.subscribed, what="the service subscribed"))[0]
        live = await fake.trade("btcusd", price="91234.56", side=0)
        page = await open_ticker(browser, process, "?pair=btcusd")
        rows = page.locator("#trades tr.trade")
        await expect(rows).to_have_count(1)
        feed, detail = page.locator("#feed"), page.locator("#feed-detail")

        # Bitstamp restarts: it closes the connection (code 1012), and holds the next one's
        # subscriptions, so the feed stays reconnecting while we look. A trade happens on the
        # exchange meanwhile.
        fake.hold = True
        await first.close(1012)
        missed = fake.make_trade("btcusd", price="91250", amount="0.30000000", side=1)
        await expect(feed).to_have_attribute("data-state", "reconnecting")
        await expect(detail).to_have_text("The exchange closed the connection; reconnecting…")
        await shows_no_internals(page, "1012")
        await accessibility(page, "ticker, phone, feed reconnecting")
        # The details are for operators, at GET /api/ticker/status.
        async with httpx.AsyncClient(verify=False) as http:
            status = (await http.get(f"https://localhost:{process.port}/api/ticker/status")).json()
        assert "code 1012" in status["detail"] and status["upstream"] == fake.url, status

        # It keeps failing: the held attempt ends, and the exchange turns the next ones away.
        # The page counts them, and says the feed is offline after three.
        [held] = await fake.until(
            lambda: [c for c in fake.open() if c is not first and c.held], what="an attempt"
        )
        fake.hold = False
        fake.refuse = 10**6
        await held.close(1012)
        await expect(feed).to_have_attribute("data-state", "offline")
        await expect(page.locator("#attempts")).to_have_text(re.compile(r"^Tried \d+ times$"))
        await expect(detail).to_have_text(
            "The exchange is turning connections away (it may be down for maintenance)."
        )
        await shows_no_internals(page, "1012", "503")
        await accessibility(page, "ticker, phone, feed offline")
        tried = int(re.sub(r"\D", "", await page.locator("#attempts").inner_text()))
        await expect(page.locator("#attempts")).not_to_have_text(f"Tried {tried} times")
        assert tried >= 3

        # Back: the count of retries goes, the reconnection is counted, and why.
        fake.refuse = 0
        await fake.successor(first)
        await expect(feed).to_have_attribute("data-state", "connected")
        await expect(page.locator("#attempts")).to_be_empty()
        await expect(page.locator("#reconnects")).to_have_text(
            "Reconnected once (last: the exchange closed the connection)"
        )

        row = page.locator(f'#trades tr[data-id="{missed["id"]}"]')
        await expect(row).to_have_attribute("data-backfilled", "true")
        await expect(row.locator(".tag")).to_have_text("backfilled")
        await expect(row).to_have_attribute("data-side", "sell")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(1)).to_have_attribute("data-id", str(live["id"]))
        await expect(rows.nth(1)).to_have_attribute("data-backfilled", "false")
        await expect(page.locator("#last-price")).to_have_text("91,250")
        await page.screenshot(path=str(tmp_path / "ticker-backfilled.png"))
    finally:
        await stop_tickers(process)


async def test_the_page_says_why_the_feed_is_down(
    browser: Browser, fake: FakeBitstamp, tmp_path: Path
) -> None:
    fake.refuse = 10**6  # every handshake: HTTP 503
    process = start_embedded(fake, tmp_path)
    try:
        # Never ready (upstream refuses), but alive and serving.
        await process.ready("/api/ticker", path="healthz", scheme="https")
        page = await open_ticker(browser, process, "?pair=BTC/USD")
        await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
        feed = page.locator("#feed")
        await expect(feed).to_have_attribute("data-state", re.compile(r"^(reconnecting|offline)$"))
        # Why, in words (the server said HTTP 503 to operators), and its attempts counted.
        await expect(page.locator("#feed-detail")).to_contain_text(
            "The exchange is turning connections away"
        )
        await expect(page.locator("#feed-detail")).to_be_visible()
        await expect(page.locator("#attempts")).to_have_text(re.compile(r"^Tried "))
        await shows_no_internals(page, "503")
        await expect(page.locator("#pair")).to_have_value("btcusd")
        await expect(page.locator("#trades tr.trade")).to_have_count(0)
        await page.screenshot(path=str(tmp_path / "ticker-down.png"))
    finally:
        await stop_tickers(process)


async def test_through_the_gateway_the_page_follows_the_simulator(
    browser: Browser,
    cluster: Cluster,
) -> None:
    """`make cluster` with SIMULATOR_PORT: two ticker replicas behind the gateway, one of
    them holding the simulator's feed; the page says the feed is simulated, in its banner."""
    context = await new_context(browser)
    page = await context.new_page()
    await page.goto(f"{cluster.url}/ticker/?pair=btcusd")
    await expect(page.locator("#feed")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#feed-title")).to_have_text("Simulated feed: Connected")
    await expect(page.locator("#feed-detail")).to_have_text(
        "Trades made up by a local simulator, not Bitstamp's: following 4 pairs."
    )
    await expect(page.locator("#simulated")).to_be_visible()
    await expect(page.locator("#trades tr.trade").first).to_be_visible()
    price = await page.locator("#last-price").text_content()
    assert re.fullmatch(r"[\d,]+(\.\d+)?", (price or "").strip()), price
    await shows_no_internals(page)
    await accessibility(page, "ticker, desktop, simulated feed (gateway)")
