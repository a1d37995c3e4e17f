"""Ours against Node's socket.io and a raw Python server: every row of issue 17's table.

Three servers, each started afresh for every scenario of every round:

- ``node``: the course's ``chat.js`` (express + socket.io 4), the anchor;
- ``raw``: ``bench/rawpy.py``, a bare websocket broadcast server in Python (uvloop +
  websockets) speaking the same engine.io / socket.io text framing: the practical limit for
  Python;
- ``ours``: ``python -m chat_service``, one process, state in memory, its limits lifted (rate
  limit, room size, the bytes waiting for a slow reader: ``chat_env``).

The scenarios, run interleaved (for each round, each scenario, each server in turn; the order
of the servers turns by one every round), each row of the report the median and the range
(min-max) over the rounds, and the median of the per-round ratios to Node:

- ``fanout``: 200 receivers, one sender at 50 msg/s for ~10 s: p99 latency, server CPU;
- ``throughput``: 4 senders, each keeping 16 of its messages in flight (sent and not yet back
  to itself: every server here sends a message to its sender too), 200 receivers: what the
  receivers got per second;
- ``idle``: 5,000 idle connections: server RSS per connection (with them minus before them);
- ``connect``: connections opened per second, each counted when its ``40{"sid": ...}`` arrives
  (the connects of two client processes, CONNECT_CONCURRENCY at a time in each);
- ``large-fanout``: 1,000 receivers, one sender at 20 msg/s: deliveries/s, server CPU, p99;
- ``presence`` (``ours`` and ``node`` only: Node's chat announces nobody): 1,000 receivers in
  one room take names within 2 s; the server's CPU seconds for the joins, from the first name
  until every ``name`` echo and every announcement (``presence``, ``users``) arrived, less what the
  measured messages cost it (the same messages sent again on the quiet server afterwards); and
  the p99 of 10 messages sent at 5 msg/s from 1 s after the last name.

Latency: a measured message carries ``time.time_ns()`` in its text and its receiver subtracts
it from the time the frame reached its process (one machine, one clock). CPU: utime + stime from
``/proc/<pid>/stat`` over the measured window, % of one core. Receivers are the kit's lean
socket.io clients on the websocket transport, spread over ``--workers`` processes; senders
live in this process. Everything listens on 127.0.0.1 and every process is ended by its PID.

Run (from the repository root)::

    uv run python bench/versus_node.py [--rounds 3] [--quick] [--plots docs/img]
        [--scenarios fanout,throughput,idle,connect,large-fanout,presence] [--modes node,raw,ours]

It prints markdown tables and writes them to ``bench/results/versus_node-<time>.md``, the raw
figures to ``.json`` beside it, and one PNG per scenario (every round's figure per server, the
medians marked) to ``--plots`` (default: ``bench/results/versus_node-<time>.plots/``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from kit import (
    CONNECT_CONCURRENCY,
    HOST,
    NAME_ECHO,
    NODE_PATH,
    NODE_REFERENCE,
    REFUSALS,
    ROOT,
    Deployment,
    Launcher,
    Meters,
    SioClient,
    Window,
    Worker,
    at_least_one,
    connect_workers,
    deploy_node,
    deploy_service,
    everyone,
    fmt,
    free_port,
    log_problems,
    mode_list,
    open_client,
    open_many,
    percentile,
    prepare_node,
    recorded_run,
    rss_kb,
    run_all,
    send_at_rate,
    serve_worker,
    service_env,
    split_targets,
    table,
    take_name,
    wait_listening,
)

SCRIPT = Path(__file__).resolve()
RAWPY = SCRIPT.with_name("rawpy.py")
ROOM = "bench"
CHAT_PATH = "/api/chat/socket.io/"
MODES = ("node", "raw", "ours")
#: Ours under other ASGI servers and websocket implementations (bench/serve_asgi.py), without
#: the wire (switchboard/fanout.py): for choosing the server, not run by default.
SERVERS = {
    "ours-sansio": "uvicorn-sansio",
    "ours-websockets": "uvicorn-websockets",
    "ours-wsproto": "uvicorn-wsproto",
    "ours-granian": "granian",
}
ALL_MODES = (*MODES, *SERVERS)
MODE_NAMES = {
    "node": "Node (chat.js)",
    "raw": "raw Python",
    "ours": "chat_service",
    "ours-sansio": "uvicorn sans-I/O, no wire",
    "ours-websockets": "uvicorn websockets, no wire",
    "ours-wsproto": "uvicorn wsproto, no wire",
    "ours-granian": "granian, no wire",
}
SERVE_ASGI = Path(__file__).resolve().with_name("serve_asgi.py")
#: The presence row is ours against Node only: rawpy announces nobody either.
PRESENCE_MODES = ("node", "ours")
KINDS = ("fanout", "throughput", "idle", "connect", "large-fanout", "presence")

#: A measured message's text: "t <seq> <send time, ns>"; warm-up texts start with "w", the
#: throughput senders' with "f <sender> <seq>".
TIMED = re.compile(rb'"t \d+ (\d+)"')
MESSAGE = b'42["message"'

FANOUT_RATE = 50.0
LARGE_RATE = 20.0
FEEDERS = 4
IN_FLIGHT = 16
PRESENCE_SPREAD = 2.0
PRESENCE_DELAY = 1.0
PRESENCE_MESSAGES = 10
PRESENCE_RATE = 5.0
#: The joins are over when every name is echoed and no announcement came for this long (long
#: enough that a server starved of CPU for a moment on a busy machine is not taken as done).
PRESENCE_QUIET = 2.0
#: Seconds after the last name by which the joins must be over (or the row says they were not).
PRESENCE_DEADLINE = 150.0
WARMUP_SECONDS = 1.0
SETTLE_SECONDS = 1.5
DRAIN_TIMEOUT = 30.0
#: Between the ends of a range (an en dash).
DASH = "\u2013"


# --- the clients' side: a worker process driven through its stdin and stdout ------------------


class ClientPool:
    """The clients of one worker process and what they received.

    Every ``message`` frame is counted while measuring, and the latency of a measured one
    (``TIMED``) kept; a ``name`` echo, a refusal and any other event (an announcement such as
    ``presence``, or what a server sends on connecting) are counted apart."""

    def __init__(self) -> None:
        self.clients: list[SioClient] = []
        self.measuring = False
        self.latencies_us: list[int] = []
        self.messages = 0
        self.named = 0
        self.last_named_ns = 0
        self.refused = 0
        self.refusals: list[str] = []
        self.announcements = 0
        self.last_announcement_ns = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def on_event(self, text: bytes, now: int) -> None:
        if text.startswith(MESSAGE):
            if self.measuring:
                self.messages += 1
                if found := TIMED.search(text):
                    self.latencies_us.append((now - int(found.group(1))) // 1000)
        elif text.startswith(NAME_ECHO):
            self.named += 1
            self.last_named_ns = now
        elif text.startswith(REFUSALS):
            self.refused += 1
            if len(self.refusals) < 5:
                self.refusals.append(text[:200].decode(errors="replace"))
        else:
            self.announcements += 1
            self.last_announcement_ns = now

    async def connect(
        self, targets: list[dict[str, Any]], auth: dict[str, Any] | None
    ) -> dict[str, Any]:
        clients, answer = await open_many(
            open_client(t["port"], t["path"], auth) for t in targets for _ in range(t["count"])
        )
        for client in clients:
            client.on_event = self.on_event
        self.clients.extend(clients)
        return answer

    def start(self) -> dict[str, Any]:
        self.latencies_us = []
        self.messages = self.named = self.refused = self.announcements = 0
        self.last_announcement_ns = self.last_named_ns = 0
        self.measuring = True
        return {}

    def count(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "timed": len(self.latencies_us),
            "named": self.named,
            "refused": self.refused,
            "announcements": self.announcements,
            "last_announcement_ns": self.last_announcement_ns,
            "last_named_ns": self.last_named_ns,
        }

    def stop(self) -> dict[str, Any]:
        self.measuring = False
        return {
            **self.count(),
            "latencies_us": self.latencies_us,
            "refusals": self.refusals,
            "closed": sum(c.closed for c in self.clients),
        }

    def name(self, prefix: str, at: float, spread: float) -> dict[str, Any]:
        """Each client sends ``name`` once, evenly over ``spread`` seconds from the wall-clock
        time ``at``; the answer comes at once."""
        task = asyncio.create_task(self._name_all(prefix, at, spread))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return {}

    async def _name_all(self, prefix: str, at: float, spread: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time() + (at - time.time())
        step = spread / max(1, len(self.clients) - 1)
        for i, client in enumerate(self.clients):
            delay = start + i * step - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            client.emit("name", f"{prefix}{i}")

    def close(self) -> dict[str, Any]:
        for task in self.tasks:
            task.cancel()
        for client in self.clients:
            client.close()
        return {}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        match command["cmd"]:
            case "connect":
                return await self.connect(command["targets"], command.get("auth"))
            case "start":
                return self.start()
            case "count":
                return self.count()
            case "stop":
                return self.stop()
            case "name":
                return self.name(command["prefix"], command["at"], command["spread"])
            case "quit":
                return self.close()
        raise ValueError(f"unknown command {command!r}")


# --- the senders: in this process --------------------------------------------------------------


async def named_client(deployment: Deployment, name: str) -> SioClient:
    """A client connected to the first server, its ``name`` taken and echoed."""
    client = await open_client(deployment.ports[0], deployment.path, deployment.auth)
    await take_name(client, name, 20)
    return client


class Feeder:
    """A throughput sender: it keeps ``window`` of its messages sent and not yet back."""

    def __init__(self, client: SioClient, index: int, window: int) -> None:
        self.client = client
        self.index = index
        self.window = window
        self.mine = f'"f {index} '.encode()
        self.in_flight = 0
        self.sent = 0
        self.running = False
        client.on_event = self.on_event

    def on_event(self, text: bytes, _now: int) -> None:
        if text.startswith(MESSAGE) and self.mine in text:
            self.in_flight -= 1
            self.top_up()

    def top_up(self) -> None:
        while self.running and self.in_flight < self.window and not self.client.closed:
            self.client.emit("message", f"f {self.index} {self.sent}")
            self.sent += 1
            self.in_flight += 1

    def begin(self) -> None:
        self.running = True
        self.top_up()


# --- the servers -------------------------------------------------------------------------------


def chat_env(port: int, redis_url: str | None) -> dict[str, str]:
    """Our limits lifted as far as they go: the rate limit (service_env), the clients in one
    room (10,000 by default, fewer than a large --idle) and the bytes that may wait for a
    slow reader before it is cut off (1 MiB by default; Node's server has no such limit, and
    a load generator that falls behind must not lose its receivers)."""
    return service_env(
        port,
        redis_url,
        "CHAT_",
        MAX_ROOM_MEMBERS="10000000",
        SEND_BUFFER_LIMIT=str(1024**3),
    )


async def deploy(mode: str, launcher: Launcher, node_dir: Path | None) -> Deployment:
    """The server of ``mode``, listening; the launcher ends it."""
    if mode == "ours":
        argv = [sys.executable, "-m", "chat_service"]
        return await deploy_service(
            launcher, "memory", "chat", argv, chat_env, CHAT_PATH, {"room": ROOM}
        )
    if mode in SERVERS:
        argv = [sys.executable, str(SERVE_ASGI), SERVERS[mode]]
        return await deploy_service(
            launcher, "memory", mode, argv, chat_env, CHAT_PATH, {"room": ROOM}
        )
    if mode == "node":
        assert node_dir is not None
        return await deploy_node(launcher, node_dir, "node", "chat.js", NODE_PATH)
    if mode == "raw":
        port = free_port()
        env = {**os.environ, "PORT": str(port), "HOST": HOST}
        server = launcher.start("raw", [sys.executable, str(RAWPY)], port, env)
        await wait_listening(server)
        return Deployment([server], NODE_PATH)
    raise ValueError(f"unknown mode {mode!r}")


# --- scenarios and their results ---------------------------------------------------------------


@dataclass
class Scenario:
    kind: str
    mode: str
    round: int
    args: argparse.Namespace

    @property
    def label(self) -> str:
        return f"{self.kind} {self.mode} round {self.round}"

    @property
    def clients(self) -> int:
        a = self.args
        return int(
            {
                "fanout": a.receivers,
                "throughput": a.receivers,
                "idle": a.idle,
                "connect": a.connects,
                "large-fanout": a.large,
                "presence": a.presence,
            }[self.kind]
        )

    @property
    def timeout(self) -> float:
        longest = PRESENCE_DEADLINE if self.kind == "presence" else DRAIN_TIMEOUT
        return 180 + float(self.args.seconds) + longest


@dataclass
class Result:
    kind: str
    mode: str
    round: int
    clients: int
    figures: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, scenario: Scenario) -> Self:
        return cls(scenario.kind, scenario.mode, scenario.round, scenario.clients)

    def progress(self) -> str:
        shown = ", ".join(f"{k} {fmt(v, 2)}" for k, v in self.figures.items())
        return shown + (f", ERROR {self.error}" if self.error else "")


@dataclass(frozen=True)
class Measure:
    """One row of the summary: a figure of a scenario, with its unit after the number."""

    kind: str
    key: str
    title: str
    unit: str = ""
    digits: int = 1


def described(kind: str, args: argparse.Namespace) -> str:
    """What a scenario does, with this run's counts."""
    n, seconds = args.receivers, f"{args.seconds:g} s"
    return {
        "fanout": f"fan-out: {n} receivers, 1 sender at {FANOUT_RATE:g} msg/s, {seconds}",
        "throughput": f"throughput: {FEEDERS} senders with {IN_FLIGHT} messages in flight "
        f"each, {n} receivers, {seconds}",
        "idle": f"{args.idle:,} idle connections",
        "connect": f"connect rate: {args.connects:,} connections, {CONNECT_CONCURRENCY} at a "
        f"time in each of {args.workers} client processes",
        "large-fanout": f"{args.large:,} receivers, 1 sender at {LARGE_RATE:g} msg/s "
        f"({args.large * LARGE_RATE / 1000:g} k deliveries/s asked), {seconds}",
        "presence": f"presence: {args.presence:,} clients taking names within "
        f"{PRESENCE_SPREAD:g} s in one room",
    }[kind]


