"""Two people open the chat page of `make run`'s server, name themselves and talk."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import Site, new_context

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]


async def open_chat(browser: Browser, site: Site, room: str) -> Page:
    context = await new_context(browser)
    page = await context.new_page()
    await page.goto(f"{site.url}/chat/?room={room}")
    return page


async def pick_name(page: Page, name: str) -> None:
    await page.fill("#name-input", name)
    await page.press("#name-input", "Enter")


async def test_two_tabs_name_themselves_and_chat(
    browser: Browser, site: Site, unique: str, tmp_path: Path
) -> None:
    room = f"r-{unique}"
    ann = await open_chat(browser, site, room)
    bob = await open_chat(browser, site, room)

    await pick_name(ann, f"ann-{unique}")
    await expect(ann.locator("#chat-screen")).to_be_visible()
    await expect(ann.locator("#status")).to_have_attribute("data-state", "connected")
    await pick_name(bob, f"ANN-{unique}")  # the server says no: the name is taken
    await expect(bob.locator("#name-error")).to_contain_text("taken")
    await expect(bob.locator("#chat-screen")).to_be_hidden()
    await pick_name(bob, f"bob-{unique}")
    await expect(bob.locator("#chat-screen")).to_be_visible()

    await expect(ann.locator("#users li")).to_have_text(
        sorted([f"ann-{unique}", f"bob-{unique}"]), ignore_case=False
    )
    await site.on_both_replicas("chat")
    await ann.fill("#message-input", "hello <b>bob</b>")
    await ann.press("#message-input", "Enter")
    await bob.fill("#message-input", "hi ann")
    await bob.press("#message-input", "Enter")

    for page in (ann, bob):
        messages = page.locator("#messages .message")
        await expect(messages).to_have_count(2)
        await expect(messages.nth(0).locator(".sender")).to_have_text(f"ann-{unique}")
        # Others' text is text, never markup.
        await expect(messages.nth(0).locator(".text")).to_have_text("hello <b>bob</b>")
        await expect(messages.nth(1).locator(".text")).to_have_text("hi ann")
    assert await bob.locator("#messages b").count() == 0
    await ann.screenshot(path=str(tmp_path / "ann.png"))

    await bob.close()
    await expect(ann.locator("#users li")).to_have_text([f"ann-{unique}"])


async def test_a_late_comer_sees_the_history(browser: Browser, site: Site, unique: str) -> None:
    room = f"r-{unique}"
    ann = await open_chat(browser, site, room)
    await pick_name(ann, f"ann-{unique}")
    await ann.fill("#message-input", "said before you came")
    await ann.press("#message-input", "Enter")
    await expect(ann.locator("#messages .message")).to_have_count(1)

    late = await open_chat(browser, site, room)
    await expect(late.locator("#messages .message .text")).to_have_text(["said before you came"])
    await expect(late.locator("#room")).to_have_text(room)
