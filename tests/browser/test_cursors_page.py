"""A mouse moved in one cursors page shows as a cursor in another; a leaver's cursor goes."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import Site

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]


async def open_cursors(browser: Browser, site: Site, room: str, name: str) -> Page:
    context = await browser.new_context(
        ignore_https_errors=True, viewport={"width": 1000, "height": 800}
    )
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
    for _ in range(40):
        box = await cursor.bounding_box()
        if box and abs(box["x"] - 500) < 3 and abs(box["y"] - 400) < 3:
            break
        await bob.wait_for_timeout(100)
    else:
        raise AssertionError(f"ann's cursor is at {box}, not at (500, 400)")
    # Nobody sees their own cursor echoed back.
    own = ann.locator(".cursor", has=ann.locator(".name", has_text="ann"))
    await expect(own).to_have_count(0)

    await ann.close()
    await expect(cursor).to_have_count(0)


async def test_a_touch_moves_a_cursor_too(browser: Browser, site: Site, unique: str) -> None:
    room = f"r-{unique}"
    watcher = await open_cursors(browser, site, room, "watcher")
    context = await browser.new_context(
        ignore_https_errors=True,
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
    for _ in range(40):
        box = await cursor.bounding_box()
        if box and abs(box["x"] - 500) < 3 and abs(box["y"] - 600) < 3:
            break
        await watcher.wait_for_timeout(100)
    else:
        raise AssertionError(f"the phone's cursor is at {box}, not at (500, 600)")


async def test_people_count_before_they_move_and_a_cursor_hides_when_the_mouse_leaves(
    browser: Browser, site: Site, unique: str
) -> None:
    room = f"r-{unique}"
    ann = await open_cursors(browser, site, room, "ann")
    bob = await open_cursors(browser, site, room, "bob")
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
