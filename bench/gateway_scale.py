"""Tens of thousands of websocket connections through the gateway, and what one Redis costs.

Scenario ``gateway`` (issue 17, "Scale past one machine"): the topology of ``make cluster``,
started from here on loopback: a Redis, two replicas of each service (chat, cursors, signal,
ticker; the ticker follows the local simulator, ``python -m ticker_service.simulator``, never
Bitstamp), and nginx from ``gateway/nginx.conf.template`` rendered by ``gateway/render.sh``. Then
N socket.io clients (websocket transport) connect THROUGH nginx, spread over the four services
(``--split``; by default chat 70 %, the rest 10 % each), from many loopback source addresses
(127.0.1.x, ``--per-address`` each: under the gateway's own per-address limits, which are left
as the template sets them unless GATEWAY_SOCKETS_PER_ADDRESS, GATEWAY_HANDSHAKES_PER_SECOND or
GATEWAY_HANDSHAKE_BURST are set in the environment), held by ``--workers`` client processes.

- chat clients join rooms of 50 (the first ``--receivers`` of them one room, the measured one);
  cursor clients rooms of 10; signalling clients calls of 2; ticker clients subscribe to one
  pair each (the simulator makes ``--ticker-rate`` trades per second per pair).
- **Connect rate**: connections per second while opening (each counted when its socket.io
  ``40{"sid": ...}`` arrives), overall and per tenth of N, and the CPU each process spent on it.
- **Memory**: RSS (and PSS) of every process (each replica, nginx's master and workers, Redis,
  the simulator, the clients) before the clients and with all of them connected, per
  connection; the descriptors each holds; the kernel's TCP memory; nginx's connections to each
  replica (one 4-tuple each, from 127.0.0.1's ephemeral ports).
- **Idle**: one ping interval (25 s) with every client connected and silent: each process's
  CPU, and the messages and bytes on every Redis channel (``socketio:<service>``).
- **A chat message's latency** with all N connected: one sender (through the gateway too) at
  ``--rate`` msg/s for ``--seconds`` into the measured room: p50, p99, max over its receivers,
  each process's CPU and run-queue wait meanwhile, and what was published on ``socketio:chat``
  per message.
- **Everyone leaving at once** (the client processes quit, as a gateway restart would make
  them): how long until the replicas hold no client, and what they logged meanwhile.

Redis's own counters (``INFO``: commands by kind with their µs, memory, bytes in and out) are
read around each phase.

The gateway's rendered config is changed for the bench only where N needs it, and the report
says how (``--nginx-workers``, ``--worker-connections``; ``--stock-gateway`` changes nothing):
each client through nginx holds two of a worker's descriptors (its own and the upstream's), and
a worker may hold no more than RLIMIT_NOFILE's hard limit. ``--plain`` serves the gateway's
port without TLS (the same server block otherwise); TLS is the default.

Scenario ``pubsub`` (for docs/scaling.md): what one Redis pub/sub costs. A real chat message
as a replica publishes it is captured on ``socketio:chat`` (two chat replicas, one named client
sending); then (1) published again, addressed to a room nobody is in, at ``--pubsub-rate``:
the CPU each replica spends on a broadcast it has no clients for; (2) published to S counting
subscribers (``--subscribers``), as it is and padded to 4 KiB: Redis's CPU per publish, and
the fit ``a + b x S`` (per publish, per delivery).

Everything listens and connects on 127.0.0.0/8; every process is ended by its PID, also on
failure or Ctrl-C, and every phase is bounded in time.

Run (from the repository root)::

    uv run python bench/gateway_scale.py [--connections 20000] [--scenarios gateway,pubsub]
        [--split chat=70,cursors=10,signal=10,ticker=10] [--workers 4] [--plain]
        [--receivers 200] [--rate 20] [--seconds 10] [--idle-seconds 25]

``--connections 2000`` is a smoke run of about 3 minutes. Markdown tables are printed and
written to ``bench/results/gateway_scale-<time>.md``, the raw figures to ``.json`` beside it,
the processes' logs (nginx's error log among them) to ``.logs/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pwd
import random
import re
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, cast

from kit import (
    CONNECT_CONCURRENCY,
    CONNECT_TIMEOUT,
    HOST,
    LOG_PROBLEM,
    NAME_ECHO,
    REFUSALS,
    ROOT,
    Launcher,
    Process,
    SioClient,
    Worker,
    at_least_one,
    cpu_seconds,
    everyone,
    fmt,
    free_port,
    http_get,
    load_average,
    log_problems,
    mode_list,
    open_client,
    percentile,
    recorded_run,
    redis_server_argv,
    run_all,
    run_queue_wait,
    send_at_rate,
    serve_worker,
    service_env,
    table,
    take_name,
    wait_listening,
)
from redis.asyncio import Redis
from redis.exceptions import RedisError

SCRIPT = Path(__file__).resolve()
SCENARIOS = ("gateway", "pubsub")
TEMPLATE = ROOT / "gateway" / "nginx.conf.template"
RENDER = ROOT / "gateway" / "render.sh"


@dataclass(frozen=True)
class Service:
    """One of the four services: its name (``/api/<name>/``, channel ``socketio:<name>``), its
    package, and the prefix of its settings."""

    name: str
    module: str
    prefix: str

    @property
    def path(self) -> str:
        return f"/api/{self.name}/socket.io/"

    @property
    def channel(self) -> str:
        return f"socketio:{self.name}"


SERVICES = (
    Service("chat", "chat_service", "CHAT_"),
    Service("cursors", "cursor_service", "CURSORS_"),
    Service("signal", "signalling_service", "SIGNAL_"),
    Service("ticker", "ticker_service", "TICKER_"),
)
BY_NAME = {s.name: s for s in SERVICES}
DEFAULT_SPLIT = {"chat": 70, "cursors": 10, "signal": 10, "ticker": 10}
#: Clients per room: chat rooms (the measured one is --receivers), cursor boards, calls.
ROOM_SIZES = {"chat": 50, "cursors": 10, "signal": 2}
MEASURED_ROOM = "scale-measured"
PAIRS = ("btcusd", "btceur", "ethusd", "etheur")
#: Source addresses of the clients: 127.0.1.1, 127.0.1.2 ... (nothing of anyone's listens
#: there); the sender's is 127.0.0.2.
SENDER_ADDRESS = "127.0.0.2"
#: The gateway's per-address limits as the template's users set them (scripts/cluster.sh).
GATEWAY_LIMITS = {
    "GATEWAY_SOCKETS_PER_ADDRESS": "256",
    "GATEWAY_HANDSHAKES_PER_SECOND": "20",
    "GATEWAY_HANDSHAKE_BURST": "100",
}
#: A measured message's text: "t <seq> <send time, ns>".
TIMED = re.compile(rb'"t \d+ (\d+)"')
MESSAGE = b'42["message"'
CLIENTS_GAUGE = re.compile(rb"^switchboard_connected_clients\{[^}]*\} (\S+)$", re.M)
NGINX_PROBLEM = re.compile(r"\[(warn|error|crit|alert|emerg)\] \d+#\d+: (?:\*\d+ )?(.*)")
SETTLE_SECONDS = 3.0
WARMUP_SECONDS = 1.0
DRAIN_TIMEOUT = 30.0
#: How long the replicas may take to see every client gone after they all left at once.
LEAVING_TIMEOUT = 90.0
READY_TIMEOUT = 180.0
#: Descriptors a process needs beside its connections (listeners, logs, Redis, pipes).
SPARE_DESCRIPTORS = 200


# --- the clients' side: a worker process driven through its stdin and stdout ------------------


class GatewayClient(SioClient):
    """The kit's lean socket.io client, with acknowledgements (a ticker ``subscribe``)."""

    def __init__(self, port: int, path: str, auth: dict[str, Any] | None) -> None:
        super().__init__(port, path, auth)
        self.acked: asyncio.Future[bytes] | None = None

    def _packet(self, text: bytes, now: int) -> None:
        if text.startswith(b"43"):  # 43<id>[<answer>]
            if self.acked is not None and not self.acked.done():
                self.acked.set_result(text[2:].partition(b"[")[2])
            return
        super()._packet(text, now)

    async def subscribe(self, pair: str) -> None:
        self.acked = asyncio.get_running_loop().create_future()
        self.send(b"420" + json.dumps(["subscribe", pair]).encode())
        answer = await self.acked
        if not answer.startswith(b'{"ok":true'):
            raise ConnectionError(f"subscribe refused: {answer[:120]!r}")


