"""The service factory: a FastAPI app wrapped by a python-socketio server, under ``/api/<name>/``.

Every service is built the same way (STYLE.md, "How the pieces fit"): socket.io wraps FastAPI,
everything is served under the service's own prefix in every mode, each service has its own
Redis channel, and the lifespan owns every resource and background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import socketio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

from switchboard import jsonenc
from switchboard.auth import Verifier
from switchboard.components import Component, cancel
from switchboard.fanout import (
    FanoutManager,
    FanoutRedisManager,
    GuardedServer,
    OnHeardAgain,
    listener,
    start_listener,
)
from switchboard.health import READY_TIMEOUT, add_health_routes, unready
from switchboard.metrics import ServiceMetrics
from switchboard.origins import same_origin
from switchboard.redisclient import AckedWrites, RedisComponent, redis_client
from switchboard.replicas import Replica
from switchboard.settings import ServiceSettings

log = logging.getLogger(__name__)

#: socket.io frames and long-polling bodies above this are refused (issue 2: 64 KiB).
MAX_MESSAGE_BYTES = 64 * 1024

#: The two kinds of a store: in memory, in Redis.
M = TypeVar("M", bound=Component)
R = TypeVar("R", bound=Component)


class CountingServer(GuardedServer):
    """A guarded server that counts what it emits, by event name, and the packets it refuses,
    for /metrics."""

    def __init__(self, metrics: ServiceMetrics, send_buffer_limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics
        self.eio.send_buffer_limit = send_buffer_limit
        self.eio.on_cut_off = metrics.slow_clients_cut_off.inc

    async def emit(self, event: str, *args: Any, **kwargs: Any) -> None:
        self.metrics.sent(event)
        await super().emit(event, *args, **kwargs)

    async def refuse_packet(self, eio_sid: str, code: str, why: str) -> None:
        self.metrics.rejected("(packet)", code)
        await super().refuse_packet(eio_sid, code, why)


class Service:
    """One Switchboard service: settings, metrics, the socket.io server, the HTTP app, the
    components its lifespan owns. Build it, register namespaces and components, serve
    :attr:`asgi`."""

    def __init__(
        self, settings: ServiceSettings, *, max_message_bytes: int = MAX_MESSAGE_BYTES
    ) -> None:
        name = type(settings).service_name
        if not name:
            raise ValueError(f"{type(settings).__name__} has no service_name")
        self.name = name
        self.settings = settings
        #: Larger socket.io frames and polling bodies close the connection.
        self.max_message_bytes = max_message_bytes
        self.prefix = f"/api/{name}"
        self.metrics = ServiceMetrics(name)
        #: This process among the replicas of the service.
        self.replica = Replica(
            uuid.uuid4().hex[:12], settings.replica_ttl, self.metrics, settings.redis_url
        )
        self.components: list[Component] = []
        self.redis: Redis | None = None
        self.draining = False
        manager: socketio.AsyncManager = FanoutManager()
        self._acked_writes: AckedWrites | None = None
        #: Checks the tokens clients connect with (AUTH_MODE, docs/auth.md).
        self.verifier = Verifier(
            secret=settings.auth_secret.get_secret_value() if settings.auth_secret else None,
            jwks_url=settings.auth_jwks_url,
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            leeway=settings.auth_leeway,
            refetch=settings.auth_jwks_refetch,
        )
        if settings.redis_url:
            self.redis = redis_client(settings.redis_url)
            self.add_component(RedisComponent(self.redis, self.metrics))
            self._acked_writes = AckedWrites(
                self.redis,
                self.metrics,
                replicas=settings.wait_replicas,
                timeout=settings.redis_wait_timeout,
            )
            manager = FanoutRedisManager(
                settings.redis_url,
                channel=f"socketio:{name}",
                json=jsonenc,
                # The manager decodes its own messages: it wants bytes back.
                redis_options={"decode_responses": False},
            )
        self.sio = CountingServer(
            self.metrics,
            settings.send_buffer_limit,
            async_mode="asgi",
            client_manager=manager,
            json=jsonenc,
            # Never "*" nor [], which switch the check off (CSWSH).
            cors_allowed_origins=list(settings.allowed_origins) or same_origin,
            max_http_buffer_size=max_message_bytes,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            http_compression=False,
            # One client's events are handled one after the other, in the order it sent them
            # (a press after a move, a second message after the first), never interleaved at
            # an await; other clients are not held up.
            async_handlers=False,
            logger=False,
            engineio_logger=False,
        )
        self.http = FastAPI(
            title=f"Switchboard {name}",
            lifespan=lambda _app: self.lifespan(),
            docs_url=f"{self.prefix}/docs" if settings.api_docs else None,
            openapi_url=f"{self.prefix}/openapi.json" if settings.api_docs else None,
            redoc_url=None,
        )
        self.http.add_exception_handler(RequestValidationError, _bad_request)
        add_health_routes(self.http, name, self.prefix, self.readiness, self.metrics)
        self.asgi = socketio.ASGIApp(
            self.sio, other_asgi_app=self.http, socketio_path=f"{self.prefix}/socket.io"
        )

    @property
    def acked_writes(self) -> AckedWrites:
        """How a write the client is told is done reaches Redis (only with ``REDIS_URL``)."""
        if self._acked_writes is None:
            raise RuntimeError(f"{self.name} has no Redis")
        return self._acked_writes

    def add_component(self, component: Component) -> None:
        self.components.append(component)

    def store(self, *, memory: Callable[[], M], redis: Callable[[Redis], R]) -> M | R:
        """The state of the service, made by ``memory()`` for one process or, with
        ``REDIS_URL``, by ``redis(client)`` to be shared by replicas; owned by the lifespan."""
        store: M | R = memory() if self.redis is None else redis(self.redis)
        self.add_component(store)
        return store

    def on_heard_again(self, callback: OnHeardAgain) -> None:
        """Call ``callback(since)`` when this replica's socket.io listener hears Redis again
        after a gap: broadcasts sent since then (a wall-clock time) may have been missed, and
        the service sends its clients what they missed. Nothing without Redis."""
        if isinstance(self.sio.manager, FanoutRedisManager):
            self.sio.manager.on_heard_again.append(callback)

    def background(self, run: Callable[[], Awaitable[None]], what: str) -> asyncio.Task[None]:
        """Start a task whose failure is logged, never lost."""

        async def guarded() -> None:
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: background task %s died", self.name, what)

        return asyncio.get_running_loop().create_task(guarded(), name=f"{self.name}:{what}")

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        started: list[Component] = []
        try:
            for component in self.components:
                await component.start()
                started.append(component)
            start_listener(self.sio)
            log.info("%s service ready (replica %s)", self.name, self.replica.id)
            yield
        finally:
            self.draining = True
            with contextlib.suppress(Exception):
                await cancel(listener(self.sio))
            if isinstance(self.sio.manager, FanoutRedisManager):
                with contextlib.suppress(Exception):
                    await self.sio.manager.stop()
            for component in reversed(started):
                try:
                    await component.stop()
                except Exception:
                    log.exception("%s: stopping %r failed", self.name, component)
            await self.sio.shutdown()

    async def readiness(self) -> list[str]:
        """Reasons the service cannot serve; empty when ready."""
        if self.draining:
            return ["shutting down"]
        manager = self.sio.manager
        task = listener(self.sio)
        if task is not None and task.done():
            return ["socket.io Redis listener stopped", *await unready(self.components)]
        if not isinstance(manager, FanoutRedisManager):
            return await unready(self.components)
        # A round trip through pub/sub, beside the components: a replica deaf to the others'
        # broadcasts is as unready as one without Redis.
        heard, reasons = await asyncio.gather(
            manager.probe(READY_TIMEOUT), unready(self.components)
        )
        return [heard, *reasons] if heard else reasons


async def _bad_request(_request: Request, exc: Exception) -> JSONResponse:
    """A bad query or path parameter: 400 with our usual error object, naming the parameter."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    problems = [f"{e['loc'][-1]}: {e['msg']}" for e in errors if e.get("loc")]
    message = "; ".join(problems) or "bad request"
    return JSONResponse({"ok": False, "error": "bad_request", "message": message}, 400)