MEASURES = [
    Measure("fanout", "p99_ms", "p99 latency", " ms"),
    Measure("fanout", "server_cpu_pct", "server CPU", " %"),
    Measure("throughput", "deliveries_per_s", "deliveries/s", digits=0),
    Measure("idle", "kb_per_connection", "memory (RSS) per connection", " KB"),
    Measure("connect", "connects_per_s", "connections opened per second", digits=0),
    Measure("large-fanout", "deliveries_per_s", "deliveries/s", digits=0),
    Measure("large-fanout", "server_cpu_pct", "server CPU", " %"),
    Measure("large-fanout", "p99_ms", "p99 latency", " ms"),
    Measure("presence", "join_cpu_s", "server CPU for the joins", " s", 2),
    Measure(
        "presence",
        "p99_after_joins_ms",
        f"p99 of messages sent {PRESENCE_DELAY:g} s after the last name",
        " ms",
    ),
]


# --- one scenario ------------------------------------------------------------------------------


async def start_workers(count: int, launcher: Launcher) -> list[Worker]:
    return [await Worker.start(SCRIPT, launcher.log(f"clients-{i}")) for i in range(count)]


async def connect_clients(
    deployment: Deployment, workers: list[Worker], count: int
) -> list[dict[str, Any]]:
    plans = split_targets(deployment, count, len(workers))
    return await connect_workers(workers, plans, "clients", auth=deployment.auth)


