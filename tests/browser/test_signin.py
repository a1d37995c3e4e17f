"""Issue 15, the pages: opened by an operator's page with a sign-in token in the address's
fragment (`#token=`), a page keeps it out of the address bar, shows whom it names, and uses it;
a room the token does not grant, or a private room without one, is refused with the reason shown.

Behind `make cluster`'s gateway, which runs open (rooms named private-* need a token) with the
tests' AUTH_SECRET."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect
from switchboard.token import mint

from tests.browser.conftest import PATIENCE_MS, new_context
from tests.gateway.conftest import AUTH_SECRET, Cluster

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]


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
    # The token names her: no name to pick, she is in her private room and talks.
    await expect(ann.locator("#chat-screen")).to_be_visible()
    await expect(ann.locator("#my-name")).to_have_text(f"Ann {unique}")
    await ann.fill("#message-input", "only for us")
    await ann.press("#message-input", "Enter")
    await expect(ann.locator("#messages .message.mine .text")).to_have_text(["only for us"])
    await expect(ann.locator("#messages .message .sender")).to_have_text(
        [f"Ann {unique}✓ (signed in)"]
    )

    # Ann opens the room on her phone too: she is one person online, with two connections,
    # and her own messages from either are hers.
    phone = await open_page(browser, f"{cluster.url}/chat/?room={room}#token={token}")
    await expect(phone.locator("#chat-screen")).to_be_visible()
    for page in (ann, phone):
        await expect(page.locator("#users li")).to_have_text(
            [f"Ann {unique}\u2713 (signed in)\u00d72 (2 connections)"]
        )
        await expect(page.locator("#users li.me")).to_have_count(1)
    await expect(phone.locator("#messages .message.mine .text")).to_have_text(["only for us"])
    await phone.context.close()
    await expect(ann.locator("#users li")).to_have_text([f"Ann {unique}✓ (signed in)"])
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


async def test_a_refused_sign_in_shows_the_card_that_says_why_and_what_to_do(
    browser: Browser, cluster: Cluster, unique: str
) -> None:
    """Refused for its sign-in, a page shows the sign-in card in its main area (not only the
    status line), in words, with the way back to the page's default room."""
    team = f"team-{unique}"
    token = mint(AUTH_SECRET, sub=f"u-{unique}", name="Ann", rooms={"chat": [team]})
    elsewhere = f"private-{unique}"

    chat = await open_page(browser, f"{cluster.url}/chat/?room={elsewhere}#token={token}")
    card = chat.locator("#sign-in-card")
    await expect(card).to_be_visible()
    await expect(card).to_have_attribute("data-error", "room_forbidden")
    await expect(card).to_contain_text(
        f"You are signed in as Ann, but not allowed into #{elsewhere}"
    )
    await expect(chat.locator("#name-screen")).to_be_hidden()  # the card takes its place
    await expect(chat.locator("#signed-in")).to_have_text("Signed in as Ann")
    # The status line says it as before.
    await expect(chat.locator("#status")).to_have_attribute("data-state", "disconnected")
    await expect(chat.locator("#status-text")).to_contain_text("does not let you into")
    # The way out: the lobby, still signed in (the token stays in the tab).
    await card.get_by_role("link", name="Go to #lobby").click()
    await expect(chat.locator("#status")).to_have_attribute("data-state", "connected")
    assert chat.url == f"{cluster.url}/chat/"
    await expect(card).to_be_hidden()
    await expect(chat.locator("#signed-in")).to_have_text("Signed in as Ann")

    cursors = await open_page(browser, f"{cluster.url}/cursors/?room={elsewhere}#token={token}")
    card = cursors.locator("#sign-in-card")
    await expect(card).to_have_attribute("data-error", "room_forbidden")
    await expect(card).to_contain_text(
        f"You are signed in as Ann, but not allowed into #{elsewhere}"
    )
    await expect(card.get_by_role("link", name="Go to #lobby")).to_have_attribute(
        "href", "/cursors/"
    )
    await expect(cursors.locator(".hint")).to_be_hidden()
    await expect(cursors.locator("#status")).to_have_attribute("data-state", "disconnected")


async def test_a_private_room_without_a_sign_in_shows_the_card(
    browser: Browser, cluster: Cluster, unique: str
) -> None:
    for app in ("cursors", "call"):
        page = await open_page(browser, f"{cluster.url}/{app}/?room=private-{unique}")
        card = page.locator("#sign-in-card")
        await expect(card).to_be_visible()
        await expect(card).to_have_attribute("data-error", "token_required")
        await expect(card.get_by_role("heading")).to_have_text("This room is private")
        await expect(card).to_contain_text("Sign in on the site that sent you here")
        await expect(card.get_by_role("link", name="Go to #lobby")).to_be_visible()
        await expect(page.locator("#status-text")).to_contain_text("is private: sign in")
        await expect(page.locator("#signed-in")).to_be_hidden()


async def test_a_sign_in_that_expires_while_connected_shows_the_card_and_is_forgotten(
    browser: Browser, cluster: Cluster, unique: str
) -> None:
    room = f"private-{unique}"
    # Long enough for a busy machine to open the page before it ends (it must connect first).
    ttl = 12
    token = mint(AUTH_SECRET, sub=f"u-{unique}", name="Ann", rooms={"chat": [room]}, ttl=ttl)
    context = await new_context(browser)
    page = await context.new_page()
    # Opened by the operator's page: the card offers the way back there to sign in again.
    operator = "https://operator.example/app/"
    await page.goto(f"{cluster.url}/chat/?room={room}#token={token}", referer=operator)
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#signed-in")).to_be_visible()

    # The server ends the connection AUTH_LEEWAY after the token's end.
    leeway = float(cluster.env.get("AUTH_LEEWAY", "30"))
    card = page.locator("#sign-in-card")
    await expect(card).to_be_visible(timeout=(ttl + leeway) * 1000 + PATIENCE_MS)
    await expect(card).to_have_attribute("data-error", "token_expired")
    await expect(card.get_by_role("heading")).to_have_text("Your sign-in has expired")
    await expect(card).to_contain_text(f"you were disconnected from #{room}")
    await expect(
        card.get_by_role("link", name="Sign in again at operator.example")
    ).to_have_attribute("href", operator)
    await expect(page.locator("#signed-in")).to_have_text("Sign-in expired")
    assert await page.evaluate("sessionStorage.getItem('switchboard.token')") is None
    # Given up at once, with the server's word, rather than "Reconnecting…": a retry would only
    # be refused again, or let in without the sign-in.
    await expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
    await expect(page.locator("#status-text")).to_have_text(
        "Disconnected: Your token expired; sign in again."
    )

    # The operator's page hands over a fresh token: the page connects again with it.
    fresh = mint(AUTH_SECRET, sub=f"u-{unique}", name="Ann", rooms={"chat": [room]})
    await page.evaluate("(token) => window.switchboard.refresh(token)", fresh)
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await expect(card).to_be_hidden()
    await expect(page.locator("#signed-in")).to_have_text("Signed in as Ann")
