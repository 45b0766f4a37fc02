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

from megawatch.agent.config import load_agent_config
from megawatch.agent.poller import Poller
from megawatch.agent.state import FleetState
from megawatch.agent.web import make_app as agent_app
from megawatch.collector.config import load_collector_config
from megawatch.collector.service import CollectorService
from megawatch.collector.web import make_app as collector_app
from megawatch.common.webconfig import protect
from tests.security.tls import bcrypt_hash

GROUPS = (("cgminer", "Antminer S9"), ("bosminer", "Antminer S19j Pro"), ("luxos", "Antminer S19 XP"),
          ("avalon", "Avalon A1366"), ("bmminer", "Antminer S19 Pro"))
USER, PASSWORD = "operator", "s3cret"
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

    async def curtailment(self) -> dict[str, Any]:
        doc = await (await self.collector.get("/api/v1/curtailment", headers=AUTH)).json()
        return doc["sites"][0]

    async def restart_collector(self) -> None:
        await self.collector.close()
        config = load_collector_config(self.tmp / "sites.yaml")
        self.service = CollectorService(config, self.session, "http://x/")
        self.collector = TestClient(TestServer(collector_app(self.service)))
        protect(self.collector.server.app, config.web)
        await self.collector.start_server()

    def rewrite(self, **curtailment: Any) -> None:
        write_sites(self.tmp, self.agent_url, self.allocation_w, curtailment)

    @property
    def agent_url(self) -> str:
        return str(self.agent.make_url("")).rstrip("/")


def write_sites(tmp: Path, agent_url: str, allocation_w: float, curtailment: dict[str, Any],
                extra_site: str = "") -> None:
    body = "".join(f"      {k}: {v}\n" for k, v in curtailment.items() if k != "schedule")
    schedule = curtailment.get("schedule", "")
    (tmp / "sites.yaml").write_text(
        f"fleet: {{name: test, allocation_mw: 10}}\n"
        f"state_file: state.json\n"
        f"web_config_file: web.yaml\n"
        f"agent_client: {{username: {USER}, password_file: agent.pass}}\n"
        f"poll: {{interval_s: 5, timeout_s: 5}}\n"
        f"sites:\n"
        f"  - id: site-a\n    allocation_mw: {allocation_w / 1e6!r}\n    agents: [{agent_url}]\n{schedule}"
        f"    curtailment:\n{body}{extra_site}")


async def start_loop(tmp: Path, make_sim_fleet: Any, *, over: float, per_group: int = 4,
                     groups: tuple[tuple[str, str], ...] = GROUPS, allow_control: bool = True,
                     **curtailment: Any) -> Loop:
    """Everything running; the site's allocation set so the simulator's truth is `over` x it."""
    sim = await make_sim_fleet(groups=groups, sites=1, per_group=per_group, allow_control=allow_control)
    entries = "".join(f"  - {{address: {m.host}, port: {m.port}}}\n" for m in sim.miners)
    (tmp / "web.yaml").write_text(f"basic_auth_users:\n  {USER}: '{bcrypt_hash(PASSWORD)}'\n")
    (tmp / "agent.pass").write_text(PASSWORD + "\n")
    (tmp / "agent.yaml").write_text(
        f"site: site-a\ncontrol_enabled: true\nweb_config_file: web.yaml\n"
        f"poll: {{interval_s: 5, request_timeout_s: 2, connect_timeout_s: 1, jitter_s: 0}}\nminers:\n{entries}")
    config = load_agent_config(tmp / "agent.yaml")
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
    agent_url = str(agent.make_url("")).rstrip("/")
    write_sites(tmp, agent_url, allocation, settings)
    session = aiohttp.ClientSession()
    service = CollectorService(load_collector_config(tmp / "sites.yaml"), session, "http://x/")
    collector = TestClient(TestServer(collector_app(service)))
    protect(collector.server.app, service.config.web)
    await collector.start_server()
    return Loop(sim, poller, agent, service, collector, session, allocation, settings["margin_ratio"], tmp)


async def stop_loop(loop: Loop) -> None:
    await loop.collector.close()
    await loop.agent.close()
    await loop.session.close()
