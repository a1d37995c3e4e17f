"""Cursor settings: the common ones (HOST, PORT, REDIS_URL, ...) plus CURSORS_* below."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict
from switchboard.settings import ServiceSettings


class CursorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CURSORS_")
    service_name: ClassVar[str] = "cursors"

    #: PORT: 8002 for cursors when it runs alone.
    port: int = Field(8002, ge=0, le=65535, validation_alias=AliasChoices("PORT", "port"))
    #: REPLICA_TTL: 6 s here, so that a crashed replica's cursors vanish within 10 s (issue 3).
    replica_ttl: float = Field(
        6.0, gt=1, le=300, validation_alias=AliasChoices("REPLICA_TTL", "replica_ttl")
    )
    #: CURSORS_TICK_MS: how often everyone is sent what changed, in milliseconds.
    tick_ms: int = Field(100, ge=10, le=10_000)
    #: CURSORS_RATE_PER_SECOND: pointer updates a client may send per second, on average.
    rate_per_second: float = Field(60.0, gt=0, le=100_000)
    #: CURSORS_RATE_BURST: pointer updates a client may send at once.
    rate_burst: int = Field(120, ge=1, le=100_000)
    #: CURSORS_REMOTE_RATE_PER_SECOND: events a remote-control connection may send per second
    #: on average (a phone sends a move and a turn each frame, 120 a second at 60 Hz); a desktop's
    #: ``renew`` costs 50 of them (remote.RENEW_COST).
    remote_rate_per_second: float = Field(250.0, gt=0, le=100_000)
    #: CURSORS_REMOTE_RATE_BURST: events a remote-control connection may send at once.
    remote_rate_burst: int = Field(500, ge=1, le=100_000)
    #: CURSORS_MAX_QUEUED: frames waiting for a slow client on long-polling before it is skipped;
    #: it gets one snapshot once it has caught up, instead of every frame it missed. A client on a
    #: websocket is skipped while its connection's send buffer is full.
    max_queued: int = Field(2, ge=1, le=1000)
    #: CURSORS_PAIRING_TTL: seconds a remote-control pairing token and code stay valid unused.
    pairing_ttl: float = Field(300.0, gt=0, le=86_400)
    #: CURSORS_RESUME_GRACE: seconds a controller that lost its connection may resume its pairing.
    resume_grace: float = Field(60.0, ge=0, le=86_400)
    #: CURSORS_PRESS_ACK_SECONDS: how long a controller's press waits for its desktop to confirm
    #: it before it is refused ``not_delivered`` (the desktop may be moving between replicas).
    #: At most 10 s: the controller page waits that long for the answer (web/remote/controller.js
    #: PRESS_ACK_MS); and the connection's next events, its pongs too, wait behind the press (a
    #: client's events are handled in order), so a long wait would outlast the ping timeout.
    press_ack_seconds: float = Field(5.0, ge=0.1, le=10)
    #: CURSORS_CODE_ATTEMPTS: wrong short codes a client may try per minute.
    code_attempts: int = Field(5, ge=1, le=1000)
    #: CURSORS_CODE_GUESSES: wrong short codes the cluster may see while a code is valid before
    #: that code is replaced (bounds the chance of guessing any one desktop's code).
    code_guesses: int = Field(50, ge=1, le=100_000)
    #: CURSORS_PUBLIC_URL: base URL for pairing links (https://host:port); unset, the links use
    #: the host the desktop page was opened with.
    public_url: str | None = None
