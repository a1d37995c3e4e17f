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
from typing import Any, Protocol

import socketio
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from switchboard import jsonenc
from switchboard.fanout import FanoutManager, FanoutRedisManager
from switchboard.metrics import CONTENT_TYPE, ServiceMetrics
from switchboard.replicas import Heartbeat, OnBeat
from switchboard.settings import ServiceSettings

log = logging.getLogger(__name__)

#: socket.io frames and long-polling bodies above this are refused (issue 2: 64 KiB).
MAX_MESSAGE_BYTES = 64 * 1024
#: Below nginx's proxy_read_timeout (60 s by default), so an idle tunnel is never cut.
PING_INTERVAL = 25
PING_TIMEOUT = 20
#: How long /readyz waits for each dependency before it calls it down.
READY_TIMEOUT = 2.0
#: Redis connections per process, and how long a command waits for a free one.
REDIS_POOL_SIZE = 64
REDIS_POOL_TIMEOUT = 5.0


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


class InputError(Exception):
    """A client sent something we refuse. The handler's caller turns it into an error object,
    sent as the ack and as the service's error event, never as a stack trace."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        event: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        #: The event that carries the error to the client, when not the service's default.
        self.event = event
        #: Fields a program may rely on (``retry_after``), beside the code and the message.
        self.details = details or {}

    def payload(self) -> dict[str, Any]:
        return {"ok": False, "error": self.code, "message": self.message, **self.details}

    def refusal(self) -> Exception:
        """For a connect handler to raise: socket.io's ``connect_error`` carries
        ``{message, data}``, and ``data`` is our usual error object."""
        refused: Exception = socketio.exceptions.ConnectionRefusedError(
            self.message, self.payload()
        )
        return refused


class CountingServer(socketio.AsyncServer):  # type: ignore[misc]
    """An AsyncServer that counts what it emits, by event name, for /metrics."""

    def __init__(self, metrics: ServiceMetrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics

    async def emit(self, event: str, *args: Any, **kwargs: Any) -> None:
        self.metrics.sent(event)
        await super().emit(event, *args, **kwargs)


class ServiceNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """A namespace whose handlers may raise :class:`InputError`.

    Every inbound event is counted, an event with no handler is refused, and an unexpected
    exception is logged here and answered with an ``internal`` error: nothing a client sends
    can crash the service or see a traceback.
    """

    #: The event that carries refusals to the client (``chat_error`` for chat).
    error_event = "error"
    #: Events whose refusals travel on an event of their own (chat's ``name_error``).
    error_events: dict[str, str] = {}

    def __init__(self, service: Service, namespace: str = "/") -> None:
        super().__init__(namespace)
        self.service = service
        self.metrics = service.metrics

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event == "connect":
            return await self._connect(*args)
        if event == "disconnect":
            return await super().trigger_event(event, *args)
        handler = getattr(self, f"on_{event}", None) if event.isidentifier() else None
        sid = args[0]
        if handler is None:
            self.metrics.received("(unknown)")
            return await self.refuse(
                sid, "(unknown)", InputError("unknown_event", f"there is no event {event!r}")
            )
        self.metrics.received(event)
        try:
            return await handler(*args)
        except InputError as error:
            return await self.refuse(sid, event, error)
        except RedisError as exc:
            self.metrics.redis_errors.inc()
            log.warning("%s: Redis failed while handling %r: %s", self.service.name, event, exc)
            return await self.refuse(
                sid,
                event,
                InputError("unavailable", "The service's storage is unavailable; try again."),
            )
        except Exception:
            log.exception("%s: %r handler failed", self.service.name, event)
            return await self.refuse(
                sid, event, InputError("internal", "Something went wrong on our side.")
            )

    async def _connect(self, *args: Any) -> Any:
        """A connection refused for a reason the client can act on, never a hung handshake:
        storage failures and our own bugs become refusals too."""
        try:
            return await super().trigger_event("connect", *args)
        except socketio.exceptions.ConnectionRefusedError:
            raise
        except RedisError as exc:
            self.metrics.redis_errors.inc()
            log.warning("%s: refusing a connection, Redis failed: %s", self.service.name, exc)
            unavailable = InputError("unavailable", "The service's storage is unavailable.")
            raise unavailable.refusal() from None
        except Exception:
            log.exception("%s: connect handler failed", self.service.name)
            raise InputError("internal", "Something went wrong on our side.").refusal() from None

    async def refuse(self, sid: str, event: str, error: InputError) -> dict[str, Any]:
        self.metrics.rejected(event, error.code)
        payload = error.payload()
        channel = error.event or self.error_events.get(event, self.error_event)
        await self.emit(channel, {**payload, "event": event}, to=sid)
        return payload


class RedisComponent:
    """The service's Redis client: ready while Redis answers PING."""

    def __init__(self, client: Redis, metrics: ServiceMetrics) -> None:
        self.client = client
        self.metrics = metrics

    async def start(self) -> None:
        # Redis may come up after us (compose starts things in parallel): /readyz says so
        # until it answers, rather than the start failing.
        with contextlib.suppress(RedisError, OSError):
            await self.client.ping()

    async def stop(self) -> None:
        await self.client.aclose()

    async def check(self) -> str | None:
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            self.metrics.redis_errors.inc()
            return f"redis: {exc or type(exc).__name__}"
        return None


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
        #: This process's identity among the replicas of the service.
        self.replica_id = uuid.uuid4().hex[:12]
        self.metrics = ServiceMetrics(name)
        self.components: list[Component] = []
        self.redis: Redis | None = None
        self.draining = False
        manager: socketio.AsyncManager = FanoutManager()
        if settings.redis_url:
            # Blocking: when every connection is busy a command waits for one (up to the pool
            # timeout) instead of failing with "Too many connections", which many clients
            # sending at once caused (docs/benchmarks.md, churn).
            pool = BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=REDIS_POOL_SIZE,
                timeout=REDIS_POOL_TIMEOUT,
                **redis_options(),
            )
            self.redis = Redis(connection_pool=pool)
            self.add_component(RedisComponent(self.redis, self.metrics))
            manager = FanoutRedisManager(
                settings.redis_url,
                channel=f"socketio:{name}",
                json=jsonenc,
                # The manager decodes its own messages: it wants bytes back.
                redis_options={**redis_options(), "decode_responses": False},
            )
        self.sio = CountingServer(
            self.metrics,
            async_mode="asgi",
            client_manager=manager,
            json=jsonenc,
            # Never "*" nor [], which switch the check off (CSWSH).
            cors_allowed_origins=list(settings.allowed_origins) or same_origin,
            max_http_buffer_size=max_message_bytes,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
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
            docs_url=f"{self.prefix}/docs",
            openapi_url=f"{self.prefix}/openapi.json",
            redoc_url=None,
        )
        self.http.add_exception_handler(RequestValidationError, _bad_request)
        self._add_health_routes()
        self.asgi = socketio.ASGIApp(
            self.sio, other_asgi_app=self.http, socketio_path=f"{self.prefix}/socket.io"
        )

    def add_component(self, component: Component) -> None:
        self.components.append(component)

    def add_heartbeat(self, prefix: str, on_beat: OnBeat) -> Heartbeat:
        """This replica's liveness key under ``prefix`` (switchboard.replicas), refreshed for the
        service's life; ``on_beat`` runs after each beat (re-registering, reaping the dead)."""
        if self.redis is None:
            raise RuntimeError("a heartbeat needs REDIS_URL")
        heartbeat = Heartbeat(
            self.redis,
            prefix=prefix,
            replica_id=self.replica_id,
            ttl=self.settings.replica_ttl,
            metrics=self.metrics,
            on_beat=on_beat,
        )
        self.add_component(heartbeat)
        return heartbeat

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
            # Start the Redis listener now, not on the first request, so /readyz can see it.
            if not self.sio.manager_initialized:
                self.sio.manager_initialized = True
                self.sio.manager.initialize()
            log.info("%s service ready (replica %s)", self.name, self.replica_id)
            yield
        finally:
            self.draining = True
            listener = getattr(self.sio.manager, "thread", None)
            if isinstance(listener, asyncio.Task):
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener
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
        reasons: list[str] = []
        listener = getattr(self.sio.manager, "thread", None)
        if isinstance(listener, asyncio.Task) and listener.done():
            reasons.append("socket.io Redis listener stopped")

        async def ask(component: Component) -> str | None:
            try:
                return await asyncio.wait_for(component.check(), READY_TIMEOUT)
            except TimeoutError:
                return f"{type(component).__name__}: no answer within {READY_TIMEOUT} s"

        answers = await asyncio.gather(*(ask(c) for c in self.components))
        reasons.extend(reason for reason in answers if reason)
        return reasons

    def _add_health_routes(self) -> None:
        prefix = self.prefix

        @self.http.get(f"{prefix}/healthz", tags=["health"])
        async def healthz() -> dict[str, str]:
            """Liveness: 200 while the process serves."""
            return {"status": "ok", "service": self.name}

        @self.http.get(f"{prefix}/readyz", tags=["health"])
        async def readyz() -> JSONResponse:
            """Readiness: 200 when every dependency answers, 503 with the reasons otherwise."""
            reasons = await self.readiness()
            if reasons:
                return JSONResponse(
                    {"status": "unavailable", "service": self.name, "reasons": reasons},
                    status_code=503,
                )
            return JSONResponse({"status": "ready", "service": self.name})

        @self.http.get(f"{prefix}/metrics", tags=["health"])
        async def metrics() -> Response:
            """Prometheus text format."""
            return Response(self.metrics.render(), media_type=CONTENT_TYPE)


