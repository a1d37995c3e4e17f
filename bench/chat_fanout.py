"""Chat fan-out benchmark (issue 2): one sender, N receivers, delivery latency and server cost.

What it measures, per scenario (a mode and a number of receivers N):

- delivery latency from one sender to N receivers: the sender sends ``message`` at a fixed rate
  with its send time (``time.time_ns()``) inside the text; each receiver subtracts it from the
  time the frame reached it (same machine, same clock): p50, p99, max, and the delivery ratio
  (received / messages sent x N: anything under 100 % is a loss and is reported);
- server CPU over the measured window, from ``/proc/<pid>/stat`` (utime + stime), as % of one
  core, summed over the replicas; Redis's CPU separately;
- server memory per connection: VmRSS with N idle receivers minus VmRSS with none, over N;
- the load generator's CPU (receiver processes plus the sender), to show it is not the limit.

Modes, interleaved in one run because absolute figures are noisy from run to run:

- ``memory``: ``python -m chat_service``, one process, state in memory;
- ``redis``: two ``chat_service`` replicas sharing a ``redis-server`` started here; the sender
  is on the first replica, the receivers alternate between both;
- ``node``: the course's ``chat.js`` (express + socket.io 4), the performance anchor;
- ``rawws``: the course's ``rawws.js`` (MODE=chat), a bare websocket broadcast: the machine's
  practical limit.

Receivers are real socket.io clients on the websocket transport, but lean ones: engine.io v4 /
socket.io v5 text frames over a minimal websocket client on a bare asyncio transport (uvloop),
spread over ``--workers`` processes, so that 1000 of them do not make the generator the limit.

Run (from the repository root)::

    uv run python bench/chat_fanout.py [--receivers 100,1000] [--rate 20] [--seconds 10]
                                       [--modes memory,redis,node,rawws] [--rounds 1]

It prints markdown tables and saves the raw figures to ``bench/results/``. Every process it
starts listens on 127.0.0.1 only and is ended by its PID when its scenario ends.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self, cast

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
NODE_REFERENCE = Path("/work/shared/reference/seed-node")
HOST = "127.0.0.1"
ROOM = "bench"
SENDER_NAME = "bench-sender"
PYTHON_PATH = "/api/chat/socket.io/"
NODE_PATH = "/socket.io/"
ALL_MODES = ("memory", "redis", "node", "rawws")
#: The send time inside a measured message's text: "bench <seq> <time_ns>".
BENCH_TEXT = re.compile(rb'"bench \d+ (\d+)"')
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CONNECT_CONCURRENCY = 50
CONNECT_TIMEOUT = 30.0
START_TIMEOUT = 30.0
SETTLE_SECONDS = 2.0
WARMUP_SECONDS = 1.0
DRAIN_TIMEOUT = 10.0

EventHandler = Callable[[bytes, int], None]


# --- a minimal socket.io client: websocket frames on a bare asyncio transport ------------------


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A client-to-server websocket frame: final, masked (clients must mask)."""
    key = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    mask = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(size, "big")
    return head + key + masked


