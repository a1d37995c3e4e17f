"""Debian's chromium, driven by Playwright: never a browser downloaded by a test tool.

One chromium serves every browser test of the session (a launch, with Playwright's driver,
costs a second or more, many on a busy machine); what keeps the tests apart is a browser
context of each person's own (cookies, storage, cache, pages), made by the test and closed
after it. Playwright's objects belong to the event loop that made them, so the browser tests
run in the session's loop: each module says ``pytest.mark.asyncio(loop_scope="session")``, and
the async fixtures they use are the session loop's (below)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    async_playwright,
    expect,
)

# The cluster of `make cluster` (tests/gateway/conftest.py), for the pages through the gateway.
from tests.gateway.conftest import Cluster, cluster  # noqa: F401
from tests.harness import PATIENCE, Client
from tests.ticker.fake_bitstamp import FakeBitstamp

#: Playwright's bound of a wait, in its milliseconds.
PATIENCE_MS = PATIENCE * 1000
#: Playwright's assertions retry until they hold: bounded like every other wait (its default,
#: 5 s, is a guess a busy machine breaks). Set once here, for every browser test.
expect.set_options(timeout=PATIENCE_MS)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


#: axe-core, from web/package-lock.json (a dev dependency: never served to users' pages).
AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
#: The impacts a page may not have (issue 16): the moderate and minor ones are listed, not failed.
FORBIDDEN_IMPACTS = ("critical", "serious")


async def accessibility(page: Page, state: str) -> list[dict[str, Any]]:
    """axe-core run on ``page`` as it is now (``state`` names it, e.g. "chat, phone, signed in"):
    fails on a critical or serious violation, saying which rules and elements; returns the
    others. With AXE_REPORT set, every violation is appended there as a JSON line, for the note
    that lists the moderate ones."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    violations: list[dict[str, Any]] = result["violations"]
    report = os.environ.get("AXE_REPORT")
    if report:
        lines = [
            json.dumps(
                {
                    "state": state,
                    "id": violation["id"],
                    "impact": violation["impact"],
                    "help": violation["help"],
                    "targets": [node["target"] for node in violation["nodes"]],
                }
            )
            + "\n"
            for violation in violations
        ]
        with Path(report).open("a", encoding="utf-8") as out:  # noqa: ASYNC230 (a few lines)
            out.writelines(lines)
    forbidden = [v for v in violations if v["impact"] in FORBIDDEN_IMPACTS]
    assert not forbidden, f"axe on {state}: " + "; ".join(
        f"{v['impact']} {v['id']} ({v['help']}) at {[n['target'] for n in v['nodes']][:5]}"
        for v in forbidden
    )
    return [v for v in violations if v["impact"] not in FORBIDDEN_IMPACTS]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A browser test in a loop of its own would be handed a browser it cannot drive: say so
    at collection, not as Playwright's error in the middle of a run."""
    here = Path(__file__).parent
    for item in items:
        marker = item.get_closest_marker("asyncio")
        if item.path.parent == here and marker and marker.kwargs.get("loop_scope") != "session":
            raise pytest.UsageError(
                f"{item.nodeid}: browser tests run in the session's event loop; mark "
                'the module pytest.mark.asyncio(loop_scope="session") (see this conftest)'
            )


class Chromium:
    """A chromium launched with ``args`` when first asked for, and again should it have died
    (one crash fails the test it happens in, not every test after it)."""

    def __init__(self, playwright: Playwright, args: list[str]) -> None:
        self.playwright = playwright
        self.args = args
        self._browser: Browser | None = None

    async def browser(self) -> Browser:
        if self._browser is None or not self._browser.is_connected():
            self._browser = await self.playwright.chromium.launch(
                executable_path=CHROMIUM, args=self.args, timeout=PATIENCE_MS
            )
        return self._browser

    async def close(self) -> None:
        if self._browser is not None and self._browser.is_connected():
            await self._browser.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def playwright_driver() -> AsyncIterator[Playwright]:
    async with async_playwright() as playwright:
        yield playwright


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium(playwright_driver: Playwright) -> AsyncIterator[Chromium]:
    shared = Chromium(playwright_driver, FLAGS)
    yield shared
    await shared.close()


async def close_contexts(browser: Browser) -> None:
    """Every person's browser a test opened, with its pages and their connections."""
    for context in browser.contexts:
        await context.close()


async def for_one_test(chromium: Chromium) -> Browser:
    """The shared browser with no context open: none of an earlier test's is left."""
    browser = await chromium.browser()
    await close_contexts(browser)
    return browser


@pytest_asyncio.fixture(loop_scope="session")
async def browser(chromium: Chromium) -> AsyncIterator[Browser]:
    shared = await for_one_test(chromium)
    yield shared
    await close_contexts(shared)


# tests/conftest.py's async fixtures run in each test's own loop; the browser tests' loop is
# the session's, so these are theirs, the same in that loop.


@pytest_asyncio.fixture(loop_scope="session")
async def fake() -> AsyncIterator[FakeBitstamp]:
    """A scripted Bitstamp (tests/ticker/fake_bitstamp.py) in the browser tests' loop."""
    exchange = FakeBitstamp()
    await exchange.start()
    yield exchange
    await exchange.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def clients() -> AsyncIterator[list[Client]]:
    """Every client a test opens through ``connect_chat`` is closed after it."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        await client.close()


async def new_context(browser: Browser, **options: Any) -> BrowserContext:
    """Another person's browser: our self-signed certificates accepted, and its actions and
    navigations bounded by PATIENCE (Playwright's default is 30 s)."""
    context = await browser.new_context(ignore_https_errors=True, **options)
    context.set_default_timeout(PATIENCE_MS)  # actions and navigation
    return context


@dataclass
class Site:
    """Where the pages are opened: `make run`'s embedded server, or the gateway of
    `make cluster` in front of two replicas of each service."""

    kind: str
    url: str
    cluster: Cluster | None = None

    async def on_both_replicas(self, service: str) -> None:
        """Through the gateway, the pages' sockets landed on both replicas of ``service``."""
        if self.cluster is None:
            return
        counts = []
        async with httpx.AsyncClient() as http:
            for side in "ab":
                base = self.cluster.replica(service, side)
                text = (await http.get(f"{base}/api/{service}/metrics")).text
                found = re.search(r"^switchboard_connected_clients\{[^}]*\} (\S+)$", text, re.M)
                counts.append(float(found.group(1)) if found else 0.0)
        assert all(count >= 1 for count in counts), f"pages on one replica only: {counts}"


@pytest.fixture(scope="session", params=["embedded", "gateway"])
def site(request: pytest.FixtureRequest) -> Site:
    if request.param == "embedded":
        return Site("embedded", request.getfixturevalue("embedded").url)
    running: Cluster = request.getfixturevalue("cluster")
    return Site("gateway", running.url, running)
