"""Chat memory under connection churn (issue 2): does the server's RSS stay bounded?

The chat service raises the garbage collector's thresholds at start
(``switchboard.runner.tune_garbage_collector``: ``gc.freeze()``, then
``gc.set_threshold(50_000, 20, 100)``), so cyclic garbage lives longer before it is collected.
This benchmark checks that memory still stays bounded when clients keep coming and going.

For each mode it starts fresh servers, then runs ``--cycles`` cycles. In each cycle:

1. ``--clients`` clients connect over the websocket transport to room ``churn-<cycle % 5>``
   (``auth={"room": ...}``);
2. each one emits ``name`` with a name unique to the run, and waits for the server's ``name``;
3. each one emits ``--messages`` ``message`` events; every message is broadcast to the room, so
   the cycle waits until every client has received every message the server accepted (a
   refusal, ``chat_error``, reaches its sender only; refusals are counted), or a timeout;
4. all of them disconnect, and the cycle waits until ``switchboard_connected_clients`` in
   ``GET /api/chat/metrics`` is back to 0 on every server.

After each cycle it samples every server's ``VmRSS`` (``/proc/<pid>/status``), its connected
clients and its CPU time. Per mode it reports:

- RSS at the start, once warm (at the first cycle of the last two thirds), at the end, and the max;
- the slope of RSS over the last two thirds of the cycles, by least squares, in KB per cycle;
- "bounded" if that slope, over 10 cycles, is under 1 % of the warm RSS;
- the servers' collections of generation 1 and 2 during the cycles (objects freed, pause), and
  the RSS slope once every server has made one and the warm-up is over: garbage that survived a
  collection of generation 0 is only freed by those, so a run with none has not shown a bound
  yet. They come from a ``gc.callbacks`` probe put on the servers' ``PYTHONPATH`` as
  ``sitecustomize.py`` (in a temporary directory; the project is not touched). After each such
  collection it also counts generation 2's objects, which takes a few ms outside the pause it
  reports. ``--no-gc-probe`` leaves it out;
- whether ``/api/chat/healthz`` still answers and a final client can still name itself and send.

With the service's thresholds the first collection of generation 1 comes only after some
thousands of connections (about cycle 36 in one process at the defaults here), hence 80 cycles.

Modes:

- ``memory``: ``python -m chat_service``, one process, state in memory;
- ``redis``: two ``chat_service`` replicas sharing a ``redis-server`` started here; the clients
  alternate between them, and RSS is the sum over both replicas (each is also kept).

``--gc default`` starts the service with its GC tuning turned off (``tune_garbage_collector``
replaced by a no-op before ``python -m chat_service`` runs, without touching the project), so
the default thresholds (700, 10, 10) can be compared.

The clients are the kit's lean engine.io v4 / socket.io v5 clients. The chat rate limit is
lifted (``CHAT_RATE_PER_SECOND`` and ``CHAT_RATE_BURST`` = 100000). Every process started here
listens on 127.0.0.1 only and is ended by its PID; a mode stops starting new cycles after
``--max-seconds``.

Run (from the repository root)::

    uv run python bench/chat_churn.py [--cycles 80] [--clients 200] [--messages 2]
                                      [--modes memory,redis] [--gc service|default]
                                      [--max-seconds 180] [--no-gc-probe]

It prints markdown tables and saves the raw figures to ``bench/results/chat_churn-<time>.json``
and the servers' logs (LOG_LEVEL=warning) next to them, in ``chat_churn-<time>.logs/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from kit import (
    GC_LINE,
    ROOT,
    Deployment,
    Launcher,
    SioClient,
    cpu_seconds,
    deploy_service,
    fmt,
    gc_probe_folder,
    http_get,
    mode_list,
    open_client,
    open_many,
    recorded_run,
    rss_kb,
    run_all,
    service_env,
)

ALL_MODES = ("memory", "redis")
CHAT_PATH = "/api/chat/socket.io/"
ROOMS = 5
STEP_TIMEOUT = 30.0
DRAIN_TIMEOUT = 5.0
SETTLE_SECONDS = 0.3
START_SETTLE_SECONDS = 1.0
CONNECTED_GAUGE = re.compile(rb"^switchboard_connected_clients\{[^}]*\} ([0-9.eE+-]+)$", re.M)
#: ``python -m chat_service`` with the service's GC tuning turned off, for ``--gc default``.
DEFAULT_GC_SERVICE = (
    "import runpy, switchboard.runner as runner; "
    "runner.tune_garbage_collector = lambda: None; "
    "runpy.run_module('chat_service', run_name='__main__', alter_sys=True)"
)


# --- clients ----------------------------------------------------------------------------------


class ChurnClient:
    """One lean socket.io client and what it saw: its ``name`` answer, messages, errors."""

    def __init__(self, client: SioClient, name: str) -> None:
        self.client = client
        self.name = name
        self.named = asyncio.get_running_loop().create_future()
        self.messages = 0
        #: This client's ``message`` events the server refused (so nobody receives them).
        self.refused = 0
        self.errors: list[str] = []
        self._name_frame = json.dumps(["name", name], separators=(",", ":")).encode()
        client.on_event = self._on_event

    def _on_event(self, text: bytes, now: int) -> None:
        frame = text[2:]
        if frame.startswith(b'["message"'):
            self.messages += 1
        elif frame == self._name_frame:
            if not self.named.done():
                self.named.set_result(None)
        elif frame.startswith((b'["name_error"', b'["chat_error"')):
            self.errors.append(frame[:300].decode(errors="replace"))
            if b'"event":"message"' in frame:
                self.refused += 1
            if not self.named.done() and frame.startswith(b'["name_error"'):
                self.named.set_exception(RuntimeError(f"name refused: {frame[:200]!r}"))


async def connect_clients(
    ports: list[int], count: int, room: str, names: list[str]
) -> tuple[list[ChurnClient], list[str]]:
    """``count`` clients, alternating between ``ports``; returns the clients and the failures."""

    async def one(index: int) -> ChurnClient:
        client = await open_client(ports[index % len(ports)], CHAT_PATH, {"room": room})
        return ChurnClient(client, names[index])

    clients, answer = await open_many(one(i) for i in range(count))
    return clients, answer["errors"]


async def count_named(clients: list[ChurnClient]) -> int:
    """Wait (up to STEP_TIMEOUT) for every client's ``name`` answer; how many got theirs."""
    if not clients:
        return 0
    done, _ = await asyncio.wait([c.named for c in clients], timeout=STEP_TIMEOUT)
    return sum(1 for f in done if f.exception() is None)


