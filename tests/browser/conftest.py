"""Debian's chromium, driven by Playwright: never a browser downloaded by a test tool."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright, expect

# The cluster of `make cluster` (tests/gateway/conftest.py), for the pages through the gateway.
from tests.gateway.conftest import Cluster, cluster  # noqa: F401
from tests.harness import PATIENCE

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


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=FLAGS, timeout=PATIENCE_MS
        )
        yield browser
        await browser.close()


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