LATEST = ("last_announcement_ns", "last_named_ns")


async def counted(workers: list[Worker]) -> dict[str, Any]:
    """The workers' counts, summed (the times of the latest echo and announcement: the latest
    of theirs)."""
    answers = await everyone(workers, "count")
    total = {k: sum(a[k] for a in answers) for k in answers[0] if k not in LATEST}
    total.update({k: max(a[k] for a in answers) for k in LATEST})
    return total


async def stopped(workers: list[Worker]) -> tuple[list[int], dict[str, Any]]:
    """Stop measuring: every latency (sorted, µs) and the summed counts."""
    answers = await everyone(workers, "stop")
    latencies = sorted(x for a in answers for x in a["latencies_us"])
    totals = {
        k: sum(a[k] for a in answers)
        for k in ("messages", "timed", "named", "refused", "announcements", "closed")
    }
    totals["refusals"] = [r for a in answers for r in a["refusals"]][:5]
    return latencies, totals


async def wait_for_timed(workers: list[Worker], expected: int, within: float) -> int:
    """Wait until ``expected`` measured messages arrived, or ``within`` seconds passed."""
    deadline = time.monotonic() + within
    while True:
        timed = int((await counted(workers))["timed"])
        if timed >= expected or time.monotonic() > deadline:
            return timed
        await asyncio.sleep(0.05)


