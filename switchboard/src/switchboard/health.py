"""``GET /api/<service>/healthz``, ``/readyz`` and ``/metrics``: what every service tells the
gateway, compose's healthchecks and Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from switchboard.components import Component
from switchboard.metrics import CONTENT_TYPE, ServiceMetrics

#: How long /readyz waits for each dependency before it calls it down.
READY_TIMEOUT = 2.0


async def unready(components: Iterable[Component]) -> list[str]:
    """The reasons ``components`` give for not serving, asked together; empty when all are
    ready. One that does not answer within :data:`READY_TIMEOUT` is not ready."""

    async def ask(component: Component) -> str | None:
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                return await component.check()
        except TimeoutError:
            return f"{type(component).__name__}: no answer within {READY_TIMEOUT} s"

    answers = await asyncio.gather(*(ask(component) for component in components))
    return [reason for reason in answers if reason]


def add_health_routes(
    http: FastAPI,
    name: str,
    prefix: str,
    readiness: Callable[[], Awaitable[list[str]]],
    service_metrics: ServiceMetrics,
) -> None:
    """The three routes under ``prefix``; ``readiness`` gives the reasons the service cannot
    serve (none when it can)."""

    @http.get(f"{prefix}/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: 200 while the process serves."""
        return {"status": "ok", "service": name}

    @http.get(f"{prefix}/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Readiness: 200 when every dependency answers, 503 with the reasons otherwise."""
        reasons = await readiness()
        if reasons:
            return JSONResponse(
                {"status": "unavailable", "service": name, "reasons": reasons},
                status_code=503,
            )
        return JSONResponse({"status": "ready", "service": name})

    @http.get(f"{prefix}/metrics", tags=["health"])
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(service_metrics.render(), media_type=CONTENT_TYPE)