class SioClient(asyncio.Protocol):
    """One socket.io v5 client on engine.io v4's websocket transport.

    It connects to the namespace ``/`` with ``auth``, answers pings, and hands every event
    frame (``42[...]``, as bytes) to ``on_event`` with the time its data reached the process.
    """

    def __init__(self, port: int, path: str, auth: dict[str, Any] | None) -> None:
        self.port = port
        self.path = path
        self.auth = auth
        self.on_event: EventHandler | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self._key = base64.b64encode(os.urandom(16))
        self._transport: asyncio.Transport | None = None
        self._handshake = b""
        self._upgraded = False
        self._buffer = b""
        self._fragments: list[bytes] = []

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        transport.write(
            f"GET {self.path}?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: {HOST}:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if not self._upgraded:
            data = self._finish_handshake(data)
            if not data:
                return
        self._parse_frames(self._buffer + data if self._buffer else data, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed before connecting: {exc}"))

    # websocket

    def _finish_handshake(self, data: bytes) -> bytes:
        self._handshake += data
        end = self._handshake.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest = self._handshake[:end], self._handshake[end + 4 :]
        accept = base64.b64encode(hashlib.sha1(self._key + WS_GUID).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            self._fail(f"websocket upgrade refused: {head[:200]!r}")
            return b""
        self._upgraded = True
        self._handshake = b""
        return rest

    def _parse_frames(self, buf: bytes, now: int) -> None:
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            if second & 0x80:
                self._fail("the server masked a frame")
                return
            size, head = second & 0x7F, 2
            if size == 126:
                if end - pos < 4:
                    break
                size, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if end - pos < 10:
                    break
                size, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            stop = pos + head + size
            if stop > end:
                break
            self._frame(first, buf[pos + head : stop], now)
            pos = stop
        self._buffer = buf[pos:]

    def _frame(self, first: int, payload: bytes, now: int) -> None:
        opcode, final = first & 0x0F, first & 0x80
        if opcode in (1, 2, 0):
            if opcode:
                self._fragments.clear()
            if not final:
                self._fragments.append(payload)
                return
            if self._fragments:
                payload = b"".join([*self._fragments, payload])
                self._fragments.clear()
            self._packet(payload, now)
        elif opcode == 9:
            self._write(ws_frame(0xA, payload))
        elif opcode == 8:
            self.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _fail(self, reason: str) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(reason))
        self.close()

    # engine.io and socket.io

    def _packet(self, text: bytes, now: int) -> None:
        if text.startswith(b"42"):
            if self.on_event is not None:
                self.on_event(text, now)
        elif text == b"2":
            self.send(b"3")
        elif text.startswith(b"0"):
            auth = json.dumps(self.auth).encode() if self.auth is not None else b""
            self.send(b"40" + auth)
        elif text.startswith(b"40"):
            if not self.connected.done():
                self.connected.set_result(None)
        elif text.startswith(b"44"):
            self._fail(f"connection refused: {text[:200]!r}")
        elif text.startswith(b"1") or text.startswith(b"41"):
            self.close()

    def send(self, packet: bytes) -> None:
        self._write(ws_frame(0x1, packet))

    def emit(self, event: str, *args: Any) -> None:
        self.send(b"42" + json.dumps([event, *args], separators=(",", ":")).encode())

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(ws_frame(0x8, b"\x03\xe8"))
            self._transport.close()
        self.closed = True


async def open_client(port: int, path: str, auth: dict[str, Any] | None) -> SioClient:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(CONNECT_TIMEOUT):
        _, client = await loop.create_connection(lambda: SioClient(port, path, auth), HOST, port)
        await client.connected
    return client


# --- the receivers' side: a worker process driven through its stdin and stdout -----------------


@dataclass
class Target:
    """``count`` receivers to open on one server."""

    port: int
    path: str
    count: int


class ReceiverPool:
    """The receivers of one worker process and what they measured."""

    def __init__(self) -> None:
        self.clients: list[SioClient] = []
        self.counts: list[int] = []
        #: Latencies in microseconds, by the port of the server the receiver is on.
        self.latencies_us: dict[int, list[int]] = {}
        self.received = 0
        self.measuring = False

    def _handler(self, index: int, port: int) -> EventHandler:
        latencies = self.latencies_us.setdefault(port, [])

        def on_event(text: bytes, now: int) -> None:
            if not self.measuring:
                return
            found = BENCH_TEXT.search(text)
            if found is None:
                return
            latencies.append((now - int(found.group(1))) // 1000)
            self.counts[index] += 1
            self.received += 1

        return on_event

    async def connect(self, targets: list[Target], auth: dict[str, Any] | None) -> dict[str, Any]:
        started = time.monotonic()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(port: int, path: str) -> SioClient:
            async with gate:
                return await open_client(port, path, auth)

        jobs = [one(t.port, t.path) for t in targets for _ in range(t.count)]
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
        for outcome in outcomes:
            if isinstance(outcome, SioClient):
                outcome.on_event = self._handler(len(self.clients), outcome.port)
                self.clients.append(outcome)
                self.counts.append(0)
        return {
            "connected": len(self.clients),
            "errors": errors[:5],
            "failed": len(errors),
            "seconds": time.monotonic() - started,
        }

    def start(self) -> dict[str, Any]:
        for latencies in self.latencies_us.values():
            latencies.clear()
        self.counts = [0] * len(self.clients)
        self.received = 0
        self.measuring = True
        return {}

    def stop(self) -> dict[str, Any]:
        self.measuring = False
        return {
            "latencies_us": self.latencies_us,
            "received": self.received,
            "per_connection_min": min(self.counts, default=0),
            "per_connection_max": max(self.counts, default=0),
            "closed": sum(c.closed for c in self.clients),
        }

    def close(self) -> dict[str, Any]:
        for client in self.clients:
            client.close()
        return {}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        match command["cmd"]:
            case "connect":
                targets = [Target(**t) for t in command["targets"]]
                return await self.connect(targets, command.get("auth"))
            case "start":
                return self.start()
            case "count":
                return {"received": self.received}
            case "stop":
                return self.stop()
            case "quit":
                return self.close()
        raise ValueError(f"unknown command {command!r}")


async def worker_main() -> None:
    """A receiver process."""
    await serve_commands(ReceiverPool())


async def serve_commands(pool: Any) -> None:
    """A worker process's loop: one JSON command a line on stdin, one JSON answer a line on
    stdout, handled by ``pool.handle``, until ``quit``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        answer = await pool.handle(command)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if command["cmd"] == "quit":
            await asyncio.sleep(0.2)  # let the close frames go out
            break


class Worker:
    """The orchestrator's handle on one receiver process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    #: The script whose ``--worker`` mode this handle starts, and its stdout line limit.
    script: Path = SCRIPT
    line_limit = 1 << 28

    @classmethod
    async def start(cls, log: Path) -> Self:
        with log.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(cls.script),
                "--worker",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                limit=cls.line_limit,
            )
        return cls(process)

    async def call(self, cmd: str, **arguments: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **arguments}).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"receiver worker {self.pid} died (see its log)")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def end(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call("quit"), 5)
        with contextlib.suppress(ProcessLookupError):
            if self.process.returncode is None:
                self.process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 5)
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


