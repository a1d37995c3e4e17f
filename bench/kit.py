"""The benchmarks' kit: what every scenario script under ``bench/`` is built from.

- **Clients:** a lean socket.io v5 client (engine.io v4 text frames over a minimal websocket
  client on a bare asyncio transport), ``SioClient``, and ways to open one or many.
- **Worker processes:** a script started again with ``--worker`` holds many clients and is driven
  by the orchestrator through its stdin and stdout, one JSON command and answer a line
  (``serve_commands`` on the worker's side, ``Worker`` on the orchestrator's).
- **Servers and processes:** starting our services (in memory, or two replicas sharing a Redis
  started for them), the course's Node servers and Redis on loopback ports; waiting for them;
  ending each by its PID; their logs.
- **Measurement:** CPU, run-queue wait and RSS from ``/proc``, the machine's load, percentiles.
- **Reporting:** number cells, markdown tables, ratios to Node, the machine's description.
- **Running:** the event loop, the loop over scenarios, and a recorded run whose results go to
  ``bench/results/<name>-<time>.json`` with the processes' logs next to them.

The scripts import it as ``kit``: Python puts ``bench/`` on ``sys.path`` when one of them runs.
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
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar, cast

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
HOST = "127.0.0.1"
#: The course's Node servers (express + socket.io 4), the anchor our services are compared to.
NODE_REFERENCE = Path("/work/shared/reference/seed-node")
NODE_PATH = "/socket.io/"
CONNECT_CONCURRENCY = 50
CONNECT_TIMEOUT = 30.0
START_TIMEOUT = 30.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: A line of a server's log (LOG_LEVEL=warning or info) that reports a problem.
LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b|Error:")

EventHandler = Callable[[bytes, int], None]
Client = TypeVar("Client", bound="SioClient")
Opened = TypeVar("Opened")


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

    It connects to the namespace ``/`` with ``auth``, keeps the socket id the server gives it
    (``40{"sid": ...}``), answers pings, and hands every event frame (``42[...]``, as bytes) to
    ``on_event`` with the time its data reached the process.
    """

    def __init__(self, port: int, path: str, auth: dict[str, Any] | None) -> None:
        self.port = port
        self.path = path
        self.auth = auth
        self.sid = ""
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
            if text.startswith(b"40{"):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.sid = str(json.loads(text[2:])["sid"])
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


async def connected(factory: Callable[[], Client], port: int) -> Client:
    """A client made by ``factory``, connected to ``port`` (its ``connected`` done)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(CONNECT_TIMEOUT):
        _, client = await loop.create_connection(factory, HOST, port)
        await client.connected
    return client


async def open_client(port: int, path: str, auth: dict[str, Any] | None) -> SioClient:
    return await connected(lambda: SioClient(port, path, auth), port)


async def open_many(openings: Iterable[Awaitable[Opened]]) -> tuple[list[Opened], dict[str, Any]]:
    """Await ``openings`` (of clients, or of pairs of them) CONNECT_CONCURRENCY at a time.
    Returns what opened, in order, and the answer a worker gives to ``connect``: how many
    opened and failed, the first errors and the seconds it took."""
    started = time.monotonic()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(opening: Awaitable[Opened]) -> Opened:
        async with gate:
            return await opening

    outcomes = await asyncio.gather(*(one(o) for o in openings), return_exceptions=True)
    clients = [o for o in outcomes if not isinstance(o, BaseException)]
    errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    return clients, {
        "connected": len(clients),
        "failed": len(errors),
        "errors": errors[:5],
        "seconds": time.monotonic() - started,
    }


#: A chat client's name echoed back (``name``), and the refusals of one.
NAME_ECHO = b'42["name"'
REFUSALS = (b'42["error"', b'42["name_error"', b'42["chat_error"')


async def take_name(client: SioClient, name: str, within: float) -> None:
    """Emit ``name`` and wait for its echo; a refusal is an error."""
    echoed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_event(text: bytes, _now: int) -> None:
        if text.startswith(NAME_ECHO) and not echoed.done():
            echoed.set_result(None)
        elif text.startswith(REFUSALS) and not echoed.done():
            echoed.set_exception(RuntimeError(f"{name!r} refused: {text[:200]!r}"))

    client.on_event = on_event
    client.emit("name", name)
    await asyncio.wait_for(echoed, within)
    client.on_event = None


async def send_at_rate(sender: SioClient, rate: float, count: int, mark: str) -> None:
    """``count`` chat messages at ``rate`` per second on a fixed schedule (no drift), each
    ``"<mark> <seq> <send time, ns>"``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for seq in range(count):
        delay = start + seq / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if sender.closed:
            raise ConnectionError("the sender's connection closed")
        sender.emit("message", f"{mark} {seq} {time.time_ns()}")


