"""A phone opens the desktop's pairing link; a touch on its pad moves the desktop's ball, and a
button press shows on the desktop; the desktop page reloads and the pairing goes on."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import Site, new_context
from tests.harness import until

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]


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
