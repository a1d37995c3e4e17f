"""The ``iceServers`` a browser gives ``RTCPeerConnection`` (issue 6).

TURN credentials follow coturn's TURN REST scheme (coturn's ``use-auth-secret``): the username
is ``<expiry unix time>:<client id>`` and the credential is
``base64(HMAC-SHA1(TURN_SECRET, username))``, so coturn checks them with the shared secret alone
and refuses them once the expiry has passed. Nothing is configured by default: no third party's
server is handed out by surprise.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote

from switchboard.auth import Identity

from signalling_service.settings import SignalSettings


def turn_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def turn_user(identity: Identity | None, sid: str) -> str:
    """Who a TURN allocation is for, in its username (after the expiry, ``:``): the connection,
    and the user its token names (``<sub>/<sid>``, the sub percent-encoded and cut to 200
    characters), so that coturn's log says whose relay it was."""
    if identity is None:
        return sid
    return f"{quote(identity.sub, safe='')[:200]}/{sid}"


def ice_servers(
    settings: SignalSettings, client_id: str, now: float | None = None
) -> list[dict[str, Any]]:
    servers: list[dict[str, Any]] = []
    if settings.stun_urls:
        servers.append({"urls": list(settings.stun_urls)})
    if settings.turn_urls and settings.turn_secret is not None:
        expiry = int(time.time() if now is None else now) + settings.turn_ttl
        username = f"{expiry}:{client_id}"
        servers.append(
            {
                "urls": list(settings.turn_urls),
                "username": username,
                "credential": turn_credential(settings.turn_secret.get_secret_value(), username),
            }
        )
    return servers
