"""Scan ranges in the agent: empty addresses are no miners (never down), found miners join, a seen miner that stops
answering is down (in the allowance) until forgotten, and appear/vanish/swap each log one event."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import MakeSimFleet, SimFleet
from structlog.testing import capture_logs

from megawatch.agent.config import AgentConfig, load_agent_config
from megawatch.agent.exposition import FleetCollector
from megawatch.agent.modeltable import load_model_table
from megawatch.agent.poller import Poller
from megawatch.agent.state import FleetSnapshot, FleetState, MinerStatus
from megawatch.agent.web import make_summary
from megawatch.common.configfile import ConfigError
from megawatch.simulator.config import ControlConfig, FleetConfig, GroupConfig, SiteConfig, load_fleet_config

FORGET_S = 600.0


class WallClock:
    """Real monotonic time (deadlines), a wall clock the test moves (forget_after_s)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


def block() -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"127.{130 + os.getpid() % 60}.{os.getpid() // 60 % 250}.0/24")


def fleet_config(net: ipaddress.IPv4Network) -> FleetConfig:
    table = load_model_table()
    groups = tuple(GroupConfig(count, table.lookup(model), dialect)  # type: ignore[arg-type]
                   for dialect, model, count in (("bmminer", "Antminer S19 Pro", 30),
                                                 ("btminer", "Whatsminer M30S++", 25),
                                                 ("luxos", "Antminer S21", 25), ("cgminer", "Antminer S19", 20)))
    site = SiteConfig("gappy", str(net.network_address + 1), 4028, None, 25.0, groups, density=0.5)
    assert site.offsets()[-1] < 253
    return FleetConfig(seed=3, tick_s=5.0, control=ControlConfig("127.0.0.1", 0), sites=(site,))


def agent_config(tmp_path: Path, net: ipaddress.IPv4Network, extra: str = "") -> AgentConfig:
    path = tmp_path / "agent.yaml"
    path.write_text(f"site: s1\nminers:\n  - cidr: {net}\n{extra}"
                    "poll: {interval_s: 15, request_timeout_s: 3, connect_timeout_s: 0.5, jitter_s: 0}\n"
                    f"discovery: {{connect_timeout_s: 0.5, forget_after_s: {FORGET_S}, state_file: inventory.json}}\n")
    return load_agent_config(path)


@pytest.fixture
async def gappy(make_sim_fleet: MakeSimFleet) -> tuple[SimFleet, ipaddress.IPv4Network]:
    net = block()
    return await make_sim_fleet(fleet_config(net)), net


def _events(logs: list[dict[str, object]], name: str) -> list[object]:
    return [e.get("miner") for e in logs if e["event"] == name]


async def _cycle(poller: Poller, rescan: bool = False) -> FleetSnapshot:
    if rescan:
        await asyncio.wait_for(poller.rescan(), 20)
    return await asyncio.wait_for(poller.poll_once(), 20)


async def test_scan_range_counts_only_miners(gappy: tuple[SimFleet, ipaddress.IPv4Network], tmp_path: Path) -> None:
    sim, net = gappy
    empty_listed = str(net.network_address + 254)  # a listed address where nothing answers: expected, so down
    config = agent_config(tmp_path, net, f"    expect: maybe\n  - address: {empty_listed}\n    port: 4029\n")
    assert len(config.miners) == 255  # 254 hosts of the block (scan range) and one listed address
    state = FleetState(config.site, len(config.miners))
    poller = Poller(config, state)
    assert state.snapshot.totals.configured == 1  # before any sweep: the listed miner, not the block's addresses
    snap = await _cycle(poller, rescan=True)
    n = len(sim.miners)
    t = snap.totals
    assert (t.configured, t.up, t.down, t.stale, t.discovered, t.missing) == (n + 1, n, 1, 0, n, 1)
    assert {m.name for m in snap.miners if m.status is MinerStatus.DOWN} == {f"{empty_listed}:4029"}
    # The never-seen listed miner is counted in the allowance; no hole of the block is.
    assert t.power_unknown_miners == 1
    summary = make_summary(config, snap, snap.finished_s or 0.0)
    assert summary["miners"] == {"configured": n + 1, "up": n, "down": 1, "stale": 0, "discovered": n, "missing": 1}
    collector = FleetCollector(poller_state(poller, snap))
    samples = {(s.name, s.labels.get("state", "")): s.value for f in collector.collect() for s in f.samples}
    assert samples[("megawatch_site_miners_discovered", "")] == n
    assert samples[("megawatch_site_miners_missing", "")] == 1
    assert samples[("megawatch_site_miners", "down")] == 1