async def wait_until(check: Callable[[], bool], within: float, interval: float = 0.02) -> bool:
    """Poll ``check`` until it is true (True) or ``within`` seconds passed (False)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


# --- servers ----------------------------------------------------------------------------------


def chat_env(port: int, redis_url: str | None, probe_dir: Path | None) -> dict[str, str]:
    return service_env(port, redis_url, "CHAT_", gc_probe=probe_dir)


async def deploy(scenario: Scenario, launcher: Launcher) -> Deployment:
    """Start the servers of the scenario's mode; the launcher ends them, by PID."""
    chat = [sys.executable, "-m", "chat_service"]
    if scenario.gc == "default":
        chat = [sys.executable, "-c", DEFAULT_GC_SERVICE]
    probe_dir = gc_probe_folder(launcher.log_dir) if scenario.gc_probe else None
    return await deploy_service(
        launcher,
        scenario.mode,
        "chat",
        chat,
        lambda port, url: chat_env(port, url, probe_dir),
        CHAT_PATH,
    )


async def connected_clients(port: int) -> int | None:
    """``switchboard_connected_clients`` of the server on ``port``, or None if unreadable."""
    try:
        _, body = await asyncio.to_thread(http_get, port, "/api/chat/metrics")
    except OSError:
        return None
    found = CONNECTED_GAUGE.search(body)
    return round(float(found.group(1))) if found else None


# --- one mode ---------------------------------------------------------------------------------


@dataclass
class Scenario:
    """One mode of the run, with the run's settings."""

    mode: str
    gc: str
    cycles: int
    clients: int
    messages: int
    max_seconds: float
    gc_probe: bool

    @property
    def label(self) -> str:
        return f"{self.mode} (GC: {self.gc})"

    @property
    def timeout(self) -> None:
        return None  # --max-seconds bounds the cycles


