"""The embedded default (``make run``): every installed service in one process, each at its own
prefix with its lifespan run once, state in memory unless REDIS_URL is set, the browser pages of
``web/`` at ``/``, over HTTPS with a certificate made on first run.

Services are found through the ``switchboard.services`` entry point group, so a new service
joins by declaring one in its pyproject.toml.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from switchboard.certs import ensure_certificate, lan_addresses
from switchboard.logs import configure_logging
from switchboard.runner import tune_garbage_collector, uvicorn_options
from switchboard.service import Service
from switchboard.settings import TRUSTED_PROXIES, Networks

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ROOT = Path(__file__).resolve().parents[3]


class EmbeddedSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    #: HOST: the address to listen on; every interface, so a phone on the LAN can connect.
    host: str = Field("0.0.0.0", validation_alias=AliasChoices("HOST", "host"))
    #: PORT: the HTTPS port of the embedded default.
    port: int = Field(8443, ge=0, le=65535, validation_alias=AliasChoices("PORT", "port"))
    #: WEB_ROOT: the folder of browser pages served at /.
    web_root: Path = Field(ROOT / "web", validation_alias=AliasChoices("WEB_ROOT", "web_root"))
    #: CERT_DIR: where the self-signed certificate is made and kept.
    cert_dir: Path = Field(ROOT / ".certs", validation_alias=AliasChoices("CERT_DIR", "cert_dir"))
    #: TLS_CERT_FILE / TLS_KEY_FILE: a certificate of your own instead of the self-signed one.
    tls_cert_file: Path | None = Field(None, validation_alias=AliasChoices("TLS_CERT_FILE"))
    tls_key_file: Path | None = Field(None, validation_alias=AliasChoices("TLS_KEY_FILE"))
    #: LOG_LEVEL: as for every service.
    log_level: str = Field("info", validation_alias=AliasChoices("LOG_LEVEL", "log_level"))
    trusted_proxies: Networks = TRUSTED_PROXIES


def discover_services() -> list[Service]:
    """Build every installed service from its entry point, with settings from the environment."""
    services = []
    for entry in sorted(entry_points(group="switchboard.services"), key=lambda e: e.name):
        factory = entry.load()
        services.append(factory())
    return services


class EmbeddedApp:
    """Routes ``/api/<name>/`` to that service unchanged and everything else to ``web/``."""

    def __init__(self, services: list[Service], web_root: Path) -> None:
        self.services = services
        self.routes = [(f"{s.prefix}/", s.asgi) for s in services]
        # Inside a Starlette app, so that a missing file is a 404, not an unhandled exception.
        self.static = Starlette(
            routes=[Mount("/", StaticFiles(directory=web_root, html=True, check_dir=True))]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope.get("path", "")
        for prefix, app in self.routes:
            if path.startswith(prefix):
                await app(scope, receive, send)
                return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        if path.startswith("/api/"):
            response = JSONResponse({"error": "not_found", "message": "no such service"}, 404)
            await response(scope, receive, send)
            return
        await self.static(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await receive()  # lifespan.startup
            try:
                for service in self.services:
                    await stack.enter_async_context(service.lifespan())
            except Exception as exc:
                log.exception("startup failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def main() -> None:
    settings = EmbeddedSettings()
    configure_logging(settings.log_level)
    if settings.tls_cert_file and settings.tls_key_file:
        cert, key = settings.tls_cert_file, settings.tls_key_file
    else:
        cert, key = ensure_certificate(settings.cert_dir)
    if not (settings.web_root / "vendor" / "socket.io.esm.min.js").exists():
        log.warning("web/vendor/ has no socket.io client: run `make web` (make run does it)")
    services = discover_services()
    app = EmbeddedApp(services, settings.web_root)
    tune_garbage_collector()
    hosts = ["localhost"]
    if settings.host in ("0.0.0.0", "::"):
        hosts += [f"[{ip}]" if ip.version == 6 else str(ip) for ip in lan_addresses()]
    log.info("Switchboard (embedded: %s) - open:", ", ".join(s.name for s in services))
    for host in hosts:
        log.info("    https://%s:%d/", host, settings.port)
    log.info("The certificate is self-signed: your browser asks you to accept it once.")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        **uvicorn_options(
            max(service.max_message_bytes for service in services), settings.trusted_proxies
        ),
    )


if __name__ == "__main__":
    main()
