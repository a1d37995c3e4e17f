"""What a service owns for its whole life: started and stopped by the lifespan, asked by
``/readyz`` whether it can serve."""

from __future__ import annotations

from typing import Protocol


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
