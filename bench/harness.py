"""Run the bench for one fleet size: simulator, the peers side by side, then the real agent under Prometheus.

Phases, each bounded in time (a phase that cannot finish is recorded with its reason and the rest go on):
1. The simulator (`megawatch simulate`) on the fleet core.
2. Peers on the client core, one process each and only one busy at a time: the megawatch poller (as the
   agent runs it: uvloop), the raw loop and pyasic on the default loop and on uvloop. The megawatch peer
   records the plan the others replay. Each peer runs one warm-up cycle, then the measured cycles go
   round-robin (peer A, B, C, ... then again), so slow drift of the machine hits every peer alike.
3. /metrics render of the megawatch peer's latest snapshot.
4. The agent (`megawatch agent`) on the client core at its real interval, scraped by a real Prometheus
   (fleet core) every interval for a bounded number of cycles: overruns, peak RSS, series, scrapes.
5. One agent beside two shard agents over the same fleet, the simulator's clock frozen: same totals
   (bench/shards.py).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import fleets
from bench.fleets import AgentSpec, FleetSpec
from bench.procs import (
    BenchError,
    Cores,
    Proc,
    children,
    cpu_seconds,
    free_port,
    http_get,
    http_json,
    megawatch_command,
    peak_rss_kb,
    pin,
    wait_for,
)
from bench.series import count_series, sample_value
from bench.shards import shard_phase

PROMETHEUS = "/usr/bin/prometheus"


@dataclass(frozen=True, slots=True)
class PeerSpec:
    key: str  # stable id in the JSON, e.g. "raw-uvloop"
    kind: str  # bench/peer.py --kind
    loop: str
    label: str  # how the table names it


PEERS: tuple[PeerSpec, ...] = (
    PeerSpec("megawatch-uvloop", "megawatch", "uvloop", "megawatch poller (as the agent runs it)"),
    PeerSpec("raw-default", "raw", "default", "raw asyncio loop (bench/raw_loop.py)"),
    PeerSpec("raw-uvloop", "raw", "uvloop", "raw asyncio loop (bench/raw_loop.py)"),
    PeerSpec("pyasic-default", "pyasic", "default", "pyasic CGMinerRPCAPI.send_command (as its users run it)"),
    PeerSpec("pyasic-uvloop", "pyasic", "uvloop", "pyasic CGMinerRPCAPI.send_command"),
)


@dataclass(slots=True)
class Options:
    fleet: FleetSpec
    cycles: int = 3  # measured cycles per peer (the median is the figure)
    agent_cycles: int = 3  # agent cycles observed under Prometheus after its first (detection) cycle
    agent: AgentSpec = field(default_factory=AgentSpec)
    pyasic: bool = True
    prometheus: bool = True
    shards: bool = True  # one agent vs two shard agents on the same fleet (bench/shards.py)
    logs: Path | None = None  # where process logs and generated configs go; a temp dir if None


class Budget:
    """The whole bench's time bound: each wait is capped by what is left."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def cap(self, seconds: float) -> float:
        left = self.left()
        if left <= 1:
            raise BenchError("time budget spent")
        return min(seconds, left)


def run(options: Options, budget: Budget, say: Any = print) -> dict[str, Any]:
    """Run every phase for one fleet size; returns the raw results (figures are judged in bench/figures.py)."""
    logs = options.logs or Path(tempfile.mkdtemp(prefix="megawatch-bench-"))
    logs.mkdir(parents=True, exist_ok=True)
    cores = Cores.pick()
    if cores.fleet is not None:
        os.sched_setaffinity(0, {cores.fleet})  # this harness stays off the client's core
    fleet = options.fleet
    result: dict[str, Any] = {
        "miners": fleet.miners, "fleet": asdict(fleet), "agent_settings": asdict(options.agent),
        "cores": cores.describe(), "logs": str(logs), "peers": {}, "skipped": {}, "phases_s": {},
    }
    sim_config = fleets.write_sim_config(fleet, logs / "sim.yaml")
    agent_config = fleets.write_agent_config(fleet, options.agent, logs / "agent.yaml")
    result["mix"] = [{"count": c, "model": m, "dialect": d} for c, m, d in fleets.mix(fleet.miners)]
    started: list[Proc] = []
    try:
        t0 = time.monotonic()
        say(f"[{fleet.miners} miners] starting the simulator ({cores.describe()})")
        sim, control_url = _start_simulator(sim_config, logs, cores, budget, fleet.miners, started)
        result["phases_s"]["simulator_start"] = time.monotonic() - t0
        _peers_phase(options, budget, cores, agent_config, logs, sim, result, started, say)
        _agent_phase(options, budget, cores, agent_config, logs, result, started, say)
        if not options.shards:
            result["skipped"]["shards"] = "left out (--no-shards)"
        else:
            t0 = time.monotonic()
            result["shards"] = shard_phase(fleet, options.agent, control_url, cores, logs, budget, started, say)
            result["phases_s"]["shards"] = time.monotonic() - t0
    except BenchError as exc:
        result["error"] = str(exc)
        say(f"bench stopped early: {exc}")
    finally:
        for proc in reversed(started):
            proc.stop()
    return result


