"""Shared cursors benchmark (issue 3): what one client receives, move-to-screen latency, CPU.

A scenario is a mode and a number of clients N in one room. N - 1 "movers" send ``update``
``{x, y}`` at ``--rate`` per second each (a random walk, 4 decimals), and one "prober" (the N-th
cursor) sends a distinctive position every ``--probe-ms`` plus a random 0 to half of it (so that
probes fall at every phase of the server's tick): x = (1000 + k) / 10000 for probe k,
y = 0.5, with its send time (``time.time_ns()``) kept aside. One or two "observers" join the
room last and never move; per scenario it measures:

- what one observer receives: socket.io event frames per second and their websocket payload
  bytes per second (``delta`` and ``snapshot`` for the cursor service, ``update`` for Node);
- move-to-appearance latency: the time from sending probe k to the first frame, at the
  observer, carrying x = probe k for the prober's socket id (same machine, same clock): p50,
  p99, max, and probes seen / sent. For the cursor service also the delay from the tick's
  stamp (``t``) to the frame's arrival, i.e. the fan-out part of that latency;
- server CPU over the window (``/proc/<pid>/stat``, % of one core, summed over the replicas),
  Redis's CPU, and the load generator's CPU (this process, the prober and observers, plus the
  mover processes);
- the same over an idle window: the movers stop, and after a settle second nobody moves for
  ``--idle-seconds``: the cursor service should send nothing, Node keeps sending everything;
- integrity: duplicate or skipped ``seq`` at the observer, a probe delivered in more than one
  delta, snapshots a mover got after joining (it fell behind), ``cursor_error`` frames, closed
  connections, and warnings or errors in the servers' logs.

Modes, interleaved in one run (for each N: every mode in turn), because absolute figures are
noisy from run to run on a shared 2-core machine; compare ratios within a run:

- ``memory``: ``python -m cursor_service``, one process, state in memory;
- ``redis``: two ``cursor_service`` replicas sharing a ``redis-server`` started here; the
  prober is on replica 1, movers alternate between the two, and there is one observer on each
  replica: the headline figures are the one on replica 2 (every probe crosses Redis);
- ``node``: the course's ``cursors.js`` (express + socket.io 4), which sends the whole clients
  object to everyone every 100 ms, changed or not.

Clients are the kit's lean engine.io v4 / socket.io v5 websocket clients; the movers are
spread over ``--workers`` processes. The cursor rate limit is lifted for the run
(``CURSORS_RATE_PER_SECOND`` and ``CURSORS_RATE_BURST`` = 100000); the tick is 100 ms.

Run (from the repository root)::

    uv run python bench/cursors.py [--clients 100,500] [--rate 20] [--seconds 10]
                                   [--modes memory,redis,node] [--idle-seconds 5] [--rounds 1]

It prints markdown tables and saves the raw figures to ``bench/results/cursors-<time>.json`` and
the servers' logs next to them (``cursors-<time>.logs/``). Every process it starts listens on
127.0.0.1 only and is ended by its PID when its scenario ends, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from kit import (
    NODE_PATH,
    ROOT,
    Deployment,
    Launcher,
    Meters,
    SioClient,
    Window,
    Worker,
    connect_workers,
    connected,
    deploy_node,
    deploy_service,
    everyone,
    fmt,
    log_problems,
    node_ratios,
    open_many,
    percentile,
    prepare_node,
    recorded_run,
    run_all,
    scenario_options,
    serve_worker,
    service_env,
    split_targets,
)

SCRIPT = Path(__file__).resolve()
ALL_MODES = ("memory", "redis", "node")
ROOM = "bench"
PYTHON_PATH = "/api/cursors/socket.io/"
TICK_MS = 100
#: Probe k is sent as x = (PROBE_BASE + k) / 10000.
PROBE_BASE = 1000
PROBE_Y = 0.5
#: The movers' loop wakes every SLOT_SECONDS and sends the updates due in that slot.
SLOT_SECONDS = 0.01
WARMUP_SECONDS = 2.0
#: After the window: how long late probes may still arrive; then before the idle window.
GRACE_SECONDS = 0.6
SETTLE_SECONDS = 1.0


# --- clients -----------------------------------------------------------------------------------


class CursorClient(SioClient):
    """A lean socket.io client that moves its cursor."""

    def move(self, x: float, y: float) -> None:
        self.send(b'42["update",{"x":%.4f,"y":%.4f}]' % (x, y))


async def open_cursor_client(port: int, path: str, auth: dict[str, Any] | None) -> CursorClient:
    return await connected(lambda: CursorClient(port, path, auth), port)


# --- the movers: a worker process driven through its stdin and stdout --------------------------


class MoverPool:
    """The movers of one worker process: they walk at a fixed rate and count what they get."""

    def __init__(self) -> None:
        self.clients: list[CursorClient] = []
        self.positions: list[tuple[float, float]] = []
        self.frames: list[int] = []
        self.bytes = 0
        self.snapshots = 0
        self.errors = 0
        self.error_sample: list[str] = []
        self.sent = 0
        self.max_late_ms = 0.0
        self.random = random.Random(os.getpid())
        self._mover: asyncio.Task[None] | None = None

    def _handler(self, index: int) -> Any:
        def on_event(text: bytes, _now: int) -> None:
            self.frames[index] += 1
            self.bytes += len(text)
            if text.startswith(b'42["snapshot"'):
                self.snapshots += 1
            elif text.startswith(b'42["cursor_error"'):
                self.errors += 1
                if len(self.error_sample) < 3:
                    self.error_sample.append(text[:200].decode(errors="replace"))

        return on_event

    async def connect(self, targets: list[dict[str, Any]], auth: dict[str, Any] | None) -> Any:
        clients, answer = await open_many(
            open_cursor_client(t["port"], t["path"], auth)
            for t in targets
            for _ in range(t["count"])
        )
        for client in clients:
            client.on_event = self._handler(len(self.clients))
            self.clients.append(client)
            self.frames.append(0)
            self.positions.append((self.random.random(), self.random.random()))
        return answer

    def _step(self, index: int) -> tuple[float, float]:
        """The next position of a random walk, never the same as the last at 4 decimals."""
        x, y = self.positions[index]
        while True:
            nx = min(1.0, max(0.0, x + self.random.uniform(-0.02, 0.02)))
            ny = min(1.0, max(0.0, y + self.random.uniform(-0.02, 0.02)))
            if (round(nx, 4), round(ny, 4)) != (round(x, 4), round(y, 4)):
                break
        self.positions[index] = (nx, ny)
        return nx, ny

    async def _move(self, rate: float) -> None:
        """Every mover sends ``rate`` updates a second, spread over slots of SLOT_SECONDS."""
        loop = asyncio.get_running_loop()
        period = 1 / rate
        slots = max(1, min(len(self.clients), round(period / SLOT_SECONDS)))
        groups = [range(i, len(self.clients), slots) for i in range(slots)]
        step = period / slots
        start = loop.time() + self.random.uniform(0, step)
        tick = 0
        while True:
            delay = start + tick * step - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.max_late_ms = max(self.max_late_ms, -delay * 1000)
            for index in groups[tick % slots]:
                client = self.clients[index]
                if not client.closed:
                    client.move(*self._step(index))
                    self.sent += 1
            tick += 1

    async def handle(self, command: dict[str, Any]) -> Any:
        match command["cmd"]:
            case "connect":
                return await self.connect(command["targets"], command.get("auth"))
            case "move":
                if self._mover is None:
                    self._mover = asyncio.create_task(self._move(float(command["rate"])))
                return {}
            case "still":
                if self._mover is not None:
                    self._mover.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._mover
                    self._mover = None
                return {}
            case "reset":
                self.frames = [0] * len(self.clients)
                self.bytes = self.snapshots = self.errors = self.sent = 0
                self.max_late_ms = 0.0
                return {}
            case "stats":
                return {
                    "frames_min": min(self.frames, default=0),
                    "frames_max": max(self.frames, default=0),
                    "frames": sum(self.frames),
                    "bytes": self.bytes,
                    "snapshots": self.snapshots,
                    "errors": self.errors,
                    "error_sample": self.error_sample,
                    "sent": self.sent,
                    "max_late_ms": self.max_late_ms,
                    "closed": sum(c.closed for c in self.clients),
                }
            case "quit":
                for client in self.clients:
                    client.close()
                return {}
        raise ValueError(f"unknown command {command!r}")


# --- the prober and the observers (in this process, lightly loaded) ----------------------------


@dataclass
class ProbeLog:
    """When each probe was sent: index k, time.time_ns()."""

    sent_ns: list[int] = field(default_factory=list)


class Observer:
    """A client that never moves: counts what it receives and when each probe first shows."""

    def __init__(self, client: CursorClient, node: bool, prober_sid: str, probes: ProbeLog):
        self.client = client
        self.node = node
        self.prober_sid = prober_sid
        self.probes = probes
        self.counting = False
        self.frames = 0
        self.bytes = 0
        self.first_seen_ns: dict[int, int] = {}
        #: Per probe, the tick-stamp-to-arrival delay (cursor service only), in microseconds.
        self.fanout_us: dict[int, int] = {}
        self.repeats = 0
        self.last_seq: int | None = None
        self.seq_duplicates = 0
        self.seq_gaps = 0
        self.snapshots = 0
        self.unparsed = 0
        #: While set (the idle window): (time_ns, event, cursors in it) of every frame.
        self.log: list[tuple[int, str, int]] | None = None
        client.on_event = self.on_event

    def reset(self) -> None:
        self.frames = self.bytes = self.repeats = 0
        self.seq_duplicates = self.seq_gaps = self.snapshots = self.unparsed = 0

    def on_event(self, text: bytes, now: int) -> None:
        if self.counting:
            self.frames += 1
            self.bytes += len(text)
        try:
            event, payload = json.loads(text[2:])
        except ValueError:
            self.unparsed += 1
            return
        if not isinstance(payload, dict):
            return
        if self.log is not None and len(self.log) < 50:
            size = sum(
                len(part)
                for part in (payload.get("moved"), payload.get("joined"), payload.get("cursors"))
                if isinstance(part, dict)
            )
            self.log.append((now, str(event), size if event != "update" else len(payload)))
        x: float | None = None
        stamp: int | None = None
        if self.node:
            if event == "update":
                entry = payload.get(self.prober_sid)
                x = entry.get("x") if isinstance(entry, dict) else None
        elif event == "delta":
            self._sequence(int(payload["seq"]))
            stamp = int(payload["t"])
            if (pair := payload["moved"].get(self.prober_sid)) is not None:
                x = pair[0]
            elif (joined := payload["joined"].get(self.prober_sid)) is not None:
                x = joined["x"]
        elif event == "snapshot":
            self.last_seq = int(payload["seq"])
            self.snapshots += 1
            entry = payload["cursors"].get(self.prober_sid)
            x = entry["x"] if entry else None
        if not isinstance(x, int | float):
            return
        k = round(x * 10000) - PROBE_BASE
        if not 0 <= k < len(self.probes.sent_ns):
            return
        if k in self.first_seen_ns:
            if not self.node and event == "delta":
                self.repeats += 1  # the same move delivered twice
            return
        self.first_seen_ns[k] = now
        if stamp is not None:
            self.fanout_us[k] = (now - stamp * 1_000_000) // 1000

    def _sequence(self, seq: int) -> None:
        if self.last_seq is not None:
            if seq <= self.last_seq:
                self.seq_duplicates += 1
            elif seq > self.last_seq + 1:
                self.seq_gaps += 1
        self.last_seq = seq

    def latencies_us(self, sent: range) -> list[int]:
        return sorted(
            (self.first_seen_ns[k] - self.probes.sent_ns[k]) // 1000
            for k in sent
            if k in self.first_seen_ns
        )


async def probe(prober: CursorClient, probes: ProbeLog, every: float, seconds: float) -> range:
    """Probes for ``seconds``, ``every`` plus a random 0 to ``every`` / 2 apart: a fixed period
    would hit the same phase of the server's tick every time. Returns the indices sent."""
    loop = asyncio.get_running_loop()
    jitter = random.Random()
    first = len(probes.sent_ns)
    start = loop.time()
    due = start + jitter.uniform(0, every / 2)
    while due < start + seconds:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        k = len(probes.sent_ns)
        probes.sent_ns.append(time.time_ns())
        prober.move((PROBE_BASE + k) / 10000, PROBE_Y)
        due += every + jitter.uniform(0, every / 2)
    remaining = start + seconds - loop.time()
    if remaining > 0:
        await asyncio.sleep(remaining)
    return range(first, len(probes.sent_ns))