# --- worker processes: many clients each, driven through stdin and stdout ----------------------


class Pool(Protocol):
    """The clients of one worker process; ``handle`` answers one command."""

    async def handle(self, command: dict[str, Any]) -> Any: ...


async def serve_commands(pool: Pool) -> None:
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


#: Every worker process of this run, killed by PID at the very end if still running.
WORKERS: list[Worker] = []


class Worker:
    """The orchestrator's handle on one worker process: ``script --worker``."""

    #: The longest answer line (a worker's report can carry every latency it measured).
    line_limit = 1 << 28

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, script: Path, log: Path) -> Self:
        with log.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(script),
                "--worker",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                limit=cls.line_limit,
            )
        worker = cls(process)
        WORKERS.append(worker)
        return worker

    async def call(self, cmd: str, **arguments: Any) -> dict[str, Any]:
        """Send one command (dataclasses in ``arguments`` go as dicts) and read its answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        command = json.dumps({"cmd": cmd, **arguments}, default=asdict)
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.pid} died (see its log)")
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


async def everyone(workers: list[Worker], cmd: str, **arguments: Any) -> list[dict[str, Any]]:
    """The same command to every worker at once; their answers in order."""
    return list(await asyncio.gather(*(w.call(cmd, **arguments) for w in workers)))


async def connect_workers(
    workers: list[Worker], plans: list[list[Any]], what: str, **arguments: Any
) -> list[dict[str, Any]]:
    """Worker i opens the clients of ``plans[i]`` (``connect`` with ``targets``); raises if any
    of them (``what``: "receivers", "pairs"...) failed to connect. Returns the answers."""
    answers = await asyncio.gather(
        *(
            w.call("connect", targets=plan, **arguments)
            for w, plan in zip(workers, plans, strict=True)
        )
    )
    failed = sum(a["failed"] for a in answers)
    if failed:
        errors = [e for a in answers for e in a["errors"]]
        raise RuntimeError(f"{failed} {what} failed to connect: {errors}")
    return list(answers)


@dataclass
class Target:
    """``count`` clients to open on one server."""

    port: int
    path: str
    count: int


def split_targets(
    deployment: Deployment, clients: int, workers: int, first_server: int = 0
) -> list[list[Target]]:
    """Client i goes to worker i % workers and to server (i + first_server) % servers."""
    per_worker: list[dict[int, int]] = [{} for _ in range(workers)]
    ports = deployment.ports
    for i in range(clients):
        port = ports[(i + first_server) % len(ports)]
        bucket = per_worker[i % workers]
        bucket[port] = bucket.get(port, 0) + 1
    return [[Target(p, deployment.path, n) for p, n in b.items()] for b in per_worker]


# --- servers and processes: starting, stopping, and their logs --------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


#: Every server process of this run, ended by PID at the very end whatever happened.
STARTED: list[Process] = []


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
    process = Process(name, popen, log, port)
    STARTED.append(process)
    return process


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


def redis_server_argv(port: int) -> list[str]:
    """A throw-away redis-server on loopback: no persistence."""
    return ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]


class Launcher:
    """Starts the processes of one scenario, each named ``<tag>-<name>`` with its output in
    ``<log_dir>/<tag>-<name>.log``, and ends them by PID, the last started first: our replicas
    before the Redis they use to stop."""

    def __init__(self, log_dir: Path, tag: str) -> None:
        self.log_dir = log_dir
        self.tag = tag
        self.started: list[Process] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.end()

    def log(self, name: str) -> Path:
        """The log file of ``name`` in this scenario (a worker's, say)."""
        return self.log_dir / f"{self.tag}-{name}.log"

    def start(
        self, name: str, argv: list[str], port: int, env: dict[str, str], cwd: Path = ROOT
    ) -> Process:
        process = spawn(f"{self.tag}-{name}", argv, port, self.log_dir, env, cwd)
        self.started.append(process)
        return process

    async def redis(self) -> tuple[Process, str]:
        """A Redis for this scenario only, listening; returns it and its URL."""
        port = free_port()
        argv = redis_server_argv(port)
        redis = self.start("redis", argv, port, dict(os.environ), Path(tempfile.gettempdir()))
        await wait_listening(redis)
        return redis, f"redis://{HOST}:{port}/0"

    def end(self) -> None:
        for process in reversed(self.started):
            process.end()


@dataclass
class Deployment:
    """The servers clients go to in one scenario (the first one is the sender's or the
    prober's), the socket.io path and auth for them, and the Redis they share, if any."""

    servers: list[Process]
    path: str
    auth: dict[str, Any] | None = None
    redis: Process | None = None

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]


