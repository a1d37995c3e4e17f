"""Starting a service process: settings from the environment, checked before anything else, then
uvicorn with the fast loop, parser and websocket implementation."""

from __future__ import annotations

import gc
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from switchboard.logs import configure_logging
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
        "ws": "websockets-sansio",
        # Frames over the socket.io limit are refused by the websocket layer itself.
        "ws_max_size": max_message_bytes + 1024,
        # Compressing every frame of a broadcast costs more CPU than it saves on a LAN.
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": 5,
        "server_header": False,
        "access_log": False,
        "log_config": None,
    }


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
        f"Redis at {settings.redis_url}" if settings.redis_url else "in memory, one process",
    )
    uvicorn.run(
        service.asgi,
        host=settings.host,
        port=settings.port,
        **uvicorn_options(service.max_message_bytes, settings.trusted_proxies),
    )
