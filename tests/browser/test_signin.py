"""Issue 15, the pages: opened by an operator's page with a sign-in token in the address's
fragment (`#token=`), a page keeps it out of the address bar, shows whom it names, and uses it;
a room the token does not grant, or a private room without one, is refused with the reason shown.

Behind `make cluster`'s gateway, which runs open (rooms named private-* need a token) with the
tests' AUTH_SECRET."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect
from switchboard.token import mint

from tests.browser.conftest import new_context
from tests.gateway.conftest import AUTH_SECRET, Cluster

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]


async def open_page(browser: Browser, url: str) -> Page:
    context = await new_context(browser)
    page = await context.new_page()
    await page.goto(url)
    return page


async def test_a_page_opened_with_a_token_says_who_and_chats_in_its_private_room(
    browser: Browser, cluster: Cluster, unique: str
) -> None:
    room = f"private-{unique}"
    token = mint(AUTH_SECRET, sub=f"u-{unique}", name=f"Ann {unique}", rooms={"chat": [room]})
    ann = await open_page(browser, f"{cluster.url}/chat/?room={room}#token={token}")

    await expect(ann.locator("#signed-in")).to_have_text(f"Signed in as Ann {unique}")
    assert "token" not in ann.url, "the token stays out of the address bar"
    # The token's name is offered; taking it, Ann is in her private room and talks.
    await expect(ann.locator("#name-input")).to_have_value(f"Ann {unique}")
    await ann.press("#name-input", "Enter")
    await expect(ann.locator("#chat-screen")).to_be_visible()
    await ann.fill("#message-input", "only for us")
    await ann.press("#message-input", "Enter")
    await expect(ann.locator("#messages .message .text")).to_have_text(["only for us"])
    # A reload keeps the sign-in (this tab's session storage), not the address.
    await ann.reload()
    await expect(ann.locator("#signed-in")).to_have_text(f"Signed in as Ann {unique}")
    await expect(ann.locator("#status")).to_have_attribute("data-state", "connected")


async def test_a_room_the_token_does_not_grant_or_a_private_room_without_one_says_why(
    browser: Browser, cluster: Cluster, unique: str
) -> None:
    token = mint(AUTH_SECRET, sub=f"u-{unique}", name="Ann", rooms={"chat": [f"team-{unique}"]})
    elsewhere = await open_page(browser, f"{cluster.url}/chat/?room=private-{unique}#token={token}")
    await expect(elsewhere.locator("#status")).to_have_attribute("data-state", "disconnected")
    await expect(elsewhere.locator("#status-text")).to_contain_text("does not let you into")

    anonymous = await open_page(browser, f"{cluster.url}/cursors/?room=private-{unique}")
    await expect(anonymous.locator("#status")).to_have_attribute("data-state", "disconnected")
    await expect(anonymous.locator("#status-text")).to_contain_text("is private: sign in")
    await expect(anonymous.locator("#signed-in")).to_be_hidden()