def service_env(
    port: int,
    redis_url: str | None,
    prefix: str,
    *,
    drop: tuple[str, ...] = (),
    log_level: str = "warning",
    gc_probe: Path | None = None,
    **settings: str,
) -> dict[str, str]:
    """The environment of one of our services on ``port``: this process's less REDIS_URL and
    the service's own variables (``prefix``, such as ``CHAT_``, and ``drop``), with its rate
    limit lifted, ``settings`` added, and REDIS_URL when it shares a Redis. With ``gc_probe``,
    that folder comes first on PYTHONPATH (see ``gc_probe_folder``)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "REDIS_URL" and not k.startswith((prefix, *drop))
    }
    if gc_probe is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(gc_probe), env.get("PYTHONPATH")]))
    env.update(HOST=HOST, PORT=str(port), LOG_LEVEL=log_level)
    env[f"{prefix}RATE_PER_SECOND"] = env[f"{prefix}RATE_BURST"] = "100000"
    env.update(settings)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


async def deploy_service(
    launcher: Launcher,
    mode: str,
    name: str,
    argv: list[str],
    env: Callable[[int, str | None], dict[str, str]],
    path: str,
    auth: dict[str, Any] | None = None,
) -> Deployment:
    """One of our services as ``mode`` runs it: ``memory``, one process called ``name``;
    ``redis``, two replicas (``name-1``, ``name-2``) sharing a Redis started for them. ``env``
    gives a process's environment from its port and the Redis URL."""
    redis, url = await launcher.redis() if mode == "redis" else (None, None)
    names = [name] if redis is None else [f"{name}-1", f"{name}-2"]
    servers = []
    for each in names:
        port = free_port()
        servers.append(launcher.start(each, argv, port, env(port, url)))
    for server in servers:
        await wait_listening(server)
    return Deployment(servers, path, auth, redis)


async def deploy_node(
    launcher: Launcher, node_dir: Path, name: str, script: str, path: str, **env: str
) -> Deployment:
    """One of the course's Node servers (``script`` in ``node_dir``), listening on loopback."""
    port = free_port()
    server = launcher.start(
        name,
        ["node", script],
        port,
        {**os.environ, "PORT": str(port), "HOST": HOST, **env},
        node_dir,
    )
    await wait_listening(server)
    return Deployment([server], path)


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


def prepare_node(args: argparse.Namespace, node_modes: tuple[str, ...] = ("node",)) -> Path | None:
    """The Node servers ready to run (``node_reference``) when ``args.modes`` has one of
    ``node_modes``; if they cannot be (no npm, no folder), those modes leave ``args.modes``."""
    if not set(node_modes) & set(args.modes):
        return None
    try:
        return node_reference(args.node_reference)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"no Node reference ({exc}): skipping {' and '.join(node_modes)}", file=sys.stderr)
        args.modes = [m for m in args.modes if m not in node_modes]
        return None


