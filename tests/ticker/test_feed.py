"""One ticker process and a scripted Bitstamp: trades reach the browsers that asked for their
pair, exactly, once, whatever the upstream connection goes through."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from ticker_service.upstream import BACKFILL_DELAY

from tests.harness import PATIENCE, Client, until
from tests.ticker.conftest import PREFIX, launch, start_ticker, stop_tickers, trade_ids, watch
from tests.ticker.fake_bitstamp import FakeBitstamp

pytestmark = pytest.mark.asyncio

#: What a busy machine may add to a wait it is timing (a timer's lateness, a refused handshake):
#: milliseconds, so a second is far above it.
LATENESS = 1.0


async def metric(url: str, name: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}{PREFIX}/metrics")).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


async def status_of(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        answer: dict[str, Any] = (await http.get(f"{url}{PREFIX}/status")).json()
        return answer


async def has_ids(
    client: Client, ids: list[int], pair: str = "btcusd", timeout: float = PATIENCE
) -> None:
    await client.wait("trade", lambda _t: set(ids) <= set(trade_ids(client, pair)), timeout=timeout)


async def test_a_browser_gets_its_pairs_trades_with_bitstamps_exact_strings(
    tmp_path: Path, fake: FakeBitstamp, clients: list[Client]
) -> None:
    earlier = fake.make_trade("btcusd", price="90999", amount="0.50000000", side=1)
    ticker = await start_ticker(tmp_path, fake)
    try:
        [upstream] = await fake.until(fake.subscribed, what="subscribed")
        assert set(upstream.subscribed) == {f"live_trades_{pair}" for pair in fake.pairs}
        # The first start fetches the last minute, so the history is not empty.
        await fake.until(lambda: len(fake.rest_requests) == 4, what="backfilled")
        assert {span for _, span in fake.rest_requests} == {"minute"}
        ann, ack = await watch(clients, ticker.url, "BTC/USD")
        assert ack["pair"] == "btcusd"
        assert ack["trades"] == [
            {
                "pair": "btcusd",
                "id": earlier["id"],
                "price": "90999",
                "amount": "0.50000000",
                "side": "sell",
                "ts": int(earlier["timestamp"]) * 1000,
                "backfilled": True,
            }
        ]
        bob, _ = await watch(clients, ticker.url, "ethusd")

        # Bitstamp's floats carry binary artefacts; the strings are the truth.
        buy = fake.make_trade("btcusd", price="91234.56", amount="0.00158473", side=0)
        buy["price"], buy["amount"] = 91234.56000000001, 0.0015847299999999999
        await fake.publish(buy)
        (got,) = await ann.wait("trade")
        assert got == {
            "pair": "btcusd",
            "id": buy["id"],
            "price": "91234.56",
            "amount": "0.00158473",
            "side": "buy",
            "ts": int(buy["microtimestamp"]) // 1000,
            "backfilled": False,
        }
        eth = await fake.trade("ethusd", price="3100.5", side=1)
        (got,) = await bob.wait("trade")
        assert (got["id"], got["side"], got["price"]) == (eth["id"], "sell", "3100.5")
        assert trade_ids(ann) == [buy["id"]] and trade_ids(ann, "ethusd") == []
        assert trade_ids(bob, "btcusd") == []

        assert await ann.call("unsubscribe", "btcusd") == {"ok": True, "pair": "btcusd"}
        # A pair only Ann follows, for a trade that tells her when she has had all before it.
        await ann.call("subscribe", "btceur")
        await bob.call("subscribe", "btcusd")
        later = await fake.trade("btcusd")
        await bob.wait("trade", lambda t: t["id"] == later["id"])
        # Trades reach a browser in the order Bitstamp sent them: once Ann has this one, she
        # would have had the ethusd trade and the btcusd one before it, had they been sent her.
        marker = await fake.trade("btceur")
        await ann.wait("trade", lambda t: t["id"] == marker["id"])
        assert trade_ids(ann) == [buy["id"]] and trade_ids(ann, "ethusd") == []

        async with httpx.AsyncClient(base_url=ticker.url) as http:
            listed = (await http.get(f"{PREFIX}/trades/btcusd", params={"limit": 2})).json()
            assert [t["id"] for t in listed["trades"]] == [later["id"], buy["id"]]
            pairs = (await http.get(f"{PREFIX}/pairs")).json()
            assert [p["pair"] for p in pairs["pairs"]] == list(fake.pairs)
            assert pairs["pairs"][0]["last"]["id"] == later["id"]
            assert (pairs["pairs"][0]["base"], pairs["pairs"][0]["quote"]) == ("btc", "usd")
        status = await status_of(ticker.url)
        assert status["state"] == "connected" and status["simulated"] is False
        assert (status["cause"], status["attempts"], status["last_cause"]) == (None, 0, None)
        assert status["pairs"]["btcusd"]["last_trade_at"] == int(later["microtimestamp"]) // 1000
    finally:
        await stop_tickers(ticker)


async def test_heartbeats_keep_a_quiet_connection(tmp_path: Path, fake: FakeBitstamp) -> None:
    interval, silence = 0.5, 3.0
    timers = {"TICKER_HEARTBEAT_INTERVAL": str(interval), "TICKER_SILENCE_TIMEOUT": str(silence)}
    ticker = await start_ticker(tmp_path, fake, timers)
    try:
        [upstream] = await fake.until(fake.subscribed)
        # Not a trade: only the replies to its heartbeats keep the connection alive. Eight come
        # one interval apart at the least, so it has lived past the silence limit by then.
        await fake.until(lambda: upstream.heartbeats() >= 8, what="8 heartbeats")
        lived = time.monotonic() - upstream.opened_at
        assert lived > 8 * interval - 0.01, "no more than one heartbeat an interval"
        assert lived > silence
        assert fake.connections == [upstream] and upstream.open
        assert (await status_of(ticker.url))["state"] == "connected"
    finally:
        await stop_tickers(ticker)


async def test_request_reconnect_is_make_before_break_with_no_gap_and_no_duplicate(
    tmp_path: Path, fake: FakeBitstamp, clients: list[Client]
) -> None:
    ticker = await start_ticker(tmp_path, fake)
    try:
        ann, _ = await watch(clients, ticker.url)
        [first] = await fake.until(fake.subscribed)
        await fake.until(lambda: len(fake.rest_requests) == 4)
        before = [await fake.trade() for _ in range(3)]

        fake.hold = True
        # Sources differ on the shape of data ({} or ""): either is accepted.
        await first.send({"event": "bts:request_reconnect", "channel": "", "data": ""})
        second = (
            await fake.until(
                lambda: [c for c in fake.open() if c is not first and len(c.held) == 4],
                what="a second connection asking to subscribe",
            )
        )[0]
        await fake.release(second, "live_trades_btcusd")
        # Both connections deliver the same trades while they overlap.
        overlap = [fake.make_trade() for _ in range(3)]
        for data in overlap:
            await fake.publish(data, to=[first, second])
        # The first one delivers them (the second's copies wait until it is subscribed to every
        # pair) and stays. Nothing would tell us of a close to come: a slow machine can only
        # make the short wait pass.
        await has_ids(ann, [t["id"] for t in before + overlap])
        await asyncio.sleep(0.3)
        assert first.open, "the first connection must stay until the second is subscribed"
        fake.hold = False
        await fake.release(second)
        await fake.until(lambda: not first.open, what="the first connection closed")
        assert first.closed_by == "client"
        assert first.closed_at is not None and first.closed_at >= max(second.subscribed.values())
        after = [await fake.trade() for _ in range(3)]

        expected = [t["id"] for t in before + overlap + after]
        # The second's copies of the overlap were handled before the first was closed, so
        # before `after` was sent: with the last of `after` here, any second copy would be too.
        await has_ids(ann, expected)
        assert trade_ids(ann) == expected
        assert await metric(ticker.url, "switchboard_ticker_duplicate_trades_total") == 3
        # No gap, so nothing to backfill. A backfill would ask REST BACKFILL_DELAY after the
        # second connection was subscribed: wait that out (a slow machine can only make the
        # backfill that must not come later, so this passes, never fails, for being slow).
        asks_by = max(second.subscribed.values()) + BACKFILL_DELAY + 0.5
        await asyncio.sleep(max(0.0, asks_by - time.monotonic()))
        assert len(fake.rest_requests) == 4, "no gap, so nothing to backfill"
        status = await status_of(ticker.url)
        assert (status["state"], status["reconnects"]) == ("connected", 1)
        assert "bts:request_reconnect" in status["last_reason"]
        assert status["last_cause"] == "reconnect_requested"
    finally:
        await stop_tickers(ticker)


async def test_an_open_but_silent_connection_is_replaced_after_its_silence_timeout(
    tmp_path: Path, fake: FakeBitstamp, clients: list[Client]
) -> None:
    # A heartbeat every 3 s, replaced after 12 s of silence (the defaults, 10 s and 30 s, are
    # tests/ticker/test_settings_and_simulator.py's; the mechanism is the same).
    interval, silence = 3, 12
    timers = {"TICKER_HEARTBEAT_INTERVAL": str(interval), "TICKER_SILENCE_TIMEOUT": str(silence)}
    ticker = await start_ticker(tmp_path, fake, timers)
    try:
        ann, _ = await watch(clients, ticker.url)
        [first] = await fake.until(fake.subscribed)
        await fake.until(lambda: len(fake.rest_requests) == 4)
        first.silent = True
        # Nothing heard for a heartbeat and its grace: browsers are told the feed is stale
        # (an interval and HEARTBEAT_GRACE, 5 s, after the silence began: before it is replaced).
        (stale,) = await ann.wait("status", lambda s: s["state"] == "stale")
        assert stale["cause"] == "no_answer"
        second = await fake.successor(first, timeout=silence + PATIENCE)
        await fake.until(lambda: not first.open, what="the silent connection closed")
        assert first.closed_by == "client"
        # The service heard the last thing we sent after we began sending it, so it cannot
        # replace the connection sooner than the silence timeout after that (a timer never
        # fires early)...
        assert first.last_sent is not None
        silent_for = second.opened_at - first.last_sent
        assert silent_for >= silence, silent_for
        # ...and it replaces it at once then: a timer's lateness and a connect, well under a
        # second on a busy machine. A whole heartbeat interval more would be a bug, such as
        # looking at the silence only when a heartbeat is due.
        assert silent_for < silence + interval, silent_for
        await ann.wait("status", lambda s: s["state"] == "connected" and s["reconnects"] == 1)
        status = await status_of(ticker.url)
        assert status["last_reason"] == f"no message from upstream for {silence} s"
        assert status["last_cause"] == "silent"
        await fake.until(lambda: len(fake.rest_requests) == 8, what="a backfill after the gap")
    finally:
        await stop_tickers(ticker)


async def test_refused_connections_back_off_with_full_jitter_and_say_offline(
    tmp_path: Path, fake: FakeBitstamp, clients: list[Client]
) -> None:
    fake.refuse = 10**6
    base, cap = 0.2, 1.0
    timers = {
        "TICKER_BACKOFF_BASE": str(base),
        "TICKER_BACKOFF_CAP": str(cap),
        # However long a held subscription takes (the end of the story).
        "TICKER_CONNECT_TIMEOUT": str(int(PATIENCE)),
    }
    ticker = launch(tmp_path, fake, timers)
    try:
        await ticker.ready(PREFIX, path="healthz")
        ann = Client(ticker.url, "/api/ticker/socket.io")
        clients.append(ann)
        await ann.connect()
        await fake.until(lambda: len(fake.attempts) >= 8, what="8 attempts")
        # Each wait is drawn below its ceiling; a gap between two attempts is that wait plus
        # the attempt (a refused handshake) and a busy machine's lateness: milliseconds, given a
        # whole second here. test_the_feed_waits_the_backoff_it_draws pins each wait exactly.
        gaps = [b - a for a, b in zip(fake.attempts, fake.attempts[1:8], strict=False)]
        for failures, gap in enumerate(gaps, start=1):
            assert gap < min(cap, base * 2 ** (failures - 1)) + LATENESS, (failures, gaps)

        async with httpx.AsyncClient() as http:
            answer = await http.get(f"{ticker.url}{PREFIX}/readyz")
        assert answer.status_code == 503
        [reason] = answer.json()["reasons"]
        assert reason.startswith("upstream offline") and "HTTP 503" in reason
        (offline,) = await ann.wait("status", lambda s: s["state"] == "offline")
        assert "HTTP 503" in offline["detail"]
        # Its retries are counted, for the page to say (issue 16): none of them reconnected.
        assert offline["cause"] == "refused" and offline["attempts"] >= 3, offline
        assert offline["reconnects"] == 0

        fake.refuse = 0
        await ticker.ready(PREFIX)
        await ann.wait("status", lambda s: s["state"] == "connected")
        # After a success the count starts again: one refused attempt, and the feed says it is
        # reconnecting, not offline, and waits at most the base. We hold the subscriptions of
        # the attempt after it, so that the feed stays between the two while we look.
        [upstream] = fake.subscribed()
        fake.refuse = 1
        fake.hold = True
        tried = len(fake.attempts)
        await upstream.drop()
        [held] = await fake.until(
            lambda: [c for c in fake.open() if len(c.held) == len(fake.pairs)],
            what="the attempt after the refused one asking to subscribe",
        )
        status = await status_of(ticker.url)
        assert status["state"] == "reconnecting" and "HTTP 503" in status["detail"], status
        assert (status["cause"], status["attempts"], status["last_cause"]) == (
            "refused",
            1,
            "dropped",
        ), status
        retry = fake.attempts[tried:]
        assert len(retry) == 2 and retry[1] - retry[0] < base + LATENESS
        fake.hold = False
        await fake.release(held)
        (back,) = await ann.wait(
            "status", lambda s: s["state"] == "connected" and s["reconnects"] == 1
        )
        assert (back["cause"], back["attempts"]) == (None, 0), back
    finally:
        await stop_tickers(ticker)


async def test_bitstamp_errors_are_reported_and_survived(
    tmp_path: Path, fake: FakeBitstamp, clients: list[Client]
) -> None:
    fake.subscription_error = "Bad subscription string."
    ticker = launch(tmp_path, fake, {"TICKER_BACKOFF_BASE": "0.1", "TICKER_BACKOFF_CAP": "0.3"})
    try:
        await ticker.ready(PREFIX, path="healthz")
        await fake.until(lambda: len(fake.attempts) >= 3)
        status = await status_of(ticker.url)
        assert status["state"] in ("reconnecting", "offline")
        assert "Bitstamp refused the subscription: Bad subscription string." in status["detail"]
        assert status["cause"] == "subscription_refused" and status["attempts"] >= 1

        fake.subscription_error = None
        await ticker.ready(PREFIX)
        ann, _ = await watch(clients, ticker.url)
        [upstream] = fake.subscribed()
        error = {"code": None, "message": "Incorrect JSON format."}
        await upstream.send({"event": "bts:error", "channel": "", "data": error})
        # Not a reason to drop a working connection, nor to stop reading it.
        data = await fake.trade()
        await has_ids(ann, [data["id"]])
        assert upstream.open and fake.subscribed() == [upstream]
        assert await metric(ticker.url, "switchboard_ticker_upstream_errors_total") == 1
    finally:
        await stop_tickers(ticker)


async def test_trades_missed_while_disconnected_are_backfilled_once(
    tmp_path: Path, fake: FakeBitstamp, clients: list[Client]
) -> None:
    ticker = await start_ticker(tmp_path, fake)
    try:
        ann, _ = await watch(clients, ticker.url)
        [first] = await fake.until(fake.subscribed)
        await fake.until(lambda: len(fake.rest_requests) == 4)
        seen = await fake.trade(price="91000.01")
        await has_ids(ann, [seen["id"]])

        fake.refuse = 10**6
        await first.drop()
        await fake.until(lambda: not first.open)
        missed = [fake.make_trade(price=f"9100{i}") for i in range(3)]
        # The REST API lists one transaction we cannot read: it costs that one only.
        fake.make_trade(amount="4.5E-7")
        await fake.until(lambda: len(fake.attempts) >= 3, what="refused retries")
        fake.refuse = 0
        await fake.until(fake.subscribed, what="connected again")
        live = await fake.trade(price="91010")

        expected = [seen["id"], *(t["id"] for t in missed), live["id"]]
        await has_ids(ann, expected)
        # The backfill asks for btcusd first, and for the next pair only once btcusd's trades
        # are handed to the browsers: a trade sent after that comes after any second copy.
        await fake.until(lambda: len(fake.rest_requests) >= 6, what="btcusd backfilled")
        tail = await fake.trade(price="91020")
        expected.append(tail["id"])
        await has_ids(ann, expected)
        got = {t["id"]: t for (t,) in ann.received("trade")}
        assert sorted(trade_ids(ann)) == sorted(expected), "each trade exactly once"
        assert [got[t["id"]]["backfilled"] for t in missed] == [True, True, True]
        assert [got[t["id"]]["price"] for t in missed] == ["91000", "91001", "91002"]
        assert not any(got[t["id"]]["backfilled"] for t in (seen, live, tail))
        status = await status_of(ticker.url)
        assert status["reconnects"] == 1
        assert status["last_reason"] == "the connection dropped without a close frame"
        assert status["last_cause"] == "dropped"
    finally:
        await stop_tickers(ticker)


async def test_unreadable_upstream_messages_are_skipped(
    tmp_path: Path, fake: FakeBitstamp, clients: list[Client]
) -> None:
    ticker = await start_ticker(tmp_path, fake)
    try:
        ann, _ = await watch(clients, ticker.url)
        [upstream] = await fake.until(fake.subscribed)
        no_string = fake.make_trade()
        del no_string["price_str"]
        odd_side = {**fake.make_trade(), "type": 7}
        for data in (no_string, odd_side):
            await fake.publish(data)
        await upstream.socket.send_str("not json")
        good = await fake.trade()
        await has_ids(ann, [good["id"]])
        assert trade_ids(ann) == [good["id"]]
        assert await metric(ticker.url, "switchboard_ticker_upstream_bad_messages_total") == 3
        assert upstream.open
    finally:
        await stop_tickers(ticker)


async def test_an_upstream_that_never_answers_times_out(tmp_path: Path, fake: FakeBitstamp) -> None:
    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    black_hole = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    ticker = launch(
        tmp_path,
        fake,
        {"TICKER_UPSTREAM_URL": f"ws://127.0.0.1:{port}", "TICKER_CONNECT_TIMEOUT": "1"},
    )
    try:
        await ticker.ready(PREFIX, path="healthz")

        async def given_up() -> dict | None:
            status = await status_of(ticker.url)
            return status if "did not answer" in status["detail"] else None

        status = await until(given_up, "the status to say why", every=0.2)
        assert "did not answer and confirm the subscriptions within 1 s" in status["detail"]
        assert status["cause"] == "timeout"
        assert status["state"] in ("reconnecting", "offline")
    finally:
        await stop_tickers(ticker)
        for writer in held:
            writer.close()
        black_hole.close()
