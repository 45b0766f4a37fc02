"""Curtailment bench: how fast and how precisely the loop brings an over-allocation site back under.

    python -m bench.curtail                      # every mix at 105 %, 110 % and 125 % of the allocation
    python -m bench.curtail --per-group 10 --over 1.1

Each run starts, in this process, a simulated site (clock frozen, so the only change is what the commands do),
an agent with control enabled and basic auth, and a collector in mode `auto`; then steps cycles (one agent
poll, one collector cycle) until the simulator's truth is under allocation x (1 - margin), at most `--cycles`.
Printed beside the ideal: one cycle, and a shed of the need plus at most one miner.

- reaction: cycles from the first cycle that sees the site over to the first whose truth is under;
- need: what the first plan said was over the limit (judged figure - limit), kW;
- shed (figure): what the commands were planned to shed; shed (truth): the simulator's drop;
- excess: shed (figure) - need; the ideal is under one miner's draw, shown as "largest";
- truth/alloc: the simulator's draw over the allocation at the end (the goal: at most 1 - margin = 0.97).

The loop steers by the judged figure. Where miners' draw is estimated from J/TH, the figure can sit a little
under the truth (the estimate's error), so the truth may end a little above allocation x (1 - margin), inside
the margin: "no" in the cycles column with truth/alloc under 1 is that, not a loop that failed to act.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
from aiohttp import web
from prometheus_client import CollectorRegistry

from megawatch.agent.config import load_agent_config
from megawatch.agent.modeltable import load_model_table
from megawatch.agent.poller import Poller
from megawatch.agent.state import FleetState
from megawatch.agent.web import make_app as agent_app
from megawatch.collector.config import load_collector_config
from megawatch.collector.service import CollectorService
from megawatch.collector.web import make_app as collector_app
from megawatch.common.logs import configure_logging
from megawatch.common.webconfig import protect
from megawatch.simulator.config import ControlConfig, FleetConfig, GroupConfig, SiteConfig
from megawatch.simulator.fleet import Fleet, initial_faults, plan_fleet

USER, PASSWORD = "operator", "bench-only"
MIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "measured": (("bosminer", "Antminer S19j Pro"), ("luxos", "Antminer S19 XP"), ("avalon", "Avalon A1366")),
    "mixed": (("cgminer", "Antminer S9"), ("bosminer", "Antminer S19j Pro"), ("luxos", "Antminer S19 XP"),
              ("avalon", "Avalon A1366"), ("bmminer", "Antminer S19 Pro")),
    "estimated": (("cgminer", "Antminer S19"), ("bfgminer", "Antminer S9"), ("bosminer", "Antminer S21")),
}


def write_agent_files(tmp: Path, miners: list[tuple[str, int]]) -> Path:
    """Agent config with control enabled behind basic auth, and the password file the collector reads."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    (tmp / "web.yaml").write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    (tmp / "agent.pass").write_text(PASSWORD + "\n")
    entries = "".join(f"  - {{address: {host}, port: {port}}}\n" for host, port in miners)
    path = tmp / "agent.yaml"
    path.write_text(f"site: site-a\ncontrol_enabled: true\nweb_config_file: web.yaml\n"
                    f"poll: {{interval_s: 5, request_timeout_s: 2, connect_timeout_s: 1, jitter_s: 0}}\n"
                    f"miners:\n{entries}")
    return path


def write_sites(tmp: Path, agent_url: str, allocation_w: float, curtailment: dict[str, Any]) -> Path:
    body = "".join(f"      {k}: {v}\n" for k, v in curtailment.items() if k != "schedule")
    path = tmp / "sites.yaml"
    path.write_text(
        f"fleet: {{name: bench, allocation_mw: 10}}\nstate_file: state.json\nweb_config_file: web.yaml\n"
        f"agent_client: {{username: {USER}, password_file: agent.pass}}\npoll: {{interval_s: 5, timeout_s: 5}}\n"
        f"sites:\n  - id: site-a\n    allocation_mw: {allocation_w / 1e6!r}\n    agents: [{agent_url}]\n"
        f"{curtailment.get('schedule', '')}    curtailment:\n{body}")
    return path


def make_collector(path: Path, session: aiohttp.ClientSession) -> tuple[CollectorService, web.Application]:
    service = CollectorService(load_collector_config(path), session, "http://127.0.0.1/")
    app = collector_app(service)
    protect(app, service.config.web)
    return service, app


@dataclass
class Result:
    mix: str
    miners: int
    over: float
    cycles: int | None
    need_w: float
    planned_w: float
    truth_shed_w: float
    largest_w: float
    after_ratio: float  # the simulator's truth / allocation at the end


