"""People open the chat page of `make run`'s server (and through the gateway), name themselves
and talk; they are told who joins and leaves, links in messages can be followed, and the page
says why a message cannot be sent. axe-core is run on each state the page reaches (issue 16).

What the tests look at in web/chat/: ``#name-input``, ``#name-error``, ``#chat-screen``,
``#users li``, ``#crowd`` and ``#user-count`` (a room too big to list), ``#messages .message``
(``.sender``, ``.text``, its links), ``#messages .notice`` (joins, leaves and renames,
``data-kind``), ``#message-input`` and ``#composer-note`` (why a message cannot go),
``#status[data-state]``, the header ``.topbar``.

Notices are told about a second after a burst of joins or leaves (web/chat/chat.js,
NOTICE_WINDOW_MS and after): where a test is about what one notice holds, ``page.clock`` moves
the page's time on, so that how long the joins take to arrive never splits the notice.
"""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Route, WebSocketRoute, expect

from tests.browser.conftest import Site, accessibility, new_context
from tests.conftest import connect_chat
from tests.harness import Client, ServiceProcess, free_port

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]

PHONE = {"width": 390, "height": 844}
#: Longer than any wait of a notice (NOTICE_MAX_MS in chat.js); short of socket.io's heartbeat
#: (45 s), which the page's clock also runs.
NOTICE_TOLD_MS = 6_000


class Cable:
    """The page's connection to the chat, which the test cuts and mends: cut, the open
    connection ends and the page's next ones wait (their server does not answer, as in a
    tunnel); mended, the waiting one goes through at once (no wait for socket.io's backoff).
    The browser's offline mode would leave the open websocket to socket.io's heartbeat, 45 s."""

    def __init__(self) -> None:
        self.up = True
        self.servers: list[WebSocketRoute] = []
        self.waiting: list[WebSocketRoute] = []

    def route(self, socket: WebSocketRoute) -> None:
        if self.up:
            self.servers.append(socket.connect_to_server())
        else:
            self.waiting.append(socket)

    async def cut(self) -> None:
        self.up = False
        for server in self.servers:
            await server.close()
        self.servers.clear()

    def mend(self) -> None:
        self.up = True
        for socket in self.waiting:
            self.servers.append(socket.connect_to_server())
        self.waiting.clear()


async def open_chat(
    browser: Browser,
    site: Site,
    room: str,
    *,
    phone: bool = False,
    clock: bool = False,
    cable: Cable | None = None,
) -> Page:
    """The chat page in a context of its own (another person); with ``clock``, its time is
    Playwright's to stop and move on (page.clock); through ``cable`` when given."""
    options = {"viewport": PHONE, "has_touch": True, "is_mobile": True} if phone else {}
    context = await new_context(browser, **options)
    page = await context.new_page()
    if clock:
        await page.clock.install()
    if cable:
        await page.route_web_socket(re.compile(r"/api/chat/socket\.io/"), cable.route)
    await page.goto(f"{site.url}/chat/?room={room}")
    return page


async def pick_name(page: Page, name: str) -> None:
    await page.fill("#name-input", name)
    await page.press("#name-input", "Enter")


async def send(page: Page, text: str) -> None:
    await page.fill("#message-input", text)
    await page.press("#message-input", "Enter")


async def stop_time(page: Page) -> None:
    """From here on the page's timers fire only when the test moves its clock on."""
    now = await page.evaluate("Date.now()") / 1000
    await page.clock.pause_at(datetime.datetime.fromtimestamp(now + 1, datetime.UTC))


