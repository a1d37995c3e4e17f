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

It prints markdown tables and saves the raw figures to ``bench/results/chat_fanout-<time>.json``
and the processes' logs next to them (``chat_fanout-<time>.logs/``). Every process it starts
listens on 127.0.0.1 only and is ended by its PID when its scenario ends, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
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
    EventHandler,
    Launcher,
    Meters,
    SioClient,
    Worker,
    connect_workers,
    deploy_node,
    deploy_service,
    everyone,
    fmt,
    node_ratios,
    open_client,
    open_many,
    percentile,
    prepare_node,
    recorded_run,
    run_all,
    scenario_options,
    send_at_rate,
    serve_worker,
    service_env,
    split_targets,
    total_rss,
)

SCRIPT = Path(__file__).resolve()
ROOM = "bench"
SENDER_NAME = "bench-sender"
CHAT_PATH = "/api/chat/socket.io/"
ALL_MODES = ("memory", "redis", "node", "rawws")
NODE_MODES = ("node", "rawws")
#: The send time inside a measured message's text: "bench <seq> <time_ns>".
BENCH_TEXT = re.compile(rb'"bench \d+ (\d+)"')
SETTLE_SECONDS = 2.0
WARMUP_SECONDS = 1.0
DRAIN_TIMEOUT = 10.0


# --- the receivers' side: a worker process driven through its stdin and stdout -----------------


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

    async def connect(
        self, targets: list[dict[str, Any]], auth: dict[str, Any] | None
    ) -> dict[str, Any]:
        clients, answer = await open_many(
            open_client(t["port"], t["path"], auth) for t in targets for _ in range(t["count"])
        )
        for client in clients:
            client.on_event = self._handler(len(self.clients), client.port)
            self.clients.append(client)
            self.counts.append(0)
        return answer

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
                return await self.connect(command["targets"], command.get("auth"))
            case "start":
                return self.start()
            case "count":
                return {"received": self.received}
            case "stop":
                return self.stop()
            case "quit":
                return self.close()
        raise ValueError(f"unknown command {command!r}")


# --- the servers -------------------------------------------------------------------------------


def chat_env(port: int, redis_url: str | None) -> dict[str, str]:
    return service_env(port, redis_url, "CHAT_")


async def deploy(mode: str, launcher: Launcher, node_dir: Path | None) -> Deployment:
    """Start the servers of ``mode``; the launcher ends them."""
    if mode in ("memory", "redis"):
        chat = [sys.executable, "-m", "chat_service"]
        return await deploy_service(
            launcher, mode, "chat", chat, chat_env, CHAT_PATH, {"room": ROOM}
        )
    if mode in NODE_MODES:
        assert node_dir is not None
        script = "chat.js" if mode == "node" else "rawws.js"
        return await deploy_node(launcher, node_dir, mode, script, NODE_PATH, MODE="chat")
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

    @property
    def label(self) -> str:
        return f"{self.mode} N={self.receivers} round {self.round}"

    @property
    def timeout(self) -> float:
        return self.seconds + WARMUP_SECONDS + 120


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

    @classmethod
    def of(cls, scenario: Scenario) -> Self:
        return cls(
            scenario.mode, scenario.receivers, scenario.rate, scenario.seconds, scenario.round
        )

    def progress(self) -> str:
        return (
            f"p50 {fmt(self.p50_ms, 2)} ms, p99 {fmt(self.p99_ms, 2)} ms, "
            f"delivered {fmt(self.delivered_pct, 2)} %, server CPU "
            f"{fmt(self.server_cpu_pct)} %, generator CPU {fmt(self.generator_cpu_pct)} %"
            + (f", ERROR {self.error}" if self.error else "")
        )


def per_server_latency(
    deployment: Deployment, by_port: dict[int, list[int]]
) -> dict[str, dict[str, float]]:
    out = {}
    for port, values in by_port.items():
        where = "sender's replica" if port == deployment.ports[0] else f"replica :{port}"
        ordered = sorted(values)
        out[where] = {"p50_ms": percentile(ordered, 0.5), "p99_ms": percentile(ordered, 0.99)}
    return out


async def connect_sender(deployment: Deployment) -> SioClient:
    sender = await open_client(deployment.ports[0], deployment.path, deployment.auth)
    named: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_event(text: bytes, _now: int) -> None:
        if text.startswith(b'42["name"') and not named.done():
            named.set_result(None)

    sender.on_event = on_event
    sender.emit("name", SENDER_NAME)
    await asyncio.wait_for(named, 10)
    sender.on_event = None
    return sender