def latency_figures(latencies: list[int]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] / 1000 if latencies else float("nan"),
    }


def server_cpu(meters: Meters) -> float:
    return sum(meters.servers.used())


def contention(meters: Meters) -> dict[str, float]:
    """How much the server waited for a CPU (% of the window) and what other processes than
    this run's used of the machine (% of one core): on a shared machine, the figures to read
    the others with."""
    window = Window()
    meters.fill(window, 0, 0)
    return {"server_wait_pct": window.server_wait_pct, "others_cpu_pct": window.others_cpu_pct}


async def fanout(
    scenario: Scenario, deployment: Deployment, workers: list[Worker], result: Result
) -> None:
    """One named sender at a fixed rate, N receivers: latency, deliveries/s, server CPU."""
    rate = FANOUT_RATE if scenario.kind == "fanout" else LARGE_RATE
    n = scenario.clients
    sender = await named_client(deployment, "bench-sender")
    try:
        await connect_clients(deployment, workers, n)
        await asyncio.sleep(SETTLE_SECONDS)
        await send_at_rate(sender, rate, int(rate * WARMUP_SECONDS), "w")
        await asyncio.sleep(0.5)
        count = int(rate * scenario.args.seconds)
        expected = count * n
        await everyone(workers, "start")
        meters = Meters(deployment, workers)
        await send_at_rate(sender, rate, count, "t")
        in_window = int((await counted(workers))["timed"])
        meters.stop()
        await wait_for_timed(workers, expected, DRAIN_TIMEOUT)
        latencies, totals = await stopped(workers)
    finally:
        sender.close()
    cpu = server_cpu(meters)
    result.figures = {
        **latency_figures(latencies),
        "delivered_pct": 100 * len(latencies) / expected,
        "deliveries_per_s": in_window / meters.seconds,
        "server_cpu_pct": 100 * cpu / meters.seconds,
        "cpu_us_per_delivery": 1e6 * cpu / in_window if in_window else float("nan"),
        "generator_cpu_pct": 100 * sum(meters.generator.used()) / meters.seconds,
        **contention(meters),
    }
    if len(latencies) < expected:
        result.notes.append(f"{expected - len(latencies)} of {expected} deliveries missing")
    if totals["closed"]:
        result.notes.append(f"{totals['closed']} receivers closed during the run")