def log_problems(processes: list[Process]) -> list[str]:
    """Warning and error lines in the processes' logs, each with its process's name."""
    found = []
    for process in processes:
        with contextlib.suppress(OSError):
            for line in process.log.read_text(errors="replace").splitlines():
                if LOG_PROBLEM.search(line):
                    found.append(f"{process.name}: {line[:300]}")
    return found


def http_get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as answer:
        return int(answer.status), answer.read()


#: Put on a server's PYTHONPATH (only its) as ``sitecustomize.py``: a gc callback that writes
#: one line to stderr per collection of generation 1 or 2, the ones that can pause.
GC_PROBE = """\
import gc, sys, time
_began = [0.0]
def _gc_probe(phase, info):
    if info["generation"] < 1:
        return
    if phase == "start":
        _began[0] = time.perf_counter()
        return
    pause = (time.perf_counter() - _began[0]) * 1000
    sys.stderr.write(
        f"GCPROBE wall={time.time():.3f} gen={info['generation']} "
        f"collected={info['collected']} pause_ms={pause:.1f} "
        f"gen2_objects={len(gc.get_objects(2))}\\n"
    )
    sys.stderr.flush()
gc.callbacks.append(_gc_probe)
"""
#: The GC probe's line in a server's log.
GC_LINE = re.compile(
    r"^GCPROBE wall=(?P<wall>[0-9.]+) gen=(?P<gen>\d) collected=(?P<collected>\d+) "
    r"pause_ms=(?P<pause>[0-9.]+) gen2_objects=(?P<gen2>\d+)$",
    re.M,
)


def gc_probe_folder(log_dir: Path) -> Path:
    """A folder with GC_PROBE as its ``sitecustomize.py`` (in the run's temporary logs folder:
    the project is not touched), for ``service_env(gc_probe=...)``."""
    folder = log_dir / "gcprobe"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(GC_PROBE)
    return folder


def end_everything() -> None:
    """End, by PID, whatever a finished or interrupted run left running."""
    for worker in WORKERS:
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
    for process in STARTED:  # normally ended by their scenario already
        process.end()


# --- measurement: /proc, the machine's load, percentiles ---------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def total_rss(processes: list[Process]) -> int:
    return sum(rss_kb(p.pid) for p in processes)


def run_queue_wait(pids: list[int]) -> float:
    """Seconds the threads of ``pids`` spent runnable but waiting for a CPU
    (``/proc/<pid>/task/<tid>/schedstat``, second field, ns); threads that ended are missed."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(stat.read_text().split()[1])
    return total / 1e9


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from the first line of /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class CpuMeter:
    """CPU seconds of a set of PIDs between its making and ``stop``."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.before = [cpu_seconds(p) for p in pids]
        self.after = self.before

    def stop(self) -> None:
        self.after = [cpu_seconds(p) for p in self.pids]

    def used(self) -> list[float]:
        return [b - a for a, b in zip(self.before, self.after, strict=True)]


@dataclass
class Window:
    """What one client received, and what the processes spent, over one window."""

    seconds: float = 0.0
    frames_per_s: float = 0.0
    kb_per_s: float = 0.0
    bytes_per_frame: float = 0.0
    server_cpu_pct: float = 0.0
    redis_cpu_pct: float | None = None
    generator_cpu_pct: float = 0.0
    generator_busiest_pct: float = 0.0
    #: Time the threads spent runnable but waiting for a CPU, as % of the window.
    server_wait_pct: float = 0.0
    generator_wait_pct: float = 0.0
    #: The whole machine, % of one core (so up to 100 x cores), and what others than the
    #: servers, Redis and the generator used of it.
    machine_busy_pct: float = 0.0
    others_cpu_pct: float = 0.0


