"""A phone opens the desktop's pairing link; a touch on its pad moves the desktop's ball, and a
button press shows on the desktop; the desktop page reloads and the pairing goes on; the desktop
unpairs, and forgets what the phone last pressed. The phone says one status in its header, its
buttons sit clear of the screen's bottom edge, and axe finds nothing serious on either page."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import Site, accessibility, new_context
from tests.harness import until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]


async def axe(site: Site, page: Page, state: str) -> None:
    """axe-core on ``page`` (tests.browser.conftest.accessibility), on the embedded site only:
    the gateway serves the same files, and each page's first run costs seconds."""
    if site.kind == "embedded":
        await accessibility(page, state)


async def test_a_touch_on_the_controller_moves_the_ball_on_the_desktop(
    browser: Browser, site: Site
) -> None:
    desktop_context = await new_context(browser, viewport={"width": 1280, "height": 800})
    desktop = await desktop_context.new_page()
    await desktop.goto(f"{site.url}/remote/")
    await expect(desktop.locator("#pairing-state")).to_have_attribute("data-state", "waiting")
    await expect(desktop.locator("#link")).to_have_attribute("href", re.compile("#pair="))
    link = await desktop.locator("#link").get_attribute("href")
    assert link
    await expect(desktop.locator("#qr")).to_have_attribute("src", re.compile("^data:image/svg"))
    await expect(desktop.locator("h1")).to_have_text("Remote")
    await axe(site, desktop, "remote desktop, waiting for a controller")

    phone_context = await new_context(
        browser,
        viewport={"width": 390, "height": 844},
        has_touch=True,
        is_mobile=True,
    )
    phone = await phone_context.new_page()
    await phone.goto(link)
    await expect(phone.locator("#pairing-state")).to_have_attribute("data-state", "paired")
    await expect(desktop.locator("#pairing-state")).to_have_attribute("data-state", "paired")
    # The link's secret is taken out of the address bar: neither reused nor shared.
    assert "pair=" not in phone.url
    # One status in the phone's header, whole (issue 16: two pills, cut, saying the same).
    status = phone.locator("header [role=status]")
    await expect(status).to_have_count(1)
    await expect(status).to_have_text("Paired")
    assert await status.evaluate("e => e.scrollWidth <= e.clientWidth")
    header = await phone.locator("header").bounding_box()
    assert header is not None and header["x"] + header["width"] <= 390
    # The buttons: a finger's size, clear of the screen's bottom edge (the safe area).
    for button in ("#button-a", "#button-b"):
        box = await phone.locator(button).bounding_box()
        assert box is not None and box["height"] >= 44 and box["width"] >= 44
        assert box["y"] + box["height"] <= 844 - 16, (button, box)
    await axe(site, phone, "remote controller, phone, paired")

    pad = await phone.locator("#pad").bounding_box()
    assert pad is not None
    await phone.touchscreen.tap(pad["x"] + pad["width"] * 0.9, pad["y"] + pad["height"] * 0.1)

    ball = desktop.locator("#ball")

    async def there() -> bool:
        x = float(await ball.get_attribute("data-x") or "nan")
        y = float(await ball.get_attribute("data-y") or "nan")
        return abs(x - 0.9) < 0.02 and abs(y - 0.1) < 0.02

    await until(there, "the ball at (0.9, 0.1)")

    await phone.locator("#button-a").dispatch_event("pointerdown")
    await expect(desktop.locator("#ball")).to_have_attribute("data-pressed", "a")
    await phone.locator("#button-a").dispatch_event("pointerup")
    await expect(desktop.locator("#last-press")).to_contain_text("A")

    # The desktop page reloads (or loses its connection): it resumes its pairing with the
    # session this tab keeps, and the phone, told the screen was away, steers it again.
    await desktop.reload()
    await expect(desktop.locator("#pairing-state")).to_have_attribute("data-state", "paired")
    await expect(phone.locator("#pairing-state")).to_have_attribute("data-state", "paired")
    await phone.locator("#button-b").dispatch_event("pointerdown")
    await expect(desktop.locator("#ball")).to_have_attribute("data-pressed", "b")
    await phone.locator("#button-b").dispatch_event("pointerup")
    await expect(desktop.locator("#last-press")).to_have_text("B up")
    await axe(site, desktop, "remote desktop, paired")

    # The desktop unpairs: the phone is told, and the desktop shows no button of it any more.
    await desktop.locator("#unpair").click()
    await expect(phone.locator("#pairing-state")).to_have_attribute("data-state", "unpaired")
    await expect(phone.locator("#error")).to_contain_text("The screen unpaired this phone")
    await expect(desktop.locator("#pairing-state")).to_have_attribute("data-state", "unpaired")
    await expect(desktop.locator("#last-press")).to_have_text("—")
    await expect(desktop.locator("#orientation")).to_have_text("—")
    await expect(desktop.locator("#ball")).not_to_have_attribute("data-pressed", re.compile("."))
    await axe(site, desktop, "remote desktop, unpaired")
    await expect(phone.locator("#code-input")).to_be_visible()
    await axe(site, phone, "remote controller, phone, unpaired")