def _start_simulator(config: Path, logs: Path, cores: Cores, budget: Budget, miners: int,
                     started: list[Proc]) -> tuple[Proc, str]:
    """The running simulator and its control endpoint's URL."""
    sim = Proc("simulator", [*megawatch_command(), "simulate", "--config", str(config), "--log-format", "json"],
               logs / "simulator.log", cores.fleet, pipe_stdout=True)
    started.append(sim)
    deadline = time.monotonic() + budget.cap(180)
    lines = []
    while True:
        line = sim.read_line(max(1.0, deadline - time.monotonic()))
        lines.append(line)
        if line.startswith("control endpoint:"):
            break
    listening = next((ln for ln in lines if "miners listening" in ln), "")
    if not listening.startswith(f"{miners} miners listening"):
        raise BenchError(f"simulator did not bind every miner: {' | '.join(lines)}")
    for child in children(sim.pid):  # worker processes past 10,000 miners
        pin(child, cores.fleet)
    # "control endpoint: http://127.0.0.1:PORT/ (ground truth: ...)"
    return sim, lines[-1].split()[2].rstrip("/")


def _peers_phase(options: Options, budget: Budget, cores: Cores, agent_config: Path, logs: Path, sim: Proc,
                 result: dict[str, Any], started: list[Proc], say: Any) -> None:
    t0 = time.monotonic()
    try:
        peers = _start_peers(options, budget, cores, agent_config, logs, result, started, say)
        _rounds(options, budget, peers, sim, result, say)
        for spec, proc in peers:
            if spec.kind == "megawatch":
                say("  rendering /metrics from the poller's latest snapshot")
                result["render"] = proc.ask("render", budget.cap(120))
            result["peers"][spec.key]["process"] = proc.ask("stats", budget.cap(30))
            proc.stop()
    finally:  # what was measured before a failure still counts
        for peer in result["peers"].values():
            _summarise_peer(peer, options.fleet.miners)
        result["phases_s"]["peers"] = time.monotonic() - t0


def _start_peers(options: Options, budget: Budget, cores: Cores, agent_config: Path, logs: Path,
                 result: dict[str, Any], started: list[Proc], say: Any) -> list[tuple[PeerSpec, Proc]]:
    plan = logs / "plan.json"
    peers: list[tuple[PeerSpec, Proc]] = []
    for spec in PEERS:
        if spec.kind == "pyasic" and not options.pyasic:
            result["skipped"][spec.key] = "pyasic left out (--no-pyasic)"
            continue
        say(f"  setting up {spec.key}" + (": detect, record the plan, warm up" if spec.kind == "megawatch" else ""))
        proc = Proc(spec.key, [sys.executable, "-m", "bench.peer", "--kind", spec.kind, "--loop", spec.loop,
                               "--agent-config", str(agent_config), "--plan", str(plan)],
                    logs / f"peer-{spec.key}.log", cores.client, pipe_stdin=True, pipe_stdout=True)
        started.append(proc)
        answer = json.loads(proc.read_line(budget.cap(300)))  # megawatch: two cycles (detect, record)
        if "error" in answer:
            result["skipped"][spec.key] = answer["error"]
            say(f"  {spec.key} SKIPPED: {answer['error']}")
            proc.stop()
            continue
        peer: dict[str, Any] = {"kind": spec.kind, "loop": spec.loop, "label": spec.label, "setup": answer["setup"],
                                "cycles": []}
        result["peers"][spec.key] = peer
        if spec.kind == "megawatch":
            # Its first cycle with dialect hints; the plain clients have no state to warm.
            peer["warmup"] = proc.ask("cycle", budget.cap(300))
        peers.append((spec, proc))
    return peers