class Meters:
    """CPU and run-queue wait of the servers, Redis and the load generator (this process and
    the workers) from its making to ``stop``, and how busy the whole machine was."""

    def __init__(self, deployment: Deployment, workers: list[Worker]) -> None:
        self.server_pids = [p.pid for p in deployment.servers]
        self.generator_pids = [os.getpid(), *(w.pid for w in workers)]
        self.servers = CpuMeter(self.server_pids)
        self.redis = CpuMeter([deployment.redis.pid] if deployment.redis else [])
        self.generator = CpuMeter(self.generator_pids)
        self.server_wait = -run_queue_wait(self.server_pids)
        self.generator_wait = -run_queue_wait(self.generator_pids)
        self.busy, self.total = machine_busy()
        self.began = time.monotonic()
        self.seconds = 0.0

    def stop(self) -> None:
        self.seconds = time.monotonic() - self.began
        for meter in (self.servers, self.redis, self.generator):
            meter.stop()
        self.server_wait += run_queue_wait(self.server_pids)
        self.generator_wait += run_queue_wait(self.generator_pids)
        busy, total = machine_busy()
        self.busy, self.total = busy - self.busy, total - self.total

    def fill(self, window: Window, frames: int, received_bytes: int) -> None:
        """``window`` from these meters and what one client received in it."""
        s = window.seconds = self.seconds
        window.frames_per_s = frames / s
        window.kb_per_s = received_bytes / s / 1000
        window.bytes_per_frame = received_bytes / frames if frames else 0.0
        window.server_cpu_pct = 100 * sum(self.servers.used()) / s
        window.redis_cpu_pct = 100 * sum(self.redis.used()) / s if self.redis.pids else None
        window.generator_cpu_pct = 100 * sum(self.generator.used()) / s
        window.generator_busiest_pct = 100 * max(self.generator.used()) / s
        window.server_wait_pct = 100 * self.server_wait / s
        window.generator_wait_pct = 100 * self.generator_wait / s
        cores = os.cpu_count() or 1
        window.machine_busy_pct = 100 * cores * self.busy / self.total if self.total else 0.0
        ours = window.server_cpu_pct + (window.redis_cpu_pct or 0) + window.generator_cpu_pct
        window.others_cpu_pct = max(0.0, window.machine_busy_pct - ours)


