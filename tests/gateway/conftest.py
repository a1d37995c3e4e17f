"""`make cluster` as the tests run it: scripts/cluster.sh with free ports, the ticker on the
simulator, and coturn relaying between loopback peers (tests only)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness import (
    ROOT,
    SERVICE_PREFIXES,
    STARTUP,
    TURN_TEST_PEERS,
    Process,
    free_port,
    free_udp_and_tcp_port,
    free_udp_port,
)

SERVICES = ("chat", "cursors", "signal", "ticker")
#: The secret the cluster's tokens are signed with (docs/auth.md).
AUTH_SECRET = "the-gateway-tests-secret-of-32-characters"
SOCKETS_PER_ADDRESS = 40
#: Handshakes per second and per address, and their burst: small, so that the limit's test
#: holds however slow the machine is (the defaults are 20 and 100); the burst is above what
#: the other tests open at once from one address.
HANDSHAKES_PER_SECOND = 1
HANDSHAKE_BURST = 50


@dataclass
class Cluster:
    process: Process
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.env['GATEWAY_HTTPS_PORT']}"

    @property
    def http_url(self) -> str:
        return f"http://localhost:{self.env['GATEWAY_HTTP_PORT']}"

    def replica(self, service: str, side: str) -> str:
        """A replica's own address: for looking at it, never for using the service."""
        return f"http://127.0.0.1:{self.env[f'{service.upper()}_PORT_{side.upper()}']}"


def cluster_env(directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_PREFIXES)}
    env.update(
        {
            "CLUSTER_DIR": str(directory / "cluster"),
            "CERT_DIR": str(directory / "certs"),
            "REDIS_PORT": str(free_port()),
            "GATEWAY_HTTPS_PORT": str(free_port()),
            "GATEWAY_HTTP_PORT": str(free_port()),
            "SIMULATOR_PORT": str(free_port()),
            "TURN_PORT": str(free_udp_and_tcp_port()),
            "TURN_LISTEN_IP": "127.0.0.1",
            "TURN_PEER_RULES": " ".join(TURN_TEST_PEERS),
            "SIGNAL_ICE_TRANSPORT_POLICY": "relay",
            # Small enough for a test to reach (the default is 256).
            "GATEWAY_SOCKETS_PER_ADDRESS": str(SOCKETS_PER_ADDRESS),
            "GATEWAY_HANDSHAKES_PER_SECOND": str(HANDSHAKES_PER_SECOND),
            "GATEWAY_HANDSHAKE_BURST": str(HANDSHAKE_BURST),
            # Two wrong pairing codes a minute per address: few enough to reach at once.
            "CURSORS_CODE_ATTEMPTS": "2",
            # Open to anyone, as deployed by default; private-* rooms for tokens signed so.
            "AUTH_SECRET": AUTH_SECRET,
            # One machine's clocks: a sign-in ends 5 s after its exp (the default, 30 s, is for
            # the clocks of different machines), so that a test of expiry waits little.
            "AUTH_LEEWAY": "5",
        }
    )
    relays = free_udp_port() // 2 * 2
    env.update({"TURN_MIN_PORT": str(relays), "TURN_MAX_PORT": str(min(relays + 200, 65535))})
    for service in SERVICES:
        for side in "AB":
            env[f"{service.upper()}_PORT_{side}"] = str(free_port())
    return env


def start_part(
    directory: Path, env: dict[str, str], processes: str
) -> tuple[Process, dict[str, str]]:
    """scripts/cluster.sh running only ``processes`` of the Procfile (``CLUSTER_PROCESSES``),
    and the environment it gives every process (``CLUSTER_ENV_FILE``), for the test to start
    the others itself as the Procfile would."""
    env_file = directory / "cluster.env"
    env = {**env, "CLUSTER_PROCESSES": processes, "CLUSTER_ENV_FILE": str(env_file)}
    infra = Process("cluster-part", [str(ROOT / "scripts" / "cluster.sh")], directory, env)
    deadline = time.monotonic() + STARTUP
    while not env_file.exists():  # written before honcho starts anything
        if not infra.alive() or time.monotonic() > deadline:
            infra.stop()
            raise RuntimeError(f"cluster.sh wrote no environment:\n{infra.log()}")
        time.sleep(0.1)
    pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
    return infra, dict(pairs)


def lines_of(cluster: Cluster, name: str) -> str:
    """One process's lines in the cluster's log (honcho prefixes each with its name)."""
    mine = re.compile(rf"^\S+ {re.escape(name)}\.\d+\s*\| ")
    return "\n".join(line for line in cluster.process.log().splitlines() if mine.match(line))


def until_ready(cluster: Cluster, timeout: float = STARTUP) -> None:
    """Every replica's own ``/readyz``, then every service's through nginx, until each says 200.

    Blocking on purpose: a session fixture may be first asked for from inside a running event
    loop (an async fixture's getfixturevalue). A cold machine starts the eight replicas, nginx
    and coturn together on two cores in well over 30 s; the replicas are asked directly first,
    so that nginx never counts a replica still starting as failed. If honcho exits (it does when
    any process does), this fails at once; if the bound runs out, it shows the log of each
    process that is not ready."""
    deadline = time.monotonic() + timeout
    waiting = {
        f"{service}-{side}": f"{cluster.replica(service, side)}/api/{service}/readyz"
        for service in SERVICES
        for side in "ab"
    }
    answers: dict[str, str] = {}
    with httpx.Client(verify=False, timeout=5) as http:
        while waiting:
            if not cluster.process.alive():
                raise RuntimeError(f"the cluster stopped:\n{cluster.process.log()}")
            for name, url in list(waiting.items()):
                try:
                    answer = http.get(url)
                except httpx.HTTPError as exc:
                    answers[name] = repr(exc)
                    continue
                answers[name] = f"{answer.status_code} {answer.text}"
                if answer.status_code == 200:
                    del waiting[name]
            if not waiting:
                break
            if time.monotonic() > deadline:
                logs = "\n\n".join(
                    f"{name} ({answers.get(name, 'no answer')}):\n{lines_of(cluster, name)}"
                    for name in waiting
                )
                raise TimeoutError(f"not ready after {timeout} s:\n{logs}")
            time.sleep(0.3)
        # Then nginx: listening, and routing to a live upstream for every service.
        codes: dict[str, str] = {}
        while True:
            if not cluster.process.alive():
                raise RuntimeError(f"the cluster stopped:\n{cluster.process.log()}")
            for service in SERVICES:
                try:
                    answer = http.get(f"{cluster.url}/api/{service}/readyz")
                    codes[service] = f"{answer.status_code} {answer.text[:200]}"
                except httpx.HTTPError as exc:
                    codes[service] = repr(exc)
            if all(code.startswith("200 ") for code in codes.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the gateway is not ready after {timeout} s ({codes}):\n"
                    f"{lines_of(cluster, 'gateway')}"
                )
            time.sleep(0.3)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("cluster")
    env = cluster_env(directory)
    process = Process("cluster", [str(ROOT / "scripts" / "cluster.sh")], directory, env)
    running = Cluster(process, env)
    try:
        until_ready(running)
        yield running
    finally:
        process.stop()