@dataclass
class Sample:
    cycle: int
    seconds: float
    rss_kb: list[int]
    connected: list[int | None]
    cpu_s: list[float]
    redis_rss_kb: int | None
    connect_failures: int
    named: int
    messages_received: int
    messages_expected: int
    messages_refused: int
    client_errors: int
    error_samples: list[str]
    gauge_zero_after_s: float | None
    #: time.time() when the sample was taken, to place the servers' collections in cycles.
    wall: float = 0.0

    @property
    def total_rss_kb(self) -> int:
        return sum(self.rss_kb)


@dataclass
class Collection:
    """A collection of generation 1 or 2 in a server, from the GC probe's log line."""

    server: str
    cycle: int
    generation: int
    collected: int
    pause_ms: float
    gen2_objects: int


@dataclass
class ModeResult:
    mode: str
    gc: str
    cycles: int
    clients: int
    messages: int
    start_rss_kb: list[int] = field(default_factory=list)
    start_wall: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    warm_cycle: int = 0
    warm_rss_kb: int = 0
    end_rss_kb: int = 0
    max_rss_kb: int = 0
    slope_kb_per_cycle: float = 0.0
    bound_kb_per_10_cycles: float = 0.0
    bounded: bool | None = None
    healthz_ok: bool = False
    final_client_ok: bool = False
    final_client_detail: str = ""
    seconds: float = 0.0
    gc_probe: bool = False
    #: Collections of generation 1 or 2 during the cycles (cycle 0: before the first cycle).
    collections: list[Collection] = field(default_factory=list)
    #: The first cycle by which every server had made a collection of generation >= 1, and
    #: the RSS slope from there (or from the warm cycle, if later) on.
    first_gc_cycle: int | None = None
    slope_after_gc_kb_per_cycle: float | None = None
    log_lines_warning_or_worse: int = 0
    log_excerpt: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @classmethod
    def of(cls, scenario: Scenario) -> Self:
        return cls(scenario.mode, scenario.gc, scenario.cycles, scenario.clients, scenario.messages)

    def progress(self) -> str:
        return f"ERROR {self.error}" if self.error else ""  # the cycles had their lines


async def run_cycle(
    cycle: int, deployment: Deployment, clients_per_cycle: int, messages: int, run_tag: str
) -> Sample:
    began = time.monotonic()
    room = f"churn-{cycle % ROOMS}"
    names = [f"{run_tag}-{cycle}-{i}" for i in range(clients_per_cycle)]
    clients, failures = await connect_clients(deployment.ports, clients_per_cycle, room, names)
    try:
        for c in clients:
            c.client.emit("name", c.name)
        named_count = await count_named(clients)
        for m in range(messages):
            for c in clients:
                c.client.emit("message", f"churn {cycle} {m} from {c.name}")
        sent = len(clients) * messages

        def accepted() -> int:
            return sent - sum(c.refused for c in clients)

        # A refusal reaches its sender only; every accepted message reaches every client.
        await wait_until(
            lambda: sum(c.messages for c in clients) >= accepted() * len(clients), STEP_TIMEOUT
        )
        expected = len(clients) * len(clients) * messages
        received = sum(c.messages for c in clients)
        refused = sent - accepted()
    finally:
        for c in clients:
            c.client.close()
    zero_began = time.monotonic()

    async def all_zero() -> list[int | None]:
        return list(await asyncio.gather(*(connected_clients(p) for p in deployment.ports)))

    connected = await all_zero()
    deadline = zero_began + DRAIN_TIMEOUT
    while any(n != 0 for n in connected) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        connected = await all_zero()
    zero_after = time.monotonic() - zero_began if all(n == 0 for n in connected) else None
    await asyncio.sleep(SETTLE_SECONDS)
    return Sample(
        cycle=cycle,
        seconds=time.monotonic() - began,
        rss_kb=[rss_kb(s.pid) for s in deployment.servers],
        connected=connected,
        cpu_s=[cpu_seconds(s.pid) for s in deployment.servers],
        redis_rss_kb=rss_kb(deployment.redis.pid) if deployment.redis else None,
        connect_failures=len(failures),
        named=named_count,
        messages_received=received,
        messages_expected=expected,
        messages_refused=refused,
        client_errors=sum(len(c.errors) for c in clients),
        error_samples=sorted({e for c in clients for e in c.errors})[:5],
        gauge_zero_after_s=zero_after,
        wall=time.time(),
    )


