"""`make cluster` as the tests run it: scripts/cluster.sh with free ports, the ticker on the
simulator, and coturn relaying between loopback peers (tests only)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, SERVICE_PREFIXES, Process, free_port, free_udp_port

SERVICES = ("chat", "cursors", "signal", "ticker")
SOCKETS_PER_ADDRESS = 40


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
            "TURN_PORT": str(free_udp_port()),
            "TURN_LISTEN_IP": "127.0.0.1",
            "TURN_PEER_RULES": "--allow-loopback-peers --denied-peer-ip=0.0.0.0-255.255.255.255"
            " --allowed-peer-ip=127.0.0.1",
            "SIGNAL_ICE_TRANSPORT_POLICY": "relay",
            # Small enough for a test to reach (the default is 256).
            "GATEWAY_SOCKETS_PER_ADDRESS": str(SOCKETS_PER_ADDRESS),
        }
    )
    relays = free_udp_port() // 2 * 2
    env.update({"TURN_MIN_PORT": str(relays), "TURN_MAX_PORT": str(min(relays + 200, 65535))})
    for service in SERVICES:
        for side in "AB":
            env[f"{service.upper()}_PORT_{side}"] = str(free_port())
    return env


def until_ready(cluster: Cluster, timeout: float = 30) -> None:
    """Blocking on purpose: a session fixture may be first asked for from inside a running
    event loop (an async fixture's getfixturevalue)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=cluster.url, verify=False, timeout=2) as http:
        while True:
            if not cluster.process.alive():
                raise RuntimeError(f"the cluster stopped:\n{cluster.process.log()}")
            codes = []
            for service in SERVICES:
                try:
                    codes.append(http.get(f"/api/{service}/readyz").status_code)
                except httpx.HTTPError:
                    codes.append(0)
            if codes == [200] * len(SERVICES):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready ({codes}):\n{cluster.process.log()[-4000:]}")
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