def _rounds(options: Options, budget: Budget, peers: list[tuple[PeerSpec, Proc]], sim: Proc,
            result: dict[str, Any], say: Any) -> None:
    """Measured cycles, round-robin over the peers; fewer rounds when the time left must go to the agent."""
    reserve = _agent_phase_estimate(options)
    last_round_s = 0.0
    for round_ in range(options.cycles):
        if round_ > 0 and budget.left() < last_round_s * 1.3 + reserve:
            result["rounds_cut"] = (f"{round_} of {options.cycles} rounds measured: the time budget keeps "
                                    f"{reserve:.0f} s for the agent phase")
            say(f"  {result['rounds_cut']}")
            return
        r0 = time.monotonic()
        for spec, proc in peers:
            cpu0, w0 = cpu_seconds(sim.pid), time.monotonic()
            cycle = proc.ask("cycle", budget.cap(300))
            cycle["simulator_cpu_s"] = cpu_seconds(sim.pid) - cpu0
            cycle["simulator_cpu_share"] = cycle["simulator_cpu_s"] / max(1e-9, time.monotonic() - w0)
            result["peers"][spec.key]["cycles"].append(cycle)
            say(f"  round {round_ + 1}/{options.cycles} {spec.key:16} {cycle['duration_s']:7.2f} s, "
                f"{cycle['miners_ok']:,}/{cycle['miners']:,} miners, client CPU {cycle['cpu_s']:.2f} s, "
                f"simulator CPU {cycle['simulator_cpu_share']:.0%}")
        last_round_s = time.monotonic() - r0


def _agent_phase_estimate(options: Options) -> float:
    # First cycle detects (slowest), then `agent_cycles` intervals, plus start-up and Prometheus.
    return options.agent.interval_s * (options.agent_cycles + 3) + 30


def _summarise_peer(peer: dict[str, Any], miners: int) -> None:
    cycles = peer["cycles"]
    if not cycles:
        return
    median = statistics.median(c["duration_s"] for c in cycles)
    requests = peer["setup"]["requests_per_cycle"]
    cpu = statistics.median(c["cpu_s"] for c in cycles)
    peer["median_cycle_s"] = median
    # Other work on a shared machine only ever adds time: the best cycle is the least disturbed one.
    peer["best_cycle_s"] = min(c["duration_s"] for c in cycles)
    peer["miners_per_s"] = miners / median
    peer["requests_per_s"] = requests / median
    peer["median_cpu_s"] = cpu
    peer["miners_per_cpu_s"] = miners / cpu if cpu else None
    # Below ~90% the peer waited for the CPU (a busy machine) or for the fleet, not for its own work.
    peer["client_cpu_share"] = statistics.median(c["cpu_s"] / c["duration_s"] for c in cycles)
    peer["cpu_ms_per_1000_requests"] = 1e6 * cpu / requests if requests else None
    peer["min_miners_ok"] = min(c["miners_ok"] for c in cycles)
    peer["simulator_cpu_share"] = statistics.median(c["simulator_cpu_share"] for c in cycles)
    # The fleet's own cost of one cycle: no client can finish a cycle faster than this on one fleet core.
    peer["simulator_cpu_s"] = statistics.median(c["simulator_cpu_s"] for c in cycles)


def _agent_phase(options: Options, budget: Budget, cores: Cores, agent_config: Path, logs: Path,
                 result: dict[str, Any], started: list[Proc], say: Any) -> None:
    t0 = time.monotonic()
    interval = options.agent.interval_s
    port = free_port()
    say(f"  agent: {options.agent_cycles} cycles at its {interval:g} s interval after its first cycle")
    agent = Proc("agent", [*megawatch_command(), "agent", "--config", str(agent_config), "--listen", f":{port}"],
                 logs / "agent.log", cores.client)
    started.append(agent)
    base = f"http://127.0.0.1:{port}"
    wait_for("agent /healthz", lambda: True if http_get(base + "/healthz", 2)[0] == 200 else None,
             budget.cap(60), agent)
    scraper: _Scraper | Prometheus
    prometheus_why = _prometheus_unavailable(options)
    if prometheus_why is None:
        scraper = Prometheus(port, interval, logs, cores)
        started.append(scraper.proc)
        scraper.wait_ready(budget)
    else:
        result["skipped"]["prometheus"] = prometheus_why
        scraper = _Scraper(base + "/metrics", interval)
    agent_run: dict[str, Any] = {"scraper": scraper.kind, "interval_s": interval, "cycles": {}}
    result["agent"] = agent_run
    try:
        durations: dict[int, float] = agent_run["cycles"]
        first = wait_for("the agent's first cycle", lambda: _cycle_seen(base, durations, 1),
                         budget.cap(interval * 2 + 120), agent)
        want = first + options.agent_cycles
        wait_for(f"agent cycle {want}", lambda: _cycle_seen(base, durations, want),
                 budget.cap(interval * (options.agent_cycles + 2) + 60), agent, every_s=0.5)
        status, body, seconds = http_get(base + "/metrics", 30)
        text = body.decode() if status == 200 else ""
        gz_status, gz_body, gz_seconds = http_get(base + "/metrics", 30, {"Accept-Encoding": "gzip"})
        overruns = sample_value(text, "megawatch_agent_cycle_overruns_total")
        first_overran = durations[1] > interval if 1 in durations else None
        agent_run.update({
            # Steady state: the first cycle also detects every dialect and is reported on its own.
            "overruns": None if overruns is None or first_overran is None else overruns - first_overran,
            "overruns_total": overruns,
            "first_cycle_s": durations.get(1),
            "first_cycle_overran": first_overran,
            "cycles_total": sample_value(text, "megawatch_agent_cycles_total"),
            "peak_rss_kb": peak_rss_kb(agent.pid),
            "metrics_plain": {"status": status, "bytes": len(body), "seconds": seconds},
            "metrics_gzip": {"status": gz_status, "bytes": len(gz_body), "seconds": gz_seconds},
            "series": count_series(text, options.fleet.miners),
            "scrapes": scraper.results(),
        })
    finally:
        scraper.stop()
    agent_run["exit_code"] = agent.stop()
    result["phases_s"]["agent"] = time.monotonic() - t0


