"""What a service owns for its whole life: started and stopped by the lifespan, asked by
``/readyz`` whether it can serve."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: Seconds after which a task that has not ended is cancelled again: more than a clean stop
#: takes (the ticker's upstream websocket waits 2 s for its close handshake).
RECANCEL_AFTER = 3.0


class Component(Protocol):
    """Something a service owns for its whole life: started and stopped by the lifespan,
    asked by /readyz whether it can serve."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def check(self) -> str | None:
        """None when ready, otherwise the reason for a person."""
        ...


class Passive:
    """A component with nothing to start, stop or check (a store in memory, say)."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def check(self) -> str | None:
        return None


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (a component's loop, say) and wait until it has stopped; nothing when
    there is none. The cancellation is repeated until the task ends: Python 3.11 can lose one
    that arrives as an ``asyncio.wait_for`` or ``asyncio.timeout`` inside the task ends, and
    the task would run on (a service that never stops). The caller's own cancellation is not
    swallowed; an error the task ended with is raised here."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task}, timeout=RECANCEL_AFTER)
    while not task.done():
        log.warning("%s did not stop when cancelled: cancelling it again", task.get_name())
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_AFTER)
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error