# --- servers ----------------------------------------------------------------------------------


def cursor_env(port: int, redis_url: str | None) -> dict[str, str]:
    return service_env(port, redis_url, "CURSORS_", CURSORS_TICK_MS=str(TICK_MS))


async def deploy(mode: str, launcher: Launcher, node_dir: Path | None) -> Deployment:
    """Start the servers of ``mode`` (the prober goes to the first); the launcher ends them."""
    if mode in ("memory", "redis"):
        service = [sys.executable, "-m", "cursor_service"]
        auth = {"room": ROOM}
        return await deploy_service(
            launcher, mode, "cursors", service, cursor_env, PYTHON_PATH, auth
        )
    if mode == "node":
        assert node_dir is not None
        return await deploy_node(launcher, node_dir, "node", "cursors.js", NODE_PATH)
    raise ValueError(f"unknown mode {mode!r}")


# --- one scenario ------------------------------------------------------------------------------


@dataclass
class Scenario:
    mode: str
    clients: int
    rate: float
    seconds: float
    idle_seconds: float
    probe_ms: float
    workers: int
    round: int = 1

    @property
    def label(self) -> str:
        return f"{self.mode} N={self.clients} round {self.round}"

    @property
    def timeout(self) -> float:
        return self.seconds + self.idle_seconds + 90