def client_tls() -> ssl.SSLContext:
    """TLS to the gateway on loopback: its certificate is the run's own, self-signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def open_gateway_client(
    port: int, path: str, auth: dict[str, Any] | None, source: str, tls: bool, pair: str | None
) -> GatewayClient:
    """A client through the gateway from ``source`` (a loopback address), connected (and
    subscribed to ``pair``), within CONNECT_TIMEOUT; closed if it is not."""
    loop = asyncio.get_running_loop()
    client: GatewayClient | None = None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, client = await loop.create_connection(
                lambda: GatewayClient(port, path, auth),
                HOST,
                port,
                local_addr=(source, 0),
                ssl=client_tls() if tls else None,
                server_hostname="localhost" if tls else None,
            )
            await client.connected
            if pair is not None:
                await client.subscribe(pair)
    except BaseException:
        if client is not None:
            client.close()
        raise
    return client


def failure_kind(exc: BaseException) -> str:
    """A short name for why a connection failed, to count failures by kind."""
    text = str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout"
    if found := re.search(r"HTTP/1\.1 (\d{3})", text):
        return f"HTTP {found[1]}"
    if found := re.search(r'"code":\s*"([a-z_]+)"', text):
        return f"refused: {found[1]}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} errno {exc.errno}"
    return type(exc).__name__ + (f": {text[:60]}" if text else "")


def source_address(index: int) -> str:
    """The ``index``-th client source address: 127.0.1.1 ... 127.0.1.250, 127.0.2.1 ..."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