# --- processes: starting, stopping, and reading /proc -----------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Process:
    """A server process started here, its output in a log file; ended by its PID."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def end(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(
    name: str, argv: list[str], port: int, log_dir: Path, env: dict[str, str], cwd: Path
) -> Process:
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    return Process(name, popen, log, port)


async def wait_listening(process: Process) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(HOST, process.port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{process.name} is not listening on {process.port}:\n{process.log_tail()}")


def chat_env(port: int, redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("CHAT_")}
    env.update(
        HOST=HOST,
        PORT=str(port),
        LOG_LEVEL="warning",
        CHAT_RATE_PER_SECOND="100000",
        CHAT_RATE_BURST="100000",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def node_reference(source: Path) -> Path:
    """A writable copy of the course's Node servers with ``npm ci`` done, cached by lock file."""
    digest = hashlib.sha256((source / "package-lock.json").read_bytes()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / f"switchboard-bench-seed-node-{digest}"
    if not (copy / "node_modules" / "socket.io").is_dir():
        copy.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.is_file():
                shutil.copyfile(item, copy / item.name)
        print(f"npm ci in {copy} ...", file=sys.stderr)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=copy,
            check=True,
            timeout=300,
        )
    return copy


@dataclass
class Deployment:
    """The server processes of one scenario and where the clients go."""

    servers: list[Process]
    sender_port: int
    receiver_ports: list[int]
    path: str
    auth: dict[str, Any] | None
    redis: Process | None = None

    def all(self) -> list[Process]:
        return [*self.servers, *([self.redis] if self.redis else [])]


def redis_server_argv(port: int) -> list[str]:
    """A throw-away redis-server on loopback: no persistence."""
    return ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]


async def deploy(mode: str, log_dir: Path, node_dir: Path | None) -> Deployment:
    """Start the servers of ``mode``; the caller ends them (``Deployment.all``)."""
    started: list[Process] = []
    try:
        deployment = await _deploy(mode, log_dir, node_dir, started)
    except BaseException:
        for process in reversed(started):
            process.end()
        raise
    return deployment


