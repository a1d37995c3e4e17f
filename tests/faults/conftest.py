"""What the fault scenarios share: a Redis of each test's own (what a scenario does to Redis
would reach other tests), chat replicas set up for people who talk fast."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import RedisServer, ServiceProcess, start_together


@pytest.fixture
def own_redis(log_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir)
    yield server
    server.stop()


def chat_env(redis_url: str, **extra: str) -> dict[str, str]:
    """Chat replicas on ``redis_url`` that beat every second (REPLICA_TTL 3: what waits for a
    beat does not wait long), with no rate limit in the way of people who send as fast as they
    are answered."""
    return {
        "REDIS_URL": redis_url,
        "REPLICA_TTL": "3",
        "CHAT_RATE_PER_SECOND": "10000",
        "CHAT_RATE_BURST": "10000",
        **extra,
    }


def chat_replicas(
    log_dir: Path, env: dict[str, str], name: str, count: int = 2
) -> list[ServiceProcess]:
    return start_together(log_dir, (("chat", env, f"{name}-{n}") for n in range(count)))
