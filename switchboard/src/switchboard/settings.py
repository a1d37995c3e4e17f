"""Settings shared by every service, read from the environment.

The common variables (``HOST``, ``PORT``, ``REDIS_URL``, ``ALLOWED_ORIGINS``, ``LOG_LEVEL``) carry
no prefix; each service's own settings carry its prefix (``CHAT_...``). Every field says its
default and its variable here, where it is declared; docs/configuration.md lists them all.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from switchboard.redisclient import SENTINEL_SCHEME, check_redis_url

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def comma_separated(value: Any) -> Any:
    """A variable's ``a, b,c`` as a list (a BeforeValidator)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    return value


def _networks(value: tuple[str, ...]) -> tuple[str, ...]:
    for network in value:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(
                f"{network!r} is not an address or network like 10.0.0.2 or 172.18.0.0/16"
            ) from None
    return value


#: Comma-separated IP addresses or networks (CIDR).
Networks = Annotated[
    tuple[str, ...], NoDecode, BeforeValidator(comma_separated), AfterValidator(_networks)
]
#: TRUSTED_PROXIES: the addresses (or networks) of the proxies in front of the service (the
#: gateway). Only a connection from one of them may say, in X-Forwarded-For, which client it
#: carries; unset, nobody may, and a client's address is the connection's own.
TRUSTED_PROXIES = Field((), validation_alias=AliasChoices("TRUSTED_PROXIES", "trusted_proxies"))


