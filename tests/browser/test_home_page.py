"""Someone opens the home page of `make run`'s server (and through the gateway): a heading, and
one card per app, each card a single link that a finger cannot miss; the tab has its icon
(issue 16: `/favicon.ico` was 404, and the cards were links only on their title).

What the tests look at in web/index.html: the page's ``h1``, ``.apps li`` (one per app) and
its one link ``a.app``, whose text is the app's name (``.app-name``) and what it does
(``.app-what``); ``link[rel=icon]``.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import Site, accessibility, new_context

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]

APPS = {
    "Chat": "/chat/",
    "Cursors": "/cursors/",
    "Remote": "/remote/",
    "Call": "/call/",
    "Ticker": "/ticker/",
}
PHONE = {"width": 390, "height": 844}


async def test_every_card_is_one_link_and_the_tab_has_its_icon(
    browser: Browser, site: Site
) -> None:
    context = await new_context(browser)
    page = await context.new_page()
    await page.goto(f"{site.url}/")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Switchboard")

    cards = page.locator(".apps li")
    await expect(cards).to_have_count(len(APPS))
    for index, (name, href) in enumerate(APPS.items()):
        card = cards.nth(index)
        # One interactive element per card: its link, named by the app and what it does.
        interactive = card.locator("a, button, input, select, textarea, [tabindex]")
        await expect(interactive).to_have_count(1)
        link = card.get_by_role("link")
        await expect(link).to_have_attribute("href", href)
        description = (await card.locator(".app-what").inner_text()).strip()
        await expect(link).to_have_accessible_name(f"{name} {description}")
        # The whole card is the link: a tap on its description, or near a corner, follows it.
        where = await page.evaluate(
            """(card) => {
              const box = card.getBoundingClientRect();
              const what = card.querySelector(".app-what").getBoundingClientRect();
              return [
                [what.left + what.width / 2, what.top + what.height / 2],
                [box.left + 12, box.top + 12],
                [box.right - 12, box.bottom - 12],
              ].map(([x, y]) => document.elementFromPoint(x, y)?.closest("a")?.pathname);
            }""",
            await card.element_handle(),
        )
        assert where == [href, href, href], (name, where)
    await accessibility(page, "home, desktop")

    # The tab's icon: a real icon, here and in the page's own link.
    await expect(page.locator("link[rel=icon]")).to_have_attribute("href", "/favicon.ico")
    icon = await page.request.get(f"{site.url}/favicon.ico")
    assert icon.status == 200, icon.status
    assert icon.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    body = await icon.body()
    assert body[:4] == b"\0\0\1\0" and body[4] >= 1, "an ICO file with at least one image"

    # A phone: the cards stack, each at least 44 px each way, the page no wider than the screen.
    await page.set_viewport_size(PHONE)
    for index in range(len(APPS)):
        box = await cards.nth(index).get_by_role("link").bounding_box()
        assert box and box["height"] >= 44 and box["width"] >= 44, box
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await accessibility(page, "home, phone")
    await page.emulate_media(color_scheme="dark")
    await accessibility(page, "home, phone, dark")
    await context.close()
