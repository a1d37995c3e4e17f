"""A mouse moved in one cursors page shows as a cursor in another; a leaver's cursor goes. Two
people never look alike: each has a colour of their own, and a name someone in the room has
already is shown numbered, and its owner told. A cursor over the hint card makes it step back.
axe finds nothing serious on the page, on a desktop and on a phone."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from tests.browser.conftest import Site, accessibility, new_context
from tests.harness import until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]


async def axe(site: Site, page: Page, state: str) -> None:
    """axe-core on ``page`` (tests.browser.conftest.accessibility), on the embedded site only:
    the gateway serves the same files, and each page's first run costs seconds."""
    if site.kind == "embedded":
        await accessibility(page, state)


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

    # Each sees the other in the colour the other is told is theirs, and the two differ.
    anns = await ann.locator("#own-look").get_attribute("data-color")
    bobs = await bob.locator("#own-look").get_attribute("data-color")
    assert anns and bobs and anns != bobs
    await expect(cursor).to_have_attribute("data-color", anns)
    # The middle of the page is the hint card's: with ann's cursor over it, it steps back.
    hint = bob.locator("#hint-card")
    await expect(hint).to_have_attribute("data-covered", "true")
    await expect(bob.locator("h1")).to_contain_text(room)
    await axe(site, bob, "cursors, desktop, someone's cursor over the hint")

    await ann.close()
    await expect(cursor).to_have_count(0)
    await expect(hint).to_have_attribute("data-covered", "false")


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

    # The phone's header fits its screen, its controls a finger's size.
    header = phone.locator("header")
    assert await header.evaluate("e => e.scrollWidth <= e.clientWidth")
    for control in ("#name-input", "#copy-link"):
        box = await phone.locator(control).bounding_box()
        assert box is not None and box["height"] >= 44, (control, box)
    await expect(phone.locator("#own-name")).to_have_text("phone")
    await axe(site, phone, "cursors, phone, with someone else in the room")


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

    # Bob renames himself ann: he is not a second "ann" but "ann (2)", and told so.
    await bob.fill("#name-input", "Ann")
    await bob.press("#name-input", "Enter")
    await expect(bob.locator("#name-note")).to_contain_text("others see you as “Ann (2)”")
    await expect(bob.locator("#own-name")).to_have_text("Ann (2)")
    await bob.mouse.move(700, 200, steps=5)
    numbered = ann.locator(".cursor", has=ann.locator(".name", has_text="Ann (2)"))
    await expect(numbered).to_be_visible()
    await axe(site, bob, "cursors, desktop, a name shown numbered")
