"""A simulated day at an accelerated clock: the collector's energy against the simulator's true energy.

The simulator's clock is frozen and advanced a tick (10 simulated seconds) at a time, its site loads changing
through the day off the collector's beat. Every tick the simulator counts its true energy (the meter's
counter; for the unmetered site, true miner draw x PUE + aux). Every third tick - a 30 s poll - the collector's
own figure pipeline runs on what an agent and the meter would report at that moment (aggregate_fleet with
agent summaries, the meter judged by apply_meters) and the energy accounts count it. One day takes ~8640
ticks of 8 miners: a few seconds of wall time, bounded below.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import pytest

from megawatch.collector.aggregate import aggregate_fleet
from megawatch.collector.config import Alerting, CollectorConfig, Site, Thresholds
from megawatch.collector.energy import EnergyBook
from megawatch.collector.meterconfig import MeterConfig as CollectorMeter
from megawatch.collector.meters import MeterReading
from megawatch.collector.model import AgentObservation, AgentSummary
from megawatch.collector.production import Production, samples
from megawatch.collector.sitemeter import MeterObservation, MeterResult, apply_meters, observe_meter
from megawatch.simulator.config import MeterConfig as SimMeter
from megawatch.simulator.fleet import Fleet, initial_faults, plan_fleet
from megawatch.simulator.meter import SiteMeter

sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import make_config

pytestmark = pytest.mark.slow

TICK_S, POLL_TICKS, DAY_TICKS = 10.0, 3, 8640
PUE_A, AUX_A, PUE_B, AUX_B = 1.08, 4000.0, 1.05, 2000.0
WALL_LIMIT_S = 120.0
# Site loads through the day (tick -> factor), on ticks the 30 s poll does not land on.
LOADS = {"site-a": {0: 1.0, 2161: 0.55, 3601: 1.15, 6121: 0.7, 7561: 1.0},
         "site-b": {0: 0.9, 1441: 1.1, 4321: 0.6, 5761: 1.0, 8001: 0.8}}
GROUPS = (("bmminer", "Antminer S19 Pro"), ("btminer", "Whatsminer M30S++"), ("bosminer", "Antminer S19j Pro"),
          ("luxos", "Antminer S19 XP"))


async def test_a_simulated_day_matches_the_true_energy(tmp_path: Path) -> None:
    sim = make_config(groups=GROUPS, sites=2, per_group=1, tick_s=TICK_S)
    a, b = sim.sites
    meter_cfg = SimMeter("127.0.0.1", 0, 1, "sunspec", pue=PUE_A, aux_w=AUX_A)
    sim = dataclasses.replace(sim, sites=(dataclasses.replace(a, meter=meter_cfg), b))
    plan = plan_fleet(sim)
    fleet = Fleet(sim, plan, faults=initial_faults(sim, plan))
    fleet.clock.freeze(at=0)
    await fleet.start()
    try:
        sums = fleet.site_sums()
        meter = SiteMeter(sim.sites[0], meter_cfg, seed=sim.seed, tick_s=TICK_S, miners_w=None)
        url_a, url_b = "http://127.0.0.1:9101", "http://127.0.0.1:9102"
        config = CollectorConfig(
            path="day.yaml", fleet_name="f", fleet_allocation_w=200e3, allow_oversubscription=False,
            sites=(Site("site-a", "A", 100e3, PUE_A, AUX_A, (url_a,), meter=CollectorMeter("127.0.0.1")),
                   Site("site-b", "B", 100e3, PUE_B, AUX_B, (url_b,))),
            thresholds=Thresholds(), alerting=Alerting(), poll_interval_s=TICK_S * POLL_TICKS,
            production=Production(difficulty=1e14))
        book = EnergyBook(tmp_path / "state.energy.json")
        meter_obs: MeterObservation | None = None
        true_b_j = 0.0
        judged_on: dict[str, int] = {}
        start_wh = meter.truth_row(0, sums["site-a"]["power_w"])["truth_energy_wh"]
        started = time.monotonic()
        for tick in range(DAY_TICKS + 1):
            for site, changes in LOADS.items():
                if tick in changes:
                    fleet.set_load(site, changes[tick])
            fleet.clock.freeze(at=tick)
            sums = fleet.site_sums()
            row = meter.truth_row(tick, sums["site-a"]["power_w"])  # the meter counts every tick
            if tick < DAY_TICKS:
                true_b_j += (sums["site-b"]["power_w"] * PUE_B + AUX_B) * TICK_S
            if tick % POLL_TICKS:
                continue
            now = tick * TICK_S
            observations = {url: AgentObservation(url, _summary(sums[site]), fetched_at=now, up=True)
                            for url, site in ((url_a, "site-a"), (url_b, "site-b"))}
            reading = MeterResult(MeterReading(row["reported_w"], row["reported_energy_wh"]), None, 0.01)
            meter_obs = observe_meter(meter_obs, reading, now, config.sites[0].meter, 100e3)
            totals = apply_meters(aggregate_fleet(config, observations, now), config, {"site-a": meter_obs}, now)
            assert totals.sites[0].meter is not None
            judged_on[totals.sites[0].meter.state.value] = judged_on.get(totals.sites[0].meter.state.value, 0) + 1
            book.record(samples(totals, config, observations, now), now, 90.0)
        wall = time.monotonic() - started
    finally:
        await fleet.stop()
    true_a_j = (row["truth_energy_wh"] - start_wh) * 3600.0
    got_a, got_b = book.accounts[("site", "site-a")].totals, book.accounts[("site", "site-b")].totals
    err_a, err_b = got_a.judged_j / true_a_j - 1, got_b.judged_j / true_b_j - 1
    print(f"day: metered site {got_a.judged_j / 3.6e9:.4f} MWh vs true {true_a_j / 3.6e9:.4f} ({err_a:+.3%}); "
          f"unmetered {got_b.judged_j / 3.6e9:.4f} vs {true_b_j / 3.6e9:.4f} ({err_b:+.3%}); {wall:.1f} s wall; "
          f"meter states {judged_on}")
    assert wall < WALL_LIMIT_S
    assert abs(err_a) < 0.01  # metered: within 1 %
    # Unmetered: firmware readings and J/TH estimates, never below the truth by more than 3 % nor above by 5 %.
    assert -0.03 < err_b < 0.05
    # Mostly judged on the meter; when curtailed, the J/TH estimates run more than 5 % above the meter and it is
    # not believed (collector/sitemeter.py), so the miners' figure, estimates and all, counts for those cycles.
    assert judged_on.get("ok", 0) > 0.8 * sum(judged_on.values())
    assert got_a.unknown_s == 0 and got_b.unknown_s == 0
    assert got_b.estimated_j > 0 and got_a.hashes > 0 and got_a.expected_btc > 0
    fleet_totals = book.accounts[("fleet", "f")].totals
    assert fleet_totals.judged_j == pytest.approx(got_a.judged_j + got_b.judged_j, rel=1e-12)


def _summary(site: dict[str, float]) -> AgentSummary:
    return AgentSummary(agent_id=None, site=None, cycle_ts=None, age_at_fetch_s=0.0, hashrate_hs=site["hashrate_hs"],
                        power_firmware_w=site["power_w_reported"], power_estimate_w=site["power_w_estimable"],
                        miners_power_unknown=0, miners_up=int(site["miners_serving"]), miners_down=0,
                        miners_stale=0, miners_total=int(site["miners"]), power_allowance_w=0.0)