def _cycle_seen(base: str, durations: dict[int, float], cycle: int) -> int | None:
    summary = http_json(base + "/api/v1/summary", 5)
    if summary is None:
        return None
    number = summary["cycle"]["number"]
    if number and summary["cycle"]["duration_s"] is not None:
        durations[number] = summary["cycle"]["duration_s"]
    return number if number >= cycle else None


def _prometheus_unavailable(options: Options) -> str | None:
    if not options.prometheus:
        return "Prometheus left out (--no-prometheus); the bench scraped /metrics itself at the same interval"
    if shutil.which(PROMETHEUS) is None:
        return f"{PROMETHEUS} not installed; the bench scraped /metrics itself at the same interval"
    return None


class Prometheus:
    """A real Prometheus in a temp dir on loopback, scraping the agent every `interval_s`."""

    kind = "prometheus"
    JOB = "megawatch-agent"

    def __init__(self, agent_port: int, interval_s: float, logs: Path, cores: Cores) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._data = Path(tempfile.mkdtemp(prefix="prometheus-", dir=logs))
        config = logs / "prometheus.yml"
        timeout = min(10.0, interval_s)
        config.write_text(
            f"global: {{scrape_interval: {interval_s:g}s, scrape_timeout: {timeout:g}s}}\n"
            f"scrape_configs:\n  - job_name: {self.JOB}\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{agent_port}']}}]\n"
        )
        self.proc = Proc("prometheus", [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self._data}",
                                        f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                         logs / "prometheus.log", cores.fleet)

    def wait_ready(self, budget: Budget) -> None:
        wait_for("Prometheus /-/ready", lambda: True if http_get(self.url + "/-/ready", 2)[0] == 200 else None,
                 budget.cap(60), self.proc)

    def results(self) -> dict[str, Any]:
        """Every scrape Prometheus made of the agent: up, duration, samples."""
        def series(metric: str) -> list[float]:
            query = f'{metric}{{job="{self.JOB}"}}[1h]'
            answer = http_json(f"{self.url}/api/v1/query?query={_quote(query)}", 10)
            if not answer or answer.get("status") != "success" or not answer["data"]["result"]:
                return []
            return [float(v) for _, v in answer["data"]["result"][0]["values"]]

        up = series("up")
        durations = series("scrape_duration_seconds")
        return {"scrapes": len(up), "failed": sum(1 for v in up if v != 1.0),
                "duration_s": durations, "max_duration_s": max(durations, default=None),
                "samples": series("scrape_samples_scraped")}  # per scrape, in the order of duration_s

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self._data, ignore_errors=True)


class _Scraper:
    """Without Prometheus: GET /metrics (gzip, as Prometheus asks) every interval from a thread."""

    kind = "bench-http"

    def __init__(self, url: str, interval_s: float) -> None:
        self._url = url
        self._interval = interval_s
        self._stop = threading.Event()
        self._scrapes: list[tuple[int, float]] = []
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            status, _, seconds = http_get(self._url, min(10.0, self._interval), {"Accept-Encoding": "gzip"})
            self._scrapes.append((status, seconds))
            self._stop.wait(self._interval)

    def results(self) -> dict[str, Any]:
        durations = [s for _, s in self._scrapes]
        return {"scrapes": len(self._scrapes), "failed": sum(1 for st, _ in self._scrapes if st != 200),
                "duration_s": durations, "max_duration_s": max(durations, default=None), "samples": []}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
