"""Simulator + agent (control enabled, basic auth) + collector in one process, stepped cycle by cycle.

One cycle = one agent poll, then one collector cycle (totals, plan, commands). The simulator's clock is
frozen, so a miner's draw changes only when a command (or the test) changes it: the truth is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from bench.curtail import PASSWORD, USER, make_collector, write_agent_files, write_sites
from megawatch.agent.config import load_agent_config
from megawatch.agent.poller import Poller
from megawatch.agent.state import FleetState
from megawatch.agent.web import make_app as agent_app
from megawatch.collector.service import CollectorService
from megawatch.common.webconfig import protect

GROUPS = (("cgminer", "Antminer S9"), ("bosminer", "Antminer S19j Pro"), ("luxos", "Antminer S19 XP"),
          ("avalon", "Avalon A1366"), ("bmminer", "Antminer S19 Pro"))
AUTH = {"Authorization": aiohttp.BasicAuth(USER, PASSWORD).encode()}


@dataclass
class Loop:
    sim: Any
    poller: Poller
    agent: TestServer
    service: CollectorService
    collector: TestClient
    session: aiohttp.ClientSession
    allocation_w: float
    margin: float
    tmp: Path

    async def cycle(self) -> None:
        await self.poller.poll_once()
        await self.service.poll_once()

    async def truth_w(self) -> float:
        return (await self.sim.truth())["sites"]["site-a"]["power_w"]

    async def writes(self) -> int:
        return (await self.sim.truth())["sites"]["site-a"]["privileged_commands"]

    def audit(self) -> list[dict[str, Any]]:
        import json
        path = self.tmp / "curtailment-audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def audited_writes(self) -> int:
        """Write commands the audit log says were sent (`devs` is the read that finds cgminer's devices)."""
        return sum(1 for r in self.audit() for c in r.get("commands", []) if c.split("|")[0] != "devs")

    async def curtailment(self) -> dict[str, Any]:
        doc = await (await self.collector.get("/api/v1/curtailment", headers=AUTH)).json()
        return doc["sites"][0]

    async def restart_collector(self) -> None:
        await self.collector.close()
        self.service, app = make_collector(self.tmp / "sites.yaml", self.session)
        self.collector = TestClient(TestServer(app))
        await self.collector.start_server()

    def rewrite(self, **curtailment: Any) -> None:
        write_sites(self.tmp, self.agent_url, self.allocation_w, curtailment)

    @property
    def agent_url(self) -> str:
        return str(self.agent.make_url("")).rstrip("/")


async def start_loop(tmp: Path, make_sim_fleet: Any, *, over: float, per_group: int = 4,
                     groups: tuple[tuple[str, str], ...] = GROUPS, allow_control: bool = True,
                     **curtailment: Any) -> Loop:
    """Everything running; the site's allocation set so the simulator's truth is `over` x it."""
    sim = await make_sim_fleet(groups=groups, sites=1, per_group=per_group, allow_control=allow_control)
    config = load_agent_config(write_agent_files(tmp, [(m.host, m.port) for m in sim.miners]))
    state = FleetState(config.site, len(config.miners))
    poller = Poller(config, state)
    app = agent_app(config, state, CollectorRegistry())
    protect(app, config.web)
    agent = TestServer(app, host="127.0.0.1")
    await agent.start_server()
    truth = (await sim.truth())["sites"]["site-a"]["power_w"]
    allocation = truth / over
    settings = {"mode": "auto", "margin_ratio": 0.03, "hold_s": 0, "min_off_s": 0, "max_step_ratio": 0.5,
                "hysteresis_ratio": 0.02, "restore_per_step": 2, **curtailment}
    write_sites(tmp, str(agent.make_url("")).rstrip("/"), allocation, settings)
    session = aiohttp.ClientSession()
    service, app = make_collector(tmp / "sites.yaml", session)
    collector = TestClient(TestServer(app))
    await collector.start_server()
    return Loop(sim, poller, agent, service, collector, session, allocation, settings["margin_ratio"], tmp)


async def stop_loop(loop: Loop) -> None:
    await loop.collector.close()
    await loop.agent.close()
    await loop.session.close()
