"""Discovery end to end: the real `megawatch scan` and a real agent with a scan range, over a simulated subnet with
holes. No phantom down miners; a swapped unit, one that leaves and one that comes back are each one log event,
and the agent's counts and inventory follow."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import MakeSimFleet

from megawatch.agent.modeltable import load_model_table
from megawatch.simulator.config import ControlConfig, FleetConfig, GroupConfig, SiteConfig
from tests.e2e import processes
from tests.e2e.processes import Procs, get_json, megawatch, wait_until

pytestmark = pytest.mark.e2e
procs = processes.procs
http = processes.http


def _fleet(net: ipaddress.IPv4Network) -> FleetConfig:
    table = load_model_table()
    groups = tuple(GroupConfig(count, table.lookup(model), dialect)  # type: ignore[arg-type]
                   for dialect, model, count in (("bmminer", "Antminer S19 Pro", 30),
                                                 ("btminer", "Whatsminer M30S", 25),
                                                 ("luxos", "Antminer S21", 20), ("avalon", "Avalon A1246", 15)))
    site = SiteConfig("e2e", str(net.network_address + 1), 4028, None, 25.0, groups, density=0.5)
    assert site.offsets()[-1] < 253
    return FleetConfig(seed=5, tick_s=5.0, control=ControlConfig("127.0.0.1", 0), sites=(site,))


def _events(proc: processes.Proc, event: str) -> list[dict[str, Any]]:
    text = proc.log.read_text(errors="replace")  # the whole log: output() is only its tail
    return [doc for line in text.splitlines() if line.startswith("{") and f'"{event}"' in line
            if (doc := json.loads(line)).get("event") == event]


async def test_scan_then_an_agent_with_a_scan_range(make_sim_fleet: MakeSimFleet, procs: Procs,
                                                    http: aiohttp.ClientSession, tmp_path: Path) -> None:
    net = ipaddress.IPv4Network(f"127.{200 + os.getpid() % 50}.{os.getpid() // 50 % 250}.0/24")
    sim = await make_sim_fleet(_fleet(net))
    hosts = {m.host for m in sim.miners}

    scan = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "megawatch.cli", "scan", str(net), "--format", "json", "--connect-timeout", "0.5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(scan.communicate(), 40)
    assert scan.returncode == 0, err.decode()
    doc = json.loads(out)
    assert {m["address"] for m in doc["miners"]} == hosts
    assert doc["counts"] == {"found": len(hosts), "empty": 254 - len(hosts), "not_miner": 0, "unscanned": 0}

    config = tmp_path / "agent.yaml"
    config.write_text(
        f"site: e2e\nagent_id: e2e-agent\nminers:\n  - cidr: {net}\n"
        "poll: {interval_s: 1, connect_timeout_s: 0.5, request_timeout_s: 0.9, jitter_s: 0, stale_grace_s: 1}\n"
        "discovery: {rescan_interval_s: 10, connect_timeout_s: 0.5, forget_after_s: 3, state_file: inventory.json}\n"
        "http: {listen: 127.0.0.1, port: 0}\nlog: {format: json, level: info}\n")
    agent = megawatch(procs, "agent", "agent", "--config", str(config))
    url = await processes.listening_url(agent, "agent_started")
    n = len(hosts)

    async def miners(expected: dict[str, int]) -> dict[str, Any] | None:
        body = await get_json(http, url + "/api/v1/summary")
        got = body["miners"] if body else {}
        return got if all(got.get(k) == v for k, v in expected.items()) else None

    # Every miner and nothing else: the block's empty addresses are not miners, so none is down.
    await wait_until(lambda: miners({"configured": n, "up": n, "down": 0, "discovered": n, "missing": 0}), 20,
                     "the agent to count exactly the simulator's miners")

    swapped, leaver = sim.of_dialect("btminer")[0], sim.of_dialect("luxos")[0]
    old_serial = next(r for r in (await get_json(http, url + "/api/v1/inventory"))["miners"]
                      if r["miner"] == f"{swapped.host}:4028")["serial"]
    await sim.backend.swap([swapped.index], None)
    sim.set_fault([leaver], "offline")
    await wait_until(lambda: miners({"configured": n - 1, "up": n - 1, "down": 0, "discovered": n - 1}), 20,
                     "the miner that left to be forgotten")

    async def new_serial() -> str | None:
        rows = (await get_json(http, url + "/api/v1/inventory"))["miners"]
        serial = next(r for r in rows if r["miner"] == f"{swapped.host}:4028")["serial"]
        return serial if serial != old_serial else None

    await wait_until(new_serial, 25, "a rescan to read the swapped unit's serial")
    sim.fleet.set_fault(sim.miner(leaver.index), None)
    await wait_until(lambda: miners({"configured": n, "up": n, "discovered": n}), 25, "the miner to come back")

    assert [e["miner"] for e in _events(agent, "miner_swapped")] == [f"{swapped.host}:4028"]
    assert [e["miner"] for e in _events(agent, "miner_vanished")] == [f"{leaver.host}:4028"]
    appeared = [e["miner"] for e in _events(agent, "miner_appeared")]
    assert len(appeared) == n + 1 and appeared.count(f"{leaver.host}:4028") == 2
    metrics = await (await http.get(url + "/metrics")).text()
    assert 'megawatch_agent_inventory_events_total{event="miner_swapped",site="e2e"} 1.0' in metrics
    csv_text = await (await http.get(url + "/api/v1/inventory?format=csv")).text()
    assert csv_text.splitlines()[0].startswith("miner,present,dialect") and len(csv_text.splitlines()) == n + 1