@dataclass
class Result:
    mode: str
    clients: int
    rate: float
    seconds: float
    round: int
    moving: Window = field(default_factory=Window)
    idle: Window = field(default_factory=Window)
    probes_sent: int = 0
    probes_seen: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    #: Cursor service: from the tick's stamp ``t`` to the probe's arrival at the observer.
    fanout_p50_ms: float | None = None
    fanout_p99_ms: float | None = None
    #: With replicas: the observer on the prober's replica (the headline one is on the other).
    same_replica: dict[str, float] = field(default_factory=dict)
    updates_per_s: float = 0.0
    #: Server CPU over the moving window per update sent (ticks and fan-out included).
    server_us_per_update: float = 0.0
    #: Frames seen by the headline observer in the idle window: (s into it, event, cursors).
    idle_frames: list[tuple[float, str, int]] = field(default_factory=list)
    load_average: float = 0.0
    mover_late_max_ms: float = 0.0
    mover_frames_per_s_min: float = 0.0
    mover_frames_per_s_max: float = 0.0
    mover_snapshots_after_join: int = 0
    cursor_errors: int = 0
    cursor_error_sample: list[str] = field(default_factory=list)
    closed_during_run: int = 0
    seq_duplicates: int = 0
    seq_gaps: int = 0
    probe_repeats: int = 0
    observer_snapshots_after_join: int = 0
    connect_seconds: float = 0.0
    log_problems: list[str] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, scenario: Scenario) -> Self:
        return cls(scenario.mode, scenario.clients, scenario.rate, scenario.seconds, scenario.round)

    def progress(self) -> str:
        return (
            f"{fmt(self.moving.frames_per_s)} frames/s, {fmt(self.moving.kb_per_s)} KB/s, "
            f"p50 {fmt(self.p50_ms)} ms, p99 {fmt(self.p99_ms)} ms, "
            f"server CPU {fmt(self.moving.server_cpu_pct)} %, generator CPU "
            f"{fmt(self.moving.generator_cpu_pct)} %; idle {fmt(self.idle.frames_per_s)} "
            f"frames/s" + (f", ERROR {self.error}" if self.error else "")
        )