async def final_client(port: int, run_tag: str) -> str:
    """One client on ``port`` names itself, sends a message and must receive it back."""
    try:
        client = await open_client(port, CHAT_PATH, {"room": "churn-final"})
    except (OSError, TimeoutError) as exc:
        return f"{port}: connect failed: {exc!r}"
    checker = ChurnClient(client, f"{run_tag}-final-{port}")
    try:
        client.emit("name", checker.name)
        await asyncio.wait_for(checker.named, 10)
        client.emit("message", "still here")
        if await wait_until(lambda: checker.messages >= 1, 10):
            return f"{port}: named and got its message back"
        return f"{port}: no echo of its message"
    except (TimeoutError, RuntimeError) as exc:
        return f"{port}: {exc!r}"
    finally:
        client.close()


async def final_check(deployment: Deployment, run_tag: str, result: ModeResult) -> None:
    """healthz on every server, then one client names itself, sends and gets its message back."""
    statuses = []
    for port in deployment.ports:
        try:
            status, _ = await asyncio.to_thread(http_get, port, "/api/chat/healthz")
        except OSError as exc:
            status = 0
            result.notes.append(f"healthz on {port}: {exc}")
        statuses.append(status)
    result.healthz_ok = all(s == 200 for s in statuses)
    detail = [await final_client(port, run_tag) for port in deployment.ports]
    result.final_client_detail = "; ".join(detail)
    result.final_client_ok = all("named and got" in d for d in detail)


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0


def summarize(result: ModeResult) -> None:
    samples = result.samples
    if not samples:
        return
    warm_index = len(samples) // 3
    tail = samples[warm_index:]
    result.warm_cycle = tail[0].cycle
    result.warm_rss_kb = tail[0].total_rss_kb
    result.end_rss_kb = samples[-1].total_rss_kb
    result.max_rss_kb = max(s.total_rss_kb for s in samples)
    result.slope_kb_per_cycle = least_squares_slope(
        [float(s.cycle) for s in tail], [float(s.total_rss_kb) for s in tail]
    )
    result.bound_kb_per_10_cycles = 0.01 * result.warm_rss_kb
    if len(tail) >= 3:
        result.bounded = 10 * result.slope_kb_per_cycle < result.bound_kb_per_10_cycles
    else:
        result.notes.append("too few cycles to judge the slope")
    if not result.gc_probe:
        return
    servers = len(result.start_rss_kb)
    firsts: dict[str, int] = {}
    for c in result.collections:
        if c.cycle >= 1:
            firsts.setdefault(c.server, c.cycle)
    if len(firsts) < servers:
        result.notes.append(
            "no collection of generation 1 or 2 in every server during the cycles: cyclic "
            "garbage may not have been collected yet, so the run is too short to show a bound"
        )
        return
    result.first_gc_cycle = max(firsts.values())
    after = [s for s in samples if s.cycle >= max(result.first_gc_cycle, result.warm_cycle)]
    if len(after) >= 3:
        result.slope_after_gc_kb_per_cycle = least_squares_slope(
            [float(s.cycle) for s in after], [float(s.total_rss_kb) for s in after]
        )


def cycle_at(wall: float, start: float, samples: list[Sample]) -> int:
    """The cycle during which ``wall`` fell: 0 before the first, len + 1 after the last."""
    if wall <= start:
        return 0
    for s in samples:
        if wall <= s.wall:
            return s.cycle
    return len(samples) + 1


def scan_logs(deployment: Deployment, result: ModeResult) -> None:
    """Read the servers' logs: the GC probe's lines, and the lines at WARNING or worse
    (LOG_LEVEL=warning), of which a few are kept."""
    lines: list[str] = []
    for server in deployment.servers:
        with contextlib.suppress(OSError):
            text = server.log.read_text(errors="replace")
            for m in GC_LINE.finditer(text):
                result.collections.append(
                    Collection(
                        server=server.name,
                        cycle=cycle_at(float(m["wall"]), result.start_wall, result.samples),
                        generation=int(m["gen"]),
                        collected=int(m["collected"]),
                        pause_ms=float(m["pause"]),
                        gen2_objects=int(m["gen2"]),
                    )
                )
            for line in text.splitlines():
                if line.strip() and not line.startswith("GCPROBE "):
                    lines.append(f"{server.name}: {line}")
    result.log_lines_warning_or_worse = len(lines)
    result.log_excerpt = lines[:20]


