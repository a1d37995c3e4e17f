"""Signalling settings: the common ones (HOST, PORT, REDIS_URL, ...), the ICE servers (STUN_URLS,
TURN_URLS, TURN_SECRET, TURN_TTL: unprefixed, as coturn shares the secret) and SIGNAL_* below."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode, SettingsConfigDict
from switchboard.settings import ServiceSettings, comma_separated


class SignalSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SIGNAL_")
    service_name: ClassVar[str] = "signal"

    #: PORT: 8003 for signalling when it runs alone.
    port: int = Field(8003, ge=0, le=65535, validation_alias=AliasChoices("PORT", "port"))
    #: STUN_URLS: comma-separated STUN servers (stun:host:port) handed to browsers; none by
    #: default, never a third party's by surprise.
    stun_urls: Annotated[tuple[str, ...], NoDecode, BeforeValidator(comma_separated)] = Field(
        (), validation_alias=AliasChoices("STUN_URLS", "stun_urls")
    )
    #: TURN_URLS: comma-separated TURN servers (turn:host:3478?transport=udp, turns:...).
    turn_urls: Annotated[tuple[str, ...], NoDecode, BeforeValidator(comma_separated)] = Field(
        (), validation_alias=AliasChoices("TURN_URLS", "turn_urls")
    )
    #: TURN_SECRET: coturn's static-auth-secret, to make short-lived TURN credentials with.
    turn_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("TURN_SECRET", "turn_secret")
    )
    #: TURN_TTL: seconds a TURN credential is valid (at most 10 minutes).
    turn_ttl: int = Field(600, ge=30, le=600, validation_alias=AliasChoices("TURN_TTL", "turn_ttl"))
    #: SIGNAL_ICE_PER_MINUTE: ICE server sets (TURN credentials) one address may be given a
    #: minute, across replicas; a call asks once.
    ice_per_minute: int = Field(20, ge=1, le=10_000)
    #: SIGNAL_ICE_TRANSPORT_POLICY: "all", or "relay" to send every call through TURN (hides
    #: addresses from peers; what our tests use on a loopback-only machine).
    ice_transport_policy: Literal["all", "relay"] = "all"
    #: SIGNAL_ECHO: list the echo peer (`echo`) in every room: it sends your media back.
    echo: bool = True
    #: SIGNAL_ECHO_CALLS: echo calls this replica holds at once.
    echo_calls: int = Field(2, ge=0, le=100)
    #: SIGNAL_ECHO_SECONDS: an echo call is hung up after this long.
    echo_seconds: float = Field(300.0, gt=0, le=86_400)
    #: SIGNAL_RATE_PER_SECOND / SIGNAL_RATE_BURST: signalling messages a client may send per
    #: second, and at once (a call starts with a burst of candidates).
    rate_per_second: float = Field(20.0, gt=0, le=100_000)
    rate_burst: int = Field(100, ge=1, le=100_000)

    @field_validator("turn_secret", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: Any) -> Any:
        return value or None

    @field_validator("stun_urls")
    @classmethod
    def _stun(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("stun:", "stuns:")):
                raise ValueError(f"{url!r} is not a STUN URL like stun:stun.example.org:3478")
        return value

    @field_validator("turn_urls")
    @classmethod
    def _turn(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("turn:", "turns:")):
                raise ValueError(f"{url!r} is not a TURN URL like turn:turn.example.org:3478")
        return value

    @model_validator(mode="after")
    def _turn_needs_secret(self) -> SignalSettings:
        if self.turn_urls and self.turn_secret is None:
            raise ValueError("TURN_URLS is set but TURN_SECRET is not: TURN needs credentials")
        if self.ice_transport_policy == "relay" and not self.turn_urls:
            raise ValueError("SIGNAL_ICE_TRANSPORT_POLICY=relay needs a TURN server (TURN_URLS)")
        return self
