"""The call page: two people in a room call each other, and one person calls the echo peer; the
videos really play, relayed by coturn on loopback (SIGNAL_ICE_TRANSPORT_POLICY=relay).

What the tests look at in web/call/: ``#name-form`` with ``#name-input``, ``#name-submit`` and
``#name-error`` (the name a person gives before joining), ``#status[data-state]`` (our
connection to the server, from /shared/connection.js), ``#me[data-id]`` (our socket id) with
``#my-name``, ``#peers li[data-id]`` (the others in the room by name, with a ``.call-hint``
saying where a call with them stands; the echo peer as ``data-id="echo"``; never ourselves),
``#call-button`` (calls the peer selected in the list), ``#call-state[data-state]`` (idle |
calling | incoming | connecting | connected | failed | ended) with ``#call-partner-name``,
``#call-reason`` (why, when there is a reason), ``#partner-media`` (the other side's microphone
and camera, when off) and ``data-peer`` (who with), ``#incoming`` with ``#incoming-from``,
``#accept`` and ``#decline``, ``#hangup``, ``#stage-caption``, ``#local-video`` (our camera; its
srcObject holds our tracks), ``#remote-video``, ``#remote-placeholder`` (in a call without the
other side's picture: whose, and why) and ``#remote-mic`` (their microphone is off),
``#mic-toggle`` and ``#cam-toggle`` (``aria-pressed``: the track's ``enabled``), ``#rtt`` (the
control channel's round-trip).

Every state a test reaches is checked by axe-core (``accessibility``), on a desktop and on a
phone.

Chromium's fake camera and microphone stand in for real ones; its own fake UI grants them.

Every wait is for something that must happen, bounded by PATIENCE: a call through TURN on a busy
machine takes what it takes. The page's own timers (30 s without an answer, ...) are moved on by
``page.clock`` where a test is about them.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, Playwright, WebSocketRoute, expect

from tests.browser.conftest import (
    FLAGS,
    Chromium,
    Site,
    accessibility,
    close_contexts,
    for_one_test,
    new_context,
)
from tests.harness import ServiceProcess, TurnServer
from tests.signal.conftest import turn  # noqa: F401  (the session's coturn, re-exported)

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]

MEDIA_FLAGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]

#: A video's state: frames decoded, time, size and whether it plays.
SAMPLE_VIDEO = """(selector) => {
  const video = document.querySelector(selector);
  return {
    frames: video.getVideoPlaybackQuality().totalVideoFrames,
    time: video.currentTime,
    width: video.videoWidth,
    height: video.videoHeight,
    paused: video.paused,
  };
}"""
#: Whether a video has gone on since ``first`` (a SAMPLE_VIDEO): more frames, later time.
VIDEO_WENT_ON = """([selector, first]) => {
  const video = document.querySelector(selector);
  return video.getVideoPlaybackQuality().totalVideoFrames > first.frames
    && video.currentTime > first.time;
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def media_chromium(playwright_driver: Playwright) -> AsyncIterator[Chromium]:
    """Chromium with a fake camera and microphone, allowed without asking: one for the
    module's tests, each with contexts of its own (tests/browser/conftest.py)."""
    shared = Chromium(playwright_driver, FLAGS + MEDIA_FLAGS)
    yield shared
    await shared.close()


@pytest_asyncio.fixture(loop_scope="session")
async def media_browser(media_chromium: Chromium) -> AsyncIterator[Browser]:
    shared = await for_one_test(media_chromium)
    yield shared
    await close_contexts(shared)


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=["embedded", "gateway"])
async def server(
    request: pytest.FixtureRequest,
    turn: TurnServer,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Site]:
    """The embedded server, or the gateway of `make cluster` in front of two signalling
    replicas; every call relayed by a coturn on loopback. One for the module's tests: each
    test's people are in rooms of their own."""
    if request.param == "gateway":
        cluster = request.getfixturevalue("cluster")
        yield Site("gateway", cluster.url, cluster)
        return
    directory = tmp_path_factory.mktemp("embedded-call")
    process = ServiceProcess(
        "switchboard.embedded",
        directory,
        {
            "CERT_DIR": str(directory / "certs"),
            "HOST": "127.0.0.1",
            "TURN_URLS": turn.url,
            "TURN_SECRET": turn.secret,
            "SIGNAL_ICE_TRANSPORT_POLICY": "relay",
        },
        name="embedded-call",
    )
    try:
        await process.ready("/api/signal", scheme="https")
        yield Site("embedded", f"https://localhost:{process.port}")
    finally:
        process.stop()