async def run_mode(scenario: Scenario, log_dir: Path) -> ModeResult:
    result = ModeResult.of(scenario)
    result.gc_probe = scenario.gc_probe
    began = time.monotonic()
    run_tag = f"{scenario.mode[0]}{os.getpid() % 10000}"
    with Launcher(log_dir, scenario.mode) as launcher:
        deployment = await deploy(scenario, launcher)
        try:
            await asyncio.sleep(START_SETTLE_SECONDS)
            result.start_rss_kb = [rss_kb(s.pid) for s in deployment.servers]
            result.start_wall = time.time()
            for cycle in range(1, scenario.cycles + 1):
                if time.monotonic() - began > scenario.max_seconds:
                    result.notes.append(f"stopped after {cycle - 1} cycles: --max-seconds reached")
                    break
                for server in launcher.started:
                    if server.popen.poll() is not None:
                        raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
                sample = await run_cycle(
                    cycle, deployment, scenario.clients, scenario.messages, run_tag
                )
                result.samples.append(sample)
                print(
                    f"   cycle {cycle:3d}: RSS {sample.total_rss_kb / 1024:7.1f} MB, connected "
                    f"{sample.connected}, named {sample.named}/{scenario.clients}, messages "
                    f"{sample.messages_received}/{sample.messages_expected} "
                    f"({sample.messages_refused} refused), "
                    f"{sample.seconds:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            await final_check(deployment, run_tag, result)
        finally:
            # Read the logs before stopping anything: what a stop logs is not churn's doing.
            scan_logs(deployment, result)
    result.seconds = time.monotonic() - began
    summarize(result)
    return result


# --- report -----------------------------------------------------------------------------------


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def summary_table(results: list[ModeResult]) -> str:
    rows = [
        "| mode | GC | cycles x clients | start RSS MB | warm RSS MB (cycle) | end RSS MB | "
        "max RSS MB | slope KB/cycle (last 2/3) | limit KB/10 cycles | bounded | "
        "first gen>=1 GC (cycle) | slope KB/cycle after it and warm-up | server CPU s | healthz | "
        "final client |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|---|---|",
    ]
    for r in results:
        if r.error and not r.samples:
            rows.append(f"| {r.mode} | {r.gc} | failed: {r.error} |")
            continue
        bounded = {True: "yes", False: "**no**", None: "?"}[r.bounded]
        first = "-" if r.first_gc_cycle is None else str(r.first_gc_cycle)
        healthz = "ok" if r.healthz_ok else "FAILED"
        final = "ok" if r.final_client_ok else "FAILED"
        rows.append(
            f"| {r.mode} | {r.gc} | {len(r.samples)} x {r.clients} | {mb(sum(r.start_rss_kb))} | "
            f"{mb(r.warm_rss_kb)} ({r.warm_cycle}) | {mb(r.end_rss_kb)} | {mb(r.max_rss_kb)} | "
            f"{fmt(r.slope_kb_per_cycle)} | {fmt(r.bound_kb_per_10_cycles, 0)} | {bounded} | "
            f"{first} | {fmt(r.slope_after_gc_kb_per_cycle)} | "
            f"{fmt(sum(r.samples[-1].cpu_s))} | {healthz} | {final} |"
        )
    return "\n".join(rows)


def collections_table(result: ModeResult) -> str:
    """The servers' collections of generation 1 and 2 during the cycles, by server and
    generation (each one is in the JSON)."""
    rows = [
        "| server | generation | collections | in cycles | objects collected | "
        "pause ms: median | max | total |",
        "|---|--:|--:|---|--:|--:|--:|--:|",
    ]
    groups: dict[tuple[str, int], list[Collection]] = {}
    for c in result.collections:
        if 1 <= c.cycle <= len(result.samples):
            groups.setdefault((c.server, c.generation), []).append(c)
    for (server, generation), found in sorted(groups.items()):
        pauses = sorted(c.pause_ms for c in found)
        cycles = sorted({c.cycle for c in found})
        shown = ", ".join(map(str, cycles[:6])) + (", ..." if len(cycles) > 6 else "")
        rows.append(
            f"| {server} | {generation} | {len(found)} | {shown} | "
            f"{sum(c.collected for c in found)} | {fmt(statistics.median(pauses))} | "
            f"{fmt(pauses[-1])} | {fmt(sum(pauses), 0)} |"
        )
    return "\n".join(rows) if len(rows) > 2 else "(no collection of generation 1 or 2)"


def cycles_table(result: ModeResult, every: int) -> str:
    per_server = len(result.start_rss_kb) > 1
    tail = "connected after disconnect | messages received / sent x clients | refused |"
    head = f"| cycle | RSS MB | {tail}"
    if per_server:
        head = f"| cycle | RSS MB (sum) | RSS MB per replica | {tail}"
    rows = [head, "|--:|" + "--:|" * (head.count("|") - 2)]

    def row(cycle: str, rss: list[int], connected: str, messages: str, refused: str) -> str:
        cells = [cycle, mb(sum(rss))]
        if per_server:
            cells.append(" + ".join(mb(x) for x in rss))
        cells += [connected, messages, refused]
        return "| " + " | ".join(cells) + " |"

    rows.append(row("start", result.start_rss_kb, "-", "-", "-"))
    last = len(result.samples)
    for s in result.samples:
        if s.cycle in (1, last) or s.cycle % every == 0:
            connected = " + ".join("?" if n is None else str(n) for n in s.connected)
            rows.append(
                row(
                    str(s.cycle),
                    s.rss_kb,
                    connected,
                    f"{s.messages_received} / {s.messages_expected}",
                    str(s.messages_refused),
                )
            )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=80)
    parser.add_argument("--clients", type=int, default=200, help="clients per cycle")
    parser.add_argument("--messages", type=int, default=2, help="messages per client per cycle")
    parser.add_argument(
        "--modes", type=mode_list(ALL_MODES), default=list(ALL_MODES), help="memory,redis"
    )
    parser.add_argument(
        "--gc",
        choices=("service", "default"),
        default="service",
        help="service: the service's own GC tuning; default: Python's default thresholds",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=180.0, help="per mode: no new cycle after this"
    )
    parser.add_argument("--every", type=int, default=5, help="table: every Nth cycle")
    parser.add_argument(
        "--no-gc-probe",
        dest="gc_probe",
        action="store_false",
        help="do not log the servers' collections of generation 1 and 2",
    )
    return parser.parse_args(argv)


