"""`python -m bench.summaries`: many agents' `/api/v1/summary` in one process, for the collector's round.

Each listener (one loopback address per agent, one port) answers with agent/web.py's own `make_summary`
over a FleetSnapshot whose totals are a 2,500-miner shard's, so the collector reads exactly what real
agents send. One process, because 200 real agents would need 200 fleets; the collector under test cannot
tell the difference. Prints `ready <n>` on stdout once every listener is bound, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
import time
from pathlib import Path

from aiohttp import web

from megawatch.agent.config import AgentConfig, load_agent_config
from megawatch.agent.state import AgentCounters, FleetSnapshot, SiteTotals
from megawatch.agent.web import make_summary

MINERS_PER_AGENT = 2_500
WATTS_PER_MINER = 3_250.0
HASHES_PER_MINER = 100e12


def agent_url(base: str, index: int, port: int) -> str:
    return f"http://{ipaddress.IPv4Address(base) + index}:{port}"


def site_of(index: int, sites: int) -> str:
    return f"plant-{index % sites:02d}"


def _snapshot(site: str, cycle: int, now: float) -> FleetSnapshot:
    up, down, stale = MINERS_PER_AGENT - 40, 25, 15
    totals = SiteTotals(configured=MINERS_PER_AGENT, up=up, stale=stale, down=down,
                        hashrate_hs=(up + stale) * HASHES_PER_MINER,
                        power_firmware_w=(up + stale) * WATTS_PER_MINER * 0.6,
                        power_estimate_w=(up + stale) * WATTS_PER_MINER * 0.4, power_unknown_miners=down)
    return FleetSnapshot(site=site, cycle=cycle, started_s=now - 16.5, finished_s=now - 15.0, duration_s=1.5,
                         miners=(), totals=totals, counters=AgentCounters(cycles=cycle))


async def serve(agents: int, sites: int, base: str, port: int, scratch: Path) -> None:
    runners = []
    for index in range(agents):
        site = site_of(index, sites)
        path = scratch / f"agent-{index}.yaml"
        path.write_text(f"site: {site}\nagent_id: {site}-shard{index}\nminers:\n  - address: 127.0.0.1\n")
        config = load_agent_config(path)
        snapshot = _snapshot(site, 40, time.time())

        async def summary(_: web.Request, config: AgentConfig = config,
                          snapshot: FleetSnapshot = snapshot) -> web.Response:
            return web.json_response(make_summary(config, snapshot, time.time()))

        app = web.Application()
        app.router.add_get("/api/v1/summary", summary)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, str(ipaddress.IPv4Address(base) + index), port).start()
        runners.append(runner)
    print(f"ready {len(runners)}", flush=True)
    try:
        await asyncio.Event().wait()  # until the harness kills us
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.summaries", description=__doc__)
    p.add_argument("--agents", type=int, default=200)
    p.add_argument("--sites", type=int, default=20)
    p.add_argument("--base-address", default="127.70.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--scratch", type=Path, required=True, help="where the agents' generated configs go")
    args = p.parse_args(argv)
    args.scratch.mkdir(parents=True, exist_ok=True)
    import uvloop

    uvloop.run(serve(args.agents, args.sites, args.base_address, args.port, args.scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