async def run(mix: str, per_group: int, over: float, max_cycles: int, octet: int) -> Result:
    table = load_model_table()
    groups = tuple(GroupConfig(per_group, table.lookup(model), dialect, True)  # type: ignore[arg-type]
                   for dialect, model in MIXES[mix])
    config = FleetConfig(seed=7, tick_s=5.0, control=ControlConfig("127.0.0.1", 0), sites=(
        SiteConfig(id="site-a", address=f"127.0.{octet}.1", port=0, port_base=None, ambient_c=25.0, groups=groups),))
    plan = plan_fleet(config)
    fleet = Fleet(config, plan, faults=initial_faults(config, plan))
    fleet.clock.freeze(at=0)
    await fleet.start()
    runner = None
    try:
        with tempfile.TemporaryDirectory(prefix="curtail-bench-") as name:
            tmp = Path(name)
            agent_config = load_agent_config(write_agent_files(
                tmp, [(m.identity.host, m.identity.port) for m in fleet.miners]))
            state = FleetState(agent_config.site, len(agent_config.miners))
            poller = Poller(agent_config, state)
            app = agent_app(agent_config, state, CollectorRegistry())
            protect(app, agent_config.web)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            truth = fleet.site_sums()["site-a"]["power_w"]
            allocation = truth / over
            path = write_sites(tmp, f"http://127.0.0.1:{port}", allocation, {
                "mode": "auto", "margin_ratio": 0.03, "max_step_ratio": 0.5, "hold_s": 3600})
            async with aiohttp.ClientSession() as session:
                service, _ = make_collector(path, session)
                limit = allocation * 0.97
                cycles = None
                for cycle in range(1, max_cycles + 1):
                    await poller.poll_once()
                    await service.poll_once()
                    if fleet.site_sums()["site-a"]["power_w"] <= limit:
                        cycles = cycle
                        break
            records = [json.loads(line) for line in (tmp / "curtailment-audit.jsonl").read_text().splitlines()]
    finally:
        if runner is not None:
            await runner.cleanup()
        await fleet.stop()
    first = next(r for r in records if r["event"] == "plan")
    sent = [r for r in records if r["event"] == "curtailed"]
    return Result(mix, len(fleet.miners), over, cycles, need_w=first["figure_w"] - first["limit_w"],
                  planned_w=sum(r["power_w"] for r in sent),
                  truth_shed_w=truth - fleet.site_sums()["site-a"]["power_w"],
                  largest_w=max((r["power_w"] for r in sent), default=0.0),
                  after_ratio=fleet.site_sums()["site-a"]["power_w"] / allocation)


def table(results: list[Result]) -> str:
    head = (f"{'mix':<10} {'miners':>6} {'over':>5} {'cycles':>6} {'ideal':>5} {'need kW':>8} "
            f"{'shed kW (figure)':>16} {'shed kW (truth)':>15} {'excess kW':>9} {'largest kW':>10} {'truth/alloc':>11}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.mix:<10} {r.miners:>6} {r.over:>5.2f} {r.cycles if r.cycles else 'no':>6} {1:>5} "
                     f"{r.need_w / 1e3:>8.1f} {r.planned_w / 1e3:>16.1f} {r.truth_shed_w / 1e3:>15.1f} "
                     f"{(r.planned_w - r.need_w) / 1e3:>9.1f} {r.largest_w / 1e3:>10.1f} {r.after_ratio:>11.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.curtail", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-group", type=int, default=8, help="miners of each model in a mix (default 8)")
    p.add_argument("--over", type=float, action="append", help="site draw / allocation (default 1.05, 1.1, 1.25)")
    p.add_argument("--mix", choices=sorted(MIXES), action="append", help="fleet mixes (default all)")
    p.add_argument("--cycles", type=int, default=10, help="give up after this many cycles (default 10)")
    args = p.parse_args(argv)
    if not 1 <= args.per_group <= 200 or not 1 <= args.cycles <= 100:
        p.error("--per-group must be 1..200 and --cycles 1..100")

    async def all_runs() -> list[Result]:
        results = []
        runs = [(m, o) for m in (args.mix or list(MIXES)) for o in (args.over or [1.05, 1.1, 1.25])]
        for i, (mix, over) in enumerate(runs):
            results.append(await run(mix, args.per_group, over, args.cycles, octet=180 + i))
        return results

    configure_logging("console", "error")  # the table, not every command's log line
    print(table(asyncio.run(all_runs())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