async def run_modes(args: argparse.Namespace, log_dir: Path) -> list[ModeResult]:
    modes = [
        Scenario(
            mode, args.gc, args.cycles, args.clients, args.messages, args.max_seconds, args.gc_probe
        )
        for mode in args.modes
    ]
    return await run_all(modes, lambda s: run_mode(s, log_dir), ModeResult.of)


def main() -> None:
    args = parse_args()
    if args.modes and "redis" in args.modes and shutil.which("redis-server") is None:
        print("no redis-server: skipping redis mode", file=sys.stderr)
        args.modes = [m for m in args.modes if m != "redis"]
    results, path, logs = recorded_run("chat_churn", args, run_modes)
    print(summary_table(results))
    for r in results:
        if not r.samples:
            continue
        print(f"\n{r.mode} (GC: {r.gc}), {r.clients} clients x {r.messages} messages a cycle:\n")
        print(cycles_table(r, args.every))
        if r.gc_probe:
            print("\ncollections of generation 1 and 2 during the cycles:\n")
            print(collections_table(r))
        failures = sum(s.connect_failures for s in r.samples)
        never_zero = [s.cycle for s in r.samples if s.gauge_zero_after_s is None]
        short = [s.cycle for s in r.samples if s.messages_received < s.messages_expected]
        refused = sum(s.messages_refused for s in r.samples)
        print(
            f"\nconnect failures: {failures}; cycles where the gauge did not return to 0: "
            f"{never_zero or 'none'}; cycles with missing messages: {short or 'none'} "
            f"({refused} messages refused by the server); "
            f"client-side errors: {sum(s.client_errors for s in r.samples)}; server log lines "
            f"(WARNING or worse): {r.log_lines_warning_or_worse}; {r.seconds:.0f} s"
        )
        for note in r.notes:
            print(f"note: {note}")
        if r.final_client_detail:
            print(f"final client: {r.final_client_detail}")
        for line in r.log_excerpt[:5]:
            print(f"log: {line}")
    print(f"\nraw figures: {path.relative_to(ROOT)}; server logs: {logs.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
