"""A mouse moved in one cursors page shows as a cursor in another; a leaver's cursor goes."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from tests.browser.conftest import Site, new_context
from tests.harness import until

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]


async def glides_to(cursor: Locator, x: float, y: float) -> None:
    """Until ``cursor``'s box is at (x, y) give or take 3 px."""

    async def there() -> bool:
        box = await cursor.bounding_box()
        return bool(box and abs(box["x"] - x) < 3 and abs(box["y"] - y) < 3)

    await until(there, f"the cursor at ({x}, {y})")


async def open_cursors(browser: Browser, site: Site, room: str, name: str) -> Page:
    context = await new_context(browser, viewport={"width": 1000, "height": 800})
    page = await context.new_page()
    await page.goto(f"{site.url}/cursors/?room={room}&name={name}")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    return page


async def test_a_mouse_in_one_page_moves_a_cursor_in_another(
    browser: Browser, site: Site, unique: str
) -> None:
    room = f"r-{unique}"
    ann = await open_cursors(browser, site, room, "ann")
    bob = await open_cursors(browser, site, room, "bob")

    await ann.mouse.move(100, 100)
    await ann.mouse.move(500, 400, steps=20)

    cursor = bob.locator(".cursor", has=bob.locator(".name", has_text="ann"))
    await expect(cursor).to_have_count(1)
    await site.on_both_replicas("cursors")
    # It glides to where ann's pointer is: half-way across, half-way down.
    await glides_to(cursor, 500, 400)
    # Nobody sees their own cursor echoed back.
    own = ann.locator(".cursor", has=ann.locator(".name", has_text="ann"))
    await expect(own).to_have_count(0)

    await ann.close()
    await expect(cursor).to_have_count(0)


async def test_a_touch_moves_a_cursor_too(browser: Browser, site: Site, unique: str) -> None:
    room = f"r-{unique}"
    watcher = await open_cursors(browser, site, room, "watcher")
    context = await new_context(
        browser,
        viewport={"width": 400, "height": 800},
        has_touch=True,
        is_mobile=True,
    )
    phone = await context.new_page()
    await phone.goto(f"{site.url}/cursors/?room={room}&name=phone")
    await expect(phone.locator("#status")).to_have_attribute("data-state", "connected")

    await phone.touchscreen.tap(200, 600)  # three quarters down the phone's screen

    cursor = watcher.locator(".cursor", has=watcher.locator(".name", has_text="phone"))
    await expect(cursor).to_have_count(1)
    await glides_to(cursor, 500, 600)


async def test_people_count_before_they_move_and_a_cursor_hides_when_the_mouse_leaves(
    browser: Browser, site: Site, unique: str
) -> None:
    room = f"r-{unique}"
    # bob first, so that ann's arrival reaches him as a change.
    bob = await open_cursors(browser, site, room, "bob")
    ann = await open_cursors(browser, site, room, "ann")
    await expect(bob.locator("#count")).to_have_text("2")  # ann has not moved yet

    await ann.mouse.move(300, 300, steps=5)
    cursor = bob.locator(".cursor", has=bob.locator(".name", has_text="ann"))
    await expect(cursor).to_be_visible()

    await ann.evaluate(
        "document.documentElement.dispatchEvent("
        "new PointerEvent('pointerleave', {pointerType: 'mouse'}))"
    )
    await expect(cursor).to_be_hidden()
    await expect(bob.locator("#count")).to_have_text("2")  # still here

    await ann.mouse.move(320, 320, steps=5)
    await expect(cursor).to_be_visible()
