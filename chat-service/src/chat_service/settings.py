"""Chat settings: the common ones (HOST, PORT, REDIS_URL, ...) plus CHAT_* below."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict
from switchboard.settings import ServiceSettings


class ChatSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CHAT_")
    service_name: ClassVar[str] = "chat"

    #: PORT: 8001 for chat when it runs alone.
    port: int = Field(8001, ge=0, le=65535, validation_alias=AliasChoices("PORT", "port"))
    #: CHAT_RATE_PER_SECOND: events a connection may send per second, on average.
    rate_per_second: float = Field(5.0, gt=0, le=100_000)
    #: CHAT_RATE_BURST: events a connection may send at once before the rate applies.
    rate_burst: int = Field(10, ge=1, le=100_000)
    #: CHAT_HISTORY_SIZE: messages kept per room and sent to a client that joins.
    history_size: int = Field(50, ge=0, le=1000)
    #: CHAT_HISTORY_TTL: seconds a room's history is kept after its last message (7 days).
    history_ttl: float = Field(604_800, gt=0, le=31_536_000)
    #: CHAT_HISTORY_ROOMS: rooms whose history is kept (in memory, or in Redis for the whole
    #: cluster); past it, the room with the oldest last message loses its history. With the
    #: defaults, at most ~210 MB of history in Redis even if every message is 2000 four-byte
    #: characters (about 530 KB a room; a room of short messages takes about 4 KB).
    history_rooms: int = Field(400, ge=1, le=1_000_000)
    #: CHAT_PRESENCE_INTERVAL: seconds over which who comes and goes in a room is gathered
    #: into one ``presence`` event (issue 17): a tick. Shorter tells sooner, longer sends fewer
    #: events when many come at once (0.01 to 10).
    presence_interval: float = Field(0.2, ge=0.01, le=10)
    #: CHAT_PRESENCE_LIST_MAX: the most members a room may have for its clients to be told who
    #: is in it (``users`` and ``presence`` with lists); above it, only how many.
    presence_list_max: int = Field(200, ge=0, le=100_000)
