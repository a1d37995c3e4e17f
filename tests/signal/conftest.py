"""The signalling service with Debian's coturn on loopback: every test call is relayed by TURN
(SIGNAL_ICE_TRANSPORT_POLICY=relay), as this machine has only loopback to call over."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cluster
from tests.harness import ServiceProcess, TurnServer, start_together

PREFIX = "/api/signal"
#: Open mode, with a key: anyone may come, and a signed-in person is named by its token.
AUTH_SECRET = secrets.token_hex(32)


@pytest.fixture(scope="session")
def turn(log_dir: Path) -> Iterator[TurnServer]:
    server = TurnServer(log_dir, secrets.token_hex(16))
    yield server
    server.stop()


def signal_env(turn: TurnServer, **extra: str) -> dict[str, str]:
    return {
        "TURN_URLS": turn.url,
        "TURN_SECRET": turn.secret,
        "SIGNAL_ICE_TRANSPORT_POLICY": "relay",
        # Every test call asks from 127.0.0.1: the per-address limit has a test of its own.
        "SIGNAL_ICE_PER_MINUTE": "10000",
        "AUTH_SECRET": AUTH_SECRET,
        **extra,
    }


def start_signal(
    log_dir: Path, env: dict[str, str] | None = None, name: str = ""
) -> ServiceProcess:
    process = ServiceProcess("signalling_service", log_dir, env, name=name)
    process.wait_ready(PREFIX)
    return process


@pytest.fixture(scope="session", params=["memory", "redis"])
def signal_cluster(
    request: pytest.FixtureRequest, log_dir: Path, turn: TurnServer
) -> Iterator[Cluster]:
    env = signal_env(turn)
    if request.param == "memory":
        cluster = Cluster("memory", [start_signal(log_dir, env, "signal-memory")])
    else:
        env = {**env, "REDIS_URL": request.getfixturevalue("redis_server").url}
        names = [f"signal-replica-{side}" for side in "ab"]
        cluster = Cluster("redis", start_together(log_dir, [("signal", env, n) for n in names]))
    yield cluster
    for replica in cluster.replicas:
        replica.stop()