async def header_problems(page: Page) -> list[str]:
    """What does not fit in the header: a part outside the screen, the room, the connection or
    the sign-in cut (your own name may be cut: it is also marked "you" in the list)."""
    problems: list[str] = await page.evaluate(
        """() => {
        const problems = [];
        const width = document.documentElement.clientWidth;
        for (const part of document.querySelectorAll(".topbar > *")) {
          if (getComputedStyle(part).display === "none") continue;
          const box = part.getBoundingClientRect();
          if (box.left < 0 || box.right > width + 0.5) problems.push(`${part.className} outside`);
        }
        for (const selector of [".room-label", "#status", "#signed-in"]) {
          const part = document.querySelector(selector);
          if (getComputedStyle(part).display === "none") continue;
          if (part.scrollWidth > part.clientWidth + 0.5) problems.push(`${selector} cut`);
        }
        if (document.documentElement.scrollWidth > width) problems.push("page wider than screen");
        return problems;
      }"""
    )
    return problems


async def assert_touch_targets(page: Page, *selectors: str) -> None:
    for selector in selectors:
        box = await page.locator(selector).bounding_box()
        assert box is not None, f"{selector} not shown"
        assert box["width"] >= 44 and box["height"] >= 44, f"{selector} is {box}"


async def test_two_tabs_name_themselves_and_chat(
    browser: Browser, site: Site, unique: str, tmp_path: Path
) -> None:
    room = f"r-{unique}"
    cable = Cable()
    ann = await open_chat(browser, site, room, clock=True, cable=cable)
    bob = await open_chat(browser, site, room)
    await expect(ann.locator("#status")).to_have_attribute("data-state", "connected")
    await expect(ann.get_by_role("heading", level=1)).to_have_text(f"Room #{room}")
    await accessibility(ann, "chat: name screen, desktop")

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
    await send(ann, "hello <b>bob</b>")
    await send(bob, "hi ann")
    link_text = "see https://example.com/a?b=c, not javascript:alert(1) nor data:text/html,x"
    await send(bob, link_text)

    for page in (ann, bob):
        messages = page.locator("#messages .message")
        await expect(messages).to_have_count(3)
        await expect(messages.nth(0).locator(".sender")).to_have_text(f"ann-{unique}")
        # Others' text is text, never markup.
        await expect(messages.nth(0).locator(".text")).to_have_text("hello <b>bob</b>")
        await expect(messages.nth(1).locator(".text")).to_have_text("hi ann")
        # An http(s) address is a link, and only that: the text around it stays text.
        await expect(messages.nth(2).locator(".text")).to_have_text(link_text)
        link = messages.nth(2).locator(".text a")
        await expect(link).to_have_count(1)
        await expect(link).to_have_text("https://example.com/a?b=c")
        await expect(link).to_have_attribute("href", "https://example.com/a?b=c")
        await expect(link).to_have_attribute("rel", "noopener noreferrer")
        await expect(link).to_have_attribute("target", "_blank")
    assert await bob.locator("#messages b").count() == 0
    # Ann is told, in the conversation, that Bob came; Bob is not told of his own coming, nor
    # of Ann, who was there before him.
    await expect(ann.locator("#messages .notice")).to_have_text([f"bob-{unique} joined"])
    await expect(bob.locator("#messages .notice")).to_have_count(0)

    # The link opens in a tab of its own, which does not get Ann's page.
    async def example(route: Route) -> None:
        await route.fulfill(body="<title>example</title>", content_type="text/html")

    await ann.context.route("https://example.com/**", example)
    async with ann.context.expect_page() as opened:
        await ann.locator("#messages .message .text a").click()
    tab = await opened.value
    await expect(tab).to_have_url("https://example.com/a?b=c")
    assert await tab.evaluate("window.opener") is None
    await tab.close()

    # A message of spaces is refused with a reason, not silently dropped.
    await send(ann, "   ")
    await expect(ann.locator("#composer-note")).to_have_text(
        "A message needs at least one character."
    )
    await expect(ann.locator("#message-input")).to_have_attribute("aria-invalid", "true")
    await accessibility(ann, "chat: messages, notice, refusal, desktop")

    # Cut off, the composer says why nothing can be sent, and keeps what Ann typed.
    await ann.fill("#message-input", "typed while away")
    await cable.cut()
    await expect(ann.locator("#status")).to_have_attribute("data-state", "reconnecting")
    await expect(ann.locator("#composer-note")).to_have_text(
        "Not connected: your message will be sendable when we reconnect."
    )
    await ann.press("#message-input", "Enter")
    await expect(ann.locator("#composer-note")).to_have_attribute("data-tone", "error")
    await expect(ann.locator("#message-input")).to_have_value("typed while away")
    await accessibility(ann, "chat: reconnecting, desktop")
    cable.mend()
    await expect(ann.locator("#status")).to_have_attribute("data-state", "connected")
    await expect(ann.locator("#composer-note")).to_have_text("")
    await ann.press("#message-input", "Enter")
    await expect(bob.locator("#messages .message .text").last).to_have_text("typed while away")
    await ann.screenshot(path=str(tmp_path / "ann.png"))

    await bob.close()
    await expect(ann.locator("#users li")).to_have_text([f"ann-{unique}"])
    # A leave is told once its person has not come back for a few seconds: moved on at once.
    await ann.clock.fast_forward(NOTICE_TOLD_MS)
    await expect(ann.locator("#messages .notice")).to_have_text(
        [f"bob-{unique} joined", f"bob-{unique} left"]
    )


