"""Expected production: what the measured hashrate earns on average at the network difficulty, per block found.

A hash finds a block with probability 1 / (difficulty x 2^32), so a site hashing at H H/s expects
H x (subsidy + fees per block) / (difficulty x 2^32) BTC per second. Expected, not mined: pool payouts are
not read, luck and pool fees are not in it. Difficulty and fee level come from the sites file (`production:`);
no internet access is assumed. Prometheus may use a difficulty an operator feeds instead (docs/energy.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from megawatch.common.configfile import Section

if TYPE_CHECKING:
    from megawatch.collector.config import CollectorConfig, Site
    from megawatch.collector.energy import Allocation, PowerSample
    from megawatch.collector.model import AgentObservation, FleetTotals

HASHES_PER_DIFFICULTY = 2.0**32  # expected hashes per block at difficulty 1
BLOCK_SUBSIDY_BTC = 3.125  # from the April 2024 halving to the next (about 2028)
J_PER_MWH = 3.6e9
HASHES_PER_TH = 1e12


@dataclass(frozen=True, slots=True)
class Production:
    difficulty: float
    block_subsidy_btc: float = BLOCK_SUBSIDY_BTC
    fees_per_block_btc: float = 0.0

    @property
    def btc_per_block(self) -> float:
        return self.block_subsidy_btc + self.fees_per_block_btc

    @property
    def btc_per_hash(self) -> float:
        return self.btc_per_block / (self.difficulty * HASHES_PER_DIFFICULTY)

    def expected_btc_per_s(self, hashrate_hs: float) -> float:
        return hashrate_hs * self.btc_per_hash


def load_production(sec: Section) -> Production | None:
    difficulty = sec.number("difficulty", exclusive_minimum=0)
    subsidy = sec.number("block_subsidy_btc", BLOCK_SUBSIDY_BTC, minimum=0, maximum=50)
    fees = sec.number("fees_per_block_btc", 0.0, minimum=0, maximum=50)
    sec.done()
    if difficulty is None or subsidy is None or fees is None:
        return None
    return Production(difficulty=difficulty, block_subsidy_btc=subsidy, fees_per_block_btc=fees)


def btc_per_mwh(btc: float | None, joules: float | None) -> float | None:
    return btc / (joules / J_PER_MWH) if btc is not None and joules else None


def joules_per_th(joules: float | None, hashes: float | None) -> float | None:
    return joules / (hashes / HASHES_PER_TH) if joules is not None and hashes else None


def measured_hashrate(site: Site, observations: Mapping[str, AgentObservation], now: float,
                      stale_after_s: float) -> float | None:
    """Hashrate of the site's fresh agents only: a stale agent's carried figure is not production now."""
    from megawatch.collector.aggregate import agent_age_s

    known = []
    for url in site.agents:
        obs = observations.get(url)
        age = agent_age_s(obs, now) if obs is not None else None
        if obs is not None and obs.summary is not None and age is not None and age <= stale_after_s \
                and obs.summary.hashrate_hs is not None:
            known.append(obs.summary.hashrate_hs)
    return sum(known) if known else None


def samples(fleet: FleetTotals, config: CollectorConfig, observations: Mapping[str, AgentObservation],
            now: float) -> dict[tuple[str, str], tuple[PowerSample, Allocation]]:
    """This cycle's figures for the energy accounts: every site and the fleet."""
    from megawatch.collector.energy import PowerSample
    from megawatch.collector.sitemeter import FigureSource, figure_source

    per_hash = config.production.btc_per_hash if config.production is not None else None
    out: dict[tuple[str, str], tuple[PowerSample, Allocation]] = {}
    estimated_sum: list[float] = []
    hashrates: list[float] = []
    for totals in fleet.sites:
        site = config.site(totals.site_id)
        if site is None:
            continue
        d = totals.draw
        # A trusted meter measures everything: nothing of the figure is estimated then.
        estimated = 0.0 if figure_source(totals) is FigureSource.METER else (d.power_estimate_w or 0.0) * site.pue
        hashrate = measured_hashrate(site, observations, now, config.thresholds.stale_after_s)
        estimated_sum.append(estimated)
        if hashrate is not None:
            hashrates.append(hashrate)
        out[("site", site.id)] = (PowerSample(d.facility_power_w, d.facility_measured_w, d.facility_allowance_w,
                                              estimated, hashrate, per_hash), site.allocation_at)
    d = fleet.draw
    out[("fleet", fleet.name)] = (PowerSample(d.facility_power_w, d.facility_measured_w, d.facility_allowance_w,
                                              sum(estimated_sum), sum(hashrates) if hashrates else None, per_hash),
                                  config.fleet_allocation_w)
    return out
