"""The collector polling 200 agent summaries, one round at a time, beside a minimal aiohttp loop.

bench/summaries.py serves the agents (fleet core); this process (client core) runs the collector's own
round - `CollectorService.poll_once`: fetch every summary, add each site's shards up, evaluate the alert
rules, hand changes to the notifier - and, in the same run and interleaved, a bare loop that only fetches
the same URLs with one aiohttp session and decodes the JSON. Median of the rounds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import BenchError, Cores, Proc, free_port, pin
from bench.summaries import MINERS_PER_AGENT, agent_url, site_of
from megawatch.collector.config import load_collector_config
from megawatch.collector.service import CollectorService

AGENTS = 200
SITES = 20
BASE_ADDRESS = "127.70.0.1"
TARGET_S = 1.0


def _sites_yaml(agents: int, sites: int, port: int) -> str:
    lines = [f"fleet: {{name: bench-fleet, allocation_mw: {sites * 100}}}", "sites:"]
    for s in range(sites):
        urls = ", ".join(agent_url(BASE_ADDRESS, i, port) for i in range(agents) if i % sites == s)
        lines += [f"  - id: {site_of(s, sites)}", "    allocation_mw: 100", f"    agents: [{urls}]"]
    lines += ["listen: {address: 127.0.0.1, port: 0}", "poll: {interval_s: 15, timeout_s: 5}"]
    return "\n".join(lines) + "\n"


async def _rounds(config_path: Path, urls: list[str], rounds: int, expect_sites: int) -> dict[str, Any]:
    config = load_collector_config(config_path)
    ours: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    async with aiohttp.ClientSession() as session:
        service = CollectorService(config, session, "http://127.0.0.1/")

        async def bare_round() -> None:
            async def one(url: str) -> None:
                async with session.get(url + "/api/v1/summary") as resp:
                    json.loads(await resp.read())

            await asyncio.gather(*(one(u) for u in urls))

        for _ in range(rounds + 1):  # the first of each is a warm-up (connections, imports)
            for samples, step in ((ours, service.poll_once), (bare, bare_round)):
                cpu0, t0 = time.process_time(), time.perf_counter()
                await asyncio.wait_for(step(), timeout=30)
                samples.append((time.perf_counter() - t0, time.process_time() - cpu0))
        up = sum(1 for obs in service.observations.values() if obs.up)
        fleet = service.fleet
    if up != len(urls) or fleet is None or len(fleet.sites) != expect_sites:
        raise BenchError(f"the collector read {up} of {len(urls)} agents")
    return {
        "collector": _summarise(ours[1:]), "bare_aiohttp": _summarise(bare[1:]),
        "agents_up": up, "fleet_miners_total": fleet.draw.miners_total,
        "fleet_power_w": fleet.draw.miner_power_w,
    }


def _summarise(samples: list[tuple[float, float]]) -> dict[str, Any]:
    walls = [w for w, _ in samples]
    return {"round_s": walls, "cpu_s": [c for _, c in samples], "median_round_s": statistics.median(walls),
            "best_round_s": min(walls), "median_cpu_s": statistics.median(c for _, c in samples)}


def measure(logs: Path, rounds: int = 5, agents: int = AGENTS, sites: int = SITES,
            say: Any = print) -> dict[str, Any]:
    """Start the summaries server, run the rounds here, stop the server; raises BenchError on failure."""
    cores = Cores.pick()
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_path = logs / "sites.yaml"
    config_path.write_text(_sites_yaml(agents, sites, port))
    urls = [agent_url(BASE_ADDRESS, i, port) for i in range(agents)]
    say(f"[collector] {agents} agent summaries of {sites} site(s) on {BASE_ADDRESS}.. port {port}, {rounds} rounds")
    server = Proc("summaries", [sys.executable, "-m", "bench.summaries", "--agents", str(agents), "--sites", str(sites),
                                "--base-address", BASE_ADDRESS, "--port", str(port), "--scratch", str(logs / "agents")],
                  logs / "summaries.log", cores.fleet, pipe_stdout=True)
    try:
        line = server.read_line(60)  # once every listener is bound
        if line != f"ready {agents}":
            raise BenchError(f"summaries server: {line!r}; {server.log_tail()}")
        pin(0, cores.client)
        try:
            result = asyncio.run(_rounds(config_path, urls, rounds, sites))
        finally:
            pin(0, cores.fleet)
    finally:
        server.stop()
    result.update({"agents": agents, "sites": sites, "miners_per_agent": MINERS_PER_AGENT, "rounds": rounds,
                   "cores": cores.describe()})
    return result


def judge(result: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    from bench.figures import Target, _figure

    agents = (result or {}).get("agents", AGENTS)
    target = Target("collector_round_s", f"collector polling {agents} agent summaries: one round (fetch, add up, "
                    "rules), median", "<=", TARGET_S, "s")
    if result is None:
        return _figure(target, None, reason=error or "the phase did not run")
    ours, bare = result["collector"], result["bare_aiohttp"]
    return _figure(target, ours["median_round_s"],
                   side_by_side={"bare aiohttp loop, same URLs (s)": bare["median_round_s"],
                                 "collector CPU per round (s)": ours["median_cpu_s"],
                                 "bare loop CPU per round (s)": bare["median_cpu_s"]},
                   detail={k: result[k] for k in ("agents_up", "fleet_miners_total", "fleet_power_w", "rounds")})