async def test_a_late_comer_on_a_phone_sees_the_history_and_who_comes_and_goes(
    browser: Browser, site: Site, unique: str, clients: list[Client]
) -> None:
    room = f"r-{unique}"
    ann = await open_chat(browser, site, room)
    await pick_name(ann, f"ann-{unique}")
    await send(ann, "said before you came")
    await expect(ann.locator("#messages .message")).to_have_count(1)

    cable = Cable()
    late = await open_chat(browser, site, room, phone=True, clock=True, cable=cable)
    await expect(late.locator("#messages .message .text")).to_have_text(["said before you came"])
    await expect(late.locator("#room")).to_have_text(room)
    await expect(late.locator("#status")).to_have_attribute("data-state", "connected")
    await assert_touch_targets(late, "#name-submit", ".brand")
    await accessibility(late, "chat: name screen, phone")
    await pick_name(late, f"late-{unique}")
    await expect(late.locator("#chat-screen")).to_be_visible()
    await assert_touch_targets(late, "#message-submit", ".brand")
    assert await header_problems(late) == []

    # Five people come at once, then one renames and the four others go at once: each is
    # one notice, whatever time their events take to arrive.
    await stop_time(late)
    crowd = [f"c{i}-{unique}" for i in range(5)]
    people = await asyncio.gather(*(connect_chat(clients, site.url, room=room) for _ in crowd))
    await asyncio.gather(
        *(person.call("name", name) for person, name in zip(people, crowd, strict=True))
    )
    await expect(late.locator("#users li")).to_have_count(7)
    await late.clock.run_for(NOTICE_TOLD_MS)
    notices = late.locator("#messages .notice")
    joined = f"c0-{unique}, c1-{unique} and 3 others joined"
    await expect(notices).to_have_text([joined])

    await people[0].call("name", f"cy-{unique}")
    await asyncio.gather(*(person.close() for person in people[1:]))
    await expect(late.locator("#users li")).to_have_count(3)
    await expect(late.locator("#users")).to_contain_text(f"cy-{unique}")
    await late.clock.run_for(NOTICE_TOLD_MS)
    left = f"c1-{unique}, c2-{unique} and 2 others left"
    renamed = f"c0-{unique} is now cy-{unique}"
    await expect(notices).to_have_text([joined, left, renamed])
    # Ann's message stays first, the notices after it as they came; a new one after them.
    await send(ann, "welcome")
    said = [re.compile(re.escape(text)) for text in ("said before you came", "welcome")]
    await expect(late.locator("#messages > li:not([hidden])")).to_have_text(
        [said[0], joined, left, renamed, said[1]]
    )
    # Time flows again (axe-core waits on timers of its own).
    await late.clock.resume()
    await accessibility(late, "chat: messages and notices, phone")

    # Cut off and back: the header says so on a line of its own, the room stays readable, and
    # who is there when it comes back (`users`) is no one's joining.
    await cable.cut()
    await expect(late.locator("#status")).to_have_attribute("data-state", "reconnecting")
    await expect(late.locator("#composer-note")).to_contain_text("Not connected")
    assert await header_problems(late) == []
    await accessibility(late, "chat: reconnecting, phone")
    # A sign-in about to end, as /shared/signin.js shows it, fits too.
    await late.evaluate(
        """() => {
          const pill = document.getElementById("signed-in");
          pill.hidden = false;
          pill.dataset.state = "expiring";
          pill.textContent = "Sign-in ends in 1 min: sign in again";
        }"""
    )
    assert await header_problems(late) == []
    cable.mend()
    await expect(late.locator("#status")).to_have_attribute("data-state", "connected")
    assert await header_problems(late) == []
    await expect(late.locator("#users li")).to_have_count(3)
    await stop_time(late)
    await late.clock.run_for(NOTICE_TOLD_MS)
    await expect(notices).to_have_text([joined, left, renamed])