class ClientPool:
    """The clients of one worker process: opened through the gateway, and what the measured
    ones received."""

    def __init__(self) -> None:
        self.clients: list[GatewayClient] = []
        self.measured: list[GatewayClient] = []
        self.measuring = False
        self.latencies_us: list[int] = []
        self.messages = 0
        self.refusals: list[str] = []

    def on_event(self, text: bytes, now: int) -> None:
        if self.measuring and text.startswith(MESSAGE):
            self.messages += 1
            if found := TIMED.search(text):
                self.latencies_us.append((now - int(found.group(1))) // 1000)
        elif text.startswith(REFUSALS) and len(self.refusals) < 5:
            self.refusals.append(text[:200].decode(errors="replace"))

    async def connect(self, command: dict[str, Any]) -> dict[str, Any]:
        """Open this worker's clients (``worker``-th of ``workers``) of the run's plan
        (``client_plan``: the same in every process), ``concurrency`` at a time, the j-th from
        source address ``first_address + j // per_address``."""
        port, tls, per_address = command["port"], command["tls"], command["per_address"]
        plan, _ = client_plan(command["n"], command["split"], command["receivers"])
        mine = plan[command["worker"] :: command["workers"]]
        gate = asyncio.Semaphore(command["concurrency"])
        kinds: Counter[str] = Counter()
        examples: list[str] = []
        times: list[float] = []

        async def one(j: int, service: str, room: str | None, pair: str | None) -> None:
            source = source_address(command["first_address"] + j // per_address)
            auth = {"room": room} if room is not None else None
            async with gate:
                try:
                    client = await open_gateway_client(
                        port, BY_NAME[service].path, auth, source, tls, pair
                    )
                except Exception as exc:  # counted by kind: what breaks at scale is the finding
                    kinds[f"{service}: {failure_kind(exc)}"] += 1
                    if len(examples) < 5:
                        examples.append(f"{service} from {source}: {exc!r}"[:300])
                    return
            times.append(time.time())
            self.clients.append(client)
            if room == MEASURED_ROOM:
                self.measured.append(client)
                client.on_event = self.on_event

        began = time.time()
        await asyncio.gather(*(one(j, *spec) for j, spec in enumerate(mine)))
        return {
            "connected": len(times),
            "failed": sum(kinds.values()),
            "kinds": dict(kinds),
            "examples": examples,
            "measured": len(self.measured),
            "began": began,
            "times": times,
        }

    def start(self) -> dict[str, Any]:
        self.latencies_us = []
        self.messages = 0
        self.measuring = True
        return {}

    def count(self) -> dict[str, Any]:
        return {
            "timed": len(self.latencies_us),
            "closed": sum(c.closed for c in self.clients),
            "open": sum(not c.closed for c in self.clients),
        }

    def stop(self) -> dict[str, Any]:
        self.measuring = False
        return {
            **self.count(),
            "messages": self.messages,
            "latencies_us": self.latencies_us,
            "refusals": self.refusals,
        }

    def close(self) -> dict[str, Any]:
        for client in self.clients:
            client.close()
        return {}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        match command["cmd"]:
            case "connect":
                return await self.connect(command)
            case "start":
                return self.start()
            case "count":
                return self.count()
            case "stop":
                return self.stop()
            case "quit":
                return self.close()
        raise ValueError(f"unknown command {command!r}")


# --- the processes: who they are, what they hold, what they spend ----------------------------


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if parent_of(int(entry.name)) == pid:
                    found.append(int(entry.name))
    return sorted(found)


def status_kb(pid: int, path: str, key: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return None


def descriptors(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return None


def cpu_or_none(pid: int) -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return cpu_seconds(pid)
    return None


@dataclass
class Named:
    """A process of the run by the name the report gives it, and its tier (``chat``,
    ``nginx``, ``redis``, ``clients``...)."""

    name: str
    tier: str
    pid: int


def memory(processes: list[Named]) -> dict[str, dict[str, int | None]]:
    """RSS, PSS (shared pages divided among their users) and open descriptors of each."""
    return {
        p.name: {
            "rss_kb": status_kb(p.pid, "status", "VmRSS:"),
            "pss_kb": status_kb(p.pid, "smaps_rollup", "Pss:"),
            "fds": descriptors(p.pid),
        }
        for p in processes
    }


class Meter:
    """CPU seconds of each process between its making and ``stop`` (None for one that ended),
    and the seconds its threads were runnable but waited for a CPU (on a shared machine, what
    a latency is read with)."""

    def __init__(self, processes: list[Named]) -> None:
        self.processes = processes
        self.before = [cpu_or_none(p.pid) for p in processes]
        self.after = self.before
        self.waited = [-run_queue_wait([p.pid]) for p in processes]
        self.began = time.monotonic()
        self.seconds = 0.0

    def stop(self) -> Self:
        self.seconds = time.monotonic() - self.began
        self.after = [cpu_or_none(p.pid) for p in self.processes]
        self.waited = [
            w + run_queue_wait([p.pid]) for w, p in zip(self.waited, self.processes, strict=True)
        ]
        return self

    def wait_percent(self) -> dict[str, float]:
        """% of the window each process waited for a CPU."""
        return {
            p.name: 100 * w / self.seconds for p, w in zip(self.processes, self.waited, strict=True)
        }

    def used(self) -> dict[str, float | None]:
        return {
            p.name: (b - a if a is not None and b is not None else None)
            for p, a, b in zip(self.processes, self.before, self.after, strict=True)
        }

    def percent(self) -> dict[str, float | None]:
        """% of one core, each process."""
        return {
            k: (100 * v / self.seconds if v is not None else None) for k, v in self.used().items()
        }


def sockstat() -> dict[str, int]:
    """The kernel's TCP sockets in use and their buffers' memory (pages), from
    /proc/net/sockstat (this network namespace: everyone's, not only this run's)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            words = line.split()[1:]
            return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}
    return {}


def established_to(ports: set[int]) -> dict[int, dict[str, int]]:
    """Per port of ``ports``: the established TCP connections to it on 127.0.0.1 (the
    server's side of each: one 4-tuple each) and the lowest and highest source port of their
    other end (nginx's ephemeral ports)."""
    found: dict[int, dict[str, int]] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        port = int(local.rsplit(":", 1)[1], 16)
        if state != "01" or port not in ports:
            continue
        source = int(remote.rsplit(":", 1)[1], 16)
        entry = found.setdefault(port, {"connections": 0, "lowest": source, "highest": source})
        entry["connections"] += 1
        entry["lowest"] = min(entry["lowest"], source)
        entry["highest"] = max(entry["highest"], source)
    return found


# --- the topology: Redis, the simulator, eight replicas, nginx --------------------------------


@dataclass
class Topology:
    redis: Process
    redis_url: str
    simulator: Process
    replicas: dict[str, Process]  # "chat-a" ...
    nginx: Process
    nginx_workers: list[int]
    gateway_port: int
    tls: bool
    config: dict[str, Any]

    def processes(self, workers: list[Worker]) -> list[Named]:
        named = [Named("redis", "redis", self.redis.pid)]
        named += [Named(n, n.split("-")[0], p.pid) for n, p in self.replicas.items()]
        named.append(Named("nginx master", "nginx", self.nginx.pid))
        named += [
            Named(f"nginx worker {i + 1}", "nginx", p) for i, p in enumerate(self.nginx_workers)
        ]
        named.append(Named("simulator", "simulator", self.simulator.pid))
        named.append(Named("orchestrator", "clients", os.getpid()))
        named += [Named(f"clients {i + 1}", "clients", w.pid) for i, w in enumerate(workers)]
        return named


def replica_env(service: Service, port: int, redis_url: str, simulator_port: int) -> dict[str, str]:
    """A replica as scripts/cluster.sh starts one (nginx on loopback is its trusted proxy), with
    the rate limits lifted (the kit's service_env) and a short drain on SIGTERM."""
    env = service_env(port, redis_url, service.prefix, TRUSTED_PROXIES=HOST, DRAIN_SECONDS="0")
    if service.name == "ticker":
        env["TICKER_UPSTREAM_URL"] = f"ws://{HOST}:{simulator_port}"
        env["TICKER_REST_URL"] = f"http://{HOST}:{simulator_port}"
        env["TICKER_PAIRS"] = ",".join(PAIRS)
    return env


async def start_redis(launcher: Launcher) -> tuple[Process, str]:
    """A Redis as the cluster's (a memory cap that never evicts), without persistence."""
    port = free_port()
    argv = [*redis_server_argv(port), "--maxmemory", "256mb", "--maxmemory-policy", "noeviction"]
    redis = launcher.start("redis", argv, port, dict(os.environ), Path(launcher.log_dir))
    await wait_listening(redis)
    return redis, f"redis://{HOST}:{port}/0"


async def wait_ready(process: Process, service: str) -> None:
    """Until the replica's own /readyz says 200 (its Redis listener hears, the ticker leads or
    follows...)."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        try:
            status, body = await asyncio.to_thread(http_get, process.port, f"/api/{service}/readyz")
            if status == 200:
                return
            last = body[:200].decode(errors="replace")
        except OSError as exc:  # urllib's HTTPError (503) and refusals alike
            last = str(exc)
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{process.name} not ready within {READY_TIMEOUT:g} s: {last}")


def nofile_limit() -> int:
    """The descriptors one process may hold here: RLIMIT_NOFILE's hard limit (no process
    without CAP_SYS_RESOURCE, nginx's master included, may go past it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard if hard != resource.RLIM_INFINITY else 1 << 20


def gateway_overrides(args: argparse.Namespace, n: int, cores: int) -> dict[str, Any]:
    """What the bench changes in the rendered config for ``n`` clients, and why."""
    limit = nofile_limit()
    plan: dict[str, Any] = {"nofile_hard_limit": limit}
    if args.stock_gateway:
        return plan
    # Two descriptors a client; the kernel does not spread connections evenly between the
    # workers, so leave each room for half again its share.
    needed = 2 * n * 1.5
    if args.nginx_workers == "auto":
        workers = max(cores, math.ceil(needed / (limit - SPARE_DESCRIPTORS)))
    else:
        workers = int(args.nginx_workers)
    plan["worker_processes"] = workers
    plan["worker_connections"] = args.worker_connections or limit - SPARE_DESCRIPTORS
    plan["worker_rlimit_nofile"] = limit
    return plan


def override(text: str, pattern: str, replacement: str) -> str:
    """``text`` with the one match of ``pattern`` replaced; the template changed if none."""
    changed, count = re.subn(pattern, replacement, text, flags=re.M)
    if count != 1:
        raise RuntimeError(f"gateway/nginx.conf.template: {pattern!r} matched {count} times")
    return changed


def render_gateway(
    folder: Path, env: dict[str, str], plan: dict[str, Any], tls: bool, https_port: int
) -> Path:
    """gateway/render.sh's nginx.conf, with ``plan``'s overrides and, without TLS, the TLS
    server's port listening in plain http."""
    config = folder / "nginx.conf"
    subprocess.run(
        ["sh", str(RENDER), str(TEMPLATE), str(config)],
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )
    text = config.read_text()
    if "worker_processes" in plan:
        text = override(
            text,
            r"^worker_processes auto;$",
            f"worker_processes {plan['worker_processes']};\n"
            f"worker_rlimit_nofile {plan['worker_rlimit_nofile']};",
        )
        text = override(
            text,
            r"^(\s*)worker_connections \d+;$",
            rf"\g<1>worker_connections {plan['worker_connections']};",
        )
    if not tls:
        text = override(text, rf"^(\s*)listen {https_port} ssl;$", rf"\g<1>listen {https_port};")
    config.write_text(text)
    return config


async def start_topology(launcher: Launcher, args: argparse.Namespace, n: int) -> Topology:
    redis, redis_url = await start_redis(launcher)
    simulator_port = free_port()
    simulator_argv = [
        *(sys.executable, "-m", "ticker_service.simulator", "--host", HOST),
        *("--port", str(simulator_port), "--rate", str(args.ticker_rate)),
        *("--pairs", ",".join(PAIRS), "--seed", "17"),
    ]
    simulator = launcher.start("simulator", simulator_argv, simulator_port, dict(os.environ))
    await wait_listening(simulator)
    replicas: dict[str, Process] = {}
    for service in SERVICES:
        for side in "ab":
            port = free_port()
            env = replica_env(service, port, redis_url, simulator_port)
            name = f"{service.name}-{side}"
            argv = [sys.executable, "-m", service.module]
            replicas[name] = launcher.start(name, argv, port, env)
    # Eight Pythons starting at once on a busy machine can take longer than the kit's
    # START_TIMEOUT to listen: READY_TIMEOUT bounds them all.
    await asyncio.gather(*(wait_ready(r, n.split("-")[0]) for n, r in replicas.items()))

    run_dir = launcher.log_dir / "nginx"
    run_dir.mkdir(exist_ok=True)
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "switchboard.certs", str(run_dir / "certs")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    certificate, key = made.stdout.split()
    https_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "GATEWAY_RUN_DIR": str(run_dir),
        "NGINX_MIME_TYPES": "/etc/nginx/mime.types",
        "WEB_ROOT": str(ROOT / "web"),
        "TLS_CERT_FILE": certificate,
        "TLS_KEY_FILE": key,
        "GATEWAY_HTTPS_PORT": str(https_port),
        "GATEWAY_HTTP_PORT": str(http_port),
        "GATEWAY_PUBLIC_HTTPS_PORT": str(https_port),
    }
    for service in SERVICES:
        ports = [replicas[f"{service.name}-{side}"].port for side in "ab"]
        env[f"{service.name.upper()}_UPSTREAMS"] = " ".join(f"{HOST}:{p}" for p in ports)
    limits = {k: os.environ.get(k, default) for k, default in GATEWAY_LIMITS.items()}
    env.update(limits)
    plan = gateway_overrides(args, n, os.cpu_count() or 1)
    tls = not args.plain
    config = render_gateway(run_dir, env, plan, tls, https_port)
    user = pwd.getpwuid(os.getuid()).pw_name
    argv = ["nginx", "-c", str(config), "-p", str(run_dir), "-e", "stderr"]
    argv += ["-g", f"daemon off; user {user};"]
    nginx = launcher.start("nginx", argv, https_port, env)
    await wait_listening(nginx)
    workers: list[int] = []
    expected = plan.get("worker_processes", os.cpu_count() or 1)
    deadline = time.monotonic() + 10
    while len(workers) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        workers = children_of(nginx.pid)
    described = {
        "tls": tls,
        "overrides": plan,
        "limits": limits,
        "nginx_workers": len(workers),
        "template_worker_connections": int(
            re.search(r"worker_connections (\d+);", TEMPLATE.read_text())[1]  # type: ignore[index]
        ),
    }
    return Topology(
        redis, redis_url, simulator, replicas, nginx, workers, https_port, tls, described
    )


def end_nginx_workers(topology: Topology) -> None:
    """nginx's workers end with their master; one left behind (a master that was killed) is
    ended here, by its PID, once it is sure to be one of ours."""
    for pid in topology.nginx_workers:
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if command.startswith(b"nginx: worker") and parent_of(pid) in (1, topology.nginx.pid):
                os.kill(pid, signal.SIGKILL)


# --- Redis: a tap on every channel, and its own counters --------------------------------------


class Tap:
    """A subscriber to ``socketio:*``: messages and bytes per channel, and the first chat
    ``message`` broadcast as published (the bytes every chat replica receives)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.messages: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.chat_message: bytes | None = None
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> Self:
        tap = cls(Redis.from_url(url))
        await tap.pubsub.psubscribe("socketio:*")
        tap.task = asyncio.create_task(tap._listen())
        return tap

    async def _listen(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] != "pmessage":
                continue
            channel = message["channel"].decode()
            data: bytes = message["data"]
            self.messages[channel] += 1
            self.bytes[channel] += len(data)
            if (
                self.chat_message is None
                and channel == "socketio:chat"
                and b'"event":"message"' in data.replace(b": ", b":")
            ):
                self.chat_message = data

    def counts(self) -> dict[str, tuple[int, int]]:
        return {c: (self.messages[c], self.bytes[c]) for c in self.messages}

    async def info(self) -> dict[str, Any]:
        """Redis's own counters: commands (and calls and µs by command), bytes in and out,
        memory, clients."""
        stats: dict[str, Any] = await self.client.info("stats")
        mem: dict[str, Any] = await self.client.info("memory")
        clients: dict[str, Any] = await self.client.info("clients")
        by_command: dict[str, Any] = await self.client.info("commandstats")
        return {
            "commands": stats["total_commands_processed"],
            "net_in": stats["total_net_input_bytes"],
            "net_out": stats["total_net_output_bytes"],
            "used_memory": mem["used_memory"],
            "clients": clients["connected_clients"],
            "by_command": {
                name.removeprefix("cmdstat_"): [v["calls"], v["usec"]]
                for name, v in by_command.items()
            },
        }

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await self.task
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]
            await self.client.aclose()


def channel_rates(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], seconds: float
) -> dict[str, dict[str, float]]:
    """Messages per second and bytes per message on each channel between two tap counts."""
    rates = {}
    for channel, (messages, size) in sorted(after.items()):
        was = before.get(channel, (0, 0))
        count, volume = messages - was[0], size - was[1]
        rates[channel] = {
            "messages_per_s": count / seconds,
            "bytes_per_message": volume / count if count else 0.0,
        }
    return rates


def info_rates(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Redis's commands, bytes in and out per second between two ``Tap.info``; by command, the
    calls per second and Redis's own µs per call, busiest first."""
    commands = {}
    for name, (calls, usec) in after["by_command"].items():
        was_calls, was_usec = before["by_command"].get(name, (0, 0))
        if calls > was_calls:
            commands[name] = {
                "calls_per_s": (calls - was_calls) / seconds,
                "us_per_call": (usec - was_usec) / (calls - was_calls),
            }
    return {
        "commands_per_s": (after["commands"] - before["commands"]) / seconds,
        "kb_in_per_s": (after["net_in"] - before["net_in"]) / seconds / 1000,
        "kb_out_per_s": (after["net_out"] - before["net_out"]) / seconds / 1000,
        "by_command": dict(
            sorted(
                commands.items(),
                key=lambda kv: -kv[1]["calls_per_s"] * kv[1]["us_per_call"],
            )
        ),
    }


def busiest(rates: dict[str, Any], most: int = 6) -> str:
    """The Redis commands that took the most of its time, with calls/s and µs per call."""
    shown = list(rates["by_command"].items())[:most]
    return ", ".join(
        f"{name} {v['calls_per_s']:.1f}/s x {v['us_per_call']:.1f} µs" for name, v in shown
    )


# --- the gateway scenario ----------------------------------------------------------------------


def parse_split(text: str) -> dict[str, int]:
    """``chat=70,cursors=10,...``: each service's share (any whole numbers; missing ones 0)."""
    split = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        if name.strip() not in BY_NAME or not share.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{part!r}: <service>=<share>, among {list(BY_NAME)}")
        split[name.strip()] = int(share)
    if not sum(split.values()):
        raise argparse.ArgumentTypeError("every share is 0")
    return split


def apportion(n: int, split: dict[str, int]) -> dict[str, int]:
    """``n`` clients by ``split``'s shares, rounded so that they add up (largest remainder)."""
    total = sum(split.values())
    exact = {s: n * share / total for s, share in split.items()}
    counts = {s: int(v) for s, v in exact.items()}
    for s in sorted(exact, key=lambda s: exact[s] - counts[s], reverse=True)[
        : n - sum(counts.values())
    ]:
        counts[s] += 1
    return counts


def client_plan(
    n: int, split: dict[str, int], receivers: int
) -> tuple[list[list[Any]], dict[str, Any]]:
    """Every client as [service, room, pair], shuffled so that the services connect together,
    and how they were grouped."""
    counts = apportion(n, split)
    plan: list[list[Any]] = []
    for service, count in counts.items():
        size = ROOM_SIZES.get(service)
        for i in range(count):
            if service == "ticker":
                plan.append([service, None, PAIRS[i % len(PAIRS)]])
            elif service == "chat" and i < receivers:
                plan.append([service, MEASURED_ROOM, None])
            else:
                k = (i - receivers if service == "chat" else i) // (size or 1)
                plan.append([service, f"scale-{service}-{k}", None])
    random.Random(17).shuffle(plan)
    groups = {
        "counts": counts,
        "room_sizes": ROOM_SIZES,
        "measured_room": min(receivers, counts.get("chat", 0)),
        "pairs": len(PAIRS),
    }
    return plan, groups


async def replica_clients(topology: Topology) -> dict[str, float]:
    """Each replica's socket.io clients, by its own /metrics."""
    held = {}
    for name, replica in topology.replicas.items():
        path = f"/api/{name.split('-')[0]}/metrics"
        with contextlib.suppress(OSError):
            _, body = await asyncio.to_thread(http_get, replica.port, path)
            held[name] = sum(float(v) for v in CLIENTS_GAUGE.findall(body))
    return held


async def warm_up(topology: Topology) -> None:
    """One client per service through the gateway, and gone, so that the code a connection
    runs is loaded (and nginx's upstreams tried) before the baseline."""
    for service in SERVICES:
        auth = None if service.name == "ticker" else {"room": "scale-warm-up"}
        pair = PAIRS[0] if service.name == "ticker" else None
        client = await open_gateway_client(
            topology.gateway_port, service.path, auth, SENDER_ADDRESS, topology.tls, pair
        )
        client.close()


def connect_rates(times: list[float], began: float) -> dict[str, Any]:
    """Connections per second overall (from the first attempt to the last connection) and in
    each tenth of them (from the one before the tenth's first to its last)."""
    times = sorted(times)
    if not times:
        return {"overall": 0.0, "tenths": []}
    tenths = []
    edges = [round(len(times) * k / 10) for k in range(11)]
    for k in range(10):
        low, high = edges[k], edges[k + 1]
        if high <= low:
            continue
        start = times[low - 1] if low else began
        tenths.append((high - low) / max(times[high - 1] - start, 1e-3))
    return {
        "overall": len(times) / max(times[-1] - began, 1e-3),
        "seconds": times[-1] - began,
        "tenths": tenths,
    }


async def named_sender(topology: Topology) -> GatewayClient:
    """The chat sender, through the gateway, in the measured room, its name taken."""
    sender = await open_gateway_client(
        topology.gateway_port,
        BY_NAME["chat"].path,
        {"room": MEASURED_ROOM},
        SENDER_ADDRESS,
        topology.tls,
        None,
    )
    await take_name(sender, "scale-sender", 30)
    return sender


async def worker_counts(workers: list[Worker]) -> dict[str, int]:
    answers = await everyone(workers, "count")
    return {k: sum(a[k] for a in answers) for k in ("timed", "closed", "open")}


def nginx_problems(log: Path) -> dict[str, int]:
    """nginx's warnings and errors, counted by what they say (less the client and request)."""
    found: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if match := NGINX_PROBLEM.search(line):
                what = re.split(r", (client|server|upstream|request):", match[2])[0]
                found[f"[{match[1]}] {what[:160]}"] += 1
    return dict(found.most_common(12))


@dataclass
class Scenario:
    kind: str
    connections: int
    args: argparse.Namespace

    @property
    def label(self) -> str:
        return f"{self.kind} {self.connections:,}" if self.kind == "gateway" else self.kind

    @property
    def timeout(self) -> None:
        return None  # each scenario bounds itself (scenario_deadline), keeping what it measured


def scenario_deadline(scenario: Scenario) -> float:
    a = scenario.args
    if scenario.kind == "pubsub":
        return 240.0 + 3 * float(a.pubsub_seconds) * (len(a.subscribers) * 2 + 3)
    windows = float(a.idle_seconds) + float(a.seconds) + DRAIN_TIMEOUT + LEAVING_TIMEOUT
    return 300.0 + connect_deadline(scenario) + windows


def connect_deadline(scenario: Scenario) -> float:
    """The connecting phase's bound: 25 connections/s at worst, and 2 minutes at least."""
    return max(120.0, scenario.connections / 25)


@dataclass
class Result:
    kind: str
    connections: int
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, scenario: Scenario) -> Self:
        return cls(scenario.kind, scenario.connections)

    def progress(self) -> str:
        f = self.figures
        parts = []
        if c := f.get("connect"):
            parts.append(f"connected {c['connected']:,} of {c['asked']:,} at {c['rate']:.0f}/s")
        if m := f.get("memory_per_connection_kb"):
            parts.append(f"{m.get('all servers', float('nan')):.1f} KB/connection on the servers")
        if c := f.get("chat"):
            parts.append(f"chat p99 {fmt(c.get('p99_ms'))} ms")
        if p := f.get("decode"):
            parts.append(f"replica decode {fmt(p.get('bystander_us_per_message'))} us/message")
        return ", ".join(parts) + (f", ERROR {self.error}" if self.error else "")


async def run_gateway(scenario: Scenario, log_dir: Path, result: Result) -> None:
    args, n = scenario.args, scenario.connections
    plan, groups = client_plan(n, args.split, args.receivers)
    result.figures["groups"] = groups
    with Launcher(log_dir, f"gateway-{n}") as launcher:
        topology = await start_topology(launcher, args, n)
        result.figures["gateway"] = topology.config
        workers: list[Worker] = []
        tap: Tap | None = None
        try:
            workers = [
                await Worker.start(SCRIPT, launcher.log(f"clients-{i + 1}"))
                for i in range(args.workers)
            ]
            processes = topology.processes(workers)
            tap = await Tap.open(topology.redis_url)
            await warm_up(topology)
            await asyncio.sleep(SETTLE_SECONDS)
            await measure_gateway(scenario, topology, workers, processes, tap, plan, result)
            await measure_leaving(topology, workers, processes, result)
        finally:
            if tap is not None:
                await tap.close()
            await asyncio.gather(*(w.end() for w in workers), return_exceptions=True)
            result.figures["nginx_problems"] = nginx_problems(topology.nginx.log)
            if "leaving" not in result.figures:  # else counted by measure_leaving, by kind
                result.notes.extend(log_problems(list(topology.replicas.values()))[:10])
            launcher.end()
            end_nginx_workers(topology)


async def measure_gateway(
    scenario: Scenario,
    topology: Topology,
    workers: list[Worker],
    processes: list[Named],
    tap: Tap,
    plan: list[list[Any]],
    result: Result,
) -> None:
    args, n, f = scenario.args, scenario.connections, result.figures
    tiers = {p.name: p.tier for p in processes}
    f["tiers"] = tiers
    before = memory(processes)
    kernel_before = sockstat()
    redis_before = await tap.info()

    # Connect: worker w takes every w-th client, its addresses after the previous worker's.
    first, commands = 0, []
    for w in range(len(workers)):
        piece = plan[w :: len(workers)]
        commands.append(
            {
                "n": n,
                "split": args.split,
                "receivers": args.receivers,
                "worker": w,
                "workers": len(workers),
                "port": topology.gateway_port,
                "tls": topology.tls,
                "per_address": args.per_address,
                "concurrency": args.concurrency,
                "first_address": first,
            }
        )
        first += math.ceil(len(piece) / args.per_address)
    f["source_addresses"] = first
    f["load"] = {"connect": load_average()}
    meter = Meter(processes)
    began = time.time()
    async with asyncio.timeout(connect_deadline(scenario)):
        answers = await asyncio.gather(
            *(w.call("connect", **c) for w, c in zip(workers, commands, strict=True))
        )
    meter.stop()
    times = [t for a in answers for t in a["times"]]
    kinds: Counter[str] = Counter()
    for a in answers:
        kinds.update(a["kinds"])
    rates = connect_rates(times, began)
    connected = len(times)
    f["connect"] = {
        "asked": n,
        "connected": connected,
        "failed": sum(kinds.values()),
        "failures": dict(kinds.most_common()),
        "examples": [e for a in answers for e in a["examples"]][:8],
        "rate": rates["overall"],
        "seconds": rates.get("seconds", 0.0),
        "rate_tenths": rates["tenths"],
        "cpu_s": meter.used(),
        "cpu_pct": meter.percent(),
    }
    measured = sum(a["measured"] for a in answers)
    f["measured_receivers"] = measured

    await asyncio.sleep(SETTLE_SECONDS)
    after = memory(processes)
    kernel_after = sockstat()
    redis_after = await tap.info()
    held = await replica_clients(topology)
    counts = await worker_counts(workers)
    f["open_after_connect"] = counts["open"]
    f["memory"] = {"before": before, "after": after}
    f["replica_clients"] = held
    f["kernel_tcp"] = {"before": kernel_before, "after": kernel_after}
    f["redis"] = {"before": redis_before, "after": redis_after}
    if connected:
        grown = info_rates(redis_before, redis_after, connected)  # "per second": per connection
        f["connect"]["redis_per_connection"] = {
            "commands": grown["commands_per_s"],
            "kb_in": grown["kb_in_per_s"],
            "by_command": grown["by_command"],
            "used_memory_bytes": (redis_after["used_memory"] - redis_before["used_memory"])
            / connected,
        }
    ports = {p.port: name for name, p in topology.replicas.items()}
    tuples = established_to(set(ports))
    f["upstream_tuples"] = {
        name: tuples[p.port] for name, p in topology.replicas.items() if p.port in tuples
    }
    f["memory_per_connection_kb"] = per_connection(f, processes, connected)

    # Idle: one ping interval with everyone connected and silent.
    f["load"]["idle"] = load_average()
    taps = tap.counts()
    redis_before = await tap.info()
    meter = Meter(processes)
    await asyncio.sleep(args.idle_seconds)
    meter.stop()
    counts_idle = await worker_counts(workers)
    f["idle"] = {
        "seconds": meter.seconds,
        "cpu_pct": meter.percent(),
        "channels": channel_rates(taps, tap.counts(), meter.seconds),
        "redis": info_rates(redis_before, await tap.info(), meter.seconds),
        "closed_meanwhile": counts_idle["closed"] - counts["closed"],
    }

    # A chat message's latency to the measured room, everyone else idle.
    if not measured:
        result.notes.append("no receiver of the measured room connected: no latency measured")
        return
    sender = await named_sender(topology)
    try:
        await send_at_rate(sender, args.rate, int(args.rate * WARMUP_SECONDS), "w")
        await asyncio.sleep(0.5)
        count = int(args.rate * args.seconds)
        expected = count * measured
        await everyone(workers, "start")
        f["load"]["chat"] = load_average()
        taps = tap.counts()
        redis_before = await tap.info()
        meter = Meter(processes)
        await send_at_rate(sender, args.rate, count, "t")
        meter.stop()
        window_taps, redis_window = tap.counts(), await tap.info()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:  # the workers are asked: nothing here to wait on
            if (await worker_counts(workers))["timed"] >= expected:
                break
            await asyncio.sleep(0.1)
        answers = await everyone(workers, "stop")
    finally:
        sender.close()
    latencies = sorted(x for a in answers for x in a["latencies_us"])
    f["chat"] = {
        "receivers": measured,
        "messages": count,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] / 1000 if latencies else None,
        "delivered_pct": 100 * len(latencies) / expected,
        "cpu_pct": meter.percent(),
        "wait_pct": meter.wait_percent(),
        "seconds": meter.seconds,
        "channels": channel_rates(taps, window_taps, meter.seconds),
        "redis": info_rates(redis_before, redis_window, meter.seconds),
        "published_message_bytes": len(tap.chat_message) if tap.chat_message else None,
        "refusals": [r for a in answers for r in a["refusals"]][:5],
    }
    f["chat"]["us_per_delivery"] = delivery_costs(f, tiers, expected / meter.seconds)
    if len(latencies) < expected:
        result.notes.append(f"{expected - len(latencies)} of {expected} deliveries missing")


def delivery_costs(
    f: dict[str, Any], tiers: dict[str, str], deliveries_per_s: float
) -> dict[str, float]:
    """Per tier: CPU µs per delivery in the chat window, less what the tier spent idle (the
    idle window's CPU %): an estimate, as noisy as the machine is busy."""
    window, idle = f["chat"]["cpu_pct"], f["idle"]["cpu_pct"]
    costs: dict[str, float] = {}
    for name, tier in tiers.items():
        if window.get(name) is not None and idle.get(name) is not None:
            costs[tier] = costs.get(tier, 0.0) + window[name] - idle[name]
    return {tier: pct * 1e4 / deliveries_per_s for tier, pct in costs.items()}


async def measure_leaving(
    topology: Topology, workers: list[Worker], processes: list[Named], result: Result
) -> None:
    """Every client leaves at once (the client processes quit: what a gateway's restart does
    to the replicas): how long until the replicas hold none, their CPU meanwhile, and what
    their logs said about it."""
    held = await replica_clients(topology)
    sizes = {name: p.log.stat().st_size for name, p in topology.replicas.items()}
    meter = Meter(processes)
    began = time.monotonic()
    await asyncio.gather(*(w.end() for w in workers))
    while time.monotonic() < began + LEAVING_TIMEOUT:
        remaining = await replica_clients(topology)
        if not sum(remaining.values()):
            break
        await asyncio.sleep(0.25)
    seconds = time.monotonic() - began
    await asyncio.sleep(SETTLE_SECONDS)  # what the leaving made the replicas log after it
    meter.stop()
    said: Counter[str] = Counter()
    for name, replica in topology.replicas.items():
        with replica.log.open("rb") as log:
            log.seek(sizes[name])
            for line in log.read().decode(errors="replace").splitlines():
                if LOG_PROBLEM.search(line):
                    said[f"{name.split('-')[0]}: {masked(line)}"] += 1
    result.figures["leaving"] = {
        "clients": sum(held.values()),
        "seconds": seconds,
        "remaining": sum(remaining.values()),
        "cpu_pct": meter.percent(),
        "logged": dict(said.most_common(12)),
    }


def masked(line: str) -> str:
    """A log line without its time, session ids and replica ids, to count lines alike."""
    line = re.sub(r"^\S+ ", "", line)
    line = re.sub(r"(?<![\w-])[\w-]{20}(?![\w-])", "<sid>", line)
    return re.sub(r"\b[0-9a-f]{12}\b", "<replica>", line)[:200]


def per_connection(f: dict[str, Any], processes: list[Named], connected: int) -> dict[str, float]:
    """KB of RSS per connection: each service's replicas by the clients they hold, nginx's
    workers (PSS: the shared zones counted once), Redis, all servers together (every process
    but the clients), and the clients' processes; by the connections that opened."""
    before, after = f["memory"]["before"], f["memory"]["after"]

    def grown(names: list[str], key: str = "rss_kb") -> float:
        return float(sum((after[k][key] or 0) - (before[k][key] or 0) for k in names))

    held = f["replica_clients"]
    out: dict[str, float] = {}
    for service in SERVICES:
        names = [p.name for p in processes if p.tier == service.name]
        clients = sum(held.get(k, 0) for k in names)
        if clients:
            out[service.name] = grown(names) / clients
    if connected:
        nginx = [p.name for p in processes if p.tier == "nginx"]
        out["nginx"] = grown(nginx, "pss_kb") / connected
        out["redis"] = grown(["redis"]) / connected
        servers = [p.name for p in processes if p.tier not in ("clients", "nginx", "simulator")]
        out["all servers"] = (grown(servers) + grown(nginx, "pss_kb")) / connected
        out["clients (load generator)"] = (
            grown([p.name for p in processes if p.tier == "clients"]) / connected
        )
        kernel = f["kernel_tcp"]
        pages = kernel["after"].get("mem", 0) - kernel["before"].get("mem", 0)
        out["kernel TCP buffers (whole machine)"] = pages * 4 / connected
    return out


# --- the pub/sub scenario ----------------------------------------------------------------------


def resp(*words: bytes) -> bytes:
    """A Redis command in RESP."""
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


class CountingSubscriber(asyncio.Protocol):
    """A subscriber that reads and counts bytes: Redis does the same work for it as for a
    replica's listener, and it costs this process next to nothing."""

    def __init__(self, channel: bytes) -> None:
        self.channel = channel
        self.received = 0
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(resp(b"SUBSCRIBE", self.channel))

    def data_received(self, data: bytes) -> None:
        if not self.subscribed.done():
            self.subscribed.set_result(None)
            confirmation = len(resp(b"subscribe", self.channel)) + len(b":1\r\n")
            data = data[confirmation:]
        self.received += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(f"subscriber lost: {exc}"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Publisher(asyncio.Protocol):
    """PUBLISH at a fixed rate, in ticks of ``TICK`` s (the messages due in a tick in one write),
    counting Redis's answers."""

    TICK = 0.002

    def __init__(self) -> None:
        self.answers = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.answers += data.count(b"\r\n")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def publish(self, command: bytes, rate: float, seconds: float) -> int:
        transport = self.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        total = int(rate * seconds)
        while sent < total:
            due = min(total, int((loop.time() - start) * rate) + 1)
            if due > sent:
                transport.write(command * (due - sent))
                sent = due
            await asyncio.sleep(self.TICK)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.answers < sent:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        return sent


def message_frame(channel: bytes, payload: bytes) -> int:
    """The bytes Redis sends a subscriber for one message."""
    return len(resp(b"message", channel, payload))


async def capture_chat_message(replica: Process, tap: Tap) -> bytes:
    """A chat ``message`` as a replica publishes it: one named client on ``replica`` says a
    line of a usual length in the room ``pubsub-speaker``."""
    client = await open_client(replica.port, BY_NAME["chat"].path, {"room": "pubsub-speaker"})
    try:
        echoed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_event(text: bytes, _now: int) -> None:
            if text.startswith(NAME_ECHO) and not echoed.done():
                echoed.set_result(None)

        client.on_event = on_event
        client.emit("name", "speaker")
        await asyncio.wait_for(echoed, 20)
        client.emit("message", "See you at the station at half past six, by the clock.")
        deadline = time.monotonic() + 20
        while tap.chat_message is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no chat message heard on socketio:chat")
            await asyncio.sleep(0.05)
    finally:
        client.close()
    return tap.chat_message


def readdressed(sample: bytes) -> bytes:
    """``sample`` to a room nobody is in, from a replica that is not running (so that no
    replica takes it for its own): the same length."""
    moved = sample.replace(b"pubsub-speaker", b"pubsub-nowhere")
    found = re.search(rb'"host_id":\s*"([0-9a-f]+)"', moved)
    if found is None or moved == sample:
        raise RuntimeError(f"unexpected broadcast: {sample[:300]!r}")
    return moved.replace(found[1], b"0" * len(found[1]))


async def run_pubsub(scenario: Scenario, log_dir: Path, result: Result) -> None:
    args, f = scenario.args, result.figures
    channel = BY_NAME["chat"].channel.encode()
    with Launcher(log_dir, "pubsub") as launcher:
        redis, url = await start_redis(launcher)
        tap = await Tap.open(url)
        loop = asyncio.get_running_loop()
        try:
            # A real broadcast, and what it costs replicas that have nobody to give it to.
            replicas = []
            for side in "ab":
                replica_port = free_port()
                env = replica_env(BY_NAME["chat"], replica_port, url, 0)
                replicas.append(
                    launcher.start(
                        f"chat-{side}", [sys.executable, "-m", "chat_service"], replica_port, env
                    )
                )
            await asyncio.gather(*(wait_ready(r, "chat") for r in replicas))
            sample = await capture_chat_message(replicas[0], tap)
            replay = readdressed(sample)
            f["sample"] = sample.decode(errors="replace")
            f["sample_bytes"] = len(sample)
            _, publisher = await loop.create_connection(Publisher, HOST, redis.port)
            command = resp(b"PUBLISH", channel, replay)
            watched = [
                Named(f"chat-{s}", "chat", r.pid) for s, r in zip("ab", replicas, strict=True)
            ]
            watched.append(Named("redis", "redis", redis.pid))
            await asyncio.sleep(SETTLE_SECONDS)
            idle = Meter(watched)
            await asyncio.sleep(args.pubsub_seconds)
            idle.stop()
            busy = Meter(watched)
            sent = await publisher.publish(command, args.pubsub_rate, args.pubsub_seconds)
            busy.stop()
            extra = {
                k: ((busy.used()[k] or 0) - (idle.used()[k] or 0) * busy.seconds / idle.seconds)
                for k in busy.used()
            }
            f["decode"] = {
                "messages": sent,
                "rate": args.pubsub_rate,
                "subscribers": 3,
                "us_per_message": {k: 1e6 * v / sent for k, v in extra.items()},
                "bystander_us_per_message": 1e6
                * statistics.mean([extra["chat-a"], extra["chat-b"]])
                / sent,
            }
            publisher.close()
            for replica in replicas:
                replica.end()
            await tap.close()

            # Redis alone: the cost of a publish by its subscribers, its size and how many
            # come at once.
            padded = replay + b" " * max(0, 4096 - len(replay))
            rows = []
            for rate in args.pubsub_rates:
                for payload in (replay, padded):
                    for count in args.subscribers:
                        if rate * count > args.pubsub_deliveries:
                            continue
                        rows.append(await publish_to(redis, tap.client, payload, count, rate, args))
            f["redis_costs"] = rows
            f["fit"] = fit(rows)
        finally:
            with contextlib.suppress(Exception):
                await tap.close()


async def redis_cpu(client: Redis) -> float:
    """Redis's own CPU seconds (getrusage: finer than /proc's clock ticks)."""
    found: dict[str, Any] = await client.info("cpu")
    return float(found["used_cpu_sys"]) + float(found["used_cpu_user"])


async def publish_to(
    redis: Process,
    client: Redis,
    payload: bytes,
    count: int,
    rate: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Redis's CPU per PUBLISH of ``payload`` on socketio:chat with ``count`` subscribers
    reading it, at ``rate`` per second, less what it spends idle."""
    loop = asyncio.get_running_loop()
    channel = BY_NAME["chat"].channel.encode()
    frame = message_frame(channel, payload)
    subscribers: list[CountingSubscriber] = []
    publisher: Publisher | None = None
    try:
        for _ in range(count):
            _, subscriber = await loop.create_connection(
                lambda: CountingSubscriber(channel), HOST, redis.port
            )
            subscribers.append(subscriber)
        await asyncio.gather(*(s.subscribed for s in subscribers))
        _, publisher = await loop.create_connection(Publisher, HOST, redis.port)
        await asyncio.sleep(0.5)
        idle = -await redis_cpu(client)
        await asyncio.sleep(1.0)
        idle += await redis_cpu(client)
        before = await redis_cpu(client)
        began = time.monotonic()
        sent = await publisher.publish(
            resp(b"PUBLISH", channel, payload), rate, args.pubsub_seconds
        )
        expected = sent * frame
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while any(s.received < expected for s in subscribers):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        seconds = time.monotonic() - began
        spent = await redis_cpu(client) - before
        delivered = sum(s.received for s in subscribers) / frame
    finally:
        if publisher is not None:
            publisher.close()
        for subscriber in subscribers:
            subscriber.close()
    used = spent - idle * seconds
    return {
        "payload_bytes": len(payload),
        "subscribers": count,
        "rate": rate,
        "published": sent,
        "delivered_pct": 100 * delivered / (sent * count) if count else 100.0,
        "us_per_publish": 1e6 * used / sent,
        "redis_cpu_pct": 100 * spent / seconds,
    }


def fit(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per publish rate and payload size: µs per publish = a + b x subscribers (least squares)."""
    out = []
    for rate, size in sorted({(r["rate"], r["payload_bytes"]) for r in rows}):
        points = [
            (r["subscribers"], r["us_per_publish"])
            for r in rows
            if r["rate"] == rate and r["payload_bytes"] == size
        ]
        if len(points) < 2:
            continue
        xs, ys = zip(*points, strict=True)
        slope, intercept = statistics.linear_regression(xs, ys)
        out.append(
            {
                "rate": rate,
                "payload_bytes": size,
                "us_per_publish": intercept,
                "us_per_delivery": slope,
            }
        )
    return out


# --- running -----------------------------------------------------------------------------------


async def run_scenario(scenario: Scenario, log_dir: Path) -> Result:
    """One scenario within its deadline; what it measured before a failure is kept."""
    result = Result.of(scenario)
    try:
        async with asyncio.timeout(scenario_deadline(scenario)):
            if scenario.kind == "gateway":
                await run_gateway(scenario, log_dir, result)
            else:
                await run_pubsub(scenario, log_dir, result)
    except Exception as exc:  # the row says what ended it; the run goes on
        result.error = f"{type(exc).__name__}: {exc}"[:400]
    return result


def scenarios(args: argparse.Namespace) -> Iterator[Scenario]:
    if "gateway" in args.scenarios:
        for n in args.connections:
            yield Scenario("gateway", n, args)
    if "pubsub" in args.scenarios:
        yield Scenario("pubsub", 0, args)


async def run_scenarios(args: argparse.Namespace, log_dir: Path) -> list[Result]:
    return await run_all(scenarios(args), lambda s: run_scenario(s, log_dir), Result.of)


# --- the report --------------------------------------------------------------------------------


def kb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:,.1f}"


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def gateway_report(r: Result, args: argparse.Namespace) -> str:
    f = r.figures
    out = [f"### {r.connections:,} connections through the gateway"]
    if r.error:
        out.append(f"**Ended early:** {r.error}")
    g, groups = f.get("gateway", {}), f.get("groups", {})
    if g:
        plan = g["overrides"]
        changed = (
            f"worker_processes auto -> {plan['worker_processes']}, worker_connections "
            f"{g['template_worker_connections']} -> {plan['worker_connections']}, "
            f"worker_rlimit_nofile {plan['worker_rlimit_nofile']}"
            if "worker_processes" in plan
            else "nothing (--stock-gateway)"
        )
        counts = groups.get("counts", {})
        out.append(
            f"nginx ({'TLS' if g['tls'] else 'plain http'}, {g['nginx_workers']} workers; "
            f"changed for the bench in the rendered config: {changed}; descriptors per process "
            f"at most {plan['nofile_hard_limit']:,}); per-address limits "
            + ", ".join(f"{k}={v}" for k, v in g["limits"].items())
            + f". Clients: {', '.join(f'{s} {c:,}' for s, c in counts.items())} (chat rooms of "
            f"{ROOM_SIZES['chat']}, the measured one of {groups.get('measured_room', 0)}; cursor "
            f"rooms of {ROOM_SIZES['cursors']}; calls of {ROOM_SIZES['signal']}; ticker clients "
            f"on one of {len(PAIRS)} pairs at {args.ticker_rate:g} trades/s each), from "
            f"{f.get('source_addresses', 0)} source addresses, {args.workers} client processes "
            f"opening {args.concurrency} at a time each. Load average at the start of each "
            "phase: " + "; ".join(f"{k} {v}" for k, v in f.get("load", {}).items()) + "."
        )
    if c := f.get("connect"):
        tenths = " / ".join(number(t) for t in c["rate_tenths"])
        out.append(
            table(
                ["connect", "value"],
                [
                    ["connected / asked", f"{c['connected']:,} / {c['asked']:,}"],
                    ["connections per second (all)", number(c["rate"])],
                    ["per second, each tenth of them in turn", tenths],
                    ["seconds", number(c["seconds"], 1)],
                    [
                        "Redis per connection: commands, its memory",
                        f"{number(c['redis_per_connection']['commands'], 1)}, "
                        f"{number(c['redis_per_connection']['used_memory_bytes'])} B"
                        if "redis_per_connection" in c
                        else "-",
                    ],
                    [
                        "failed, by kind",
                        "; ".join(f"{k}: {v:,}" for k, v in c["failures"].items()) or "none",
                    ],
                ],
            )
        )
        if c["examples"]:
            out.append("First failures:\n\n" + "\n".join(f"- `{e}`" for e in c["examples"]))
    if "memory" in f:
        out.append(tier_table(f))
        out.append(process_table(f))
        per = f["memory_per_connection_kb"]
        out.append(
            table(
                ["memory per connection (RSS growth / connections)", "KB"],
                [[k, number(v, 1)] for k, v in per.items()],
            )
        )
        tuples = f["upstream_tuples"]
        rows = [
            [name, f"{e['connections']:,}", f"{e['lowest']}-{e['highest']}"]
            for name, e in tuples.items()
        ]
        out.append(
            "nginx's connections to each replica (one 4-tuple each, from 127.0.0.1):\n\n"
            + table(["replica", "connections", "nginx's source ports"], rows)
        )
    if i := f.get("idle"):
        rows = [
            [ch, number(v["messages_per_s"], 1), number(v["bytes_per_message"])]
            for ch, v in i["channels"].items()
        ]
        out.append(
            f"Idle, {i['seconds']:.0f} s (engine.io pings every client once in 25 s; "
            f"{i['closed_meanwhile']} clients closed meanwhile); Redis "
            f"{number(i['redis']['commands_per_s'])} commands/s, "
            f"{number(i['redis']['kb_in_per_s'], 1)} KB/s in, "
            f"{number(i['redis']['kb_out_per_s'], 1)} KB/s out; the commands that took most of "
            f"its time: {busiest(i['redis'])}:\n\n"
            + table(["channel", "messages/s", "bytes/message"], rows)
        )
    if ch := f.get("chat"):
        out.append(
            table(
                ["chat message to the measured room", "value"],
                [
                    ["receivers", f"{ch['receivers']:,}"],
                    ["messages", f"{ch['messages']} at {args.rate:g}/s"],
                    [
                        "p50 / p99 / max ms",
                        f"{fmt(ch['p50_ms'])} / {fmt(ch['p99_ms'])} / {fmt(ch['max_ms'])}",
                    ],
                    ["delivered %", fmt(ch["delivered_pct"], 2)],
                    [
                        "CPU µs per delivery, less idle: chat replicas / nginx / Redis",
                        " / ".join(
                            fmt(ch.get("us_per_delivery", {}).get(t))
                            for t in ("chat", "nginx", "redis")
                        ),
                    ],
                    ["bytes published per chat message", str(ch["published_message_bytes"])],
                    ["Redis's busiest commands meanwhile", busiest(ch["redis"])],
                    [
                        "socketio:chat messages/s meanwhile",
                        number(ch["channels"].get("socketio:chat", {}).get("messages_per_s"), 1),
                    ],
                ],
            )
        )
    if leaving := f.get("leaving"):
        cpu = leaving["cpu_pct"]
        replicas = sum(v for k, v in cpu.items() if f["tiers"].get(k) in BY_NAME and v)
        out.append(
            f"All {number(leaving['clients'])} clients leaving at once (the client processes "
            f"quit): the replicas held none after {leaving['seconds']:.1f} s "
            f"({number(leaving['remaining'])} left at the end), using {replicas:.0f} % of a core "
            "together meanwhile. What the replicas logged:\n\n"
            + ("\n".join(f"- {v:,} x `{k}`" for k, v in leaving["logged"].items()) or "- nothing")
        )
    if problems := f.get("nginx_problems"):
        out.append(
            "nginx's error log:\n\n" + "\n".join(f"- {v:,} x `{k}`" for k, v in problems.items())
        )
    if r.notes:
        out.append("Notes:\n\n" + "\n".join(f"- {n}" for n in r.notes))
    return "\n\n".join(out)


def tier_table(f: dict[str, Any]) -> str:
    """The processes by tier (both replicas of a service, nginx's master and workers...):
    memory per connection, CPU per connect, CPU idle and in the chat window (% of one core)."""
    tiers: dict[str, list[str]] = {}
    for name, tier in f["tiers"].items():
        tiers.setdefault(tier, []).append(name)
    per = f["memory_per_connection_kb"]
    cpu = f["connect"]["cpu_s"]
    idle = f.get("idle", {}).get("cpu_pct", {})
    chat = f.get("chat", {}).get("cpu_pct", {})
    held = f["replica_clients"]

    def total(values: dict[str, float | None], names: list[str]) -> float | None:
        found = [values[n] for n in names if values.get(n) is not None]
        return sum(v for v in found if v is not None) if found else None

    rows = []
    for tier, names in tiers.items():
        memory = per.get("clients (load generator)" if tier == "clients" else tier)
        clients = total(held, names)
        spent = total(cpu, names)
        connections = clients or f["connect"]["connected"]
        rows.append(
            [
                tier,
                str(len(names)),
                number(clients),
                number(memory, 1),
                number(
                    1000 * spent / connections if spent is not None and connections else None, 2
                ),
                number(total(idle, names), 1),
                number(total(chat, names), 1),
            ]
        )
    header = [
        "tier",
        "processes",
        "clients",
        "KB per connection",
        "CPU ms per connect",
        "CPU % idle",
        "CPU % chat window",
    ]
    return (
        table(header, rows)
        + "\n\nCPU per connect: a service's by the clients its replicas hold, the others' by "
        "every connection."
    )


def process_table(f: dict[str, Any]) -> str:
    """Per process: memory before and with every client, what it holds, CPU per connection
    while connecting, CPU % idle and during the chat window."""
    before, after = f["memory"]["before"], f["memory"]["after"]
    cpu = f["connect"]["cpu_s"]
    idle = f.get("idle", {}).get("cpu_pct", {})
    chat = f.get("chat", {}).get("cpu_pct", {})
    waited = f.get("chat", {}).get("wait_pct", {})
    held = f["replica_clients"]
    rows = []
    for name in after:
        b, a = before[name], after[name]
        connections = held.get(name) or f["connect"]["connected"]
        spent = cpu.get(name)
        rows.append(
            [
                name,
                kb(b["rss_kb"]),
                kb(a["rss_kb"]),
                kb(a["pss_kb"]),
                number(a["fds"]),
                number(held.get(name)),
                number(
                    1000 * spent / connections if spent is not None and connections else None, 2
                ),
                number(idle.get(name), 1),
                number(chat.get(name), 1),
                number(waited.get(name), 1),
            ]
        )
    header = [
        "process",
        "RSS before MB",
        "RSS with all MB",
        "PSS with all MB",
        "descriptors",
        "clients",
        "CPU ms per connect",
        "CPU % idle",
        "CPU % chat window",
        "waited for a CPU % chat window",
    ]
    return table(header, rows)


def pubsub_report(r: Result) -> str:
    f = r.figures
    out = ["### What one Redis pub/sub costs"]
    if r.error:
        out.append(f"**Ended early:** {r.error}")
    if "sample_bytes" in f:
        out.append(
            f"A chat message as a replica publishes it on `socketio:chat`: {f['sample_bytes']} "
            f"bytes:\n\n```\n{f['sample']}\n```"
        )
    if d := f.get("decode"):
        us = d["us_per_message"]
        out.append(
            f"Published again {d['messages']:,} times at {d['rate']:g}/s to a room nobody is "
            "in: CPU per message (less each process's idle CPU):\n\n"
            + table(["process", "µs per message"], [[k, number(v, 1)] for k, v in us.items()])
        )
    if rows := f.get("redis_costs"):
        out.append(
            table(
                [
                    "payload B",
                    "subscribers",
                    "publishes/s",
                    "published",
                    "delivered %",
                    "Redis µs per publish",
                    "Redis CPU %",
                ],
                [
                    [
                        str(x["payload_bytes"]),
                        str(x["subscribers"]),
                        number(x["rate"]),
                        f"{x['published']:,}",
                        number(x["delivered_pct"], 1),
                        number(x["us_per_publish"], 1),
                        number(x["redis_cpu_pct"], 1),
                    ]
                    for x in rows
                ],
            )
        )
    if fitted := f.get("fit"):
        out.append(
            "Least squares, Redis µs per publish = a + b x subscribers:\n\n"
            + table(
                ["publishes/s", "payload B", "a: µs per publish", "b: µs per delivery"],
                [
                    [
                        number(v["rate"]),
                        str(v["payload_bytes"]),
                        number(v["us_per_publish"], 2),
                        number(v["us_per_delivery"], 2),
                    ]
                    for v in fitted
                ],
            )
        )
    return "\n\n".join(out)


# --- the command -------------------------------------------------------------------------------


def counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: whole numbers, comma-separated") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text}: whole numbers, comma-separated")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scenarios", type=mode_list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--connections", type=counts, default=[20000], help="N, or N1,N2")
    parser.add_argument(
        "--split",
        type=parse_split,
        default=DEFAULT_SPLIT,
        help="shares of the services (chat=70,cursors=10,signal=10,ticker=10)",
    )
    parser.add_argument("--workers", type=at_least_one, default=4, help="client processes (2-4)")
    parser.add_argument(
        "--concurrency",
        type=at_least_one,
        default=CONNECT_CONCURRENCY,
        help="handshakes at a time per client process",
    )
    parser.add_argument(
        "--per-address", type=at_least_one, default=100, help="clients per source address"
    )
    parser.add_argument("--plain", action="store_true", help="the gateway's port without TLS")
    parser.add_argument(
        "--nginx-workers", default="auto", help="auto: enough for the descriptors N needs"
    )
    parser.add_argument(
        "--worker-connections", type=int, default=0, help="0: as many as a worker's descriptors"
    )
    parser.add_argument(
        "--stock-gateway", action="store_true", help="render the template unchanged"
    )
    parser.add_argument(
        "--receivers", type=at_least_one, default=200, help="chat clients in the measured room"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="chat messages per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="the chat window")
    parser.add_argument("--idle-seconds", type=float, default=25.0, help="the idle window")
    parser.add_argument("--ticker-rate", type=float, default=0.2, help="trades/s per pair")
    parser.add_argument("--subscribers", type=counts, default=[0, 1, 4, 16, 64, 256])
    parser.add_argument(
        "--pubsub-rate", type=float, default=2000.0, help="publishes/s to the replicas"
    )
    parser.add_argument(
        "--pubsub-rates", type=counts, default=[250, 2000], help="publishes/s to Redis alone"
    )
    parser.add_argument(
        "--pubsub-deliveries", type=float, default=70000.0, help="most deliveries/s"
    )
    parser.add_argument("--pubsub-seconds", type=float, default=4.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def raise_open_files() -> None:
    """As many descriptors as this process may have, for it and (inherited) every process it
    starts: nginx's workers, the replicas and the client processes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def check_machine(args: argparse.Namespace) -> None:
    for tool in ("nginx", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (make system-deps)")
    per_worker = max(args.connections, default=0) / args.workers
    if per_worker > nofile_limit() - SPARE_DESCRIPTORS:
        raise SystemExit(
            f"{per_worker:,.0f} clients per client process: more than the {nofile_limit():,} "
            "descriptors one may hold; use more --workers"
        )


def main() -> None:
    args = parse_args()
    if args.worker:  # a client process, driven by the orchestrator through stdin and stdout
        serve_worker(ClientPool)
        return
    raise_open_files()
    check_machine(args)
    results, path, logs = recorded_run("gateway_scale", args, run_scenarios)
    record = json.loads(path.read_text())
    info = record["machine"]
    machine_line = (
        f"{info['nproc']} x {info['cpu_model']}, Python {info['python']}, "
        f"{info['date']}, {info['run_seconds']} s; load average {info['load_start']} at "
        f"start, {info['load_end']} at end"
    )
    sections = [
        gateway_report(r, args) if r.kind == "gateway" else pubsub_report(r) for r in results
    ]
    report = "\n\n".join([f"`{record['command']}`", machine_line, *sections])
    path.with_suffix(".md").write_text(report + "\n")
    print("\n\n".join(sections))
    print(
        f"\nreport: {path.with_suffix('.md').relative_to(ROOT)}; raw figures: "
        f"{path.relative_to(ROOT)}; logs: {logs.relative_to(ROOT)}/"
    )


if __name__ == "__main__":
    main()
