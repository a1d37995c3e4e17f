"""Ticker fan-out benchmark (issue 4): every trade to N clients, once each, and at what cost.

A scenario is a mode and a number of clients N. It starts the local Bitstamp simulator
(``python -m ticker_service.simulator``, ``--rate`` trades per second per pair on average, a
Poisson process, over ``--pairs`` pairs) and the ticker pointed at it, connects N socket.io
clients, each of which subscribes to every pair, and for ``--seconds`` measures:

- end-to-end latency: the time a trade frame reached a client minus the time the simulator made
  the trade (its ``microtimestamp``, the wall clock when it generated and sent it; the ticker's
  ``ts`` is the same in ms). Same machine, same clock: p50, p99, max, over every delivery;
- where that latency goes, per trade: the latency of the first client to get it (what the trade
  waited before its fan-out began) and the time from its first client to its last (the fan-out);
- delivery, exactly once: every client must get every trade the simulator made in the window,
  once. What the simulator made is read by a "tap", a plain websocket client of the simulator
  itself in this process, and checked against the simulator's REST list
  (``/api/v2/transactions/<pair>/``); per client the trades missing and received twice are
  counted by id, and the ``ts`` of each trade is checked against the simulator's time;
- CPU of each process over the window (``/proc/<pid>/stat``, % of one core): the ticker (in
  ``redis`` mode the leader, which holds the upstream connection, and the follower separately),
  Redis, the simulator, and the load generator (this process and the client processes), with
  the whole machine's (``/proc/stat``) to show what others used;
- memory per connection: each ticker's VmRSS with its clients subscribed minus VmRSS before any
  client connected, over its clients;
- upstream connections: the TCP connections the ticker processes hold to the simulator's port,
  read from ``/proc`` mid-window. Our design holds one for the whole cluster whatever N; the
  course's (every browser opens its own ``wss://ws.bitstamp.net``) holds N.

Each client subscribes to all the pairs, as a ticker page that lists the followed pairs does:
then every trade goes to all N clients, and a client receives ``rate x pairs`` trades per second
(20 at the defaults), the heaviest fan-out per trade the service can be asked for.

Modes, interleaved in one run (for each N, every mode in turn, each on fresh processes):

- ``memory``: ``python -m ticker_service``, one process, trades kept in memory;
- ``redis``: two ``ticker_service`` replicas sharing a ``redis-server`` started here. Replica 1
  is started first and has the upstream connection before replica 2 starts, so it is the leader;
  the clients alternate between the two, and the follower's clients get each trade through
  Redis (python-socketio's Redis manager).

The clients are the kit's lean engine.io v4 / socket.io v5 websocket clients, spread over
``--workers`` processes. The subscribe rate limit is lifted for the run. All traffic
stays on 127.0.0.1: nothing connects to the internet.

Run (from the repository root)::

    uv run python bench/ticker.py [--clients 100,1000] [--rate 5] [--pairs 4] [--seconds 20]
                                  [--modes memory,redis] [--rounds 1] [--gc-probe]

``--gc-probe`` puts the kit's ``gc.callbacks`` probe (the one chat_churn.py uses) on the tickers'
``PYTHONPATH`` and reports their collections of generation 1 and 2 during the window, with
their pauses.

It prints markdown tables and saves the raw figures to ``bench/results/ticker-<time>.json`` and
the processes' logs next to them (``ticker-<time>.logs/``). Every process it starts listens on
127.0.0.1 only and is ended by its PID when its scenario ends, on a failure or Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit import (
    CONNECT_TIMEOUT,
    GC_LINE,
    HOST,
    ROOT,
    START_TIMEOUT,
    CpuMeter,
    Deployment,
    Launcher,
    Meters,
    Process,
    SioClient,
    Worker,
    connect_workers,
    connected,
    everyone,
    fmt,
    free_port,
    gc_probe_folder,
    http_get,
    load_average,
    log_problems,
    mode_list,
    open_many,
    percentile,
    recorded_run,
    rss_kb,
    run_all,
    serve_worker,
    service_env,
    split_targets,
    table,
    wait_listening,
)

SCRIPT = Path(__file__).resolve()
ALL_MODES = ("memory", "redis")
TICKER_PATH = "/api/ticker/socket.io/"
METRICS_PATH = "/api/ticker/metrics"
#: The pairs ``--pairs K`` takes the first K of (the simulator knows btc, eth, xrp; usd, eur, gbp).
PAIRS = ("btcusd", "btceur", "ethusd", "etheur", "xrpusd", "xrpeur", "btcgbp", "ethgbp")
#: A trade event as the ticker encodes it (orjson, the fields in Trade's order).
TRADE = re.compile(rb'"id":(\d+),.*"ts":(\d+),"backfilled":(t|f)')
#: After the leader is subscribed upstream: time for its first-start backfill (it waits 1 s,
#: then asks the REST API) to be over before clients subscribe.
BACKFILL_SETTLE_SECONDS = 2.5
SETTLE_SECONDS = 2.0
WARMUP_SECONDS = 1.0
#: After the window: how long the tap may take to have every trade of the window, then how
#: long the clients may take to have them all.
GRACE_SECONDS = 0.3
DRAIN_TIMEOUT = 5.0


# --- clients ---------------------------------------------------------------------------------


class TickerClient(SioClient):
    """A lean socket.io client that can wait for the acknowledgement of what it emits."""

    def __init__(self, port: int, path: str, auth: dict[str, Any] | None) -> None:
        super().__init__(port, path, auth)
        self._acks: dict[int, asyncio.Future[bytes]] = {}
        self._next_ack = 0

    def _packet(self, text: bytes, now: int) -> None:
        if text.startswith(b"43"):  # 43<id>[<answer>]
            number, _, answer = text[2:].partition(b"[")
            waiting = self._acks.pop(int(number), None)
            if waiting is not None and not waiting.done():
                waiting.set_result(b"[" + answer)
            return
        super()._packet(text, now)

    async def subscribe(self, pair: str) -> None:
        number, self._next_ack = self._next_ack, self._next_ack + 1
        answer = self._acks[number] = asyncio.get_running_loop().create_future()
        self.send(b"42%d" % number + json.dumps(["subscribe", pair]).encode())
        reply = await asyncio.wait_for(answer, CONNECT_TIMEOUT)
        if not reply.startswith(b'[{"ok":true'):
            raise RuntimeError(f"subscribe({pair!r}) refused: {reply[:200]!r}")


async def open_ticker_client(port: int, path: str, pairs: list[str]) -> TickerClient:
    client = await connected(lambda: TickerClient(port, path, None), port)
    for pair in pairs:
        await client.subscribe(pair)
    return client


class BitstampTap(SioClient):
    """A plain websocket client of the simulator (Bitstamp's protocol, no socket.io): every
    trade it sends, by id, with its microtimestamp and when it reached this process."""

    def __init__(self, port: int, pairs: list[str]) -> None:
        super().__init__(port, "/", None)
        self.pending = {f"live_trades_{pair}" for pair in pairs}
        self.asked = False
        #: id -> (pair, microtimestamp, time.time_ns() at arrival).
        self.trades: dict[int, tuple[str, int, int]] = {}

    def _finish_handshake(self, data: bytes) -> bytes:
        rest = super()._finish_handshake(data)
        if self._upgraded and not self.asked:
            self.asked = True
            for name in sorted(self.pending):
                message = {"event": "bts:subscribe", "data": {"channel": name}}
                self.send(json.dumps(message).encode())
        return rest

    def _packet(self, text: bytes, now: int) -> None:
        message = json.loads(text)
        event, name = message.get("event"), str(message.get("channel"))
        if event == "trade":
            data = message["data"]
            pair = name.removeprefix("live_trades_")
            self.trades[int(data["id"])] = (pair, int(data["microtimestamp"]), now)
        elif event == "bts:subscription_succeeded":
            self.pending.discard(name)
            if not self.pending and not self.connected.done():
                self.connected.set_result(None)
        elif event == "bts:error":
            self._fail(f"the simulator refused: {text[:200]!r}")


# --- the clients' side: a worker process driven through its stdin and stdout ----------------


class TickerPool:
    """The clients of one worker process, and every trade each received while recording."""

    def __init__(self) -> None:
        self.clients: list[TickerClient] = []
        #: Per client: (id, ts, backfilled, time.time_ns() at arrival) of each trade frame.
        self.logs: list[list[tuple[int, int, bool, int]]] = []
        self.recording = False
        self.unparsed = 0
        self.errors: list[str] = []

    def _handler(self, log: list[tuple[int, int, bool, int]]) -> Any:
        def on_event(text: bytes, now: int) -> None:
            if text.startswith(b'42["trade"'):
                if not self.recording:
                    return
                found = TRADE.search(text)
                if found is None:
                    self.unparsed += 1
                    return
                log.append((int(found[1]), int(found[2]), found[3] == b"t", now))
            elif text.startswith(b'42["ticker_error"') and len(self.errors) < 1000:
                self.errors.append(text[:200].decode(errors="replace"))

        return on_event

    async def connect(self, targets: list[dict[str, Any]], pairs: list[str]) -> dict[str, Any]:
        clients, answer = await open_many(
            open_ticker_client(t["port"], t["path"], pairs)
            for t in targets
            for _ in range(t["count"])
        )
        for client in clients:
            log: list[tuple[int, int, bool, int]] = []
            client.on_event = self._handler(log)
            self.clients.append(client)
            self.logs.append(log)
        return answer

    def missing(self, ids: list[int]) -> int:
        """How many (client, trade) of ``ids`` have not arrived yet."""
        wanted = set(ids)
        return sum(len(wanted - {entry[0] for entry in log}) for log in self.logs)

    def report(self, known: list[list[int]], t0_us: int, t1_us: int) -> dict[str, Any]:
        """Each client's trades against what the simulator sent (``known``: [id, microtimestamp]
        of every trade the tap saw); the window is the trades made from ``t0_us`` to ``t1_us``."""
        made = dict((trade_id, micro) for trade_id, micro in known)
        window = [(i, m) for i, m in known if t0_us <= m <= t1_us]
        latencies: dict[int, list[int]] = {}
        out: dict[str, Any] = {
            "delivered": 0,
            "missing": 0,
            "duplicates": 0,
            "clients_complete": 0,
            "clients_with_duplicates": 0,
            "backfilled": 0,
            "ts_mismatches": 0,
            "unknown_ids": 0,
            "duplicate_sample": [],
            #: Trade id -> how many of this process's clients lack it.
            "missed": {},
            #: Trade id -> [first, last] arrival (time_ns) over this process's clients.
            "spans": {},
        }
        for client, log in zip(self.clients, self.logs, strict=True):
            first: dict[int, int] = {}
            duplicates = 0
            for trade_id, ts, backfilled, now in log:
                if trade_id in first:
                    duplicates += 1
                    if len(out["duplicate_sample"]) < 5:
                        out["duplicate_sample"].append(trade_id)
                    continue
                first[trade_id] = now
                out["backfilled"] += backfilled
                micro = made.get(trade_id)
                if micro is None:
                    out["unknown_ids"] += 1
                elif ts != micro // 1000:
                    out["ts_mismatches"] += 1
            got = latencies.setdefault(client.port, [])
            missing = 0
            for trade_id, micro in window:
                now = first.get(trade_id, 0)
                if now:
                    got.append(now // 1000 - micro)
                    span = out["spans"].setdefault(trade_id, [now, now])
                    span[0], span[1] = min(span[0], now), max(span[1], now)
                else:
                    missing += 1
                    out["missed"][trade_id] = out["missed"].get(trade_id, 0) + 1
            out["delivered"] += len(window) - missing
            out["missing"] += missing
            out["duplicates"] += duplicates
            out["clients_complete"] += missing == 0
            out["clients_with_duplicates"] += duplicates > 0
        out["latencies_us"] = latencies
        out["unparsed"] = self.unparsed
        out["ticker_errors"] = len(self.errors)
        out["error_sample"] = self.errors[:3]
        out["closed"] = sum(c.closed for c in self.clients)
        return out

    async def handle(self, command: dict[str, Any]) -> Any:
        match command["cmd"]:
            case "connect":
                return await self.connect(command["targets"], command["pairs"])
            case "start":
                for log in self.logs:
                    log.clear()
                self.recording = True
                return {}
            case "missing":
                return {"missing": self.missing(command["ids"])}
            case "stop":
                self.recording = False
                return {}
            case "report":
                return self.report(command["known"], command["t0_us"], command["t1_us"])
            case "quit":
                self.recording = False
                for client in self.clients:
                    client.close()
                return {"closed": len(self.clients)}
        raise ValueError(f"unknown command {command!r}")


# --- processes ---------------------------------------------------------------------------------


def ticker_env(
    port: int, simulator_port: int, pairs: list[str], redis_url: str | None, probe: Path | None
) -> dict[str, str]:
    return service_env(
        port,
        redis_url,
        "TICKER_",
        log_level="info",
        gc_probe=probe,
        TICKER_UPSTREAM_URL=f"ws://{HOST}:{simulator_port}",
        TICKER_REST_URL=f"http://{HOST}:{simulator_port}",
        TICKER_PAIRS=",".join(pairs),
    )


def metric(body: bytes, name: str, labels: str = "") -> float | None:
    """One sample of a Prometheus text page: ``name{labels} value``."""
    pattern = "^" + re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)$"
    found = re.search(pattern.encode(), body, re.M)
    return float(found[1]) if found else None


async def ticker_metrics(port: int) -> bytes:
    _, body = await asyncio.to_thread(http_get, port, METRICS_PATH)
    return body


async def wait_leading(process: Process) -> None:
    """Until ``process`` holds the leader lock and is subscribed upstream."""
    state = {"leading": False}

    async def look() -> None:
        with contextlib.suppress(OSError):
            body = await ticker_metrics(process.port)
            state["leading"] = (
                metric(body, "switchboard_ticker_leader") == 1
                and metric(body, "switchboard_ticker_upstream_connected") == 1
            )

    deadline = time.monotonic() + START_TIMEOUT
    while not state["leading"]:
        if time.monotonic() > deadline or process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} did not lead:\n{process.log_tail()}")
        await look()
        await asyncio.sleep(0.1)


def upstream_connections(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to ``port`` on this machine."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    count = 0
    for family in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{family}").read_text().splitlines()[1:]:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                    count += inode in inodes
    return count


async def deploy(scenario: Scenario, launcher: Launcher) -> tuple[Deployment, Process]:
    """Redis (``redis`` mode), the simulator, the ticker replica(s); the first replica leads."""
    redis, redis_url = await launcher.redis() if scenario.mode == "redis" else (None, None)
    simulator_port = free_port()
    simulator_argv = [
        *(sys.executable, "-m", "ticker_service.simulator", "--host", HOST),
        *("--port", str(simulator_port), "--rate", str(scenario.rate)),
        *("--pairs", ",".join(scenario.pairs)),
    ]
    simulator = launcher.start("simulator", simulator_argv, simulator_port, dict(os.environ))
    await wait_listening(simulator)
    probe = gc_probe_folder(launcher.log_dir) if scenario.gc_probe else None
    replicas = []
    for i in range(1 if scenario.mode == "memory" else 2):
        port = free_port()
        env = ticker_env(port, simulator_port, scenario.pairs, redis_url, probe)
        name = "ticker" if scenario.mode == "memory" else f"ticker-{i + 1}"
        replica = launcher.start(name, [sys.executable, "-m", "ticker_service"], port, env)
        replicas.append(replica)
        await wait_listening(replica)
        if i == 0:
            await wait_leading(replica)
    return Deployment(replicas, TICKER_PATH, None, redis), simulator


# --- one scenario ------------------------------------------------------------------------------


@dataclass
class Scenario:
    mode: str
    clients: int
    rate: float
    pairs: list[str]
    seconds: float
    workers: int
    round: int = 1
    gc_probe: bool = False

    @property
    def label(self) -> str:
        return f"{self.mode} N={self.clients} round {self.round}"

    @property
    def timeout(self) -> float:
        return self.seconds + 150


@dataclass
class Server:
    """One ticker process: its role, its clients and what it cost."""

    name: str
    role: str
    port: int
    clients: int = 0
    cpu_pct: float = 0.0
    rss_idle_kb: int = 0
    rss_loaded_kb: int = 0
    kb_per_connection: float = 0.0
    upstream_connections: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    #: With --gc-probe: its collections of generation 1 and 2 in the window, and their pauses.
    gc_collections: int | None = None
    gc_pause_max_ms: float | None = None
    gc_pause_total_ms: float | None = None


@dataclass
class Result:
    mode: str
    clients: int
    rate: float
    pairs: int
    seconds: float
    round: int
    load_start: str = ""
    load_end: str = ""
    #: Trades the simulator made in the window (seen by the tap), and per pair.
    trades: int = 0
    trades_by_pair: dict[str, int] = field(default_factory=dict)
    #: The simulator's REST list against the tap, over the window's ids: trades the tap lacks.
    tap_missed: int = 0
    expected: int = 0
    delivered: int = 0
    delivered_pct: float = 0.0
    missing: int = 0
    duplicates: int = 0
    clients_complete: int = 0
    clients_with_duplicates: int = 0
    backfilled: int = 0
    ts_mismatches: int = 0
    unknown_ids: int = 0
    unparsed: int = 0
    ticker_errors: int = 0
    closed: int = 0
    duplicate_sample: list[int] = field(default_factory=list)
    #: Trades some client lacks: missed by every client (never fanned out: the ticker did not
    #: take it in), and missed by some clients only (lost in the fan-out).
    missed_by_all: list[int] = field(default_factory=list)
    missed_by_some: dict[int, int] = field(default_factory=dict)
    drain_seconds: float = 0.0
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    p999_ms: float = float("nan")
    max_ms: float = float("nan")
    #: Per trade: the latency of the first client to get it (what the trade waited before its
    #: fan-out began), and the time from the first client to the last (the fan-out itself).
    first_p50_ms: float = float("nan")
    first_p99_ms: float = float("nan")
    span_p50_ms: float = float("nan")
    span_p99_ms: float = float("nan")
    #: Per trade of the window, in order: [id, microtimestamp, first client's latency µs,
    #: first to last client µs] (the raw material of the two figures above; JSON only).
    timeline: list[list[int]] = field(default_factory=list)
    #: The simulator to the tap (this process): the part of the latency before the ticker.
    tap_p50_ms: float = float("nan")
    tap_p99_ms: float = float("nan")
    deliveries_per_s: float = 0.0
    window_s: float = 0.0
    servers: list[Server] = field(default_factory=list)
    server_cpu_pct: float = 0.0
    server_us_per_delivery: float = 0.0
    server_wait_pct: float = 0.0
    redis_cpu_pct: float | None = None
    simulator_cpu_pct: float = 0.0
    generator_cpu_pct: float = 0.0
    generator_busiest_pct: float = 0.0
    machine_busy_pct: float = 0.0
    others_cpu_pct: float = 0.0
    kb_per_connection: float = 0.0
    #: TCP connections from the ticker processes to the simulator, mid-window; the course's
    #: design (one wss:// per browser) would hold N.
    upstream_ours: int = 0
    upstream_course: int = 0
    #: The leader's counters over the window: trades it delivered live, duplicates it dropped.
    leader_live_trades: float | None = None
    leader_duplicate_trades: float | None = None
    connect_seconds: float = 0.0
    log_problems: list[str] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, scenario: Scenario) -> Result:
        return cls(
            scenario.mode,
            scenario.clients,
            scenario.rate,
            len(scenario.pairs),
            scenario.seconds,
            scenario.round,
        )

    def progress(self) -> str:
        if self.error:
            return f"ERROR {self.error}"
        return (
            f"{self.trades} trades, delivered {fmt(self.delivered_pct, 2)} %, missing "
            f"{self.missing}, duplicates {self.duplicates}, p50 {fmt(self.p50_ms, 2)} ms, p99 "
            f"{fmt(self.p99_ms, 2)} ms, ticker CPU {fmt(self.server_cpu_pct)} %, generator CPU "
            f"{fmt(self.generator_cpu_pct)} %"
        )


async def leader_counters(port: int) -> tuple[float | None, float | None]:
    body = await ticker_metrics(port)
    return (
        metric(body, "switchboard_ticker_trades_total", 'source="live"'),
        metric(body, "switchboard_ticker_duplicate_trades_total"),
    )


async def simulator_ids(port: int, pair: str) -> set[int]:
    """The trade ids the simulator lists for ``pair`` over the last hour (its REST API)."""
    _, body = await asyncio.to_thread(http_get, port, f"/api/v2/transactions/{pair}/?time=hour")
    return {int(row["tid"]) for row in json.loads(body)}


async def run_scenario(scenario: Scenario, log_dir: Path) -> Result:
    result = Result.of(scenario)
    result.load_start = load_average()
    launcher = Launcher(log_dir, f"{scenario.mode}-{scenario.clients}-r{scenario.round}")
    workers: list[Worker] = []
    taps: list[BitstampTap] = []
    try:
        deployment, simulator = await deploy(scenario, launcher)
        taps.append(
            await connected(lambda: BitstampTap(simulator.port, scenario.pairs), simulator.port)
        )
        for i in range(scenario.workers):
            workers.append(await Worker.start(SCRIPT, launcher.log(f"clients-{i}")))
        await exercise(scenario, deployment, simulator, taps[0], workers, result)
    finally:
        await asyncio.gather(*(w.end() for w in workers), return_exceptions=True)
        for tap in taps:
            tap.close()
        # Warnings and errors of the ticker(s) and the simulator during the run (not Redis's).
        started = launcher.started
        result.log_problems = log_problems([p for p in started if not p.name.endswith("-redis")])
        launcher.end()  # the replicas before the simulator and Redis
        result.load_end = load_average()
    return result


async def exercise(
    scenario: Scenario,
    deployment: Deployment,
    simulator: Process,
    tap: BitstampTap,
    workers: list[Worker],
    result: Result,
) -> None:
    servers = deployment.servers
    roles = ["single"] if len(servers) == 1 else ["leader", "follower"]
    result.servers = [
        Server(s.name.split("-", 3)[-1], role, s.port)
        for s, role in zip(servers, roles, strict=True)
    ]
    await asyncio.sleep(BACKFILL_SETTLE_SECONDS)
    if len(servers) > 1:
        follower = await ticker_metrics(servers[1].port)
        if metric(follower, "switchboard_ticker_leader") != 0:
            result.notes.append("replica 2 says it leads too")
    for figures, process in zip(result.servers, servers, strict=True):
        figures.rss_idle_kb = rss_kb(process.pid)

    started = time.monotonic()
    plans = split_targets(deployment, scenario.clients, len(workers))
    await connect_workers(workers, plans, "clients", pairs=scenario.pairs)
    result.connect_seconds = time.monotonic() - started
    for plan in plans:
        for target in plan:
            figures = next(f for f in result.servers if f.port == target.port)
            figures.clients += target.count
    await asyncio.sleep(SETTLE_SECONDS)
    for figures, process in zip(result.servers, servers, strict=True):
        figures.rss_loaded_kb = rss_kb(process.pid)
        figures.kb_per_connection = (figures.rss_loaded_kb - figures.rss_idle_kb) / figures.clients
    loaded = sum(f.rss_loaded_kb - f.rss_idle_kb for f in result.servers)
    result.kb_per_connection = loaded / scenario.clients
    await asyncio.sleep(WARMUP_SECONDS)

    # The window: trades made from t0 to t1.
    await everyone(workers, "start")
    live_before, duplicates_before = await leader_counters(servers[0].port)
    meters = Meters(deployment, workers)
    simulator_meter = CpuMeter([simulator.pid])
    t0_us = time.time_ns() // 1000
    await asyncio.sleep(scenario.seconds / 2)
    for figures, process in zip(result.servers, servers, strict=True):
        figures.upstream_connections = upstream_connections(process.pid, simulator.port)
    await asyncio.sleep(scenario.seconds / 2)
    t1_us = time.time_ns() // 1000
    meters.stop()
    simulator_meter.stop()
    live_after, duplicates_after = await leader_counters(servers[0].port)
    if live_before is not None and live_after is not None:
        result.leader_live_trades = live_after - live_before
    if duplicates_before is not None and duplicates_after is not None:
        result.leader_duplicate_trades = duplicates_after - duplicates_before

    # Every trade of the window should reach every client: wait for them, up to DRAIN_TIMEOUT.
    await asyncio.sleep(GRACE_SECONDS)
    window = sorted(i for i, (_, micro, _) in tap.trades.items() if t0_us <= micro <= t1_us)
    drained = time.monotonic()

    async def all_arrived() -> bool:
        answers = await everyone(workers, "missing", ids=window)
        return sum(int(a["missing"]) for a in answers) == 0

    while True:
        if await all_arrived() or time.monotonic() - drained > DRAIN_TIMEOUT:
            break
        await asyncio.sleep(0.2)
    result.drain_seconds = time.monotonic() - drained
    await everyone(workers, "stop")
    await asyncio.sleep(GRACE_SECONDS)  # whatever a client recorded, the tap has by now
    known = [[i, micro] for i, (_, micro, _) in tap.trades.items()]
    reports = await everyone(workers, "report", known=known, t0_us=t0_us, t1_us=t1_us)
    await check_tap(scenario, simulator, tap, window, result)
    if scenario.gc_probe:
        for figures, process in zip(result.servers, servers, strict=True):
            collections(figures, process, t0_us, t1_us)
    summarize(scenario, deployment, tap, window, reports, result)
    fill_costs(scenario, meters, simulator_meter, result)


async def check_tap(
    scenario: Scenario, simulator: Process, tap: BitstampTap, window: list[int], result: Result
) -> None:
    """The simulator's own list against the tap: between the window's first and last ids (ids
    grow with time across pairs), every trade the simulator lists must be one the tap saw."""
    if not window:
        result.notes.append("the simulator made no trade in the window")
        return
    low, high = window[0], window[-1]
    for pair in scenario.pairs:
        listed = {i for i in await simulator_ids(simulator.port, pair) if low <= i <= high}
        seen = {i for i in window if tap.trades[i][0] == pair}
        result.trades_by_pair[pair] = len(listed)
        result.tap_missed += len(listed - seen)
        if seen - listed:
            result.notes.append(f"{pair}: the tap saw {len(seen - listed)} trades not listed")


def collections(figures: Server, process: Process, t0_us: int, t1_us: int) -> None:
    """The GC probe's lines in the process's log for collections in the window."""
    pauses = [
        float(line["pause"])
        for line in GC_LINE.finditer(process.log.read_text(errors="replace"))
        if t0_us <= float(line["wall"]) * 1e6 <= t1_us
    ]
    figures.gc_collections = len(pauses)
    figures.gc_pause_max_ms = max(pauses, default=0.0)
    figures.gc_pause_total_ms = sum(pauses)


def summarize(
    scenario: Scenario,
    deployment: Deployment,
    tap: BitstampTap,
    window: list[int],
    reports: list[dict[str, Any]],
    result: Result,
) -> None:
    result.trades = len(window)
    result.expected = len(window) * scenario.clients
    for name in (
        "delivered",
        "missing",
        "duplicates",
        "clients_complete",
        "clients_with_duplicates",
        "backfilled",
        "ts_mismatches",
        "unknown_ids",
        "unparsed",
        "ticker_errors",
        "closed",
    ):
        setattr(result, name, sum(r[name] for r in reports))
    result.duplicate_sample = [i for r in reports for i in r["duplicate_sample"]][:5]
    missed: dict[int, int] = {}
    for report in reports:
        for trade_id, count in report["missed"].items():
            missed[int(trade_id)] = missed.get(int(trade_id), 0) + count
    result.missed_by_all = sorted(i for i, count in missed.items() if count == scenario.clients)
    result.missed_by_some = {i: c for i, c in sorted(missed.items()) if c < scenario.clients}
    result.delivered_pct = 100 * result.delivered / result.expected if result.expected else 0.0
    by_port: dict[int, list[int]] = {}
    for report in reports:
        for port, values in report["latencies_us"].items():
            by_port.setdefault(int(port), []).extend(values)
    latencies = sorted(v for values in by_port.values() for v in values)
    for name, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99), ("p999_ms", 0.999)):
        setattr(result, name, percentile(latencies, q))
    result.max_ms = latencies[-1] / 1000 if latencies else float("nan")
    for figures in result.servers:
        ordered = sorted(by_port.get(figures.port, []))
        figures.p50_ms, figures.p99_ms = percentile(ordered, 0.5), percentile(ordered, 0.99)
    spans: dict[int, list[int]] = {}
    for report in reports:
        for trade_id, (low, high) in report["spans"].items():
            span = spans.setdefault(int(trade_id), [low, high])
            span[0], span[1] = min(span[0], low), max(span[1], high)
    result.timeline = [
        [
            i,
            tap.trades[i][1],
            spans[i][0] // 1000 - tap.trades[i][1],
            (spans[i][1] - spans[i][0]) // 1000,
        ]
        for i in window
        if i in spans
    ]
    firsts = sorted(low // 1000 - tap.trades[i][1] for i, (low, _) in spans.items())
    widths = sorted((high - low) // 1000 for low, high in spans.values())
    result.first_p50_ms, result.first_p99_ms = percentile(firsts, 0.5), percentile(firsts, 0.99)
    result.span_p50_ms, result.span_p99_ms = percentile(widths, 0.5), percentile(widths, 0.99)
    tapped = sorted((tap.trades[i][2] // 1000 - tap.trades[i][1]) for i in window)
    result.tap_p50_ms, result.tap_p99_ms = percentile(tapped, 0.5), percentile(tapped, 0.99)
    result.upstream_ours = sum(f.upstream_connections for f in result.servers)
    result.upstream_course = scenario.clients
    if result.missing:
        result.notes.append(
            f"{result.missing} of {result.expected} deliveries missing "
            f"({scenario.clients - result.clients_complete} clients incomplete): "
            f"{len(result.missed_by_all)} trades reached no client (ids "
            f"{result.missed_by_all[:5]}), {len(result.missed_by_some)} reached some only "
            f"(id: clients missing it {dict(list(result.missed_by_some.items())[:5])})"
        )
    if result.duplicates:
        result.notes.append(
            f"{result.duplicates} trades received twice by {result.clients_with_duplicates} "
            f"clients, e.g. trade ids {result.duplicate_sample}"
        )
    for name in ("ts_mismatches", "unknown_ids", "unparsed", "ticker_errors", "closed"):
        if getattr(result, name):
            result.notes.append(f"{name}: {getattr(result, name)}")
    if result.tap_missed:
        result.notes.append(f"the tap missed {result.tap_missed} trades the simulator lists")


def fill_costs(
    scenario: Scenario, meters: Meters, simulator_meter: CpuMeter, result: Result
) -> None:
    seconds = result.window_s = meters.seconds
    used = meters.servers.used()
    for figures, cpu in zip(result.servers, used, strict=True):
        figures.cpu_pct = 100 * cpu / seconds
    result.server_cpu_pct = 100 * sum(used) / seconds
    result.server_wait_pct = 100 * meters.server_wait / seconds
    if result.delivered:
        result.server_us_per_delivery = 1e6 * sum(used) / result.delivered
    result.deliveries_per_s = result.delivered / seconds
    if scenario.mode == "redis":
        result.redis_cpu_pct = 100 * sum(meters.redis.used()) / seconds
    result.simulator_cpu_pct = 100 * sum(simulator_meter.used()) / seconds
    generator = meters.generator.used()
    result.generator_cpu_pct = 100 * sum(generator) / seconds
    result.generator_busiest_pct = 100 * max(generator) / seconds
    cores = os.cpu_count() or 1
    if meters.total:
        result.machine_busy_pct = 100 * cores * meters.busy / meters.total
    ours = (
        result.server_cpu_pct
        + (result.redis_cpu_pct or 0.0)
        + result.simulator_cpu_pct
        + result.generator_cpu_pct
    )
    result.others_cpu_pct = max(0.0, result.machine_busy_pct - ours)


# --- the run and its report --------------------------------------------------------------------


def delivery_table(results: list[Result]) -> str:
    header = [
        *("mode", "N", "pairs x rate /s", "trades in window", "deliveries expected"),
        *("delivered %", "missing (trades no client got)", "duplicates", "clients complete"),
        *("p50 ms", "p99 ms"),
        *("max ms", "simulator→tap p50 / p99 ms", "load (1, 5, 15 min) at start"),
    ]
    rows = []
    for r in results:
        head = [r.mode, str(r.clients), f"{r.pairs} x {fmt(r.rate, 0)}"]
        if r.error:
            rows.append([*head, f"failed: {r.error}"])
            continue
        rows.append(
            [
                *head,
                *(str(r.trades), str(r.expected), fmt(r.delivered_pct, 2)),
                f"{r.missing} ({len(r.missed_by_all)})",
                *(str(r.duplicates), f"{r.clients_complete}/{r.clients}"),
                *(fmt(r.p50_ms, 2), fmt(r.p99_ms, 2), fmt(r.max_ms)),
                f"{fmt(r.tap_p50_ms, 2)} / {fmt(r.tap_p99_ms, 2)}",
                r.load_start,
            ]
        )
    return table(header, rows)


def latency_table(results: list[Result]) -> str:
    header = [
        *("mode", "N", "all deliveries p50 / p99 ms", "first client of each trade p50 / p99 ms"),
        "first to last client of each trade p50 / p99 ms",
    ]
    rows = [
        [
            *(r.mode, str(r.clients), f"{fmt(r.p50_ms, 2)} / {fmt(r.p99_ms, 2)}"),
            f"{fmt(r.first_p50_ms, 2)} / {fmt(r.first_p99_ms, 2)}",
            f"{fmt(r.span_p50_ms, 2)} / {fmt(r.span_p99_ms, 2)}",
        ]
        for r in results
        if not r.error
    ]
    return table(header, rows)


def cost_table(results: list[Result]) -> str:
    header = [
        *("mode", "N", "deliveries/s", "ticker CPU % (leader + follower)", "µs CPU/delivery"),
        *("run-queue wait %", "Redis CPU %", "simulator CPU %", "KB/conn"),
        *("generator CPU % (busiest process)", "others' CPU %"),
    ]
    rows = []
    for r in (r for r in results if not r.error):
        split = " + ".join(fmt(s.cpu_pct) for s in r.servers)
        cpu = fmt(r.server_cpu_pct) + (f" ({split})" if len(r.servers) > 1 else "")
        rows.append(
            [
                *(r.mode, str(r.clients), fmt(r.deliveries_per_s, 0), cpu),
                *(fmt(r.server_us_per_delivery), fmt(r.server_wait_pct), fmt(r.redis_cpu_pct)),
                *(fmt(r.simulator_cpu_pct), fmt(r.kb_per_connection)),
                f"{fmt(r.generator_cpu_pct)} ({fmt(r.generator_busiest_pct)})",
                fmt(r.others_cpu_pct, 0),
            ]
        )
    return table(header, rows)


def servers_table(results: list[Result]) -> str:
    header = [
        *("mode", "process", "role", "N", "round", "clients", "CPU %", "RSS idle → loaded MB"),
        *("KB/conn", "p50 / p99 ms of its clients", "TCP connections to upstream"),
        "GC gen ≥ 1 in window: count, max / total pause ms",
    ]
    rows = [
        [
            *(r.mode, s.name, s.role, str(r.clients), str(r.round), str(s.clients)),
            fmt(s.cpu_pct),
            f"{fmt(s.rss_idle_kb / 1024)} → {fmt(s.rss_loaded_kb / 1024)}",
            fmt(s.kb_per_connection),
            f"{fmt(s.p50_ms, 2)} / {fmt(s.p99_ms, 2)}",
            str(s.upstream_connections),
            "-"
            if s.gc_collections is None
            else f"{s.gc_collections}: {fmt(s.gc_pause_max_ms)} / {fmt(s.gc_pause_total_ms)}",
        ]
        for r in results
        if not r.error
        for s in r.servers
    ]
    return table(header, rows, text_columns=3)


def upstream_table(results: list[Result]) -> str:
    header = ["mode", "N", "ours (measured)", "the course's design (one per browser)"]
    rows = [
        [r.mode, str(r.clients), str(r.upstream_ours), str(r.upstream_course)]
        for r in results
        if not r.error
    ]
    return table(header, rows)


def scenarios(args: argparse.Namespace) -> Iterator[Scenario]:
    """Interleaved: for each round and N, every mode in turn."""
    pairs = list(PAIRS[: args.pairs])
    for rnd, n, mode in itertools.product(range(1, args.rounds + 1), args.clients, args.modes):
        yield Scenario(mode, n, args.rate, pairs, args.seconds, args.workers, rnd, args.gc_probe)


async def run_scenarios(args: argparse.Namespace, log_dir: Path) -> list[Result]:
    return await run_all(scenarios(args), lambda s: run_scenario(s, log_dir), Result.of)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def number(low: float, high: float, kind: type = float) -> Any:
        def parse(text: str) -> Any:
            value = kind(text)
            if not low <= value <= high:
                raise argparse.ArgumentTypeError(f"{text}: not between {low:g} and {high:g}")
            return value

        return parse

    def clients(text: str) -> list[int]:
        return [number(2, 20_000, int)(part) for part in text.split(",") if part.strip()]

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=clients, default=[100, 1000], help="N, e.g. 100,1000")
    parser.add_argument("--rate", type=number(0.1, 200), default=5.0, help="trades/s per pair")
    parser.add_argument("--pairs", type=number(1, len(PAIRS), int), default=4, help="pairs")
    parser.add_argument("--seconds", type=number(2, 600), default=20.0, help="measured window")
    parser.add_argument(
        "--modes", type=mode_list(ALL_MODES), default=list(ALL_MODES), help="memory,redis"
    )
    parser.add_argument("--rounds", type=number(1, 10, int), default=1, help="repeat the set")
    parser.add_argument("--workers", type=number(1, 8, int), default=2, help="client processes")
    parser.add_argument(
        "--gc-probe", action="store_true", help="log the tickers' collections of generation 1+"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.clients:
        parser.error("--clients: give at least one N")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:  # a client process, driven by the orchestrator through stdin and stdout
        serve_worker(TickerPool)
        return
    results, path, logs = recorded_run("ticker", args, run_scenarios)
    print("Delivery and latency (every client subscribed to every pair):\n")
    print(delivery_table(results))
    print("\nWhere the latency goes (per trade: its first client, and first to last):\n")
    print(latency_table(results))
    print("\nCost (CPU % of one core over the window):\n")
    print(cost_table(results))
    print("\nPer ticker process:\n")
    print(servers_table(results))
    print("\nUpstream connections:\n")
    print(upstream_table(results))
    print()
    for r in results:
        if r.error:
            print(f"- {r.mode} N={r.clients} round {r.round}: failed: {r.error}")
            continue
        counts = ", ".join(f"{p} {n}" for p, n in r.trades_by_pair.items())
        print(
            f"- {r.mode} N={r.clients} round {r.round}: trades per pair {counts or '-'}; "
            f"leader's live trades counter +{fmt(r.leader_live_trades, 0)}, duplicates "
            f"dropped +{fmt(r.leader_duplicate_trades, 0)}; backfilled received {r.backfilled}; "
            f"drained in {fmt(r.drain_seconds, 2)} s; load {r.load_start} → {r.load_end}"
        )
        for line in [*r.notes, *r.log_problems[:5]]:
            print(f"- {r.mode} N={r.clients} round {r.round}: {line}")
    print(f"\nraw figures: {path.relative_to(ROOT)}; logs: {logs.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