@pytest.fixture
def small_rooms(log_dir: Path, tmp_path: Path) -> Iterator[Site]:
    """`make run`'s server listing the people of rooms of at most 3 (CHAT_PRESENCE_LIST_MAX;
    200 by default), its ticker pointed nowhere (it is not used here)."""
    nowhere = free_port()
    process = ServiceProcess(
        "switchboard.embedded",
        log_dir,
        {
            "CERT_DIR": str(tmp_path / "certs"),
            "HOST": "127.0.0.1",
            "CHAT_PRESENCE_LIST_MAX": "3",
            "TICKER_UPSTREAM_URL": f"ws://127.0.0.1:{nowhere}",
            "TICKER_REST_URL": f"http://127.0.0.1:{nowhere}",
        },
        name="embedded-small-rooms",
    )
    try:
        process.wait_ready("/api/chat", scheme="https")
        yield Site("embedded", f"https://localhost:{process.port}")
    finally:
        process.stop()


async def test_a_room_too_big_to_list_says_how_many_are_here_and_lists_them_once_small(
    browser: Browser, small_rooms: Site, unique: str, clients: list[Client]
) -> None:
    room = f"big-{unique}"
    ann = await open_chat(browser, small_rooms, room)
    await pick_name(ann, f"ann-{unique}")
    await expect(ann.locator("#chat-screen")).to_be_visible()
    names = [f"c{i}-{unique}" for i in range(4)]
    people = await asyncio.gather(
        *(connect_chat(clients, small_rooms.url, room=room) for _ in names)
    )
    for person, name in zip(people[:3], names, strict=False):
        assert (await person.call("name", name))["ok"] is True

    # Four are more than the room lists: how many, not who.
    await expect(ann.locator("#crowd")).to_have_text("4 people here: too many to list.")
    await expect(ann.locator("#users")).to_be_hidden()
    await expect(ann.locator("#user-count")).to_have_text("4")
    await accessibility(ann, "chat: a room too big to list, desktop")
    # Nobody's coming is told in the conversation of a room that big.
    told = await ann.locator("#messages .notice").count()
    assert (await people[3].call("name", names[3]))["ok"] is True
    await expect(ann.locator("#crowd")).to_have_text("5 people here: too many to list.")
    await expect(ann.locator("#messages .notice")).to_have_count(told)

    # Three leave: two are few enough to list again.
    await asyncio.gather(*(person.close() for person in people[:3]))
    await expect(ann.locator("#users li")).to_have_text(sorted([f"ann-{unique}", names[3]]))
    await expect(ann.locator("#crowd")).to_be_hidden()
    await expect(ann.locator("#user-count")).to_have_text("2")
