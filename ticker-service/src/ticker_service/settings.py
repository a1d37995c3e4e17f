"""Ticker settings: the common ones (HOST, PORT, REDIS_URL, ...) plus TICKER_* below."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from switchboard.settings import ServiceSettings

PAIR_PATTERN = re.compile(r"[a-z0-9]{2,20}")


class TickerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TICKER_")
    service_name: ClassVar[str] = "ticker"

    #: PORT: 8004 for the ticker when it runs alone.
    port: int = Field(8004, ge=0, le=65535, validation_alias=AliasChoices("PORT", "port"))
    #: TICKER_UPSTREAM_URL: Bitstamp's WebSocket API, or the simulator's ws:// address.
    upstream_url: str = "wss://ws.bitstamp.net"
    #: TICKER_REST_URL: Bitstamp's REST API, asked for the trades missed while disconnected.
    rest_url: str = "https://www.bitstamp.net"
    #: TICKER_PAIRS: comma-separated Bitstamp pairs (url symbols) to follow.
    pairs: Annotated[tuple[str, ...], NoDecode] = ("btcusd", "btceur", "ethusd", "etheur")
    #: TICKER_HISTORY_SIZE: trades kept per pair (the dedupe window, and the most REST returns).
    history_size: int = Field(500, ge=50, le=10_000)
    #: TICKER_CONNECT_TIMEOUT: seconds to open the upstream connection and have every pair
    #: subscribed before the attempt counts as failed.
    connect_timeout: float = Field(10.0, gt=0, le=300)
    #: TICKER_HEARTBEAT_INTERVAL: seconds between the ``bts:heartbeat`` messages we send.
    heartbeat_interval: float = Field(10.0, gt=0, le=300)
    #: TICKER_SILENCE_TIMEOUT: seconds without any message (trade or heartbeat reply) after
    #: which the connection is taken for dead and replaced.
    silence_timeout: float = Field(30.0, gt=0, le=3600)
    #: TICKER_BACKOFF_BASE / TICKER_BACKOFF_CAP: reconnect delays are drawn uniformly from
    #: [0, min(cap, base * 2^(failures - 1))] ("full jitter").
    backoff_base: float = Field(1.0, gt=0, le=60)
    backoff_cap: float = Field(30.0, gt=0, le=3600)
    #: TICKER_LEADER_TTL: seconds the leader's Redis lock lives unrenewed; a dead leader is
    #: replaced within about this plus a second (with REDIS_URL only).
    leader_ttl: float = Field(5.0, ge=1, le=60)
    #: TICKER_RATE_PER_SECOND / TICKER_RATE_BURST: subscribe and unsubscribe events a client
    #: may send per second, and at once.
    rate_per_second: float = Field(5.0, gt=0, le=100_000)
    rate_burst: int = Field(20, ge=1, le=100_000)

    @field_validator("upstream_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with wss:// (or ws:// for the simulator)")
        return value.rstrip("/")

    @field_validator("rest_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// for the simulator)")
        return value.rstrip("/")

    @field_validator("pairs", mode="before")
    @classmethod
    def _split_pairs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("pairs")
    @classmethod
    def _check_pairs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one pair, like btcusd")
        for pair in value:
            if not PAIR_PATTERN.fullmatch(pair):
                raise ValueError(f"{pair!r} is not a Bitstamp pair like btcusd")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _timers_fit(self) -> TickerSettings:
        if self.silence_timeout <= self.heartbeat_interval:
            raise ValueError(
                "TICKER_SILENCE_TIMEOUT must be longer than TICKER_HEARTBEAT_INTERVAL, or a "
                "quiet but healthy connection would be dropped"
            )
        if self.backoff_cap < self.backoff_base:
            raise ValueError("TICKER_BACKOFF_CAP must be at least TICKER_BACKOFF_BASE")
        return self
