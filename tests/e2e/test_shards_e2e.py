"""A site split across two agent shards gives the same totals as one agent polling the whole site.

One simulated site of 400 miners (every dialect profile, a few offline, some with a dropped hashrate), its tick
clock frozen so every miner answers the same figures on every poll. Three real agent processes read it at
once: one with all 400 miners, and two shards (same site id, disjoint halves, their own agent_id). Two real
collectors: one lists the single agent under the site, the other lists the two shards. Once every agent has
settled (each miner polled, none stale), the two collectors' site totals must be the same: counts exactly,
power and hashrate up to float summation order (1e-9 relative). They are also checked against the
simulator's own truth, so both sides cannot be wrong the same way.

The same real scrape gives the cardinality budget: series per miner at default settings <= 25 (docs/scaling.md).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from megawatch.simulator.config import FaultConfig
from megawatch.simulator.faults import make_fault
from tests.conftest import DEFAULT_GROUPS, SimMiner, make_config
from tests.e2e import processes
from tests.e2e.processes import (
    Proc,
    Procs,
    agent_yaml,
    get_json,
    site_view,
    start_agent,
    start_collector,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
procs = processes.procs
http = processes.http

SITE = "site-a"
PER_GROUP = 50  # x 8 dialect profiles = 400 miners
INTERVAL_S = 2.0
SERIES_BUDGET = 25


def shard_yaml(path: Path, agent_id: str, miners: list[SimMiner]) -> Path:
    """An agent config for one shard: the site id is shared, the miners and the agent_id are its own."""
    return agent_yaml(path, SITE, miners, agent_id=agent_id, interval_s=INTERVAL_S, connect_s=1, request_s=1.5,
                      stale_grace_s=30)


def collector_yaml(path: Path, agents: list[Proc]) -> Path:
    path.write_text("\n".join([
        "fleet: {name: shards, allocation_mw: 100}",
        "sites:",
        f"  - id: {SITE}",
        "    allocation_mw: 50",
        f"    agents: [{', '.join(a.url for a in agents)}]",
        "listen: {address: 127.0.0.1, port: 0}",
        "poll: {interval_s: 0.5, timeout_s: 0.5}",
    ]) + "\n")
    return path


async def settled(http: aiohttp.ClientSession, agents: list[Proc], total: int) -> bool:
    """Every agent has finished a full cycle after its first, counted every miner and holds none stale."""
    counted = 0
    for agent in agents:
        body = await get_json(http, agent.url + "/api/v1/summary")
        miners = body["miners"] if body else None
        if not miners or body["cycle"]["number"] < 2 or miners["stale"] != 0:
            return False
        counted += miners["up"] + miners["down"]
    return counted == total


def figures(view: dict[str, Any]) -> dict[str, Any]:
    keys = ("hashrate_hs", "power_firmware_w", "power_estimate_w", "miner_power_w", "miner_allowance_w",
            "miner_upper_bound_w", "miners_up", "miners_down", "miners_stale", "miners_total", "miners_power_unknown")
    return {k: view[k] for k in keys}


async def test_two_shards_give_the_same_site_totals_as_one_agent(
        procs: Procs, http: aiohttp.ClientSession, make_sim_fleet: Any) -> None:
    config = make_config(DEFAULT_GROUPS, sites=1, per_group=PER_GROUP, seed=11,
                         faults=(FaultConfig(make_fault("offline", {}), fraction=0.02),
                                 FaultConfig(make_fault("hashrate_drop", {"drop": 0.33}), fraction=0.05)))
    sim = await make_sim_fleet(config)  # frozen clock: the same figures on every poll
    miners = sim.miners
    assert len(miners) == 8 * PER_GROUP
    # Interleaved halves, so each shard gets every dialect and its share of the faults.
    halves = (miners[0::2], miners[1::2])

    single = await start_agent(procs, shard_yaml(procs.tmp / "single.yaml", f"{SITE}-single", miners), http)
    shards = [await start_agent(procs, shard_yaml(procs.tmp / f"shard{i + 1}.yaml", f"{SITE}-shard{i + 1}", half),
                                http) for i, half in enumerate(halves)]
    one = await start_collector(procs, collector_yaml(procs.tmp / "one.yaml", [single]), http)
    # start_collector names its process (and log file) "collector": the second one gets a Procs of its own.
    (procs.tmp / "two").mkdir()
    second = Procs(procs.tmp / "two")
    try:
        two = await start_collector(second, collector_yaml(procs.tmp / "two.yaml", shards), http)
        await _compare(http, sim, single, shards, one, two)
    finally:
        second.stop_all()
        print(second.report())


async def _compare(http: aiohttp.ClientSession, sim: Any, single: Proc, shards: list[Proc], one: Proc,
                   two: Proc) -> None:
    miners = sim.miners

    await wait_until(lambda: settled(http, [single], len(miners)), 30, "the single agent to settle")
    await wait_until(lambda: settled(http, shards, len(miners)), 30, "both shards to settle")

    async def collectors_caught_up() -> tuple[dict[str, Any], dict[str, Any]] | None:
        # Each collector polls every 0.5 s; wait until it has read the settled summaries (all counted). The
        # offline miners are allowed for, so the site is partial, not ok.
        views = [await site_view(http, c, SITE) for c in (one, two)]
        done = all(v["status"] == "partial" and v["miners_total"] == len(miners) and v["miners_stale"] == 0
                   and (v["miners_up"] or 0) + (v["miners_down"] or 0) == len(miners) for v in views)
        return (views[0], views[1]) if done else None

    by_one, by_two = await wait_until(collectors_caught_up, 10, "both collectors to read the settled agents")
    print("one agent:", figures(by_one), "\ntwo shards:", figures(by_two))
    assert len(by_two["agents"]) == 2 and len(by_one["agents"]) == 1

    a, b = figures(by_one), figures(by_two)
    for key in ("miners_up", "miners_down", "miners_stale", "miners_total", "miners_power_unknown"):
        assert a[key] == b[key], (key, a[key], b[key])
    for key in ("hashrate_hs", "power_firmware_w", "power_estimate_w", "miner_power_w", "miner_allowance_w",
                "miner_upper_bound_w"):
        # The same floats added in another order: equal up to rounding, nothing more.
        assert a[key] is not None and b[key] == pytest.approx(a[key], rel=1e-9), (key, a[key], b[key])
    # Firmware-reported and estimated power both present: the shards really mix dialects.
    assert a["power_firmware_w"] > 0 and a["power_estimate_w"] > 0

    # Against the simulator's truth: up = the miners serving, hashrate within the firmware's rounding.
    truth = (await sim.truth())["sites"][SITE]
    assert truth["miners_serving"] < len(miners)  # the offline fault took some down: the count is not vacuous
    assert a["miners_up"] == truth["miners_serving"] and a["miners_down"] == len(miners) - truth["miners_serving"]
    assert a["hashrate_hs"] == pytest.approx(truth["hashrate_hs"], rel=0.01)

    # Cardinality budget from a real scrape of the single agent (every dialect): <= 25 series per miner.
    async with http.get(single.url + "/metrics") as resp:
        text = await resp.text()
    per_miner: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "miner" in sample.labels:
                per_miner[sample.labels["miner"]] += 1
    print(f"series per miner: max {max(per_miner.values())}, mean {sum(per_miner.values()) / len(per_miner):.1f}")
    assert len(per_miner) == len(miners)
    assert max(per_miner.values()) <= SERIES_BUDGET, per_miner.most_common(3)