async def open_call(
    browser: Browser,
    site: Site,
    room: str,
    name: str,
    *,
    phone: bool = False,
    fake_clock: bool = False,
    taken: str = "",
    axe: str = "",
) -> Page:
    """The call page in a context of its own (another person), joined as ``name``, connected,
    with its camera on. ``taken``: a name tried first, and refused as someone else's; ``axe``:
    the name form is checked by axe-core, as this state. With ``fake_clock``, its timers wait
    for ``page.clock`` to move them on (once connected)."""
    viewport = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 800}
    context = await new_context(browser, viewport=viewport, has_touch=phone, is_mobile=phone)
    page = await context.new_page()
    if fake_clock:
        await page.clock.install()
    await page.goto(f"{site.url}/call/?room={room}")
    # Nobody joins nameless: the name first.
    await expect(page.locator("#name-form")).to_be_visible()
    await expect(page.locator("#peers li")).to_have_count(0)
    if axe:
        await expect(page.locator("#cam-toggle")).to_be_enabled()
        await accessibility(page, axe)
    if taken:
        await page.locator("#name-input").fill(taken)
        await page.locator("#name-submit").click()
        await expect(page.locator("#name-error")).to_contain_text("taken")
        await expect(page.locator("#name-input")).to_have_attribute("aria-invalid", "true")
    await page.locator("#name-input").fill(name)
    await page.locator("#name-submit").click()
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#my-name")).to_have_text(name)
    await expect(page.locator("#name-form")).to_be_hidden()
    await expect(page.locator("#me")).to_have_attribute("data-id", re.compile(r"^[\w-]+$"))
    await expect(page.locator("#cam-toggle")).to_be_enabled()
    if fake_clock:
        # From here on, the page's time stands still but for page.clock: none of its timers
        # fires by itself, however long the test takes on a busy machine.
        now = await page.evaluate("Date.now()") / 1000
        await page.clock.pause_at(datetime.datetime.fromtimestamp(now + 1, datetime.UTC))
    return page


async def my_id(page: Page) -> str:
    return await page.locator("#me").get_attribute("data-id") or ""


async def assert_no_ids(page: Page, *ids: str) -> None:
    """People are named: no connection id shows anywhere on the page."""
    for sid in ids:
        await expect(page.locator("body")).not_to_contain_text(sid)


def overlaps(a: dict[str, float] | None, b: dict[str, float] | None) -> bool:
    assert a is not None and b is not None
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


async def assert_playing(page: Page, selector: str) -> None:
    """Frames are decoded and time goes on: a picture that moves, not only a connection."""
    await page.wait_for_function(
        "(selector) => document.querySelector(selector).videoWidth > 0", arg=selector
    )
    first = await page.evaluate(SAMPLE_VIDEO, selector)
    # More frames and a later time: however long the machine takes to show them.
    await page.wait_for_function(VIDEO_WENT_ON, arg=[selector, first], polling=100)
    second = await page.evaluate(SAMPLE_VIDEO, selector)
    assert second["width"] > 0 and second["height"] > 0, second
    assert not second["paused"], second
    assert second["frames"] > first["frames"], (first, second)
    assert second["time"] > first["time"], (first, second)


async def track_enabled(page: Page, kind: str) -> Any:
    return await page.evaluate(
        "(kind) => document.getElementById('local-video').srcObject"
        ".getTracks().find((track) => track.kind === kind).enabled",
        kind,
    )


