"""What a service owns for its whole life: started and stopped by the lifespan, asked by
``/readyz`` whether it can serve."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


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
    there is none. The caller's own cancellation is not swallowed."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
