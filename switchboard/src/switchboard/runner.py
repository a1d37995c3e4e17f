"""Starting a service process: settings from the environment, checked before anything else, then
uvicorn with the fast loop, parser and websocket implementation."""

from __future__ import annotations

import gc
import importlib
import logging
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from switchboard.fanout import WireProtocol
from switchboard.logs import configure_logging
from switchboard.redisclient import shown
from switchboard.service import MAX_MESSAGE_BYTES, Service
from switchboard.settings import ServiceSettings, SettingsError

log = logging.getLogger(__name__)


def load_settings(settings_class: type[ServiceSettings]) -> ServiceSettings:
    """Read and check the settings; a bad value ends the process with a clear message."""
    try:
        settings = settings_class.from_env()
    except SettingsError as exc:
        sys.exit(f"error: {exc}")
    configure_logging(settings.log_level)
    for variable in settings_class.unknown_variables():
        log.warning(
            "%s is not a %s setting and is ignored (see docs/configuration.md)",
            variable,
            settings_class.service_name,
        )
    return settings


def import_factory(path: str) -> Callable[[Any], Service]:
    module, _, name = path.partition(":")
    factory: Callable[[Any], Service] = getattr(importlib.import_module(module), name)
    return factory


def tune_garbage_collector() -> None:
    """Collect less often, and never look at what start-up made again.

    A broadcast to N clients makes thousands of short-lived asyncio objects; with the default
    thresholds (700, 10, 10) the collector ran full collections of up to 170 ms that freed a
    few hundred objects, and took 43 % of the CPU of a server fanning out to 1000 clients
    (docs/benchmarks.md). Cycles are still collected, only in larger batches; a full
    collection comes after every tenth collection of the middle generation, so that closed
    connections promoted there do not pile up between them (the churn soak, same file).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def uvicorn_options(
    max_message_bytes: int = MAX_MESSAGE_BYTES, trusted_proxies: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        # X-Forwarded-For and -Proto are believed from the trusted proxies only (never from
        # 127.0.0.1 by default, as uvicorn would): switchboard.origins.peer_address.
        "proxy_headers": bool(trusted_proxies),
        "forwarded_allow_ips": list(trusted_proxies),
        "loop": "uvloop",
        "http": "httptools",
        # websockets' sans-I/O protocol, offering its connection to the engine.io layer.
        "ws": WireProtocol,
        # engine.io has its own heartbeat (ping and pong packets): no websocket pings too.
        "ws_ping_interval": None,
        # Frames over the socket.io limit are refused by the websocket layer itself.
        "ws_max_size": max_message_bytes + 1024,
        # Compressing every frame of a broadcast costs more CPU than it saves on a LAN.
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": 5,
        "server_header": False,
        "access_log": False,
        "log_config": None,
    }


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM (or Ctrl-C) drains first: the service says it is not
    ready while it goes on serving for ``drain`` seconds, so that what routes by readiness
    stops sending it clients; then uvicorn stops as usual: it stops listening, closes every
    connection (a websocket with 1012, "service restart": socket.io clients reconnect, to
    another replica), and the lifespan removes the replica's entries from Redis. A second
    signal stops it at once."""

    def __init__(self, config: uvicorn.Config, service: Service, drain: float) -> None:
        super().__init__(config)
        self.service = service
        self.drain = drain
        self.drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_until is None and self.drain > 0:
            self.service.draining = True
            self.drain_until = time.monotonic() + self.drain
            log.info("%s: draining for %.1f s, then stopping", self.service.name, self.drain)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return bool(await super().on_tick(counter))


def run_service(settings_class: type[ServiceSettings], factory_path: str) -> None:
    settings = load_settings(settings_class)
    service = import_factory(factory_path)(settings)
    tune_garbage_collector()
    log.info(
        "%s service on http://%s:%d%s/ (%s)",
        service.name,
        settings.host,
        settings.port,
        service.prefix,
        f"Redis at {shown(settings.redis_url)}" if settings.redis_url else "in memory, one process",
    )
    config = uvicorn.Config(
        service.asgi,
        host=settings.host,
        port=settings.port,
        **uvicorn_options(service.max_message_bytes, settings.trusted_proxies),
    )
    DrainingServer(config, service, settings.drain).run()