def poller_state(poller: Poller, snap: FleetSnapshot) -> FleetState:
    state = FleetState(snap.site, snap.totals.configured)
    state.publish(snap)
    return state


async def test_appear_vanish_and_swap_each_log_one_event(gappy: tuple[SimFleet, ipaddress.IPv4Network],
                                                         tmp_path: Path) -> None:
    sim, net = gappy
    config = agent_config(tmp_path, net)
    clock = WallClock()
    poller = Poller(config, FleetState(config.site, len(config.miners)), clock=clock)
    late, leaver, bm, bt = sim.miners[5], sim.miners[6], sim.of_dialect("bmminer")[0], sim.of_dialect("btminer")[0]
    n = len(sim.miners)
    sim.set_fault([late], "offline")
    with capture_logs() as logs:
        snap = await _cycle(poller, rescan=True)
    assert (snap.totals.discovered, snap.totals.up, snap.totals.down) == (n - 1, n - 1, 0)
    assert len(_events(logs, "miner_appeared")) == n - 1 and f"{late.host}:4028" not in _events(logs, "miner_appeared")

    # Appears: one event, counted from the next cycle.
    sim.fleet.set_fault(sim.miner(late.index), None)
    with capture_logs() as logs:
        snap = await _cycle(poller, rescan=True)
    assert _events(logs, "miner_appeared") == [f"{late.host}:4028"]
    assert (snap.totals.discovered, snap.totals.up) == (n, n)

    # Stops answering: still counted (stale, then down) and in the allowance (never 0 W), not yet vanished.
    sim.set_fault([leaver], "offline")
    with capture_logs() as logs:
        snap = await _cycle(poller)
    assert (snap.totals.discovered, snap.totals.up, snap.totals.stale) == (n, n - 1, 1)
    clock.offset += 120  # past the stale grace period
    snap = await _cycle(poller)
    assert (snap.totals.discovered, snap.totals.up, snap.totals.down) == (n, n - 1, 1)
    assert snap.totals.power_unknown_miners == 1 and snap.totals.power_allowance_w > 0
    assert _events(logs, "miner_vanished") == []
    # Past forget_after_s: one event, and it leaves the count.
    clock.offset += FORGET_S + 1
    with capture_logs() as logs:
        snap = await _cycle(poller)
        snap = await _cycle(poller, rescan=True)  # a rescan does not bring back what does not answer
    assert _events(logs, "miner_vanished") == [f"{leaver.host}:4028"]
    t = snap.totals
    assert (t.discovered, t.up, t.down, t.power_unknown_miners) == (n - 1, n - 1, 0, 0)

    # Swapped for another model: seen in the next poll. Swapped for the same model: seen by its serial at a rescan.
    await sim.backend.swap([bm.index], "Antminer S19")
    await sim.backend.swap([bt.index], None)
    with capture_logs() as logs:
        await _cycle(poller)
        snap = await _cycle(poller, rescan=True)
        await _cycle(poller, rescan=True)
    assert sorted(map(str, _events(logs, "miner_swapped"))) == sorted([f"{bm.host}:4028", f"{bt.host}:4028"])
    assert _events(logs, "miner_appeared") == [] and _events(logs, "miner_vanished") == []
    assert (snap.totals.discovered, snap.totals.up) == (n - 1, n - 1)
    rows = {r["miner"]: r for r in poller.inventory.rows()}
    assert rows[f"{bm.host}:4028"]["model"] == "Antminer S19"
    assert rows[f"{bt.host}:4028"]["mac"] == sim.miner(bt.index).identity.mac
    assert poller.inventory.events == {"miner_appeared": n, "miner_vanished": 1, "miner_swapped": 2,
                                       "miner_firmware_changed": 0}