async def test_two_people_call_see_each_other_and_hang_up(
    media_browser: Browser, server: Site, unique: str, tmp_path: Path
) -> None:
    room = f"call-{unique}"
    kind = server.kind
    ann = await open_call(media_browser, server, room, "Ann", axe=f"call {kind}, name, desktop")
    bob = await open_call(
        media_browser, server, room, "Bob", phone=True, axe=f"call {kind}, name, phone"
    )
    ann_id, bob_id = await my_id(ann), await my_id(bob)
    await server.on_both_replicas("signal")

    # Each sees the other by name and the echo peer, never themselves, never an id.
    for page, other, me, name in ((ann, bob_id, ann_id, "Bob"), (bob, ann_id, bob_id, "Ann")):
        await expect(page.locator(f'#peers li[data-id="{other}"] .peer-name')).to_have_text(name)
        await expect(page.locator(f'#peers li[data-id="{me}"]')).to_have_count(0)
        await expect(page.locator('#peers li[data-id="echo"]')).to_contain_text("Echo test")
        await expect(page.locator("#call-state")).to_have_attribute("data-state", "idle")
        await assert_no_ids(page, ann_id, bob_id)
    await accessibility(ann, f"call {kind}, idle, desktop")
    await accessibility(bob, f"call {kind}, idle, phone")

    # Ann calls Bob: both ring, and nothing says they are in a call yet.
    await ann.locator(f'#peers li[data-id="{bob_id}"]').click()
    await expect(ann.locator("#call-button")).to_have_text("Call Bob")
    await ann.locator("#call-button").click()
    await expect(ann.locator("#call-state")).to_have_attribute("data-state", "calling")
    await expect(ann.locator("#call-state-text")).to_have_text("Calling…")
    await expect(ann.locator("#call-partner-name")).to_have_text("Bob")
    await expect(ann.locator(f'#peers li[data-id="{bob_id}"] .call-hint')).to_have_text("ringing…")
    await expect(ann.locator("#call-button")).to_have_text("Calling Bob…")
    await expect(ann.locator("#call-button")).to_be_disabled()
    await expect(ann.locator("#hangup")).to_have_text("Cancel")
    await expect(ann.locator("#stage-caption")).to_have_text("Calling Bob…")
    await expect(ann.locator(".side")).not_to_contain_text(re.compile("in a call", re.I))
    # Bob's phone says it once, in the incoming sheet, naming Ann; nothing else repeats it,
    # and the sheet leaves the list, where Ann is, in view.
    await expect(bob.locator("#call-state")).to_have_attribute("data-state", "incoming")
    await expect(bob.locator("#incoming")).to_be_visible()
    await expect(bob.locator("#incoming-from")).to_have_text("Ann")
    await expect(bob.locator("#incoming")).to_contain_text("Ann is calling you")
    await expect(bob.locator("#call-state")).to_be_hidden()
    await expect(bob.locator("#call-state")).to_have_attribute("aria-live", "off")
    await expect(bob.locator("#stage-caption")).to_be_hidden()
    await expect(bob.locator("#call-button")).to_be_hidden()
    caller = bob.locator(f'#peers li[data-id="{ann_id}"]')
    await expect(caller.locator(".call-hint")).to_have_text("calling you")
    await expect(caller).to_be_in_viewport()
    sheet = await bob.locator("#incoming").bounding_box()
    assert not overlaps(sheet, await caller.bounding_box()), "the sheet hides the caller"
    await assert_no_ids(bob, ann_id, bob_id)
    await accessibility(ann, f"call {kind}, ringing out, desktop")
    await accessibility(bob, f"call {kind}, ringing in, phone")
    await bob.screenshot(path=str(tmp_path / "call-incoming.png"))
    await bob.locator("#accept").tap()

    for page, other, name in ((ann, bob_id, "Bob"), (bob, ann_id, "Ann")):
        state = page.locator("#call-state")
        await expect(state).to_have_attribute("data-state", "connected")
        await expect(state).to_have_attribute("data-peer", other)
        await expect(page.locator("#call-state-text")).to_have_text("In a call")
        await expect(page.locator(f'#peers li[data-id="{other}"] .call-hint')).to_have_text(
            "in a call with you"
        )
        await expect(page.locator("#call-button")).to_have_text(f"In a call with {name}")
        await expect(page.locator("#hangup")).to_have_text("Hang up")
    await expect(bob.locator("#incoming")).to_be_hidden()
    await assert_playing(ann, "#remote-video")
    await assert_playing(bob, "#remote-video")
    await assert_playing(ann, "#local-video")
    # The control channel carries ping/pong both ways.
    await expect(ann.locator("#rtt")).to_contain_text(re.compile(r"round-trip: \d+ ms"))
    await accessibility(ann, f"call {kind}, in a call, desktop")
    await accessibility(bob, f"call {kind}, in a call, phone")
    await ann.screenshot(path=str(tmp_path / "call-connected-desktop.png"))
    await bob.screenshot(path=str(tmp_path / "call-connected-phone.png"))

    # Bob turns his camera and microphone off: Ann sees it, said with his name, not a black
    # box; and on again.
    await bob.locator("#cam-toggle").tap()
    await bob.locator("#mic-toggle").tap()
    await expect(ann.locator("#stage")).to_have_attribute("data-remote", "camera-off")
    await expect(ann.locator("#remote-placeholder-text")).to_have_text("Bob's camera is off")
    await expect(ann.locator("#remote-mic")).to_have_text("Bob is muted")
    await expect(ann.locator("#partner-media")).to_have_text("Bob's microphone and camera are off.")
    await accessibility(ann, f"call {kind}, the other side's camera and microphone off, desktop")
    await bob.locator("#cam-toggle").tap()
    await bob.locator("#mic-toggle").tap()
    await expect(ann.locator("#stage")).to_have_attribute("data-remote", "video")
    await expect(ann.locator("#remote-mic")).to_be_hidden()
    await expect(ann.locator("#partner-media")).to_be_hidden()
    # Ann's microphone, seen on Bob's phone.
    await ann.locator("#mic-toggle").click()
    await expect(bob.locator("#remote-mic")).to_have_text("Ann is muted")
    await expect(bob.locator("#remote-mic")).to_be_in_viewport()
    await accessibility(bob, f"call {kind}, the other side's microphone off, phone")

    # Ann hangs up: both calls are over, Bob's with the reason.
    await ann.locator("#hangup").click()
    await expect(ann.locator("#call-state")).to_have_attribute("data-state", "ended")
    await expect(ann.locator("#call-reason")).to_have_text("You hung up.")
    await expect(bob.locator("#call-state")).to_have_attribute("data-state", "ended")
    await expect(bob.locator("#call-reason")).to_have_text("Ann hung up.")
    await expect(bob.locator("#hangup")).to_be_hidden()
    for page in (ann, bob):
        await expect(page.locator("#peers .call-hint")).to_have_count(0)
        await expect(page.locator("#remote-mic")).to_be_hidden()
    # Both still in the room, ready for another call.
    await expect(bob.locator(f'#peers li[data-id="{ann_id}"]')).to_have_count(1)
    await expect(ann.locator("#call-button")).to_be_enabled()
    await expect(ann.locator("#call-button")).to_have_text("Call Bob")
    await accessibility(ann, f"call {kind}, after a call, desktop")
    await accessibility(bob, f"call {kind}, after a call, phone")
    await bob.screenshot(path=str(tmp_path / "call-ended-phone.png"))


