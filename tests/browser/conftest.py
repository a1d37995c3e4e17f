"""Debian's chromium, driven by Playwright: never a browser downloaded by a test tool."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.async_api import Browser, async_playwright

# The cluster of `make cluster` (tests/gateway/conftest.py), for the pages through the gateway.
from tests.gateway.conftest import Cluster, cluster  # noqa: F401

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
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        await browser.close()


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