async def _bad_request(_request: Request, exc: Exception) -> JSONResponse:
    """A bad query or path parameter: 400 with our usual error object, naming the parameter."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    problems = [f"{e['loc'][-1]}: {e['msg']}" for e in errors if e.get("loc")]
    message = "; ".join(problems) or "bad request"
    return JSONResponse({"ok": False, "error": "bad_request", "message": message}, 400)


def same_origin(origin: str, environ: dict[str, Any]) -> bool:
    """Whether ``origin`` is the origin the request was made to.

    python-engineio's own same-origin check takes the scheme from X-Forwarded-Proto or else
    assumes http, so it refuses every browser when uvicorn itself serves HTTPS (the embedded
    default); the ASGI scope knows the real scheme. Behind the gateway, nginx sets the
    X-Forwarded-* headers itself (never passing the client's through).
    """
    scope = environ.get("asgi.scope", {})
    scheme = {"wss": "https", "ws": "http"}.get(scope.get("scheme", "http"), scope.get("scheme"))
    scheme = environ.get("HTTP_X_FORWARDED_PROTO", scheme).split(",")[0].strip()
    host = environ.get("HTTP_X_FORWARDED_HOST", environ.get("HTTP_HOST", ""))
    return bool(host) and origin == f"{scheme}://{host.split(',')[0].strip()}"


def redis_options() -> dict[str, Any]:
    """Timeouts so that a frozen or vanished Redis is noticed instead of hanging a handler."""
    return {
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "decode_responses": True,
    }