async def throughput(
    scenario: Scenario, deployment: Deployment, workers: list[Worker], result: Result
) -> None:
    """FEEDERS senders, each with IN_FLIGHT messages in flight, N receivers: deliveries/s."""
    clients = [await named_client(deployment, f"feeder-{i}") for i in range(FEEDERS)]
    feeders = [Feeder(client, i, IN_FLIGHT) for i, client in enumerate(clients)]
    try:
        await connect_clients(deployment, workers, scenario.clients)
        await asyncio.sleep(SETTLE_SECONDS)
        for feeder in feeders:
            feeder.begin()
        await asyncio.sleep(WARMUP_SECONDS)
        await everyone(workers, "start")
        meters = Meters(deployment, workers)
        sent = -sum(f.sent for f in feeders)
        await asyncio.sleep(scenario.args.seconds)
        delivered = int((await counted(workers))["messages"])
        meters.stop()
        sent += sum(f.sent for f in feeders)
        for feeder in feeders:
            feeder.running = False
        _, totals = await stopped(workers)
    finally:
        for client in clients:
            client.close()
    cpu = server_cpu(meters)
    result.figures = {
        "deliveries_per_s": delivered / meters.seconds,
        "sent_per_s": sent / meters.seconds,
        "server_cpu_pct": 100 * cpu / meters.seconds,
        "cpu_us_per_delivery": 1e6 * cpu / delivered if delivered else float("nan"),
        "generator_cpu_pct": 100 * sum(meters.generator.used()) / meters.seconds,
        **contention(meters),
    }
    if totals["closed"]:
        result.notes.append(f"{totals['closed']} receivers closed during the run")


async def idle(
    scenario: Scenario, deployment: Deployment, workers: list[Worker], result: Result
) -> None:
    """N idle connections: the server's RSS with them minus before them, per connection. One
    connection first, so that the code a connection runs is loaded before the baseline."""
    probe = await open_client(deployment.ports[0], deployment.path, deployment.auth)
    try:
        await asyncio.sleep(1.0)
        pid = deployment.servers[0].pid
        before = rss_kb(pid)
        answers = await connect_clients(deployment, workers, scenario.clients)
        await asyncio.sleep(2 * SETTLE_SECONDS)
        after = rss_kb(pid)
    finally:
        probe.close()
    seconds = max(a["seconds"] for a in answers)
    result.figures = {
        "kb_per_connection": (after - before) / scenario.clients,
        "rss_before_mb": before / 1024,
        "rss_after_mb": after / 1024,
        "connects_per_s": scenario.clients / seconds,
    }


async def connect(
    scenario: Scenario, deployment: Deployment, workers: list[Worker], result: Result
) -> None:
    """N connections opened by the workers at once, CONNECT_CONCURRENCY at a time in each."""
    probe = await open_client(deployment.ports[0], deployment.path, deployment.auth)
    try:
        await asyncio.sleep(1.0)
        meters = Meters(deployment, workers)
        answers = await connect_clients(deployment, workers, scenario.clients)
        meters.stop()
    finally:
        probe.close()
    seconds = max(a["seconds"] for a in answers)
    cpu = server_cpu(meters)
    result.figures = {
        "connects_per_s": scenario.clients / seconds,
        "seconds": seconds,
        "server_cpu_pct": 100 * cpu / meters.seconds,
        "cpu_ms_per_connect": 1000 * cpu / scenario.clients,
        "generator_cpu_pct": 100 * sum(meters.generator.used()) / meters.seconds,
        **contention(meters),
    }