@pytest.mark.parametrize("server", ["embedded"], indirect=True)
async def test_a_call_goes_on_when_one_side_loses_the_signalling_server(
    media_browser: Browser, server: Site, unique: str
) -> None:
    """Only signalling died (its replica, or the page's connection to it): the media flows
    peer to peer, so neither side ends the call; the page reconnects under a new id."""
    room = f"call-{unique}"
    # Ann on a phone, Bob on a desktop: each ringing state is seen by axe-core at both sizes
    # (the first test rings the other way).
    ann = await open_call(media_browser, server, room, "Ann", phone=True)
    # Bob's signalling goes through a socket the test can cut: a real close, seen by both ends.
    bob_context = await new_context(media_browser, viewport={"width": 1280, "height": 800})
    bob = await bob_context.new_page()
    sockets: list[WebSocketRoute] = []

    def through(route: WebSocketRoute) -> None:
        sockets.append(route.connect_to_server())

    await bob.route_web_socket(re.compile(r"/api/signal/socket\.io/"), through)
    await bob.goto(f"{server.url}/call/?room={room}")
    await bob.locator("#name-input").fill("Bob")
    await bob.locator("#name-submit").click()
    await expect(bob.locator("#status")).to_have_attribute("data-state", "connected")
    await expect(bob.locator("#cam-toggle")).to_be_enabled()
    bob_id = await my_id(bob)

    await ann.locator(f'#peers li[data-id="{bob_id}"]').tap()
    await ann.locator("#call-button").tap()
    await expect(ann.locator("#call-state")).to_have_attribute("data-state", "calling")
    await expect(bob.locator("#incoming-from")).to_have_text("Ann")
    await accessibility(ann, "call embedded, ringing out, phone")
    await accessibility(bob, "call embedded, ringing in, desktop")
    await bob.locator("#accept").click()
    for page in (ann, bob):
        await expect(page.locator("#call-state")).to_have_attribute("data-state", "connected")

    await sockets[-1].close()  # the server's side: Bob's connection ends
    await expect(ann.locator(f'#peers li[data-id="{bob_id}"]')).to_have_count(0)
    await expect(bob.locator("#me")).not_to_have_attribute("data-id", bob_id)  # a new id
    await expect(bob.locator("#status")).to_have_attribute("data-state", "connected")
    # Back under his name (his tab kept it), listed by it again.
    await expect(bob.locator("#my-name")).to_have_text("Bob")
    await expect(ann.locator("#peers li").filter(has_text="Bob")).to_have_count(1)
    for page in (ann, bob):
        await expect(page.locator("#call-state")).to_have_attribute("data-state", "connected")
        await assert_playing(page, "#remote-video")
    # Bob hangs up: the closing reaches Ann peer to peer.
    await bob.locator("#hangup").click()
    await expect(ann.locator("#call-state")).to_have_attribute("data-state", "ended")
    await expect(ann.locator("#call-reason")).to_have_text("Bob hung up.")