async def wait_drained(workers: list[Worker], expected: int) -> int:
    """Wait until every expected delivery arrived, or DRAIN_TIMEOUT passed."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        answers = await everyone(workers, "count")
        received = int(sum(a["received"] for a in answers))
        if received >= expected or time.monotonic() > deadline:
            return received
        await asyncio.sleep(0.05)


async def run_scenario(scenario: Scenario, log_dir: Path, node_dir: Path | None) -> Result:
    result = Result.of(scenario)
    with Launcher(log_dir, f"{scenario.mode}-{scenario.receivers}-r{scenario.round}") as launcher:
        deployment = await deploy(scenario.mode, launcher, node_dir)
        workers: list[Worker] = []
        sender: SioClient | None = None
        try:
            sender = await connect_sender(deployment)
            for i in range(scenario.workers):
                workers.append(await Worker.start(SCRIPT, launcher.log(f"receivers-{i}")))
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
    return result


async def connect_receivers(
    scenario: Scenario, deployment: Deployment, workers: list[Worker], result: Result
) -> None:
    plans = split_targets(deployment, scenario.receivers, len(workers))
    answers = await connect_workers(workers, plans, "receivers", auth=deployment.auth)
    result.connect_seconds = max(a["seconds"] for a in answers)


async def measure(
    scenario: Scenario,
    deployment: Deployment,
    workers: list[Worker],
    sender: SioClient,
    result: Result,
) -> None:
    count = int(scenario.rate * scenario.seconds)
    expected = count * scenario.receivers
    await everyone(workers, "start")
    meters = Meters(deployment, workers)
    await send_at_rate(sender, scenario.rate, count, "bench")
    result.received = await wait_drained(workers, expected)
    meters.stop()
    window = meters.seconds
    answers = await everyone(workers, "stop")
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
    server_cpu = sum(meters.servers.used())
    result.server_cpu_pct = 100 * server_cpu / window
    if latencies:
        result.server_us_per_delivery = 1e6 * server_cpu / len(latencies)
    if len(deployment.servers) > 1:
        result.by_server = per_server_latency(deployment, by_port)
    if deployment.redis:
        result.redis_cpu_pct = 100 * sum(meters.redis.used()) / window
    result.generator_cpu_pct = 100 * sum(meters.generator.used()) / window
    result.generator_busiest_process_pct = 100 * max(meters.generator.used()) / window
    result.closed_during_run = sum(a["closed"] for a in answers)
    result.per_connection_min = min(a["per_connection_min"] for a in answers)
    result.per_connection_max = max(a["per_connection_max"] for a in answers)
    if result.received < expected:
        result.notes.append(f"lost {expected - result.received} of {expected} deliveries")


# --- the run and its report --------------------------------------------------------------------


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


def against_node(results: list[Result]) -> list[dict[str, Any]]:
    """Each mode against ``node`` at the same N and round; the median over rounds."""
    return node_ratios(
        results,
        "receivers",
        lambda r: {
            "p50": r.p50_ms,
            "p99": r.p99_ms,
            "cpu": r.server_cpu_pct,
            "cpu_per_delivery": r.server_us_per_delivery,
            "memory": r.kb_per_connection,
        },
    )


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
    for rnd, n, mode in itertools.product(range(1, args.rounds + 1), args.receivers, args.modes):
        yield Scenario(mode, n, args.rate, args.seconds, args.workers, rnd)


async def run_scenarios(args: argparse.Namespace, log_dir: Path) -> list[Result]:
    node_dir = prepare_node(args, NODE_MODES)
    return await run_all(scenarios(args), lambda s: run_scenario(s, log_dir, node_dir), Result.of)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def int_list(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--receivers", type=int_list, default=[100, 1000], help="e.g. 100,1000")
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    scenario_options(parser, ALL_MODES, "receiver")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.worker:  # a receiver process, driven by the orchestrator through stdin and stdout
        serve_worker(ReceiverPool)
        return
    results, path, logs = recorded_run(
        "chat_fanout", args, run_scenarios, lambda rs: {"node_ratios": against_node(rs)}
    )
    print(results_table(results))
    print()
    print(ratios_table(against_node(results)))
    if replicas := replicas_table(results):
        print()
        print(replicas)
    print(f"\nraw figures: {path.relative_to(ROOT)}; logs: {logs.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