async def presence(
    scenario: Scenario, deployment: Deployment, workers: list[Worker], result: Result
) -> None:
    """N receivers in one room take names within PRESENCE_SPREAD seconds; from PRESENCE_DELAY
    after the last, a named sender sends PRESENCE_MESSAGES measured messages. The joins are
    over when every name is echoed, every message arrived and no announcement came for
    PRESENCE_QUIET seconds. The same messages are then sent again on the quiet server: their
    cost is taken off the joins' CPU, their p99 is the quiet one."""
    n = scenario.clients
    expected = PRESENCE_MESSAGES * n
    sender = await named_client(deployment, "bench-sender")
    try:
        await connect_clients(deployment, workers, n)
        await asyncio.sleep(SETTLE_SECONDS)
        await everyone(workers, "start")
        at = time.time() + 0.5
        for i, worker in enumerate(workers):
            await worker.call("name", prefix=f"w{i}-", at=at, spread=PRESENCE_SPREAD)
        meters = Meters(deployment, workers)
        last_name = at + PRESENCE_SPREAD
        await asyncio.sleep(last_name + PRESENCE_DELAY - time.time())
        await send_at_rate(sender, PRESENCE_RATE, PRESENCE_MESSAGES, "t")
        over = False
        while time.time() < last_name + PRESENCE_DEADLINE:
            counts = await counted(workers)
            quiet = time.time_ns() - counts["last_announcement_ns"] >= PRESENCE_QUIET * 1e9
            answered = counts["named"] + counts["refused"] >= n
            if answered and counts["timed"] >= expected and quiet:
                over = True
                break
            await asyncio.sleep(0.1)
        meters.stop()
        latencies, totals = await stopped(workers)
        joins_cpu = server_cpu(meters)
        joined_in = max(counts["last_announcement_ns"], counts["last_named_ns"]) / 1e9 - at
        # The same messages on the quiet server: what they cost, and their p99 without joins.
        await asyncio.sleep(1.0)
        await everyone(workers, "start")
        quiet_meters = Meters(deployment, workers)
        await send_at_rate(sender, PRESENCE_RATE, PRESENCE_MESSAGES, "t")
        await wait_for_timed(workers, expected, DRAIN_TIMEOUT)
        quiet_meters.stop()
        quiet_latencies, _ = await stopped(workers)
    finally:
        sender.close()
    messages_cpu = server_cpu(quiet_meters)
    result.figures = {
        # Noise can make it a little negative when the joins cost next to nothing.
        "join_cpu_s": max(0.0, joins_cpu - messages_cpu),
        "cpu_in_all_s": joins_cpu,
        "messages_cpu_s": messages_cpu,
        "joins_seconds": joined_in,
        "announcements": totals["announcements"],
        "p99_after_joins_ms": percentile(latencies, 0.99),
        "max_after_joins_ms": latencies[-1] / 1000 if latencies else float("nan"),
        "p99_quiet_ms": percentile(quiet_latencies, 0.99),
    }
    if not over:
        result.notes.append(
            f"the joins were not over {PRESENCE_DEADLINE:g} s after the last name "
            f"({totals['named']} echoed, {totals['timed']} of {expected} messages)"
        )
    if totals["refused"]:
        result.notes.append(f"{totals['refused']} names refused: {totals['refusals']}")


RUNS: dict[str, Callable[[Scenario, Deployment, list[Worker], Result], Any]] = {
    "fanout": fanout,
    "throughput": throughput,
    "idle": idle,
    "connect": connect,
    "large-fanout": fanout,
    "presence": presence,
}


async def run_scenario(scenario: Scenario, log_dir: Path, node_dir: Path | None) -> Result:
    result = Result.of(scenario)
    tag = f"{scenario.kind}-{scenario.mode}-r{scenario.round}"
    with Launcher(log_dir, tag) as launcher:
        deployment = await deploy(scenario.mode, launcher, node_dir)
        workers: list[Worker] = []
        try:
            workers = await start_workers(scenario.args.workers, launcher)
            await RUNS[scenario.kind](scenario, deployment, workers, result)
        finally:
            await asyncio.gather(*(w.end() for w in workers), return_exceptions=True)
        result.notes.extend(log_problems(deployment.servers)[:5])
    return result


def scenarios(args: argparse.Namespace) -> Iterator[Scenario]:
    """For each round, each scenario, each server in turn; the servers' order turns by one
    every round, so that none is always first after another's run."""
    for rnd in range(1, args.rounds + 1):
        for kind in args.scenarios:
            modes = [m for m in args.modes if kind != "presence" or m in PRESENCE_MODES]
            if not modes:
                continue
            turn = (rnd - 1) % len(modes)
            for mode in modes[turn:] + modes[:turn]:
                yield Scenario(kind, mode, rnd, args)