async def _deploy(
    mode: str, log_dir: Path, node_dir: Path | None, started: list[Process]
) -> Deployment:
    def run(name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Process:
        port = int(env["PORT"])
        process = spawn(name, argv, port, log_dir, env, cwd)
        started.append(process)
        return process

    chat = [sys.executable, "-m", "chat_service"]
    if mode == "memory":
        port = free_port()
        server = run("chat", chat, chat_env(port, None), ROOT)
        await wait_listening(server)
        return Deployment([server], port, [port], PYTHON_PATH, {"room": ROOM})
    if mode == "redis":
        redis_port = free_port()
        redis = run(
            "redis",
            redis_server_argv(redis_port),
            {**os.environ, "PORT": str(redis_port)},
            Path(tempfile.gettempdir()),
        )
        await wait_listening(redis)
        url = f"redis://{HOST}:{redis_port}/0"
        ports = [free_port(), free_port()]
        replicas = [run(f"chat-{i}", chat, chat_env(p, url), ROOT) for i, p in enumerate(ports)]
        for replica in replicas:
            await wait_listening(replica)
        return Deployment(replicas, ports[0], ports, PYTHON_PATH, {"room": ROOM}, redis)
    if mode in ("node", "rawws"):
        assert node_dir is not None
        port = free_port()
        env = {**os.environ, "PORT": str(port), "HOST": HOST, "MODE": "chat"}
        script = "chat.js" if mode == "node" else "rawws.js"
        server = run(mode, ["node", script], env, node_dir)
        await wait_listening(server)
        return Deployment([server], port, [port], NODE_PATH, None)
    raise ValueError(f"unknown mode {mode!r}")


# --- one scenario ------------------------------------------------------------------------------


@dataclass
class Scenario:
    mode: str
    receivers: int
    rate: float
    seconds: float
    workers: int
    round: int = 1


@dataclass
class Result:
    mode: str
    receivers: int
    rate: float
    seconds: float
    round: int
    sent: int = 0
    expected: int = 0
    received: int = 0
    delivered_pct: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    deliveries_per_s: float = 0.0
    window_s: float = 0.0
    server_cpu_pct: float = 0.0
    #: Server CPU time per delivery: comparable even when a server falls behind.
    server_us_per_delivery: float = 0.0
    redis_cpu_pct: float | None = None
    server_rss_idle_kb: int = 0
    server_rss_loaded_kb: int = 0
    kb_per_connection: float = 0.0
    generator_cpu_pct: float = 0.0
    generator_busiest_process_pct: float = 0.0
    connect_seconds: float = 0.0
    connect_failures: int = 0
    closed_during_run: int = 0
    per_connection_min: int = 0
    per_connection_max: int = 0
    #: With replicas: p50/p99 of the receivers on the sender's replica and on the other one.
    by_server: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def percentile(ordered: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted microseconds, in milliseconds."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1] / 1000


def per_server_latency(
    deployment: Deployment, by_port: dict[int, list[int]]
) -> dict[str, dict[str, float]]:
    out = {}
    for port, values in by_port.items():
        where = "sender's replica" if port == deployment.sender_port else f"replica :{port}"
        ordered = sorted(values)
        out[where] = {"p50_ms": percentile(ordered, 0.5), "p99_ms": percentile(ordered, 0.99)}
    return out


def split_targets(deployment: Deployment, receivers: int, workers: int) -> list[list[Target]]:
    """Receiver i goes to worker i % workers and to server i % len(receiver_ports)."""
    per_worker: list[dict[int, int]] = [{} for _ in range(workers)]
    ports = deployment.receiver_ports
    for i in range(receivers):
        port = ports[i % len(ports)]
        bucket = per_worker[i % workers]
        bucket[port] = bucket.get(port, 0) + 1
    return [[Target(p, deployment.path, n) for p, n in b.items()] for b in per_worker]


def total_rss(processes: list[Process]) -> int:
    return sum(rss_kb(p.pid) for p in processes)


class CpuMeter:
    """CPU seconds of a set of PIDs between ``start`` and ``stop``."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.before = [cpu_seconds(p) for p in pids]
        self.after = self.before

    def stop(self) -> None:
        self.after = [cpu_seconds(p) for p in self.pids]

    def used(self) -> list[float]:
        return [b - a for a, b in zip(self.before, self.after, strict=True)]


async def connect_sender(deployment: Deployment) -> SioClient:
    sender = await open_client(deployment.sender_port, deployment.path, deployment.auth)
    named: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_event(text: bytes, _now: int) -> None:
        if text.startswith(b'42["name"') and not named.done():
            named.set_result(None)

    sender.on_event = on_event
    sender.emit("name", SENDER_NAME)
    await asyncio.wait_for(named, 10)
    sender.on_event = None
    return sender


async def send_at_rate(sender: SioClient, rate: float, count: int, label: str) -> None:
    """``count`` messages at ``rate`` per second on a fixed schedule (no drift)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for seq in range(count):
        delay = start + seq / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if sender.closed:
            raise ConnectionError("the sender's connection closed")
        sender.emit("message", f"{label} {seq} {time.time_ns()}")


async def wait_drained(workers: list[Worker], expected: int) -> int:
    """Wait until every expected delivery arrived, or DRAIN_TIMEOUT passed."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        answers = await asyncio.gather(*(w.call("count") for w in workers))
        received = int(sum(a["received"] for a in answers))
        if received >= expected or time.monotonic() > deadline:
            return received
        await asyncio.sleep(0.05)


async def run_scenario(scenario: Scenario, log_dir: Path, node_dir: Path | None) -> Result:
    result = Result(
        scenario.mode, scenario.receivers, scenario.rate, scenario.seconds, scenario.round
    )
    deployment = await deploy(scenario.mode, log_dir, node_dir)
    workers: list[Worker] = []
    sender: SioClient | None = None
    try:
        sender = await connect_sender(deployment)
        workers = [await Worker.start(log_dir / f"worker-{i}.log") for i in range(scenario.workers)]
        await asyncio.sleep(1.0)
        result.server_rss_idle_kb = total_rss(deployment.servers)
        await connect_receivers(scenario, deployment, workers, result)
        await asyncio.sleep(SETTLE_SECONDS)
        result.server_rss_loaded_kb = total_rss(deployment.servers)
        result.kb_per_connection = (
            result.server_rss_loaded_kb - result.server_rss_idle_kb
        ) / scenario.receivers
        await send_at_rate(sender, scenario.rate, int(scenario.rate * WARMUP_SECONDS), "warm")
        await asyncio.sleep(0.5)
        await measure(scenario, deployment, workers, sender, result)
    finally:
        await asyncio.gather(*(w.end() for w in workers), return_exceptions=True)
        if sender is not None:
            sender.close()
        for process in reversed(deployment.all()):
            process.end()
    return result


async def connect_receivers(
    scenario: Scenario, deployment: Deployment, workers: list[Worker], result: Result
) -> None:
    plans = split_targets(deployment, scenario.receivers, len(workers))
    answers = await asyncio.gather(
        *(
            w.call("connect", targets=[asdict(t) for t in plan], auth=deployment.auth)
            for w, plan in zip(workers, plans, strict=True)
        )
    )
    result.connect_seconds = max(a["seconds"] for a in answers)
    result.connect_failures = sum(a["failed"] for a in answers)
    if result.connect_failures:
        errors = [e for a in answers for e in a["errors"]]
        raise RuntimeError(f"{result.connect_failures} receivers failed to connect: {errors}")


async def measure(
    scenario: Scenario,
    deployment: Deployment,
    workers: list[Worker],
    sender: SioClient,
    result: Result,
) -> None:
    count = int(scenario.rate * scenario.seconds)
    expected = count * scenario.receivers
    await asyncio.gather(*(w.call("start") for w in workers))
    servers = CpuMeter([p.pid for p in deployment.servers])
    redis = CpuMeter([deployment.redis.pid] if deployment.redis else [])
    generator = CpuMeter([os.getpid(), *(w.pid for w in workers)])
    began = time.monotonic()
    await send_at_rate(sender, scenario.rate, count, "bench")
    result.received = await wait_drained(workers, expected)
    window = time.monotonic() - began
    for meter in (servers, redis, generator):
        meter.stop()
    answers = await asyncio.gather(*(w.call("stop") for w in workers))
    by_port: dict[int, list[int]] = {}
    for answer in answers:
        for port, values in answer["latencies_us"].items():
            by_port.setdefault(int(port), []).extend(values)
    latencies = sorted(x for values in by_port.values() for x in values)
    result.sent, result.expected, result.window_s = count, expected, window
    result.received = len(latencies)
    result.delivered_pct = 100 * result.received / expected
    result.deliveries_per_s = result.received / window
    for name, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99), ("p999_ms", 0.999)):
        setattr(result, name, percentile(latencies, q))
    result.max_ms = latencies[-1] / 1000 if latencies else float("nan")
    result.server_cpu_pct = 100 * sum(servers.used()) / window
    if latencies:
        result.server_us_per_delivery = 1e6 * sum(servers.used()) / len(latencies)
    if len(deployment.receiver_ports) > 1:
        result.by_server = per_server_latency(deployment, by_port)
    if deployment.redis:
        result.redis_cpu_pct = 100 * sum(redis.used()) / window
    result.generator_cpu_pct = 100 * sum(generator.used()) / window
    result.generator_busiest_process_pct = 100 * max(generator.used()) / window
    result.closed_during_run = sum(a["closed"] for a in answers)
    result.per_connection_min = min(a["per_connection_min"] for a in answers)
    result.per_connection_max = max(a["per_connection_max"] for a in answers)
    if result.received < expected:
        result.notes.append(f"lost {expected - result.received} of {expected} deliveries")


# --- the run and its report --------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    node = "absent"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        node = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def results_table(results: list[Result]) -> str:
    rows = [
        "| mode | N | msg/s | p50 ms | p99 ms | max ms | delivered % | deliveries/s | "
        "server CPU % | CPU µs/delivery | Redis CPU % | KB/conn | generator CPU % |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if r.error:
            rows.append(f"| {r.mode} | {r.receivers} | {fmt(r.rate, 0)} | failed: {r.error} |")
            continue
        rows.append(
            f"| {r.mode} | {r.receivers} | {fmt(r.rate, 0)} | {fmt(r.p50_ms, 2)} | "
            f"{fmt(r.p99_ms, 2)} | {fmt(r.max_ms, 1)} | {fmt(r.delivered_pct, 2)} | "
            f"{fmt(r.deliveries_per_s, 0)} | {fmt(r.server_cpu_pct)} | "
            f"{fmt(r.server_us_per_delivery)} | "
            f"{fmt(r.redis_cpu_pct)} | {fmt(r.kb_per_connection)} | "
            f"{fmt(r.generator_cpu_pct)} |"
        )
    return "\n".join(rows)


def node_ratios(results: list[Result]) -> list[dict[str, Any]]:
    """Each mode against ``node`` at the same N and round; the median over rounds."""
    by_key = {(r.mode, r.receivers, r.round): r for r in results if not r.error}
    ratios: dict[tuple[str, int], dict[str, list[float]]] = {}
    for (mode, n, rnd), r in by_key.items():
        node = by_key.get(("node", n, rnd))
        if mode == "node" or node is None:
            continue
        entry = ratios.setdefault((mode, n), {})
        entry.setdefault("p50", []).append(r.p50_ms / node.p50_ms)
        entry.setdefault("p99", []).append(r.p99_ms / node.p99_ms)
        entry.setdefault("cpu", []).append(r.server_cpu_pct / node.server_cpu_pct)
        entry.setdefault("cpu_per_delivery", []).append(
            r.server_us_per_delivery / node.server_us_per_delivery
        )
        if node.kb_per_connection > 0:
            entry.setdefault("memory", []).append(r.kb_per_connection / node.kb_per_connection)
    return [
        {"mode": mode, "receivers": n, **{k: statistics.median(v) for k, v in e.items() if v}}
        for (mode, n), e in sorted(ratios.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


def ratios_table(ratios: list[dict[str, Any]]) -> str:
    rows = [
        "| mode | N | p50 / Node | p99 / Node | server CPU / Node | "
        "CPU per delivery / Node | KB per conn / Node |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in ratios:
        cells = [fmt(r.get(k), 2) + "x" for k in ("p50", "p99", "cpu", "cpu_per_delivery")]
        cells.append(fmt(r.get("memory"), 2) + "x")
        rows.append(f"| {r['mode']} | {r['receivers']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def replicas_table(results: list[Result]) -> str:
    """With replicas: latency on the sender's replica against the other one."""
    rows = [
        "| mode | N | round | sender's replica p50 / p99 ms | other replica p50 / p99 ms |",
        "|---|--:|--:|--:|--:|",
    ]
    for r in results:
        if not r.by_server:
            continue
        local = r.by_server.get("sender's replica", {})
        other = next((v for k, v in r.by_server.items() if k != "sender's replica"), {})
        rows.append(
            f"| {r.mode} | {r.receivers} | {r.round} | "
            f"{fmt(local.get('p50_ms'), 2)} / {fmt(local.get('p99_ms'), 2)} | "
            f"{fmt(other.get('p50_ms'), 2)} / {fmt(other.get('p99_ms'), 2)} |"
        )
    return "\n".join(rows) if len(rows) > 2 else ""


def scenarios(args: argparse.Namespace) -> Iterator[Scenario]:
    """Interleaved: for each round and N, every mode in turn."""
    for rnd in range(1, args.rounds + 1):
        for n in args.receivers:
            for mode in args.modes:
                yield Scenario(mode, n, args.rate, args.seconds, args.workers, rnd)


async def run_all(args: argparse.Namespace, log_dir: Path) -> list[Result]:
    node_dir = None
    if {"node", "rawws"} & set(args.modes):
        try:
            node_dir = node_reference(args.node_reference)
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"no Node reference ({exc}): skipping node and rawws", file=sys.stderr)
            args.modes = [m for m in args.modes if m not in ("node", "rawws")]
    results: list[Result] = []
    for scenario in scenarios(args):
        label = f"{scenario.mode} N={scenario.receivers} round {scenario.round}"
        print(f"-- {label} ...", file=sys.stderr, flush=True)
        timeout = scenario.seconds + WARMUP_SECONDS + 120
        try:
            result = await asyncio.wait_for(run_scenario(scenario, log_dir, node_dir), timeout)
        except Exception as exc:
            result = Result(
                scenario.mode, scenario.receivers, scenario.rate, scenario.seconds, scenario.round
            )
            result.error = f"{type(exc).__name__}: {exc}"[:300]
        print(
            f"   p50 {fmt(result.p50_ms, 2)} ms, p99 {fmt(result.p99_ms, 2)} ms, "
            f"delivered {fmt(result.delivered_pct, 2)} %, server CPU "
            f"{fmt(result.server_cpu_pct)} %, generator CPU {fmt(result.generator_cpu_pct)} %"
            + (f", ERROR {result.error}" if result.error else ""),
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    return results


def save(args: argparse.Namespace, info: dict[str, Any], results: list[Result]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"chat_fanout-{stamp}.json"
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    payload = {
        "machine": info,
        "command": " ".join(["uv run python bench/chat_fanout.py", *sys.argv[1:]]),
        "settings": settings,
        "results": [asdict(r) for r in results],
        "node_ratios": node_ratios(results),
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def int_list(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    def modes(text: str) -> list[str]:
        chosen = [m.strip() for m in text.split(",") if m.strip()]
        unknown = set(chosen) - set(ALL_MODES)
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown modes {sorted(unknown)}; use {ALL_MODES}")
        return chosen

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int_list, default=[100, 1000], help="e.g. 100,1000")
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--modes", type=modes, default=list(ALL_MODES))
    parser.add_argument("--rounds", type=int, default=1, help="repeat the interleaved set")
    parser.add_argument("--workers", type=int, default=2, help="receiver processes")
    parser.add_argument("--node-reference", type=Path, default=NODE_REFERENCE)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_loop(main: Callable[[], Awaitable[Any]]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())  # type: ignore[arg-type]
    return uvloop.run(main())  # type: ignore[arg-type]


def main() -> None:
    args = parse_args()
    if args.worker:
        run_loop(worker_main)
        return
    info = machine()
    with tempfile.TemporaryDirectory(prefix="chat-fanout-") as logs:
        results = run_loop(lambda: run_all(args, Path(logs)))
        failed = [r for r in results if r.error]
        if failed:
            kept = RESULTS_DIR / "logs-last-failure"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(logs, kept)
            print(f"server and worker logs kept in {kept}", file=sys.stderr)
    path = save(args, info, results)
    print(f"\n{info['nproc']} x {info['cpu_model']}, {info['date']}\n")
    print(results_table(results))
    print()
    print(ratios_table(node_ratios(results)))
    if replicas := replicas_table(results):
        print()
        print(replicas)
    print(f"\nraw figures: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
