"""Fixtures: real redis-server and service processes on loopback ports, started and ended here."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import (
    Client,
    Process,
    RedisServer,
    ServiceProcess,
    free_port,
    start_together,
    wait_for_port,
)
from tests.ticker.fake_bitstamp import FakeBitstamp

CHAT_PATH = "/api/chat/socket.io"
CURSORS_PATH = "/api/cursors/socket.io"


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_server(log_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir)
    yield server
    server.stop()


@dataclass
class Cluster:
    """Two entry points, A and B: two replicas sharing Redis, or the same single process."""

    mode: str
    replicas: list[ServiceProcess]

    @property
    def a(self) -> str:
        return self.replicas[0].url

    @property
    def b(self) -> str:
        return self.replicas[-1].url


def start_chat(log_dir: Path, env: dict[str, str] | None = None, name: str = "") -> ServiceProcess:
    process = ServiceProcess("chat_service", log_dir, env, name=name)
    process.wait_ready("/api/chat")
    return process


def start_cursors(
    log_dir: Path, env: dict[str, str] | None = None, name: str = ""
) -> ServiceProcess:
    process = ServiceProcess("cursor_service", log_dir, env, name=name)
    process.wait_ready("/api/cursors")
    return process


def start_cluster(
    request: pytest.FixtureRequest, log_dir: Path, service: str, env: dict[str, str]
) -> Cluster:
    """One process in memory, or two replicas sharing the session's redis-server, started
    together."""
    if request.param == "memory":
        return Cluster("memory", start_together(log_dir, [(service, env, f"{service}-memory")]))
    env = {**env, "REDIS_URL": request.getfixturevalue("redis_server").url}
    names = [f"{service}-replica-{side}" for side in "ab"]
    return Cluster("redis", start_together(log_dir, [(service, env, name) for name in names]))


#: The secret chat's clusters check sign-in tokens with (they run open: tokens are optional).
AUTH_SECRET = "the-chat-clusters-secret-32-characters-long"
#: Room for tests to write their stories without meeting the rate limit or the history size:
#: the defaults are tested on their own.
CLUSTER_ENV = {
    "CHAT_RATE_PER_SECOND": "1000",
    "CHAT_RATE_BURST": "1000",
    "CHAT_HISTORY_SIZE": "5",
    "AUTH_SECRET": AUTH_SECRET,
}


@pytest.fixture(scope="session", params=["memory", "redis"])
def chat_cluster(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Cluster]:
    cluster = start_cluster(request, log_dir, "chat", CLUSTER_ENV)
    yield cluster
    for replica in cluster.replicas:
        replica.stop()


#: Wrong codes are tried on purpose in the stories: no code is retired for them here.
CURSORS_ENV = {"CURSORS_CODE_GUESSES": "1000"}


@pytest.fixture(scope="session", params=["memory", "redis"])
def cursor_cluster(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Cluster]:
    cluster = start_cluster(request, log_dir, "cursors", CURSORS_ENV)
    yield cluster
    for replica in cluster.replicas:
        replica.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Every client a test opens through ``connect_chat`` is closed after it."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBitstamp]:
    """A scripted Bitstamp (tests/ticker/fake_bitstamp.py) in the test's own event loop."""
    exchange = FakeBitstamp()
    await exchange.start()
    yield exchange
    await exchange.stop()


@pytest.fixture
def unique() -> str:
    """A suffix that keeps names and rooms of one test apart from every other test's."""
    return uuid.uuid4().hex[:6]


async def connect_chat(
    opened: list[Client], url: str, *, room: str | None = None, **auth: object
) -> Client:
    client = Client(url, CHAT_PATH)
    opened.append(client)
    if room is not None:
        auth["room"] = room
    await client.connect(auth=auth or None)
    await client.wait("history")
    return client


@dataclass
class Embedded:
    """`make run`'s server: every service in one process, HTTPS, web/ at /."""

    process: ServiceProcess
    cert_dir: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.process.port}"


@pytest.fixture(scope="session")
def embedded(log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """As `make run-simulated` starts it: the ticker follows the simulator (no internet here)."""
    cert_dir = tmp_path_factory.mktemp("certs")
    port = free_port()
    simulator = Process(
        "simulator",
        [sys.executable, "-m", "ticker_service.simulator", "--port", str(port)],
        log_dir,
        dict(os.environ),
    )
    wait_for_port(port, process=simulator)
    process = ServiceProcess(
        "switchboard.embedded",
        log_dir,
        {
            "CERT_DIR": str(cert_dir),
            "HOST": "127.0.0.1",
            "TICKER_UPSTREAM_URL": f"ws://127.0.0.1:{port}",
            "TICKER_REST_URL": f"http://127.0.0.1:{port}",
        },
        name="embedded",
    )
    process.wait_ready("/api/chat", scheme="https")
    process.wait_ready("/api/ticker", scheme="https")
    yield Embedded(process, cert_dir)
    process.stop()
    simulator.stop()