def percentile(ordered: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted microseconds, in milliseconds."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1] / 1000


# --- reporting ---------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """A markdown table; the first ``text_columns`` columns are left-aligned, numbers right."""
    lines = ["| " + " | ".join(cells) + " |" for cells in [header, *rows]]
    lines.insert(1, "|" + "---|" * text_columns + "--:|" * (len(header) - text_columns))
    return "\n".join(lines)


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


class Compared(Protocol):
    """A scenario's result as ``node_ratios`` reads it."""

    mode: str
    round: int
    error: str | None


C = TypeVar("C", bound=Compared)


def node_ratios(
    results: list[C], size: str, figures: Callable[[C], dict[str, float]]
) -> list[dict[str, Any]]:
    """Each mode against ``node`` at the same size (the results' attribute ``size``: N, P) and
    round: per figure, the median over rounds of its value over Node's. A figure Node has at
    0 is left out."""
    by_key = {(r.mode, getattr(r, size), r.round): r for r in results if not r.error}
    ratios: dict[tuple[str, int], dict[str, list[float]]] = {}
    for (mode, n, rnd), r in by_key.items():
        node = by_key.get(("node", n, rnd))
        if mode == "node" or node is None:
            continue
        entry = ratios.setdefault((mode, n), {})
        theirs = figures(node)
        for name, mine in figures(r).items():
            if theirs[name]:
                entry.setdefault(name, []).append(mine / theirs[name])
    return [
        {"mode": mode, size: n, **{k: statistics.median(v) for k, v in e.items()}}
        for (mode, n), e in sorted(ratios.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


# --- running -----------------------------------------------------------------------------------


def run_loop(main: Callable[[], Awaitable[Any]]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())  # type: ignore[arg-type]
    return uvloop.run(main())  # type: ignore[arg-type]


def mode_list(known: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: modes separated by commas, each one of ``known``."""

    def parse(text: str) -> list[str]:
        chosen = [m.strip() for m in text.split(",") if m.strip()]
        if not chosen or not set(chosen) <= set(known):
            raise argparse.ArgumentTypeError(f"choose among {', '.join(known)}")
        return chosen

    return parse


def at_least_one(text: str) -> int:
    """An argparse type: a whole number, 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return value


def scenario_options(parser: argparse.ArgumentParser, modes: tuple[str, ...], workers: str) -> None:
    """The options a scenario script ends with: ``--modes`` (among ``modes``), ``--rounds``,
    ``--workers`` (processes holding ``workers``), ``--node-reference`` when a mode is ``node``,
    and ``--worker``, which its worker processes are started with."""
    parser.add_argument("--modes", type=mode_list(modes), default=list(modes), help=",".join(modes))
    parser.add_argument("--rounds", type=at_least_one, default=1, help="repeat the interleaved set")
    parser.add_argument("--workers", type=at_least_one, default=2, help=f"{workers} processes")
    if "node" in modes:
        parser.add_argument("--node-reference", type=Path, default=NODE_REFERENCE)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)


def serve_worker(pool: Callable[[], Pool]) -> None:
    """Be a worker process: serve the orchestrator's commands to ``pool()`` until ``quit``."""
    run_loop(lambda: serve_commands(pool()))


class Scenario(Protocol):
    """One scenario of a run: what the progress lines call it, and how long it may take."""

    @property
    def label(self) -> str: ...

    @property
    def timeout(self) -> float | None: ...


class Outcome(Protocol):
    """One scenario's result: the error that ended it, if one did, and a progress line."""

    error: str | None

    def progress(self) -> str: ...


S = TypeVar("S", bound=Scenario)
R = TypeVar("R", bound=Outcome)


async def run_all(
    scenarios: Iterable[S], run: Callable[[S], Awaitable[R]], failed: Callable[[S], R]
) -> list[R]:
    """Each scenario in turn, within its timeout, with a line on stderr before it (with the
    load average) and one after it (``progress``, when it has one)."""
    results = []
    for scenario in scenarios:
        print(f"-- {scenario.label} (load {load_average()}) ...", file=sys.stderr, flush=True)
        try:
            result = await asyncio.wait_for(run(scenario), scenario.timeout)
        except Exception as exc:  # whatever ended it, the row says so and the run goes on
            result = failed(scenario)
            result.error = f"{type(exc).__name__}: {exc}"[:300]
        if line := result.progress():
            print(f"   {line}", file=sys.stderr, flush=True)
        results.append(result)
    return results


def recorded_run(
    name: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Path], Awaitable[list[R]]],
    extra: Callable[[list[R]], dict[str, Any]] | None = None,
) -> tuple[list[R], Path, Path]:
    """Run every scenario with the processes' logs in a temporary folder, then keep the logs
    next to the JSON record, ``bench/results/<name>-<time>.json``: the machine, the command, the
    settings, every result (``asdict``) and ``extra(results)``. Ctrl-C or a failure ends every
    process the run started. Prints the machine line every report starts with; returns the
    results, the JSON's path and the logs' folder."""
    info = machine()
    info["load_start"] = load_average()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    kept = path.with_suffix(".logs")
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix=f"{name}-bench-") as logs:
            results: list[R] = run_loop(lambda: run(args, Path(logs)))
            shutil.copytree(logs, kept)
    except KeyboardInterrupt:
        print("\ninterrupted: every process this run started is ended", file=sys.stderr)
        sys.exit(130)
    finally:
        end_everything()
    info["load_end"] = load_average()
    info["run_seconds"] = round(time.monotonic() - started)
    record = {
        "machine": info,
        "command": " ".join([f"uv run python bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": [asdict(cast(Any, r)) for r in results],
        **(extra(results) if extra else {}),
    }
    path.write_text(json.dumps(record, indent=2))
    print(
        f"\n{info['nproc']} x {info['cpu_model']}, {info['date']}, {info['run_seconds']} s; "
        f"load average {info['load_start']} at start, {info['load_end']} at end\n"
    )
    return results, path, kept