async def run_scenarios(args: argparse.Namespace, log_dir: Path) -> list[Result]:
    node_dir = prepare_node(args, ("node",))
    return await run_all(scenarios(args), lambda s: run_scenario(s, log_dir, node_dir), Result.of)


# --- the report --------------------------------------------------------------------------------


def values(results: list[Result], kind: str, mode: str, key: str) -> dict[int, float]:
    """``key`` of ``kind`` on ``mode``, by round (failed runs and missing figures left out)."""
    return {
        r.round: r.figures[key]
        for r in results
        if r.kind == kind and r.mode == mode and not r.error and key in r.figures
    }


def summary(results: list[Result], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per row and mode: the median, min and max over rounds, and the median of the per-round
    ratios to Node."""
    rows = []
    for m in MEASURES:
        if m.kind not in args.scenarios:
            continue
        node = values(results, m.kind, "node", m.key)
        row: dict[str, Any] = {"kind": m.kind, "key": m.key, "title": m.title}
        for mode in args.modes:
            got = values(results, m.kind, mode, m.key)
            if not got:
                continue
            ratios = [v / node[r] for r, v in got.items() if node.get(r)]
            row[mode] = {
                "median": statistics.median(got.values()),
                "min": min(got.values()),
                "max": max(got.values()),
                "rounds": len(got),
                "ratio": statistics.median(ratios) if ratios and mode != "node" else None,
            }
        rows.append(row)
    return rows


def number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def summary_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The issue's table: per row the median with its unit, the range over rounds when there
    were several, and the ratio to Node."""
    found = {(m.kind, m.key): m for m in MEASURES}
    cells, kind = [], ""
    for row in rows:
        m = found[(row["kind"], row["key"])]
        line = [f"{described(m.kind, args) if m.kind != kind else 'same'}: {m.title}"]
        kind = m.kind
        for mode in args.modes:
            v = row.get(mode)
            if v is None:
                line.append("-")
                continue
            text = number(v["median"], m.digits) + m.unit
            if v["rounds"] > 1:
                text += f" ({number(v['min'], m.digits)}{DASH}{number(v['max'], m.digits)})"
            if v["ratio"] is not None:
                text += f" {v['ratio']:.2f}x"
            line.append(text)
        cells.append(line)
    return table(["scenario", *(MODE_NAMES[m] for m in args.modes)], cells)


def rounds_tables(results: list[Result], args: argparse.Namespace) -> str:
    """Every figure of every run, one table per scenario."""
    out = []
    for kind in args.scenarios:
        runs = [r for r in results if r.kind == kind]
        if not runs:
            continue
        keys = list(dict.fromkeys(k for r in runs for k in r.figures)) or ["figures"]
        rows = []
        for r in sorted(runs, key=lambda r: (r.round, ALL_MODES.index(r.mode))):
            cells = [r.mode, str(r.round), str(r.clients)]
            if r.error:
                cells += [f"failed: {r.error}"] + [""] * (len(keys) - 1)
            else:
                cells += [fmt(r.figures.get(k), 2) for k in keys]
            rows.append(cells)
        out.append(f"#### {kind}\n\n" + table(["mode", "round", "N", *keys], rows, 1))
        notes = [f"- {r.mode} round {r.round}: {n}" for r in runs for n in r.notes]
        if notes:
            out.append("\n".join(notes))
    return "\n\n".join(out)


def plot(results: list[Result], args: argparse.Namespace, folder: Path) -> list[Path]:
    """One PNG per scenario: each round's figure per server (a dot), the median (a bar, its
    value and its ratio to Node beside it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    colours = {
        "node": "tab:green",
        "raw": "tab:gray",
        "ours": "tab:blue",
        "ours-sansio": "tab:cyan",
        "ours-websockets": "tab:purple",
        "ours-wsproto": "tab:brown",
        "ours-granian": "tab:orange",
    }
    for kind in args.scenarios:
        rows = [m for m in MEASURES if m.kind == kind]
        modes = [m for m in args.modes if any(values(results, kind, m, r.key) for r in rows)]
        if not modes:
            continue
        width = max(7.0, 4.4 * len(rows))
        figure, axes = plt.subplots(1, len(rows), figsize=(width, 4.0), squeeze=False)
        for axis, row in zip(axes[0], rows, strict=True):
            node = values(results, kind, "node", row.key)
            shown: list[float] = []
            for x, mode in enumerate(modes):
                got = values(results, kind, mode, row.key)
                if not got:
                    continue
                jitter = [x + 0.06 * (r - (args.rounds + 1) / 2) for r in got]
                axis.scatter(jitter, list(got.values()), color=colours[mode], s=18, zorder=3)
                median = statistics.median(got.values())
                axis.hlines(median, x - 0.28, x + 0.28, color=colours[mode], linewidth=2.5)
                label = number(median, row.digits)
                ratios = [v / node[r] for r, v in got.items() if node.get(r)]
                if mode != "node" and ratios:
                    label += f"\n{statistics.median(ratios):.2f}x Node"
                axis.annotate(label, (x + 0.3, median), va="center", fontsize=8)
                shown.extend(got.values())
            axis.set_xticks(range(len(modes)), [MODE_NAMES[m] for m in modes], fontsize=8)
            axis.set_xlim(-0.5, len(modes) - 0.1)
            least, top = min(shown, default=0.0), max(shown, default=0.0)
            if least > 0 and top / least > 20:  # Node's bar would sit flat on the axis
                axis.set_yscale("log")
                axis.set_ylim(least / 2, top * 2)
            else:
                axis.set_ylim(0, top * 1.15 or 1)
            unit = row.unit.strip() or "per second"
            axis.set_ylabel(f"{unit} (log scale)" if axis.get_yscale() == "log" else unit)
            axis.set_title(wrapped(row.title, 40), fontsize=9)
            axis.grid(axis="y", alpha=0.3)
        figure.suptitle(
            f"{wrapped(described(kind, args), int(12 * width))}\n(a dot per round, "
            f"{args.rounds} in all; "
            "the bar: the median)",
            fontsize=9,
        )
        figure.tight_layout()
        path = folder / f"versus-node-{kind}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def wrapped(text: str, width: int = 48) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


# --- the command -------------------------------------------------------------------------------

#: Counts and windows: the full run's, and --quick's smoke run's.
FULL = {"receivers": 200, "idle": 5000, "connects": 2000, "large": 1000, "presence": 1000}
QUICK = {"receivers": 100, "idle": 200, "connects": 200, "large": 100, "presence": 100}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=at_least_one, default=None, help="3 (--quick: 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 2 minutes")
    parser.add_argument("--seconds", type=float, default=None, help="windows, 10 (--quick: 3)")
    parser.add_argument(
        "--scenarios", type=mode_list(KINDS), default=list(KINDS), help=",".join(KINDS)
    )
    parser.add_argument(
        "--modes",
        type=mode_list(ALL_MODES),
        default=list(MODES),
        help=f"node,raw,ours (default); also {','.join(SERVERS)}",
    )
    for name, full in FULL.items():
        parser.add_argument(
            f"--{name}", type=at_least_one, default=None, help=f"{full} (--quick: {QUICK[name]})"
        )
    parser.add_argument("--workers", type=at_least_one, default=2, help="client processes")
    parser.add_argument("--plots", type=Path, default=None, help="folder for the PNGs")
    parser.add_argument("--node-reference", type=Path, default=NODE_REFERENCE)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, size in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, size)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    return args


def raise_open_files(args: argparse.Namespace) -> None:
    """Enough descriptors for the largest scenario, in this process and (inherited) in the
    servers and workers it starts."""
    needed = max(args.idle, args.connects, args.large, args.presence) + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"ulimit -n: {needed} open files needed, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def main() -> None:
    args = parse_args()
    if args.worker:  # a client process, driven by the orchestrator through stdin and stdout
        serve_worker(ClientPool)
        return
    raise_open_files(args)
    results, path, logs = recorded_run(
        "versus_node", args, run_scenarios, lambda rs: {"summary": summary(rs, args)}
    )
    record = json.loads(path.read_text())
    info = record["machine"]
    plots = plot(results, args, args.plots or path.with_suffix(".plots"))
    tables = [
        f"Median over {args.rounds} round(s) (min{DASH}max over them when several), and the "
        "median of the per-round ratios to Node.",
        summary_table(summary(results, args), args),
        "### Every run",
        rounds_tables(results, args),
    ]
    machine_line = (
        f"{info['nproc']} x {info['cpu_model']}, Python {info['python']}, Node {info['node']}, "
        f"{info['date']}, {info['run_seconds']} s; load average {info['load_start']} at "
        f"start, {info['load_end']} at end"
    )
    report = "\n\n".join([f"`{record['command']}`", machine_line, *tables])
    path.with_suffix(".md").write_text(report + "\n")
    print("\n\n".join(tables))
    shown = ", ".join(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in plots)
    print(
        f"\nreport: {path.with_suffix('.md').relative_to(ROOT)}; raw figures: "
        f"{path.relative_to(ROOT)}; logs: {logs.relative_to(ROOT)}/; plots: {shown}"
    )


if __name__ == "__main__":
    main()