class ServiceSettings(BaseSettings):
    """The settings every service has. Subclasses set ``env_prefix`` and a default ``port``."""

    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, populate_by_name=True, validate_default=True
    )

    #: The name under ``/api/<name>/`` (not a setting: fixed per service).
    service_name: ClassVar[str] = ""

    #: HOST: the address to listen on when the service runs alone.
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("HOST", "host"))
    #: PORT: the port to listen on when the service runs alone (0 picks a free one).
    port: int = Field(0, ge=0, le=65535, validation_alias=AliasChoices("PORT", "port"))
    #: REDIS_URL: ``redis://`` or ``rediss://`` URL of one Redis, or
    #: ``redis+sentinel://host:port,host:port/db/name`` for the primary the sentinels call
    #: ``name``; unset means one process, state in memory.
    redis_url: str | None = Field(None, validation_alias=AliasChoices("REDIS_URL", "redis_url"))
    #: REDIS_WAIT_REPLICAS: Redis replicas an acknowledged write (a chat message, a name) must
    #: reach before the client is told it is done (Redis's WAIT). Unset: 1 with a
    #: ``redis+sentinel://`` URL, else 0 (one Redis has no replica to wait for).
    redis_wait_replicas: int | None = Field(
        None,
        ge=0,
        le=16,
        validation_alias=AliasChoices("REDIS_WAIT_REPLICAS", "redis_wait_replicas"),
    )
    #: REDIS_WAIT_TIMEOUT: seconds such a write waits for its replicas before it is answered
    #: anyway (and counted in ``switchboard_redis_unreplicated_writes``).
    redis_wait_timeout: float = Field(
        1.0,
        gt=0,
        le=30,
        validation_alias=AliasChoices("REDIS_WAIT_TIMEOUT", "redis_wait_timeout"),
    )
    #: ALLOWED_ORIGINS: comma-separated origins allowed to open a socket.io connection; unset
    #: means same-origin only. A cross-site origin is refused at the handshake either way.
    allowed_origins: Annotated[tuple[str, ...], NoDecode, BeforeValidator(comma_separated)] = Field(
        (), validation_alias=AliasChoices("ALLOWED_ORIGINS", "allowed_origins")
    )
    #: LOG_LEVEL: critical, error, warning, info or debug.
    log_level: str = Field("info", validation_alias=AliasChoices("LOG_LEVEL", "log_level"))
    trusted_proxies: Networks = TRUSTED_PROXIES
    #: MAX_ROOMS: rooms one process may hold in a namespace; a client joining one more is
    #: refused with ``too_many_rooms``.
    max_rooms: int = Field(
        10_000, ge=1, le=10_000_000, validation_alias=AliasChoices("MAX_ROOMS", "max_rooms")
    )
    #: MAX_ROOM_MEMBERS: clients one process may hold in one room; one more is refused with
    #: ``room_full``.
    max_room_members: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        validation_alias=AliasChoices("MAX_ROOM_MEMBERS", "max_room_members"),
    )
    #: API_DOCS: serve the HTTP routes' OpenAPI description and docs page at
    #: ``/api/<name>/docs`` and ``/openapi.json``; docker compose turns them off.
    api_docs: bool = Field(True, validation_alias=AliasChoices("API_DOCS", "api_docs"))
    #: REPLICA_TTL: seconds after which a silent replica's names and presence are freed
    #: (its heartbeat refreshes them every third of this).
    replica_ttl: float = Field(
        15.0, gt=1, le=300, validation_alias=AliasChoices("REPLICA_TTL", "replica_ttl")
    )
    #: PING_INTERVAL: seconds between engine.io's pings to each client; below nginx's
    #: proxy_read_timeout (60 s), so that an idle connection through the gateway is never cut.
    ping_interval: float = Field(
        25.0, ge=1, le=50, validation_alias=AliasChoices("PING_INTERVAL", "ping_interval")
    )
    #: PING_TIMEOUT: seconds a client has to answer a ping before it counts as gone (its
    #: connection is closed and it leaves its rooms).
    ping_timeout: float = Field(
        20.0, ge=1, le=60, validation_alias=AliasChoices("PING_TIMEOUT", "ping_timeout")
    )
    #: SEND_BUFFER_LIMIT: bytes that may wait in a service, unread, for one websocket client
    #: (beyond what the kernel's socket buffer holds) before the client is cut off as too slow
    #: a reader; it reconnects and catches up like any client that lost its connection.
    send_buffer_limit: int = Field(
        1024 * 1024,
        ge=64 * 1024,
        le=1024 * 1024 * 1024,
        validation_alias=AliasChoices("SEND_BUFFER_LIMIT", "send_buffer_limit"),
    )
    #: DRAIN_SECONDS: on SIGTERM, how long a replica says it is not ready (``/readyz`` 503)
    #: while still serving, before it closes its connections (clients reconnect to another
    #: replica) and leaves; a second signal ends it at once. Unset: 5 with REDIS_URL, else 0
    #: (a lone process has no other replica to send clients to).
    drain_seconds: float | None = Field(
        None, ge=0, le=300, validation_alias=AliasChoices("DRAIN_SECONDS", "drain_seconds")
    )

    #: AUTH_MODE: ``open``, anyone may connect (rooms named ``private-*`` still need a token
    #: granting them); ``token``, every connection needs a valid token (docs/auth.md).
    auth_mode: Literal["open", "token"] = Field(
        "open", validation_alias=AliasChoices("AUTH_MODE", "auth_mode")
    )
    #: AUTH_SECRET: the shared secret of HS256 tokens (at least 32 characters).
    auth_secret: SecretStr | None = Field(
        None, min_length=32, validation_alias=AliasChoices("AUTH_SECRET", "auth_secret")
    )
    #: AUTH_JWKS_URL: where the public keys of RS256, ES256 and EdDSA tokens are published.
    auth_jwks_url: str | None = Field(
        None, validation_alias=AliasChoices("AUTH_JWKS_URL", "auth_jwks_url")
    )
    #: AUTH_ISSUER: the ``iss`` tokens must carry; unset, not checked.
    auth_issuer: str | None = Field(
        None, validation_alias=AliasChoices("AUTH_ISSUER", "auth_issuer")
    )
    #: AUTH_AUDIENCE: the ``aud`` tokens must carry.
    auth_audience: str = Field(
        "switchboard", min_length=1, validation_alias=AliasChoices("AUTH_AUDIENCE", "auth_audience")
    )
    #: AUTH_JWKS_REFETCH: the least seconds between two fetches of the JWKS (a token naming a
    #: key id we do not hold fetches it again: a key rotation, or a flood of made-up ids).
    auth_jwks_refetch: float = Field(
        30.0, ge=0, le=3600, validation_alias=AliasChoices("AUTH_JWKS_REFETCH", "auth_jwks_refetch")
    )
    #: AUTH_LEEWAY: seconds of clock difference allowed on ``exp`` and ``nbf``.
    auth_leeway: float = Field(
        30.0, ge=0, le=300, validation_alias=AliasChoices("AUTH_LEEWAY", "auth_leeway")
    )

    @field_validator("auth_secret", "auth_jwks_url", "auth_issuer", mode="before")
    @classmethod
    def _empty_auth_is_unset(cls, value: Any) -> Any:
        return value or None

    @field_validator("auth_jwks_url")
    @classmethod
    def _check_jwks_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an https:// URL (http:// for a JWKS on this machine)")
        return value

    @model_validator(mode="after")
    def _token_mode_needs_a_key(self) -> Self:
        if self.auth_mode == "token" and self.auth_secret is None and self.auth_jwks_url is None:
            raise ValueError("AUTH_MODE=token needs AUTH_SECRET or AUTH_JWKS_URL to check tokens")
        return self

    @property
    def drain(self) -> float:
        if self.drain_seconds is not None:
            return self.drain_seconds
        return 5.0 if self.redis_url else 0.0

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        return None if value is None else check_redis_url(value)

    @property
    def wait_replicas(self) -> int:
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_url and self.redis_url.startswith(SENTINEL_SCHEME) else 0

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            # "*" would switch python-engineio's origin check off (CSWSH): refuse it here.
            if origin == "*" or not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin like https://example.org")
            if origin.endswith("/"):
                raise ValueError(f"{origin!r}: an origin has no path, drop the trailing /")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.lower()

    @classmethod
    def env_prefix(cls) -> str:
        return str(cls.model_config.get("env_prefix", ""))

    @classmethod
    def unknown_variables(cls, environ: Mapping[str, str] | None = None) -> list[str]:
        """Variables with this service's prefix that name no setting (typos, stale config)."""
        prefix = cls.env_prefix()
        if not prefix:
            return []
        environ = os.environ if environ is None else environ
        known = {name.upper() for name in cls.model_fields}
        return sorted(
            key
            for key in environ
            if key.upper().startswith(prefix) and key.upper()[len(prefix) :] not in known
        )

    @classmethod
    def from_env(cls) -> Self:
        """Read the environment; a bad value raises :class:`SettingsError` naming the variable."""
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError(cls, exc) from None


class SettingsError(Exception):
    """A setting with a bad value, explained for a person."""

    def __init__(self, settings_class: type[ServiceSettings], error: ValidationError) -> None:
        prefix = settings_class.env_prefix()
        lines = []
        for item in error.errors():
            if not item["loc"]:
                # A rule between several settings, whose message names them.
                lines.append(f"  {item['msg'].removeprefix('Value error, ')}")
                continue
            variable = _variable_name(settings_class, str(item["loc"][0]), prefix)
            value = item.get("input")
            shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
            lines.append(f"  {variable}: {item['msg']}{shown}")
        super().__init__(
            f"bad settings for the {settings_class.service_name or 'service'} service:\n"
            + "\n".join(lines)
        )


def _variable_name(settings_class: type[ServiceSettings], field: str, prefix: str) -> str:
    for name, info in settings_class.model_fields.items():
        alias = info.validation_alias
        choices = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []
        if field == name or field in choices:
            return choices[0] if choices else f"{prefix}{name.upper()}"
    return f"{prefix}{field.upper()}"
