"""The shipped sample configs, run together as a new user would, give both sites data.

`megawatch simulate --config configs/sim/small.yaml`, `megawatch agent --config configs/agent.yaml`,
`megawatch agent --config configs/agent-site-b.yaml` and `megawatch collector --config configs/sites.yaml`,
nothing rewritten. When the ports in these files disagree, every process starts cleanly and the collector
just shows `no_data`, so this is the check that they fit.

The files name fixed addresses (the simulator's miners on 127.1.0.x and 127.2.0.x:4028, its control port,
the agents' and the collector's ports): a port already taken by someone else's run skips locally and fails
under CI=true, like a missing binary.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from megawatch.agent.config import load_agent_config
from megawatch.collector.config import load_collector_config
from megawatch.simulator.config import load_fleet_config
from tests.e2e import processes
from tests.e2e.processes import (
    ROOT,
    Proc,
    Procs,
    get_json,
    megawatch,
    site_view,
    start_collector,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
procs = processes.procs
http = processes.http

CONFIGS = ROOT / "configs"
FLEET = CONFIGS / "sim" / "small.yaml"
AGENTS = (CONFIGS / "agent.yaml", CONFIGS / "agent-site-b.yaml")
SITES = CONFIGS / "sites.yaml"


def require_free(host: str, port: int) -> None:
    """Skip (fail under CI) when a fixed address of the sample configs is already in use on this host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers bind: connections of a previous run in TIME_WAIT do not hold the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            message = f"{host}:{port}, named in the sample configs, is in use by another process"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)


def fixed_addresses() -> list[tuple[str, int]]:
    fleet = load_fleet_config(FLEET)
    sites = load_collector_config(SITES)
    addresses = [(fleet.control.host, fleet.control.port), (sites.listen_address, sites.listen_port)]
    addresses += [(c.http.listen, c.http.port) for c in map(load_agent_config, AGENTS)]
    addresses += [endpoint for site in fleet.sites for endpoint in site.endpoints()]
    return addresses


async def start_simulator(procs: Procs, http: aiohttp.ClientSession, control: str) -> None:
    sim = megawatch(procs, "simulate", "simulate", "--config", str(FLEET), "--log-format", "json")

    async def serving() -> dict[str, Any] | None:
        assert sim.alive(), f"simulator exited:\n{sim.output()}"
        return await get_json(http, control + "/api/v1/truth")

    await wait_until(serving, 20, "the simulator's control endpoint")
    # Frozen: the miners answer the same figures on every poll, so the totals can be checked against truth.
    async with http.post(control + "/api/v1/clock", json={"freeze": True}) as resp:
        assert resp.status == 200, await resp.text()


async def start_sample_agent(procs: Procs, http: aiohttp.ClientSession, path: Path) -> Proc:
    """The agent on the address its file names, once its first poll cycle is in its summary."""
    config = load_agent_config(path)
    agent = megawatch(procs, f"agent-{path.stem}", "agent", "--config", str(path))
    # The fixed port is known: no need to find the listening line in a log that per-miner lines keep growing.
    agent.url = f"http://{config.http.listen}:{config.http.port}"

    async def first_cycle() -> dict[str, Any] | None:
        assert agent.alive(), f"{agent.name} exited:\n{agent.output()}"
        body = await get_json(http, agent.url + "/api/v1/summary")
        return body if body and body["totals"]["power_w"] is not None else None

    await wait_until(first_cycle, 20, f"{agent.name}'s first poll cycle", every_s=0.2)
    return agent


async def test_shipped_sample_configs_run_together_and_both_sites_have_data(
        procs: Procs, http: aiohttp.ClientSession) -> None:
    for host, port in fixed_addresses():
        require_free(host, port)
    fleet = load_fleet_config(FLEET)
    control = f"http://{fleet.control.host}:{fleet.control.port}"
    await start_simulator(procs, http, control)
    agents = [await start_sample_agent(procs, http, path) for path in AGENTS]
    sites = load_collector_config(SITES)
    collector = await start_collector(procs, SITES, http)
    assert urlsplit(collector.url).port == sites.listen_port

    count = {site.id: site.count for site in fleet.sites}
    assert set(count) == {site.id for site in sites.sites}

    async def both_sites_counted() -> dict[str, dict[str, Any]] | None:
        views = {site: await site_view(http, collector, site) for site in count}
        done = all(v["status"] == "ok" and v["miners_total"] == count[s] for s, v in views.items())
        return views if done else None

    # The collector polls every 15 s (sites.yaml): the first poll runs at start-up, the next one a period later.
    views = await wait_until(both_sites_counted, sites.poll_interval_s + 15, "both sample sites to have data",
                             every_s=0.5)
    truth = (await get_json(http, control + "/api/v1/truth"))["sites"]
    for site in sites.sites:
        view, sim = views[site.id], truth[site.id]
        print(site.id, {k: view[k] for k in ("miners_up", "hashrate_hs", "miner_power_w", "facility_power_w",
                                             "allocation_w", "utilisation_ratio")})
        assert view["miners_up"] == sim["miners_serving"] == count[site.id] and view["miners_down"] == 0
        assert view["miners_power_unknown"] == 0
        assert view["hashrate_hs"] == pytest.approx(sim["hashrate_hs"], rel=0.01)
        # Firmware-reported power where the dialect gives it, the model table's estimate where it does not.
        expected_w = sim["power_w_reported"] + sim["power_w_estimable"]
        assert view["miner_power_w"] == pytest.approx(expected_w, rel=0.01)
        # Every miner read: the allowance is only the agents' 10% margin on the estimated draws, judged with them.
        assert view["miner_allowance_w"] == pytest.approx(0.10 * view["power_estimate_w"], rel=1e-6)
        assert view["facility_power_w"] == pytest.approx(
            (view["miner_power_w"] + view["miner_allowance_w"]) * site.pue + site.aux_w, rel=1e-9)
        assert view["allocation_w"] in {site.allocation_w, *(w.allocation_w for w in site.schedule)}
        assert 0 < view["utilisation_ratio"] < 1
        assert [a["up"] for a in view["agents"]] == [True]
    for agent in agents:
        assert agent.alive(), agent.output()

