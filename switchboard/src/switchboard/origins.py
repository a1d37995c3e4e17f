"""Where a connection comes from: which origins a browser's socket may come from, when
``ALLOWED_ORIGINS`` names none, and the client's address."""

from __future__ import annotations

import ipaddress
from typing import Any


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


def peer_address(environ: dict[str, Any]) -> str:
    """The client's IP address. python-engineio's ``REMOTE_ADDR`` is always 127.0.0.1 under
    ASGI; the ASGI scope has the real peer, which uvicorn replaces with the one in
    X-Forwarded-For only when the connection comes from ``TRUSTED_PROXIES`` (the gateway)."""
    client = environ.get("asgi.scope", {}).get("client")
    return str(client[0]) if client else "unknown"


def address_key(address: str) -> str:
    """What a per-address limit counts by: an IPv4 address (also when written as IPv6,
    ``::ffff:192.0.2.1``), or an IPv6 address's /64, which one subscriber holds whole and could
    otherwise spend a fresh address for every try."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
