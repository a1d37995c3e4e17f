"""What the fault scenarios share: a Redis of each test's own (what a scenario does to Redis
would reach other tests), chat replicas set up for people who talk fast, and replicas started
together rather than one after the other."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness import RedisServer, ServiceProcess

#: Each service of the scenarios: its package, and the prefix its /readyz is under.
SERVICES = {
    "chat": ("chat_service", "/api/chat"),
    "cursors": ("cursor_service", "/api/cursors"),
    "signal": ("signalling_service", "/api/signal"),
}


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


def start_together(
    log_dir: Path, replicas: Iterable[tuple[str, dict[str, str], str]]
) -> list[ServiceProcess]:
    """Replicas given as (service, env, name), service one of :data:`SERVICES`, all started at
    once, then each waited for until ready. A start is mostly Python importing its modules, the
    work of one core: on two cores, two started together are ready in about the time of one.
    If one does not come up, those started are stopped and the error raised."""
    started: list[tuple[ServiceProcess, str]] = []
    try:
        for service, env, name in replicas:
            package, prefix = SERVICES[service]
            started.append((ServiceProcess(package, log_dir, env, name=name), prefix))
        for replica, prefix in started:
            replica.wait_ready(prefix)
    except BaseException:
        for replica, _ in started:
            with contextlib.suppress(AssertionError):
                replica.stop()
        raise
    return [replica for replica, _ in started]


def stop_together(processes: Iterable[ServiceProcess]) -> None:
    """Stop ``processes`` at once (each SIGTERM, and its clean stop waited for, as
    :meth:`Process.stop` does), rather than one stop's wait after the other's."""
    with ThreadPoolExecutor() as pool:
        for stopped in [pool.submit(process.stop) for process in processes]:
            stopped.result()


def chat_replicas(
    log_dir: Path, env: dict[str, str], name: str, count: int = 2
) -> list[ServiceProcess]:
    return start_together(log_dir, (("chat", env, f"{name}-{n}") for n in range(count)))