async def test_inventory_survives_a_restart(gappy: tuple[SimFleet, ipaddress.IPv4Network], tmp_path: Path) -> None:
    sim, net = gappy
    config = agent_config(tmp_path, net)
    first = Poller(config, FleetState(config.site, len(config.miners)))
    await _cycle(first, rescan=True)
    assert (tmp_path / "inventory.json").exists()
    bt = sim.of_dialect("btminer")[0]
    gone = sim.miners[0]
    sim.set_fault([gone], "offline")
    # A new agent, before any rescan: the miners seen before are polled at once, and one that does not answer is
    # down (it was there), not an empty address.
    second = Poller(config, FleetState(config.site, len(config.miners)))
    with capture_logs() as logs:
        snap = await _cycle(second)
    n = len(sim.miners)
    assert (snap.totals.discovered, snap.totals.up, snap.totals.down) == (n, n - 1, 1)
    assert _events(logs, "miner_appeared") == []
    row = next(r for r in second.inventory.rows() if r["miner"] == f"{bt.host}:4028")
    assert row["serial"] and row["mac"] == sim.miner(bt.index).identity.mac and row["present"] is True


def test_fleet_file_density_spreads_miners_with_the_same_holes(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("sites:\n  - id: s\n    address: 127.3.0.1\n    density: 0.5\n"
                    "    groups: [{count: 40, model: Antminer S19, dialect: cgminer}]\n")
    site = load_fleet_config(path).sites[0]
    hosts = [h for h, _ in site.endpoints()]
    assert len(hosts) == 40 and len(set(hosts)) == 40 and hosts == [h for h, _ in site.endpoints()]
    assert int(ipaddress.IPv4Address(hosts[-1])) - int(ipaddress.IPv4Address("127.3.0.1")) + 1 > 45  # holes
    path.write_text(path.read_text().replace("density: 0.5", "density: 0"))
    with pytest.raises(ConfigError, match=r"fleet.yaml:4: sites\[0\]\.density"):
        load_fleet_config(path)


async def test_control_endpoint_swaps_units(gappy: tuple[SimFleet, ipaddress.IPv4Network]) -> None:
    sim, _ = gappy
    bm = sim.of_dialect("bmminer")[0]
    before = sim.miner(bm.index).identity
    async with aiohttp.ClientSession() as http:
        async def post(body: dict[str, object]) -> tuple[int, dict[str, object]]:
            async with http.post(sim.control_url + "/api/v1/swaps", json=body) as response:
                return response.status, await response.json()

        assert (await post({"miners": [bm.host], "model": "Whatsminer M30S"}))[0] == 400  # not an Antminer
        assert (await post({"miners": ["127.9.9.9"]}))[0] == 404
        assert (await post({"miners": [bm.host], "colour": "red"}))[0] == 400
        status, body = await post({"miners": [bm.host], "model": "Antminer S19"})
    assert status == 200 and body["swapped"] == 1
    after = sim.miner(bm.index).identity
    assert (after.unit, after.model.name, after.host) == (1, "Antminer S19", before.host)
    assert after.serial != before.serial and after.mac != before.mac


async def test_a_restart_forgets_nobody_early(gappy: tuple[SimFleet, ipaddress.IPv4Network], tmp_path: Path) -> None:
    sim, net = gappy
    config = agent_config(tmp_path, net)
    clock = WallClock()
    first = Poller(config, FleetState(config.site, len(config.miners)), clock=clock)
    await _cycle(first, rescan=True)
    clock.offset += 400
    await _cycle(first)  # nothing changed: the file still learns when each miner last answered
    clock.offset += FORGET_S - 300  # past forget_after_s since the first answer, not since the last
    gone = sim.miners[0]
    sim.set_fault([gone], "offline")
    second = Poller(config, FleetState(config.site, len(config.miners)), clock=clock)
    with capture_logs() as logs:
        snap = await _cycle(second)
    n = len(sim.miners)
    assert (snap.totals.discovered, snap.totals.down) == (n, 1) and _events(logs, "miner_vanished") == []
