"""Issue 13, scenario 2 (the remote): the replica of one side of a pairing killed (SIGKILL) while
the phone presses buttons. The side that lost its replica connects to the other one and resumes
with its session secret, as the pages do; the pairing goes on without scanning again, and the
other side is never left paired with a ghost.

Presses are numbered; a press is acknowledged once the desktop confirmed it. Whichever side's
replica dies, every press the service acknowledged reaches the desktop once and in order; a press
sent while the desktop was away is refused (``desktop_away``, ``not_delivered``), never taken for
delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tests.faults.users import Presses, Side
from tests.harness import RedisServer, ServiceProcess, start_together, until

pytestmark = pytest.mark.asyncio


def replicas(log_dir: Path, redis: RedisServer, label: str) -> list[ServiceProcess]:
    env = {"REDIS_URL": redis.url, "REPLICA_TTL": "3"}
    return start_together(log_dir, (("cursors", env, f"{label}-{n}") for n in range(2)))


async def pair(screen: Side, phone: Side, desktop_on: int) -> None:
    """The screen on replica ``desktop_on``, the phone on the other, paired by the link."""
    screen.next, phone.next = desktop_on, 1 - desktop_on
    await screen.connect({"role": "desktop"})
    (pairing,) = await until(lambda: screen.got("pairing"), "a pairing")
    secret = pairing["url"].split("#pair=", 1)[1]
    await phone.connect({"role": "controller", "pair": secret})
    await until(lambda: phone.got("paired"), "paired")


def delivered(screen: Side) -> list[str]:
    return [data["button"] for data in screen.got("press")]


@dataclass
class Remote:
    """Replicas A and B, a screen and a phone paired across them, the phone pressing."""

    a: ServiceProcess
    b: ServiceProcess
    screen: Side
    phone: Side
    presses: Presses = field(init=False)
    pressing: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.presses = Presses(self.phone)

    async def stop_pressing(self) -> None:
        """The phone stops after the press it is waiting on; a failure of its loop shows."""
        self.presses.going = False
        if self.pressing is not None:
            await self.pressing


#: Which side is on replica A, the one the test kills.
OnA = Literal["phone", "screen"]
Start = Callable[[OnA], Awaitable[Remote]]


@pytest.fixture
async def pressing(log_dir: Path, own_redis: RedisServer) -> AsyncIterator[Start]:
    """Starts two replicas, pairs a screen and a phone across them (``on_a`` on A), and has the
    phone press until 30 presses are acked; everything is stopped after the test."""
    started: list[Remote] = []

    async def start(on_a: OnA) -> Remote:
        a, b = replicas(log_dir, own_redis, f"remote-kill-{on_a}")
        remote = Remote(a, b, Side([a.url, b.url]), Side([a.url, b.url]))
        started.append(remote)
        await pair(remote.screen, remote.phone, desktop_on=0 if on_a == "screen" else 1)
        remote.pressing = asyncio.create_task(remote.presses.run())
        await until(lambda: len(remote.presses.acked) >= 30, "presses before")
        return remote

    yield start
    for remote in started:
        remote.presses.going = False
        if remote.pressing is not None:
            await asyncio.gather(remote.pressing, return_exceptions=True)
        await remote.phone.close()
        await remote.screen.close()
        remote.a.stop()
        remote.b.stop()


async def test_a_killed_controller_replica_the_phone_resumes_and_no_acked_press_is_lost(
    pressing: Start,
) -> None:
    remote = await pressing("phone")
    screen, phone, presses = remote.screen, remote.phone, remote.presses
    first_phone = phone.sio.get_sid("/remote") if phone.sio else None
    remote.a.kill()
    await until(lambda: phone.reconnects == 1 and phone.sio, "the phone connected again")
    acked_then = len(presses.acked)
    await until(lambda: len(presses.acked) >= acked_then + 30, "presses after")
    await remote.stop_pressing()
    await until(lambda: delivered(screen)[-1:] == presses.acked[-1:], "the last press")

    got = delivered(screen)
    assert len(got) == len(set(got)), "a press was delivered twice"
    assert [p for p in got if p in set(presses.acked)] == presses.acked, "lost or reordered"
    resumed = [j for j in screen.got("controller_joined") if j["resumed"]]
    assert resumed and resumed[-1]["controller"] != first_phone
    assert not phone.got("unpaired") and screen.reconnects == 0
    print(
        f"\nremote, controller's replica killed: {len(presses.acked)} presses acked, "
        f"0 lost, {presses.unanswered} unanswered, refused {presses.refused}, "
        f"{phone.reconnects} reconnect with the session"
    )


async def test_a_killed_desktop_replica_the_screen_resumes_its_pairing(
    pressing: Start,
) -> None:
    remote = await pressing("screen")
    screen, phone, presses = remote.screen, remote.phone, remote.presses
    remote.a.kill()
    await until(lambda: screen.reconnects == 1 and screen.sio, "the screen connected again")
    await until(
        lambda: any(j["resumed"] for j in screen.got("controller_joined")),
        "the pairing resumed",
    )
    sent_when_back = presses.sent
    await until(lambda: presses.sent >= sent_when_back + 30, "presses after")
    await remote.stop_pressing()
    await until(lambda: delivered(screen)[-1:] == presses.acked[-1:], "the last press")

    got = delivered(screen)
    assert len(got) == len(set(got)), "a press was delivered twice"
    acked = set(presses.acked)
    assert [p for p in got if p in acked] == presses.acked, "an acked press lost or reordered"
    # Delivered, but its confirmation died with the replica: refused, the phone sends again.
    unconfirmed = [p for p in got if p not in acked]
    assert not screen.got("pairing")[1:], "the screen got a new code: the pairing ended"
    assert not phone.got("unpaired") and phone.reconnects == 0
    print(
        f"\nremote, desktop's replica killed: {len(presses.acked)} presses acked, 0 lost, "
        f"{len(unconfirmed)} delivered but refused (their confirmation died with the "
        f"replica), refused {presses.refused}, {presses.unanswered} unanswered, the screen "
        f"resumed its pairing"
    )