async def run_scenario(scenario: Scenario, log_dir: Path, node_dir: Path | None) -> Result:
    result = Result.of(scenario)
    with Launcher(log_dir, f"{scenario.mode}-{scenario.clients}-r{scenario.round}") as launcher:
        deployment = await deploy(scenario.mode, launcher, node_dir)
        workers: list[Worker] = []
        clients: list[CursorClient] = []
        try:
            await exercise(scenario, deployment, workers, clients, result, launcher)
        finally:
            await asyncio.gather(*(w.end() for w in workers), return_exceptions=True)
            for client in clients:
                client.close()
            result.log_problems = log_problems(deployment.servers)
    return result


async def exercise(
    scenario: Scenario,
    deployment: Deployment,
    workers: list[Worker],
    clients: list[CursorClient],
    result: Result,
    launcher: Launcher,
) -> None:
    started = time.monotonic()
    result.load_average = os.getloadavg()[0]
    # The prober first, then the movers, then the observers: last in the fan-out order.
    prober = await open_cursor_client(deployment.ports[0], deployment.path, deployment.auth)
    clients.append(prober)
    for i in range(scenario.workers):
        workers.append(await Worker.start(SCRIPT, launcher.log(f"movers-{i}")))
    # Mover i goes to server i + 1: the prober is the first of the sequence, on the first server.
    plans = split_targets(deployment, scenario.clients - 1, scenario.workers, first_server=1)
    await connect_workers(workers, plans, "movers", auth=deployment.auth)
    probes = ProbeLog()
    # Headline observer: on the last server (with replicas, not the prober's).
    observers: list[Observer] = []
    for port in reversed(deployment.ports):
        client = await open_cursor_client(port, deployment.path, deployment.auth)
        clients.append(client)
        observers.append(Observer(client, scenario.mode == "node", prober.sid, probes))
    result.connect_seconds = time.monotonic() - started
    observer = observers[0]

    # Warm-up: everyone moves (the prober to a non-probe place), cursors join.
    prober.move(0.05, PROBE_Y)
    await everyone(workers, "move", rate=scenario.rate)
    await asyncio.sleep(WARMUP_SECONDS)

    # The moving window.
    await everyone(workers, "reset")
    for o in observers:
        o.reset()
        o.counting = True
    meters = Meters(deployment, workers)
    sent = await probe(prober, probes, scenario.probe_ms / 1000, scenario.seconds)
    meters.stop()
    for o in observers:
        o.counting = False
    stats = await everyone(workers, "stats")
    meters.fill(result.moving, observer.frames, observer.bytes)
    await asyncio.sleep(GRACE_SECONDS)  # probes sent at the very end may still arrive
    latency = observer.latencies_us(sent)
    result.probes_sent, result.probes_seen = len(sent), len(latency)
    result.p50_ms, result.p99_ms = percentile(latency, 0.5), percentile(latency, 0.99)
    result.max_ms = latency[-1] / 1000 if latency else float("nan")
    if observer.fanout_us:
        fanout = sorted(observer.fanout_us[k] for k in sent if k in observer.fanout_us)
        result.fanout_p50_ms = percentile(fanout, 0.5)
        result.fanout_p99_ms = percentile(fanout, 0.99)
    if len(observers) > 1:
        same = observers[1]
        same_latency = same.latencies_us(sent)
        result.same_replica = {
            "p50_ms": percentile(same_latency, 0.5),
            "p99_ms": percentile(same_latency, 0.99),
            "probes_seen": len(same_latency),
            "frames_per_s": same.frames / meters.seconds,
            "kb_per_s": same.bytes / meters.seconds / 1000,
        }
    window = meters.seconds
    result.updates_per_s = (sum(s["sent"] for s in stats) + len(sent)) / window
    if result.updates_per_s:
        updates = result.updates_per_s * window
        result.server_us_per_update = 1e6 * sum(meters.servers.used()) / updates
    result.mover_late_max_ms = max(s["max_late_ms"] for s in stats)
    result.mover_frames_per_s_min = min(s["frames_min"] for s in stats) / window
    result.mover_frames_per_s_max = max(s["frames_max"] for s in stats) / window

    # The idle window: nobody moves.
    await everyone(workers, "still")
    await asyncio.sleep(SETTLE_SECONDS)
    await everyone(workers, "reset")
    for o in observers:
        o.frames = o.bytes = 0
        o.counting = True
        o.log = []
    idle_meters = Meters(deployment, workers)
    idle_start = time.time_ns()
    await asyncio.sleep(scenario.idle_seconds)
    idle_meters.stop()
    for o in observers:
        o.counting = False
    result.idle_frames = [
        (round((at - idle_start) / 1e9, 3), event, size) for at, event, size in observer.log or []
    ]
    idle_meters.fill(result.idle, observer.frames, observer.bytes)
    idle_stats = await everyone(workers, "stats")

    every_stat = [*stats, *idle_stats]
    result.mover_snapshots_after_join = sum(s["snapshots"] for s in every_stat)
    result.cursor_errors = sum(s["errors"] for s in every_stat)
    result.cursor_error_sample = [e for s in every_stat for e in s["error_sample"]][:3]
    result.closed_during_run = max(s["closed"] for s in idle_stats) + sum(c.closed for c in clients)
    result.seq_duplicates = sum(o.seq_duplicates for o in observers)
    result.seq_gaps = sum(o.seq_gaps for o in observers)
    result.probe_repeats = sum(o.repeats for o in observers)
    result.observer_snapshots_after_join = sum(o.snapshots for o in observers)
    if result.probes_seen < result.probes_sent:
        result.notes.append(f"{result.probes_sent - result.probes_seen} probes never seen")
    intended = (scenario.clients - 1) * scenario.rate + 1000 / scenario.probe_ms
    if result.updates_per_s < 0.95 * intended:
        result.notes.append(
            f"movers sent {result.updates_per_s:.0f} updates/s of {intended:.0f} intended"
        )