async def test_the_echo_peer_sends_your_own_video_back(
    media_browser: Browser, server: Site, unique: str, tmp_path: Path
) -> None:
    page = await open_call(media_browser, server, f"echo-{unique}", "Cy", phone=True)
    # A reload keeps the name (this tab's, for this room): no form, straight back in.
    await page.reload()
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#my-name")).to_have_text("Cy")
    await expect(page.locator("#name-form")).to_be_hidden()
    await expect(page.locator("#cam-toggle")).to_be_enabled()
    # And it can be changed.
    await page.locator("#rename").tap()
    await page.locator("#name-input").fill("Dee")
    await page.locator("#name-submit").tap()
    await expect(page.locator("#my-name")).to_have_text("Dee")
    await expect(page.locator("#name-form")).to_be_hidden()
    await page.locator('#peers li[data-id="echo"]').tap()
    await expect(page.locator("#call-button")).to_contain_text("echo")
    await page.locator("#call-button").tap()

    state = page.locator("#call-state")
    await expect(state).to_have_attribute("data-state", "connected")
    await expect(state).to_have_attribute("data-peer", "echo")
    await assert_playing(page, "#remote-video")
    await expect(page.locator("#rtt")).to_contain_text(re.compile(r"echo round-trip: \d+ ms"))
    await page.screenshot(path=str(tmp_path / "call-echo.png"))

    await page.locator("#hangup").tap()
    await expect(state).to_have_attribute("data-state", "ended")
    await expect(page.locator("#remote-video")).to_have_js_property("srcObject", None)


async def test_declined_withdrawn_and_unanswered_calls_and_the_toggles(
    media_browser: Browser, server: Site, unique: str
) -> None:
    room = f"decline-{unique}"
    # Both clocks are ours to move: no ringing runs out unless the test says so, and then the
    # 30 s without an answer pass at once. (No axe-core here: it waits on timers, which stand
    # still.)
    ann = await open_call(media_browser, server, room, "Ann", phone=True, fake_clock=True)
    # Bob first asks for Ann's name, in other letters: it is hers; then he picks his own.
    bob = await open_call(media_browser, server, room, "Bob", fake_clock=True, taken="ANN")
    bob_id = await my_id(bob)
    await expect(ann.locator(f'#peers li[data-id="{bob_id}"] .peer-name')).to_have_text("Bob")

    # The toggles switch the tracks (still sent, as silence and black) on and off.
    for button, kind in (("#mic-toggle", "audio"), ("#cam-toggle", "video")):
        assert await track_enabled(bob, kind) is True
        await bob.locator(button).click()
        await expect(bob.locator(button)).to_have_attribute("aria-pressed", "false")
        assert await track_enabled(bob, kind) is False
        await bob.locator(button).click()
        await expect(bob.locator(button)).to_have_attribute("aria-pressed", "true")
        assert await track_enabled(bob, kind) is True

    async def ring() -> None:
        await ann.locator(f'#peers li[data-id="{bob_id}"]').click()
        await ann.locator("#call-button").click()
        await expect(bob.locator("#incoming")).to_be_visible()

    # Bob declines: Ann is told at once (a rollback of her offer), not after 30 s of ringing.
    await ring()
    await expect(ann.locator("#hangup")).to_have_text("Cancel")
    await expect(ann.locator("#call-button")).to_have_text("Calling Bob…")
    await expect(bob.locator("#incoming-from")).to_have_text("Ann")
    await bob.locator("#decline").click()
    await expect(bob.locator("#incoming")).to_be_hidden()
    await expect(bob.locator("#call-state")).to_have_attribute("data-state", "ended")
    await expect(bob.locator("#call-reason")).to_contain_text("declined")
    await expect(ann.locator("#call-state")).to_have_attribute("data-state", "ended")
    await expect(ann.locator("#call-reason")).to_have_text("Declined.")

    # Ann gives up before Bob answers: Bob's ringing stops.
    await ring()
    await ann.locator("#hangup").click()
    await expect(bob.locator("#incoming")).to_be_hidden()
    await expect(bob.locator("#call-reason")).to_have_text("The caller hung up.")

    # Nobody answers: Ann stops after 30 s, and Bob's ringing with her.
    await ring()
    await expect(ann.locator("#call-state")).to_have_attribute("data-state", "calling")
    await ann.clock.fast_forward("00:31")
    await expect(ann.locator("#call-state")).to_have_attribute("data-state", "ended")
    await expect(ann.locator("#call-reason")).to_have_text("No answer.")
    await expect(bob.locator("#incoming")).to_be_hidden()
    await expect(ann.locator("#call-button")).to_be_enabled()
