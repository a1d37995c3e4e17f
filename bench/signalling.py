"""Signalling relay benchmark (issue 6): P caller/callee pairs, ICE candidates relayed one to one.

A scenario is a mode and a number of pairs P (2P connections). Each pair is a call: its own room
(``auth.room`` = ``pair-<k>``), as in the app, where a room holds the people of one call; one room
for everyone would make every join announce the whole crowd to the whole crowd, which is the
cost of ``clients`` (O(N²) per wave of joins), not of relaying. The caller sends ``peerIce`` to
the callee at ``--rate`` messages per second: a realistic RTCIceCandidateInit (a host
candidate, ``sdpMid`` and ``sdpMLineIndex``) whose ``usernameFragment`` (passed on unchanged,
at most 256 characters) carries ``<tag><pair>.<seq>.<send time ns>``. The callee checks that the
frame is ``peerIce(its own id, the candidate unchanged, the caller's id)``. Per scenario:

- relay latency, receipt - send (same machine, same clock): p50, p99, max;
- delivered against sent, by (pair, seq): missing, duplicates, altered or misaddressed frames,
  and refusals (``signal_error``, ``peer_error``) that came back;
- server CPU over the window (% of one core, summed over replicas) and CPU µs per relayed
  message, the servers' run-queue wait, Redis's CPU, the load generator's CPU (this process and
  the client processes), and what the rest of the machine used (others' CPU, from /proc/stat);
- server RSS per connection: VmRSS with the 2P clients connected minus VmRSS before, over 2P;
- the load average at the start of each scenario.

Modes, interleaved in one run (for each P: every mode in turn), because absolute figures are
noisy on a shared 2-core machine; compare within a run:

- ``memory``: ``python -m signalling_service``, one process, state in memory;
- ``redis``: two replicas sharing a ``redis-server`` started here; every pair's caller is on one
  replica and its callee on the other (alternating which way round), so every message takes
  the cross-replica path: the Lua presence check, then Redis pub/sub to the other replica;
- ``node``: the course's ``signal.js`` (express + socket.io 4), which relays without any check.

The service runs with ``SIGNAL_ECHO=false`` and its rate limit lifted
(``SIGNAL_RATE_PER_SECOND`` and ``SIGNAL_RATE_BURST`` = 100000). Clients are the kit's lean
engine.io v4 / socket.io v5 websocket clients; pairs are spread over ``--workers`` processes,
both ends of a pair in the same one.

Run (from the repository root)::

    uv run python bench/signalling.py [--pairs 50,200] [--rate 20] [--seconds 10]
                                  [--modes memory,redis,node] [--rounds 1]

It prints markdown tables and saves the raw figures to ``bench/results/signal-<time>.json``
and the servers' logs next to them (``signal-<time>.logs/``). Every process it starts listens
on 127.0.0.1 only and is ended by its PID when its scenario ends, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from kit import (
    ROOT,
    Deployment,
    Launcher,
    Meters,
    SioClient,
    Window,
    Worker,
    connect_workers,
    deploy_node,
    deploy_service,
    everyone,
    fmt,
    load_average,
    log_problems,
    node_ratios,
    open_client,
    open_many,
    percentile,
    prepare_node,
    recorded_run,
    run_all,
    scenario_options,
    serve_worker,
    service_env,
    table,
    total_rss,
)

SCRIPT = Path(__file__).resolve()
ALL_MODES = ("memory", "redis", "node")
PATH = "/api/signal/socket.io/"
#: The candidate every caller sends; ``usernameFragment`` is added per message.
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}
WARMUP_SECONDS = 1.0
SETTLE_SECONDS = 2.0
#: After the window: how long the last messages may take, then how long duplicates may take.
DRAIN_TIMEOUT = 10.0
GRACE_SECONDS = 0.3


# --- the clients: a worker process holds whole pairs ---------------------------------------------


class Pair:
    """A caller and a callee, and what the callee got."""

    def __init__(self, index: int, caller: SioClient, callee: SioClient) -> None:
        self.index = index
        self.caller = caller
        self.callee = callee
        head = json.dumps(["peerIce", callee.sid, CANDIDATE], separators=(",", ":"))
        # 42["peerIce","<callee>",{...,"usernameFragment":"<tag><pair>.<seq>.<ns>"}]
        self.head = b"42" + head[:-2].encode() + b',"usernameFragment":"'

    def send(self, tag: str, seq: int) -> None:
        self.caller.send(self.head + f'{tag}{self.index}.{seq}.{time.time_ns()}"}}]'.encode())


class PairPool:
    """The pairs of one worker process: the callers send, the callees count and time."""

    def __init__(self) -> None:
        self.pairs: list[Pair] = []
        self.tag = "m"
        self.measuring = False
        self.seen: dict[int, bytearray] = {}
        self.latencies_us: list[int] = []
        self.received = self.duplicates = self.unexpected = self.altered = 0
        self.refusals = 0
        self.sample: list[str] = []
        self.bytes = 0
        self.max_late_ms = 0.0

    def _note(self, what: str, text: bytes) -> None:
        if len(self.sample) < 5:
            self.sample.append(f"{what}: {text[:240].decode(errors='replace')}")

    def _on_callee(self, pair: Pair) -> Any:
        def on_event(text: bytes, now: int) -> None:
            if not text.startswith(b'42["peerIce"'):
                if text.startswith((b'42["signal_error"', b'42["peer_error"')):
                    self.refusals += 1
                    self._note("callee refused", text)
                return
            try:
                _, to, candidate, sender = json.loads(text[2:])
                fragment = candidate.pop("usernameFragment")
                tag, index, seq, sent = fragment[0], *map(int, fragment[1:].split("."))
            except (ValueError, TypeError, KeyError, AttributeError):
                self.altered += 1
                self._note("unreadable", text)
                return
            if (to, sender, index) != (pair.callee.sid, pair.caller.sid, pair.index):
                self.unexpected += 1
                self._note("misaddressed", text)
                return
            if candidate != CANDIDATE:
                self.altered += 1
                self._note("altered", text)
                return
            if not self.measuring or tag != self.tag:
                return
            seen = self.seen[pair.index]
            if seq >= len(seen):
                self.unexpected += 1
                self._note("never sent", text)
                return
            seen[seq] += 1
            if seen[seq] > 1:
                self.duplicates += 1
                return
            self.received += 1
            self.bytes += len(text)
            self.latencies_us.append((now - sent) // 1000)

        return on_event

    def _on_caller(self, text: bytes, _now: int) -> None:
        if text.startswith((b'42["signal_error"', b'42["peer_error"')):
            self.refusals += 1
            self._note("caller refused", text)

    async def connect(self, targets: list[dict[str, Any]], path: str) -> Any:
        async def pair(spec: dict[str, Any]) -> Pair:
            auth = {"room": f"pair-{spec['pair']}"}  # signal.js has no rooms and ignores it
            # The callee first: the caller's target exists when the caller arrives.
            callee = await open_client(spec["callee_port"], path, auth)
            caller = await open_client(spec["caller_port"], path, auth)
            return Pair(spec["pair"], caller, callee)

        pairs, answer = await open_many(pair(spec) for spec in targets)
        for each in pairs:
            each.callee.on_event = self._on_callee(each)
            each.caller.on_event = self._on_caller
            self.pairs.append(each)
        return answer

    async def send(self, rate: float, count: int, tag: str) -> Any:
        """Every caller sends ``count`` messages at ``rate`` a second; the callers take turns
        evenly over each period, and whatever is due when the loop wakes goes out then."""
        loop = asyncio.get_running_loop()
        n = len(self.pairs)
        step = 1 / (rate * n) if n else 0.0
        total, k, sent = count * n, 0, 0
        start = loop.time()
        while k < total:
            late = loop.time() - (start + k * step)
            if late < 0:
                await asyncio.sleep(-late)
                continue
            self.max_late_ms = max(self.max_late_ms, late * 1000)
            due = min(total, int((loop.time() - start) / step) + 1)
            for slot in range(k, due):
                pair = self.pairs[slot % n]
                if not pair.caller.closed:
                    pair.send(tag, slot // n)
                    sent += 1
            k = due
        return {"sent": sent, "seconds": loop.time() - start}

    def reset(self, tag: str, count: int) -> None:
        self.tag, self.measuring = tag, True
        self.seen = {p.index: bytearray(count) for p in self.pairs}
        self.latencies_us = []
        self.received = self.duplicates = self.unexpected = self.altered = self.refusals = 0
        self.bytes = 0
        self.max_late_ms = 0.0

    def stats(self) -> dict[str, Any]:
        self.measuring = False
        missing = sum(seen.count(0) for seen in self.seen.values())
        closed = sum(p.caller.closed + p.callee.closed for p in self.pairs)
        return {
            "received": self.received,
            "missing": missing,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "altered": self.altered,
            "refusals": self.refusals,
            "sample": self.sample,
            "latencies_us": self.latencies_us,
            "bytes": self.bytes,
            "max_late_ms": self.max_late_ms,
            "closed": closed,
        }

    async def handle(self, command: dict[str, Any]) -> Any:
        match command["cmd"]:
            case "connect":
                return await self.connect(command["targets"], command["path"])
            case "reset":
                self.reset(command["tag"], command["count"])
                return {}
            case "send":
                return await self.send(command["rate"], command["count"], command["tag"])
            case "count":
                return {"received": self.received}
            case "stats":
                return self.stats()
            case "quit":
                for pair in self.pairs:
                    pair.caller.close()
                    pair.callee.close()
                return {}
        raise ValueError(f"unknown command {command!r}")


# --- the servers -------------------------------------------------------------------------------


def signal_env(port: int, redis_url: str | None) -> dict[str, str]:
    return service_env(port, redis_url, "SIGNAL_", drop=("STUN_", "TURN_"), SIGNAL_ECHO="false")


async def deploy(mode: str, launcher: Launcher, node_dir: Path | None) -> Deployment:
    """Start the servers of ``mode``; the launcher ends them."""
    if mode in ("memory", "redis"):
        service = [sys.executable, "-m", "signalling_service"]
        return await deploy_service(launcher, mode, "signal", service, signal_env, PATH)
    if mode == "node":
        assert node_dir is not None
        sio_path = PATH.rstrip("/")
        return await deploy_node(launcher, node_dir, "node", "signal.js", PATH, SIO_PATH=sio_path)
    raise ValueError(f"unknown mode {mode!r}")


def plans(deployment: Deployment, pairs: int, workers: int) -> list[list[dict[str, Any]]]:
    """Pair k goes to worker k % workers; with two replicas its caller is on replica k % 2 and
    its callee on the other one."""
    ports = deployment.ports
    out: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
    for k in range(pairs):
        caller, callee = ports[k % len(ports)], ports[(k + 1) % len(ports)]
        out[k % workers].append({"pair": k, "caller_port": caller, "callee_port": callee})
    return out


# --- one scenario ------------------------------------------------------------------------------


@dataclass
class Scenario:
    mode: str
    pairs: int
    rate: float
    seconds: float
    workers: int
    round: int = 1

    @property
    def label(self) -> str:
        return f"{self.mode} P={self.pairs} round {self.round}"

    @property
    def timeout(self) -> float:
        return self.seconds + DRAIN_TIMEOUT + 120


@dataclass
class Result:
    mode: str
    pairs: int
    rate: float
    seconds: float
    round: int
    load_start: str = ""
    window: Window = field(default_factory=Window)
    sent: int = 0
    sent_per_s: float = 0.0
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    #: Frames addressed to the wrong client, from the wrong sender, or never sent.
    unexpected: int = 0
    #: Frames whose candidate did not come back as it was sent.
    altered: int = 0
    refusals: int = 0
    sample: list[str] = field(default_factory=list)
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    server_us_per_message: float = 0.0
    server_rss_idle_kb: int = 0
    server_rss_loaded_kb: int = 0
    kb_per_connection: float = 0.0
    connect_seconds: float = 0.0
    drain_seconds: float = 0.0
    sender_late_max_ms: float = 0.0
    closed_during_run: int = 0
    log_problems: list[str] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, scenario: Scenario) -> Self:
        return cls(scenario.mode, scenario.pairs, scenario.rate, scenario.seconds, scenario.round)

    def progress(self) -> str:
        return (
            f"sent {self.sent}, delivered {self.received}, missing {self.missing}, "
            f"duplicates {self.duplicates}, p50 {fmt(self.p50_ms, 2)} ms, p99 "
            f"{fmt(self.p99_ms, 2)} ms, server CPU {fmt(self.window.server_cpu_pct)} %, "
            f"generator CPU {fmt(self.window.generator_cpu_pct)} %, others' CPU "
            f"{fmt(self.window.others_cpu_pct)} %" + (f", ERROR {self.error}" if self.error else "")
        )


async def run_scenario(scenario: Scenario, log_dir: Path, node_dir: Path | None) -> Result:
    result = Result.of(scenario)
    result.load_start = load_average()
    with Launcher(log_dir, f"{scenario.mode}-{scenario.pairs}-r{scenario.round}") as launcher:
        deployment = await deploy(scenario.mode, launcher, node_dir)
        workers: list[Worker] = []
        try:
            for i in range(scenario.workers):
                workers.append(await Worker.start(SCRIPT, launcher.log(f"pairs-{i}")))
            await exercise(scenario, deployment, workers, result)
        finally:
            await asyncio.gather(*(w.end() for w in workers), return_exceptions=True)
            result.log_problems = log_problems(deployment.servers)
    return result


async def exercise(
    scenario: Scenario, deployment: Deployment, workers: list[Worker], result: Result
) -> None:
    await asyncio.sleep(1.0)
    result.server_rss_idle_kb = total_rss(deployment.servers)
    planned = plans(deployment, scenario.pairs, len(workers))
    answers = await connect_workers(workers, planned, "pairs", path=deployment.path)
    result.connect_seconds = max(a["seconds"] for a in answers)
    await asyncio.sleep(SETTLE_SECONDS)
    result.server_rss_loaded_kb = total_rss(deployment.servers)
    connections = 2 * scenario.pairs
    result.kb_per_connection = (
        result.server_rss_loaded_kb - result.server_rss_idle_kb
    ) / connections

    warmup = max(1, round(scenario.rate * WARMUP_SECONDS))
    await everyone(workers, "reset", tag="w", count=warmup)
    await everyone(workers, "send", rate=scenario.rate, count=warmup, tag="w")
    await asyncio.sleep(0.5)

    count = round(scenario.rate * scenario.seconds)
    await everyone(workers, "reset", tag="m", count=count)
    meters = Meters(deployment, workers)
    sent = await everyone(workers, "send", rate=scenario.rate, count=count, tag="m")
    result.sent = sum(s["sent"] for s in sent)
    result.sent_per_s = result.sent / max(s["seconds"] for s in sent)
    drained = time.monotonic()
    deadline = drained + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        counts = await everyone(workers, "count")
        if sum(c["received"] for c in counts) >= result.sent:
            break
        await asyncio.sleep(0.02)
    result.drain_seconds = time.monotonic() - drained
    meters.stop()
    await asyncio.sleep(GRACE_SECONDS)  # a duplicate would come now
    stats = await everyone(workers, "stats")

    result.received = sum(s["received"] for s in stats)
    meters.fill(result.window, result.received, sum(s["bytes"] for s in stats))
    for name in ("missing", "duplicates", "unexpected", "altered", "refusals"):
        setattr(result, name, sum(s[name] for s in stats))
    result.sample = [line for s in stats for line in s["sample"]][:5]
    result.sender_late_max_ms = max(s["max_late_ms"] for s in stats)
    result.closed_during_run = sum(s["closed"] for s in stats)
    latencies = sorted(x for s in stats for x in s["latencies_us"])
    result.p50_ms, result.p99_ms = percentile(latencies, 0.5), percentile(latencies, 0.99)
    result.max_ms = latencies[-1] / 1000 if latencies else float("nan")
    if result.received:
        result.server_us_per_message = 1e6 * sum(meters.servers.used()) / result.received
    expected = count * scenario.pairs
    if result.sent != expected:
        result.notes.append(f"sent {result.sent} of the {expected} planned")
    if result.missing or result.duplicates:
        result.notes.append(f"{result.missing} missing, {result.duplicates} duplicates")
    if result.sent_per_s < 0.95 * scenario.rate * scenario.pairs:
        result.notes.append(f"the callers kept up only {result.sent_per_s:.0f} messages/s")


# --- the run and its report --------------------------------------------------------------------


def relay_table(results: list[Result]) -> str:
    header = [
        *("mode", "pairs (conns)", "msg/s sent", "p50 ms", "p99 ms", "max ms"),
        *("sent", "delivered", "missing", "duplicates", "wrong or altered", "refused"),
        "load at start",
    ]
    rows = []
    for r in results:
        head = [r.mode, f"{r.pairs} ({2 * r.pairs})"]
        if r.error:
            rows.append([*head, f"failed: {r.error}"])
            continue
        rows.append(
            [
                *(*head, fmt(r.sent_per_s, 0), fmt(r.p50_ms, 2), fmt(r.p99_ms, 2)),
                *(fmt(r.max_ms), str(r.sent), str(r.received), str(r.missing)),
                *(str(r.duplicates), str(r.unexpected + r.altered), str(r.refusals)),
                r.load_start,
            ]
        )
    return table(header, rows)


def cost_table(results: list[Result]) -> str:
    header = [
        *("mode", "pairs", "server CPU %", "server µs/message", "server run-queue wait %"),
        *("Redis CPU %", "KB/conn", "generator CPU % (busiest process)", "others' CPU %"),
    ]
    rows = []
    for r in results:
        if r.error:
            continue
        w = r.window
        rows.append(
            [
                *(r.mode, str(r.pairs), fmt(w.server_cpu_pct), fmt(r.server_us_per_message, 0)),
                *(fmt(w.server_wait_pct), fmt(w.redis_cpu_pct), fmt(r.kb_per_connection)),
                f"{fmt(w.generator_cpu_pct)} ({fmt(w.generator_busiest_pct)})",
                fmt(w.others_cpu_pct),
            ]
        )
    return table(header, rows)


def against_node(results: list[Result]) -> list[dict[str, Any]]:
    """Each mode against ``node`` at the same P and round; the median over rounds."""
    return node_ratios(
        results,
        "pairs",
        lambda r: {
            "p50": r.p50_ms,
            "p99": r.p99_ms,
            "cpu_per_message": r.server_us_per_message,
            "memory": r.kb_per_connection,
        },
    )


def ratios_table(ratios: list[dict[str, Any]]) -> str:
    header = ["mode", "pairs", "p50 / Node", "p99 / Node", "CPU per message / Node"]
    header.append("KB per conn / Node")
    rows = [
        [r["mode"], str(r["pairs"])]
        + [fmt(r.get(k), 2) + "x" for k in ("p50", "p99", "cpu_per_message", "memory")]
        for r in ratios
    ]
    return table(header, rows)


def scenarios(args: argparse.Namespace) -> Iterator[Scenario]:
    """Interleaved: for each round and P, every mode in turn."""
    for rnd, pairs, mode in itertools.product(range(1, args.rounds + 1), args.pairs, args.modes):
        yield Scenario(mode, pairs, args.rate, args.seconds, args.workers, rnd)


async def run_scenarios(args: argparse.Namespace, log_dir: Path) -> list[Result]:
    node_dir = prepare_node(args)
    return await run_all(scenarios(args), lambda s: run_scenario(s, log_dir, node_dir), Result.of)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--pairs", default="50,200", help="P, e.g. 50,200")
    parser.add_argument("--rate", type=float, default=20.0, help="msg/s per caller")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    scenario_options(parser, ALL_MODES, "client")
    args = parser.parse_args(argv)
    try:
        args.pairs = [int(part) for part in args.pairs.split(",") if part.strip()]
    except ValueError:
        parser.error("--pairs: numbers separated by commas, e.g. 50,200")
    if not args.pairs or min(args.pairs) < 1:
        parser.error("--pairs: give at least one P, each at least 1")
    if not (args.rate > 0 and args.seconds > 0):
        parser.error("--rate and --seconds are positive")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:  # a pair process, driven by the orchestrator through stdin and stdout
        serve_worker(PairPool)
        return
    results, path, logs = recorded_run(
        "signal", args, run_scenarios, lambda rs: {"node_ratios": against_node(rs)}
    )
    ratios = against_node(results)
    print(f"Relay (one peerIce a caller every {1000 / args.rate:g} ms, to its callee):\n")
    print(relay_table(results))
    print("\nCost (CPU % of one core over the window, to the last delivery):\n")
    print(cost_table(results))
    print("\nAgainst the course's signal.js (median over rounds):\n")
    print(ratios_table(ratios))
    print()
    for r in results:
        for line in [*r.notes, *r.sample, *r.log_problems[:5]]:
            print(f"- {r.mode} P={r.pairs} round {r.round}: {line}")
    print(f"\nraw figures: {path.relative_to(ROOT)}; server logs: {logs.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
