"""Real processes for the tests: redis-server, service replicas, and socket.io clients.

Every server listens on a free loopback port; every process is started here and ended here by
its PID. Logs go to files that a failing test prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio
import websockets
from switchboard.settings import ServiceSettings, SettingsError

ROOT = Path(__file__).resolve().parents[1]
#: The bound of a wait for something that must happen (an event, an ack, a state). Far above
#: what any story needs on a busy machine: a passing test never waits it out, a failing one
#: says what it waited for.
PATIENCE = 60.0
#: The bound of a wait for a process to say it is ready: a cold machine (empty caches, every
#: replica importing at once on two cores) takes tens of seconds; minutes, not seconds.
STARTUP = 180.0
#: Settings of ours a developer's shell may hold; a test states the ones it wants.
SERVICE_PREFIXES = ("CHAT_", "CURSORS_", "TICKER_", "SIGNAL_", "STUN_", "TURN_", "REDIS", "AUTH_")


def settings_refusal(
    monkeypatch: pytest.MonkeyPatch, settings_class: type[ServiceSettings], env: dict[str, str]
) -> str:
    """What ``settings_class`` says of ``env``, with no other service variable set: the text
    of the SettingsError it must raise. (That a start then stops, saying it with no traceback,
    is the shared runner's: tests/foundation/test_settings.py shows it once.)"""
    for key in list(os.environ):
        if key.startswith(SERVICE_PREFIXES):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as refused:
        settings_class.from_env()
    return str(refused.value)


def rss_kb(pid: int) -> int:
    """The resident memory of process ``pid``, in kB."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.M)
    assert found
    return int(found.group(1))


#: Every port the helpers below have handed out in this process: the system gives a port that
#: is free now, and may give it again before whoever got it first listens on it (a test that
#: asks for a cluster's dozen ports at once got its Redis's port for a sentinel).
_HANDED_OUT: set[int] = set()


def _not_handed_out(kind: socket.SocketKind) -> int:
    while True:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def free_port() -> int:
    """A TCP port free now and never handed out before by this process."""
    return _not_handed_out(socket.SOCK_STREAM)


def wait_for_port(port: int, timeout: float = STARTUP, process: Process | None = None) -> None:
    """Until something accepts on ``port``; at once an error if ``process`` (the one that
    should listen there) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(process.exited())
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    log = f":\n{process.log()}" if process is not None else ""
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s{log}")


async def until(
    check: Callable[[], Any], what: str, timeout: float = PATIENCE, every: float = 0.1
) -> Any:
    """Until ``check()`` (plain or async) returns something true, which is returned; looked at
    every ``every`` s. After ``timeout`` it fails, saying ``what`` was awaited and the last value.
    For states nothing announces (a count in /metrics, a key in Redis); an event is awaited with
    :meth:`Client.wait`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s (last: {value!r})")
        await asyncio.sleep(every)


class Process:
    """A child process with its log in a file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def exited(self) -> str:
        return f"{self.name} exited with {self.popen.returncode}:\n{self.log()}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.kill(self.pid, sig)
            self.popen.wait(PATIENCE)

    def stop(self) -> None:
        """SIGTERM, and the time a clean stop takes on a busy machine (a stop's own work, such
        as releasing a lock, is what some tests look at). A process still there after that is
        killed, and that is a failure: a service that does not stop when told is a bug."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(PATIENCE)
                self._log.close()
                raise AssertionError(
                    f"{self.name} did not stop within {PATIENCE} s of SIGTERM; killed:\n"
                    f"{self.log()[-4000:]}"
                ) from None
        self._log.close()


class RedisServer(Process):
    """redis-server on loopback, with nothing saved. ``also_bind``: addresses to listen on as
    well (a veth of a test's own network namespace); Redis's protected mode refuses clients
    from there without a password, so the server then has one, in :attr:`url`."""

    def __init__(
        self, log_dir: Path, port: int | None = None, *, also_bind: tuple[str, ...] = ()
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: run `make system-deps` (as root)")
        self.port = port or free_port()
        self.password = secrets.token_hex(16) if also_bind else ""
        super().__init__(
            f"redis-{self.port}",
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *also_bind,
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                *(["--requirepass", self.password] if self.password else []),
            ],
            log_dir,
            dict(os.environ),
        )
        wait_for_port(self.port, process=self)

    def url_at(self, host: str) -> str:
        """The URL of this server at ``host``, one of the addresses it listens on."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{host}:{self.port}/0"

    @property
    def url(self) -> str:
        return self.url_at("127.0.0.1")


def procfile_line(name: str) -> str:
    """The command of process ``name`` in the Procfile (`make cluster`'s processes)."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        label, colon, command = line.partition(":")
        if colon and label == name:
            return command.strip()
    raise KeyError(f"no process {name!r} in the Procfile")


class ProcfileProcess(Process):
    """One process of the Procfile, run as honcho runs it (by a shell, with ``env``), but alone:
    a test may stop, kill or start it again, where honcho would stop them all. The shell
    ``exec``s the command, so :attr:`pid` is the command's own."""

    def __init__(
        self, name: str, log_dir: Path, env: dict[str, str], *, label: str | None = None
    ) -> None:
        super().__init__(label or name, ["sh", "-c", f"exec {procfile_line(name)}"], log_dir, env)


def free_udp_port() -> int:
    """A UDP port free now and never handed out before by this process."""
    return _not_handed_out(socket.SOCK_DGRAM)


def free_udp_and_tcp_port() -> int:
    """A port free for both UDP and TCP (coturn listens on both): a free UDP port can be a
    TCP port in use, and coturn then exits."""
    while True:
        port = free_udp_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


#: coturn's hardening as deployed (docker compose mounts it, `make cluster` reads it).
TURN_CONF = ROOT / "turn" / "turnserver.conf"
#: What tests add to it: relaying between loopback peers only, never anywhere else.
TURN_TEST_PEERS = [
    "--allow-loopback-peers",
    "--denied-peer-ip=0.0.0.0-255.255.255.255",
    "--allowed-peer-ip=127.0.0.1",
]


class TurnServer(Process):
    """Debian's coturn on loopback, with the TURN REST API's shared secret and the deployment's
    turn/turnserver.conf, plus ``peers``: by default relaying between loopback peers only
    (``--allow-loopback-peers`` is for tests; a deployment denies loopback and private peers).
    ``ipv6`` listens and relays on ::1 as well."""

    def __init__(
        self,
        log_dir: Path,
        secret: str,
        peers: list[str] | None = None,
        *,
        ipv6: bool = False,
    ) -> None:
        binary = shutil.which("turnserver") or "/usr/sbin/turnserver"
        if not Path(binary).exists():
            raise RuntimeError("coturn is missing: run `make system-deps` (as root)")
        self.port = free_udp_and_tcp_port()
        self.secret = secret
        relays = free_udp_port() // 2 * 2
        addresses = ["127.0.0.1", "::1"] if ipv6 else ["127.0.0.1"]
        super().__init__(
            f"coturn-{self.port}",
            [
                binary,
                "-c",
                str(TURN_CONF),
                *(f"--listening-ip={address}" for address in addresses),
                *(f"--relay-ip={address}" for address in addresses),
                f"--listening-port={self.port}",
                f"--min-port={relays}",
                f"--max-port={min(relays + 200, 65535)}",
                "--use-auth-secret",
                f"--static-auth-secret={secret}",
                "--realm=switchboard.test",
                "--no-tls",
                "--no-dtls",
                *(TURN_TEST_PEERS if peers is None else peers),
                f"--pidfile={log_dir / f'coturn-{self.port}.pid'}",
                f"--userdb={log_dir / f'coturn-{self.port}.db'}",
                "--log-file=stdout",
                "--simple-log",
            ],
            log_dir,
            dict(os.environ),
        )
        wait_for_port(self.port, process=self)

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


class ServiceProcess(Process):
    """``python -m <package>``, configured by environment variables, as in production.

    ``host``: the address it listens on and is reached at (a network namespace's veth);
    ``wrapper``: a command it runs under (``ip netns exec <namespace>``), which must exec it,
    so that :attr:`pid` stays the service's own; ``port``: where it listens (a free one by
    default; a gateway's upstream has its own)."""

    def __init__(
        self,
        package: str,
        log_dir: Path,
        env: dict[str, str] | None = None,
        name: str = "",
        *,
        host: str = "127.0.0.1",
        wrapper: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.package = package
        self.host = host
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_PREFIXES)}
        # No drain before stopping (DRAIN_SECONDS) unless a test asks: tests stop replicas often.
        full_env.update({"HOST": host, "PORT": str(self.port), "DRAIN_SECONDS": "0", **(env or {})})
        super().__init__(
            name or f"{package}-{self.port}",
            [*(wrapper or []), sys.executable, "-m", package],
            log_dir,
            full_env,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_ready(self, prefix: str, timeout: float = STARTUP, scheme: str = "http") -> None:
        """Until the service's ``/readyz`` says 200; at once an error if the process exits."""
        deadline = time.monotonic() + timeout
        url = f"{scheme}://{self.host}:{self.port}{prefix}/readyz"
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(self.exited())
            try:
                answer = httpx.get(url, timeout=5, verify=False)
            except httpx.HTTPError as exc:
                last = repr(exc)
            else:
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text}"
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout} s ({last}):\n{self.log()}")

    async def ready(
        self, prefix: str, timeout: float = STARTUP, path: str = "readyz", scheme: str = "http"
    ) -> None:
        """As :meth:`wait_ready`, without blocking the event loop: for tests whose own servers
        (a fake upstream) run in it and must answer while the service starts."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        async with httpx.AsyncClient(timeout=5, verify=False) as http:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(self.exited())
                try:
                    answer = await http.get(f"{scheme}://{self.host}:{self.port}{prefix}/{path}")
                except httpx.HTTPError as exc:
                    last = repr(exc)
                else:
                    if answer.status_code == 200:
                        return
                    last = f"{answer.status_code} {answer.text}"
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout} s ({last}):\n{self.log()}")


class Client:
    """A real socket.io client that keeps every event it receives, for tests to wait on."""

    def __init__(
        self, url: str, path: str, *, namespace: str = "/", source: str | None = None
    ) -> None:
        """``source``: the loopback address it connects from (all of 127/8 is ours), for a
        test whose clients must not share a per-address limit of the gateway with others'."""
        self.url = url
        self.path = path
        self.namespace = namespace
        session = None
        if source is not None:

            def session() -> aiohttp.ClientSession:
                return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))

        # Our test servers' certificates are self-signed.
        self.sio = socketio.AsyncClient(reconnection=False, ssl_verify=False, http_session=session)
        self.events: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        self._changed = asyncio.Event()
        self.connect_error: Any = None
        self.sio.on("*", self._record, namespace=namespace)
        self.sio.on("connect_error", self._on_connect_error, namespace=namespace)

    async def _record(self, event: str, *args: Any) -> None:
        self.events[event].append(args)
        self._changed.set()

    async def _on_connect_error(self, data: Any) -> None:
        self.connect_error = data
        self._changed.set()

    @property
    def sid(self) -> str:
        return str(self.sio.get_sid(self.namespace))

    async def connect(
        self,
        auth: Any = None,
        query: str = "",
        headers: dict[str, str] | None = None,
        transports: list[str] | None = None,
    ) -> None:
        await self.sio.connect(
            self.url + (f"?{query}" if query else ""),
            socketio_path=self.path,
            auth=auth,
            headers=headers or {},
            transports=transports or ["websocket"],
            namespaces=[self.namespace],
            wait_timeout=int(PATIENCE),
        )

    # A tuple is how python-socketio sends exactly these arguments, None and none included.
    async def emit(self, event: str, *args: Any) -> None:
        await self.sio.emit(event, tuple(args), namespace=self.namespace)

    async def call(self, event: str, *args: Any, timeout: float = PATIENCE) -> Any:
        return await self.sio.call(event, tuple(args), namespace=self.namespace, timeout=timeout)

    async def wait(
        self,
        event: str,
        where: Callable[..., bool] = lambda *args: True,
        timeout: float = PATIENCE,
    ) -> tuple[Any, ...]:
        """The first ``event`` received (so far or within ``timeout``) that matches ``where``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for args in self.events[event]:
                if where(*args):
                    return args
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(
                    f"no matching {event!r} within {timeout} s; got {dict(self.events)}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def received(self, event: str) -> list[tuple[Any, ...]]:
        return list(self.events[event])

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


#: The first request of a long-polling socket.io handshake, where origins are checked.
CHAT_PATH_QS = "/api/chat/socket.io/?EIO=4&transport=polling"


class RawSocket:
    """engine.io v4 over a websocket, one frame at a time: what a hostile client sends, with
    nothing of a socket.io client's checks in the way. Pings are answered while waiting."""

    def __init__(
        self,
        url: str,
        path: str,
        *,
        origin: str | None = None,
        source: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        base = url.replace("https://", "wss://").replace("http://", "ws://")
        self.url = f"{base}{path}/?EIO=4&transport=websocket"
        self.origin = origin
        #: The loopback address to connect from (127.0.0.2, ...): another client's address.
        self.source = source
        self.headers = headers or {}
        self.socket: Any = None
        self.frames: list[str | bytes] = []

    async def open(self) -> RawSocket:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self.socket = await websockets.connect(
            self.url,
            origin=self.origin,  # type: ignore[arg-type]
            ssl=insecure if self.url.startswith("wss") else None,
            open_timeout=PATIENCE,
            max_size=None,
            additional_headers=self.headers,
            proxy=None,
            local_addr=(self.source, 0) if self.source else None,
        )
        opened = await self.socket.recv()
        assert isinstance(opened, str) and opened.startswith("0{"), opened
        return self

    async def join(self, namespace: str = "/", auth: Any = None) -> str:
        """Connect to ``namespace``; its socket id, or the refusal's data as an error."""
        prefix = "" if namespace == "/" else f"{namespace},"
        await self.send(f"40{prefix}{json.dumps(auth) if auth is not None else ''}")
        frame = await self.wait(lambda f: f.startswith((f"40{prefix}", f"44{prefix}")))
        body = json.loads(frame[2 + len(prefix) :])
        if frame.startswith("44"):
            raise ConnectionRefusedError(body)
        return str(body["sid"])

    async def send(self, frame: str | bytes) -> None:
        await self.socket.send(frame)

    async def event(self, namespace: str, ack: int, *data: Any) -> Any:
        """Send an event frame with ack id ``ack``; the ack's data."""
        prefix = "" if namespace == "/" else f"{namespace},"
        await self.send(f"42{prefix}{ack}{json.dumps(list(data))}")
        frame = await self.wait(lambda f: f.startswith(f"43{prefix}{ack}["))
        return json.loads(frame[len(f"43{prefix}{ack}") :])

    async def wait(self, matches: Callable[[str], bool], timeout: float = PATIENCE) -> str:
        """The first text frame, received so far or within ``timeout``, that ``matches``."""
        for frame in self.frames:
            if isinstance(frame, str) and matches(frame):
                return frame
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.socket.recv()
                if frame == "2":
                    await self.socket.send("3")
                    continue
                self.frames.append(frame)
                if isinstance(frame, str) and matches(frame):
                    return frame

    async def closed(self, timeout: float = PATIENCE) -> bool:
        """Whether the server closes this socket within ``timeout`` (answering pings)."""
        try:
            await self.wait(lambda _frame: False, timeout)
        except websockets.ConnectionClosed:
            return True
        except TimeoutError:
            return False
        return False

    async def close(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close()


async def try_code(
    url: str, code: str, source: str = "127.0.0.1", forwarded: str | None = None
) -> str:
    """Connect to the remote control as a controller with a typed ``code``, from the loopback
    address ``source`` (with ``forwarded`` as X-Forwarded-For): ``paired`` or the refusal's
    code."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else None
    socket = RawSocket(url, "/api/cursors/socket.io", origin=url, source=source, headers=headers)
    try:
        await socket.open()
        await socket.join("/remote", {"role": "controller", "code": code})
        return "paired"
    except ConnectionRefusedError as refused:
        return str(refused.args[0]["data"]["error"])
    finally:
        await socket.close()


#: Each service the tests start: its package, and the prefix its /readyz is under.
SERVICES = {
    "chat": ("chat_service", "/api/chat"),
    "cursors": ("cursor_service", "/api/cursors"),
    "signal": ("signalling_service", "/api/signal"),
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