# --- the run and its report --------------------------------------------------------------------


def moving_table(results: list[Result]) -> str:
    rows = [
        "| mode | N | movers' rate /s | frames/s | KB/s | bytes/frame | p50 ms | p99 ms | "
        "max ms | probes seen | tick→arrival p50 / p99 ms | server CPU % | server µs/update | "
        "server run-queue wait % | Redis CPU % | generator CPU % | others' CPU % |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if r.error:
            rows.append(f"| {r.mode} | {r.clients} | {fmt(r.rate, 0)} | failed: {r.error} |")
            continue
        m = r.moving
        fanout = (
            f"{fmt(r.fanout_p50_ms)} / {fmt(r.fanout_p99_ms)}"
            if r.fanout_p50_ms is not None
            else "-"
        )
        rows.append(
            f"| {r.mode} | {r.clients} | {fmt(r.rate, 0)} | {fmt(m.frames_per_s)} | "
            f"{fmt(m.kb_per_s)} | {fmt(m.bytes_per_frame, 0)} | {fmt(r.p50_ms)} | "
            f"{fmt(r.p99_ms)} | {fmt(r.max_ms)} | {r.probes_seen}/{r.probes_sent} | {fanout} | "
            f"{fmt(m.server_cpu_pct)} | {fmt(r.server_us_per_update)} | "
            f"{fmt(m.server_wait_pct)} | {fmt(m.redis_cpu_pct)} | {fmt(m.generator_cpu_pct)} | "
            f"{fmt(m.others_cpu_pct, 0)} |"
        )
    return "\n".join(rows)


def idle_table(results: list[Result]) -> str:
    rows = [
        "| mode | N | frames/s | KB/s | server CPU % | Redis CPU % | generator CPU % | "
        "others' CPU % |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if r.error:
            continue
        i = r.idle
        rows.append(
            f"| {r.mode} | {r.clients} | {fmt(i.frames_per_s)} | {fmt(i.kb_per_s, 2)} | "
            f"{fmt(i.server_cpu_pct)} | {fmt(i.redis_cpu_pct)} | {fmt(i.generator_cpu_pct)} | "
            f"{fmt(i.others_cpu_pct, 0)} |"
        )
    return "\n".join(rows)


def against_node(results: list[Result]) -> list[dict[str, Any]]:
    """Each mode against ``node`` at the same N and round; the median over rounds."""
    return node_ratios(
        results,
        "clients",
        lambda r: {
            "kb": r.moving.kb_per_s,
            "frames": r.moving.frames_per_s,
            "p50": r.p50_ms,
            "p99": r.p99_ms,
            "cpu": r.moving.server_cpu_pct,
            "cpu_per_update": r.server_us_per_update,
            "idle_kb": r.idle.kb_per_s,
            "idle_cpu": r.idle.server_cpu_pct,
        },
    )


def ratios_table(ratios: list[dict[str, Any]]) -> str:
    rows = [
        "| mode | N | KB/s / Node | frames/s / Node | p50 / Node | p99 / Node | "
        "server CPU / Node | CPU per update / Node | idle KB/s / Node | idle server CPU / Node |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in ratios:
        keys = ("kb", "frames", "p50", "p99", "cpu", "cpu_per_update", "idle_kb", "idle_cpu")
        cells = [fmt(r.get(k), 3 if k == "idle_kb" else 2) + "x" for k in keys]
        rows.append(f"| {r['mode']} | {r['clients']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def replicas_table(results: list[Result]) -> str:
    rows = [
        "| N | round | prober's replica p50 / p99 ms | other replica p50 / p99 ms | "
        "frames/s (prober's / other) |",
        "|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if not r.same_replica or r.error:
            continue
        same = r.same_replica
        rows.append(
            f"| {r.clients} | {r.round} | {fmt(same['p50_ms'])} / {fmt(same['p99_ms'])} | "
            f"{fmt(r.p50_ms)} / {fmt(r.p99_ms)} | "
            f"{fmt(same['frames_per_s'])} / {fmt(r.moving.frames_per_s)} |"
        )
    return "\n".join(rows) if len(rows) > 2 else ""


def integrity_table(results: list[Result]) -> str:
    rows = [
        "| mode | N | updates sent/s | mover frames/s min-max | mover snapshots after join | "
        "cursor_error | seq dup / gap | probe repeats | closed | server log warnings |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if r.error:
            continue
        rows.append(
            f"| {r.mode} | {r.clients} | {fmt(r.updates_per_s, 0)} | "
            f"{fmt(r.mover_frames_per_s_min)}-{fmt(r.mover_frames_per_s_max)} | "
            f"{r.mover_snapshots_after_join} | {r.cursor_errors} | "
            f"{r.seq_duplicates} / {r.seq_gaps} | {r.probe_repeats} | {r.closed_during_run} | "
            f"{len(r.log_problems)} |"
        )
    return "\n".join(rows)


def scenarios(args: argparse.Namespace) -> Iterator[Scenario]:
    """Interleaved: for each round and N, every mode in turn."""
    for rnd, n, mode in itertools.product(range(1, args.rounds + 1), args.clients, args.modes):
        yield Scenario(
            mode, n, args.rate, args.seconds, args.idle_seconds, args.probe_ms, args.workers, rnd
        )


async def run_scenarios(args: argparse.Namespace, log_dir: Path) -> list[Result]:
    node_dir = prepare_node(args)
    return await run_all(scenarios(args), lambda s: run_scenario(s, log_dir, node_dir), Result.of)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def int_list(text: str) -> list[int]:
        values = [int(x) for x in text.split(",") if x]
        if any(v < 2 for v in values):
            raise argparse.ArgumentTypeError("N counts the prober and the movers: at least 2")
        return values

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int_list, default=[100, 500], help="N, e.g. 100,500")
    parser.add_argument("--rate", type=float, default=20.0, help="updates per second per mover")
    parser.add_argument("--seconds", type=float, default=10.0, help="moving window")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle window")
    parser.add_argument("--probe-ms", type=float, default=200.0, help="time between probes")
    scenario_options(parser, ALL_MODES, "mover")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.worker:  # a mover process, driven by the orchestrator through stdin and stdout
        serve_worker(MoverPool)
        return
    results, path, logs = recorded_run(
        "cursors", args, run_scenarios, lambda rs: {"node_ratios": against_node(rs)}
    )
    print("Moving (one observer; with replicas, the one on the other replica):\n")
    print(moving_table(results))
    print("\nIdle (nobody moves):\n")
    print(idle_table(results))
    print("\nAgainst the course's design (median over rounds):\n")
    print(ratios_table(against_node(results)))
    if replicas := replicas_table(results):
        print("\nTwo replicas: observer on the prober's replica against the other one:\n")
        print(replicas)
    print("\nIntegrity:\n")
    print(integrity_table(results))
    for r in results:
        idle = [
            f"idle frame at +{at} s: {event} of {size} cursors" for at, event, size in r.idle_frames
        ]
        for line in [*r.notes, *r.cursor_error_sample, *r.log_problems[:5], *idle[:5]]:
            print(f"- {r.mode} N={r.clients} round {r.round}: {line}")
    print(f"\nraw figures: {path.relative_to(ROOT)}; server logs: {logs.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
