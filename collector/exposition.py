"""SiteCollector: the collector's state -> Prometheus metric families at scrape time. Every name is here.

Names avoid the agent's own `megawatch_site_*` series (power by source per shard, hashrate, miners) so that
one Prometheus scraping agents and collector never adds the two up: the collector's figures are the site's
totals over all its shards (`megawatch_site_total_*`) and its facility view against the allocation.
A None figure has no sample - unknown is absent, never 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from megawatch.collector.config import ALERT_NAMES, public_url
from megawatch.collector.meterclient import MeterReader
from megawatch.collector.model import AlertPhase, Draw, FleetTotals, SiteStatus
from megawatch.collector.service import CollectorService
from megawatch.collector.sitemeter import MeterState
from megawatch.common.daemon import ReloadStatus, reload_families

AGENT_STATES = ("up", "down", "stale", "no_data")


def _gauges(prefix: str, labels: list[str]) -> dict[str, GaugeMetricFamily]:
    """The draw families shared by a site (labels ['site']) and the fleet (labels ['fleet'])."""
    what = "Site" if prefix == "site" else "Fleet"

    def g(name: str, help_: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"megawatch_{prefix}_{name}", f"{what} {help_}", labels=[*labels, *extra])

    return {
        "facility": g("facility_power_watts", "draw at the grid as judged against the allocation: the facility "
                      "upper bound (measured plus allowance), in watts."),
        "facility_measured": g("facility_measured_watts", "draw at the grid from measured miner power: "
                               "measured x PUE + auxiliary load, in watts."),
        "facility_allowance": g("facility_allowance_watts", "draw at the grid allowed for miners and agents "
                                "whose draw is not known now: allowance x PUE, in watts."),
        "facility_upper": g("facility_upper_bound_watts",
                            "draw at the grid at most: facility measured plus facility allowance, in watts."),
        "miner": g("miner_power_watts", "miner power measured now over all agents by source (firmware or "
                   "estimate), in watts.", ("source",)),
        "miner_allowance": g("miner_allowance_watts", "miner power allowed for miners and agents whose draw "
                             "is not known now (last known, nameplate or default; never 0), in watts."),
        "miner_upper": g("miner_upper_bound_watts", "miner power measured plus allowance, in watts."),
        "allowance_ratio": g("allowance_ratio", "share of the facility upper bound that is allowance, not "
                             "measured (a ratio)."),
        "allowance_miners": g("allowance_miners", "miners counted in the allowance by basis (last_known, "
                              "nameplate, default), a count of miners.", ("basis",)),
        "allocation": g("allocation_watts", "power allocation in force now, in watts."),
        "utilisation": g("utilisation_ratio", "facility power divided by the allocation in force (a ratio)."),
        "headroom": g("headroom_watts", "allocation minus facility power (negative when over), in watts."),
        "estimated": g("estimated_power_ratio", "share of miner power that is estimated, not firmware-reported."),
        "hashrate": g("total_hashrate_hashes_per_second", "hashrate over all agents, in hashes per second."),
        "miners": g("total_miners", "miners over all agents by state (up, down, stale, total), a count of miners.",
                    ("state",)),
        "unknown": g("total_power_unknown_miners", "miners whose power is unknown and so not in the totals."),
    }


def _add_draw(fam: dict[str, GaugeMetricFamily], labels: list[str], d: Draw) -> None:
    def put(key: str, value: float | None, extra: tuple[str, ...] = ()) -> None:
        if value is not None:
            fam[key].add_metric([*labels, *extra], value)

    put("facility", d.facility_power_w)
    put("facility_measured", d.facility_measured_w)
    put("facility_allowance", d.facility_allowance_w)
    put("facility_upper", d.facility_upper_bound_w)
    put("miner_allowance", d.miner_allowance_w)
    put("miner_upper", d.miner_upper_bound_w)
    put("allowance_ratio", d.allowance_ratio)
    for basis, count in (("last_known", d.allowance_last_known), ("nameplate", d.allowance_nameplate),
                         ("default", d.allowance_default)):
        put("allowance_miners", count, (basis,))
    put("miner", d.power_firmware_w, ("firmware",))
    put("miner", d.power_estimate_w, ("estimate",))
    put("allocation", d.allocation_w)
    put("utilisation", d.utilisation_ratio)
    put("headroom", d.headroom_w)
    put("estimated", d.estimated_power_ratio)
    put("hashrate", d.hashrate_hs)
    for state, count in (("up", d.miners_up), ("down", d.miners_down), ("stale", d.miners_stale),
                         ("total", d.miners_total)):
        put("miners", count, (state,))
    put("unknown", d.miners_power_unknown)


class SiteCollector(Collector):
    """Reads the service's latest totals; never awaits, never does I/O."""

    def __init__(self, service: CollectorService) -> None:
        self._service = service

    def describe(self) -> Iterator[Metric]:
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._service)

    def _families(self, svc: CollectorService | None) -> Iterator[Metric]:
        site_fam = _gauges("site", ["site"])
        fleet_fam = _gauges("fleet", ["fleet"])

        def g(name: str, help_: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"megawatch_{name}", help_, labels=labels)

        pue = g("site_pue_ratio", "Site facility overhead factor applied to miner power (PUE, a ratio).", ["site"])
        aux = g("site_aux_power_watts", "Site fixed auxiliary load added to the facility draw, in watts.", ["site"])
        base_alloc = g("site_base_allocation_watts",
                       "Site allocation outside any schedule window, in watts.", ["site"])
        age = g("site_data_age_seconds", "Age of the oldest agent data counted in the site totals, in seconds.",
                ["site"])
        stale = g("site_stale", "1 if some of the site's figures are carried from stale agent data (a flag).",
                  ["site"])
        status = g("site_status", "Site data status: 1 for the current one of ok, partial, dark, stale, no_data.",
                   ["site", "status"])
        agents = g("site_agents", "The site's agents by state (up, down, stale, no_data), a count of agents.",
                   ["site", "state"])
        duplicates = g("site_duplicate_agent_ids", "Agent ids reported by more than one of the site's agent URLs "
                       "(one agent listed twice, or shards sharing an id), a count of ids.", ["site"])
        agent_up = g("collector_agent_up", "1 if the agent's summary was read at the last cycle (a flag).",
                     ["site", "agent"])
        agent_age = g("collector_agent_data_age_seconds", "Age of the agent's last good summary, in seconds.",
                      ["site", "agent"])
        fetch_s = g("collector_agent_fetch_duration_seconds", "Time the last summary fetch took, in seconds.",
                    ["site", "agent"])
        fetches = CounterMetricFamily("megawatch_collector_agent_fetches",
                                      "Summary fetches by outcome (ok, error, not_ready), a count of fetches.",
                                      labels=["site", "agent", "outcome"])
        fleet_sites_stale = g("fleet_sites_stale", "Sites with no fresh agent data, a count of sites.", ["fleet"])
        cycles = CounterMetricFamily("megawatch_collector_cycles", "Collector cycles completed, a count of cycles.")
        cycle_s = g("collector_cycle_duration_seconds", "Duration of the latest collector cycle, in seconds.", [])
        last = g("collector_last_cycle_timestamp_seconds", "Unix time the latest cycle ended, in seconds.", [])
        alerts = g("collector_alerts", "Alerts by name and phase (pending, firing), a count of alerts.",
                   ["alertname", "phase"])
        pending = g("collector_notifications_pending", "Alert batches waiting for delivery, a count of batches.",
                    ["target"])
        target_up = g("collector_notification_target_up",
                      "1 if the last delivery to the target succeeded, 0 if it failed (a flag).", ["target"])
        sent = CounterMetricFamily("megawatch_collector_notifications",
                                   "Alert batches by outcome (sent, failed attempt, dropped), a count of batches.",
                                   labels=["target", "outcome"])
        families: list[Metric] = [*site_fam.values(), pue, aux, base_alloc, age, stale, status, agents, duplicates,
                                  *fleet_fam.values(), fleet_sites_stale, agent_up, agent_age, fetch_s, fetches,
                                  cycles, cycle_s, last, alerts, pending, target_up, sent]
        families += reload_families("collector", svc.reload_status if svc is not None else ReloadStatus())
        families += meter_families(svc.fleet if svc is not None else None, svc.meters if svc is not None else None)
        families += energy_families(svc)
        config = (svc or self._service).config
        for site in config.sites:
            pue.add_metric([site.id], site.pue)
            aux.add_metric([site.id], site.aux_w)
            base_alloc.add_metric([site.id], site.allocation_w)
        if svc is not None and svc.fleet is not None:
            fleet = svc.fleet
            for t in fleet.sites:
                _add_draw(site_fam, [t.site_id], t.draw)
                if t.data_age_s is not None:
                    age.add_metric([t.site_id], t.data_age_s)
                stale.add_metric([t.site_id], 1.0 if t.stale else 0.0)
                for st in SiteStatus:
                    status.add_metric([t.site_id, st.value], 1.0 if t.status is st else 0.0)
                counts = dict.fromkeys(AGENT_STATES, 0)
                for a in t.agents:
                    counts["no_data" if not a.has_data else "stale" if a.stale else "up" if a.up else "down"] += 1
                    agent_up.add_metric([t.site_id, a.url], 1.0 if a.up else 0.0)
                    if a.age_s is not None:
                        agent_age.add_metric([t.site_id, a.url], a.age_s)
                for state, n in counts.items():
                    agents.add_metric([t.site_id, state], n)
                duplicates.add_metric([t.site_id], len(t.duplicate_agent_ids))
            _add_draw(fleet_fam, [fleet.name], fleet.draw)
            fleet_sites_stale.add_metric([fleet.name], fleet.sites_stale)
        if svc is not None:
            # Labelled by the URL without its credentials; two URLs that differ only there count as one agent.
            counted: Counter[tuple[str, str, str]] = Counter()
            for (url, outcome), n in sorted(svc.stats.fetches.items()):
                counted[(svc.site_of[url], public_url(url), outcome)] += n
            for labels, n in counted.items():
                fetches.add_metric(list(labels), n)
            took = {(svc.site_of[url], public_url(url)): s for url, s in svc.stats.fetch_duration_s.items()}
            for (site_id, agent), seconds in took.items():
                fetch_s.add_metric([site_id, agent], seconds)
            cycles.add_metric([], svc.stats.cycles)
            if svc.stats.last_duration_s is not None:
                cycle_s.add_metric([], svc.stats.last_duration_s)
            if svc.stats.last_finished is not None:
                last.add_metric([], svc.stats.last_finished)
            for name in ALERT_NAMES:
                for phase in (AlertPhase.PENDING, AlertPhase.FIRING):
                    n = sum(1 for a in svc.evaluation.active if a.name == name and a.phase is phase)
                    alerts.add_metric([name, phase.value], n)
            for target, n in svc.notifier.pending():
                pending.add_metric([target.name], n)
                if target.stats.up is not None:
                    target_up.add_metric([target.name], 1.0 if target.stats.up else 0.0)
                sent.add_metric([target.name, "sent"], target.stats.sent_batches)
                sent.add_metric([target.name, "failed"], target.stats.failed_attempts)
                sent.add_metric([target.name, "dropped"], target.stats.dropped_batches)
        yield from families


def meter_families(fleet: FleetTotals | None, reader: MeterReader | None) -> list[Metric]:
    """The site meters beside the miners' figures (collector/sitemeter.py); metered sites only."""
    def g(name: str, help_: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"megawatch_site_{name}", help_, labels=["site", *extra])

    power = g("meter_power_watts", "Site meter's last good power reading (import positive), in watts.")
    up = g("meter_up", "1 if the site meter's last read answered with a usable power, else 0 (a flag).")
    age = g("meter_age_seconds", "Time since the site meter's registers last moved (power or import counter), "
            "in seconds.")
    trusted = g("meter_trusted", "1 if the site meter's reading is the site's figure for its allocation "
                "(fresh and plausible), 0 if the site falls back to its miners' figure (a flag).")
    state = g("meter_state", "Site meter state: 1 for the current one of ok, stale, down, rejected.", ("state",))
    miners = g("miners_facility_power_watts", "Site figure from its miners: miner power x PUE + aux + declared "
               "non-miner load, what the site is judged on without its meter, in watts.")
    non_miner = g("non_miner_load_watts", "Site load on the allocation that no miner reports, as declared, "
                  "in watts.")
    reconciliation = g("reconciliation_watts", "Site meter minus the miners' figure while the meter is fresh "
                       "(estimate error, unseen load, theft), in watts.")
    ratio = g("reconciliation_ratio", "Site reconciliation divided by the miners' figure (a ratio).")
    unseen = g("meter_unseen_watts", "Load the site meter last showed beyond the miners' figure while trusted, "
               "added to that figure whenever the meter is not trusted, in watts.")
    energy = CounterMetricFamily("megawatch_site_meter_imported_energy_joules",
                                 "Site meter's import energy register, in joules.", labels=["site"])
    reads = CounterMetricFamily("megawatch_collector_meter_reads", "Site meter readings by outcome (ok, "
                                "connect_failed, timeout, device_error, layout), a count of readings.",
                                labels=["site", "outcome"])
    read_s = GaugeMetricFamily("megawatch_collector_meter_read_duration_seconds",
                               "Time the site meter's last reading took, in seconds.", labels=["site"])
    families: list[Metric] = [power, up, age, trusted, state, miners, non_miner, reconciliation, ratio, unseen,
                              energy, reads, read_s]
    if reader is not None:
        for (site_id, outcome), n in sorted(reader.reads.items()):
            reads.add_metric([site_id, outcome], n)
        for site_id, seconds in reader.duration_s.items():
            read_s.add_metric([site_id], seconds)
    for site in fleet.sites if fleet is not None else ():
        m, labels = site.meter, [site.site_id]
        if m is None:
            continue
        for fam, value in ((power, m.power_w), (age, m.age_s), (miners, m.miners_facility_power_w),
                           (reconciliation, m.reconciliation_w), (ratio, m.reconciliation_ratio)):
            if value is not None:
                fam.add_metric(labels, value)
        up.add_metric(labels, 1.0 if m.up else 0.0)
        trusted.add_metric(labels, 1.0 if m.state is MeterState.OK else 0.0)
        for st in MeterState:
            if st is not MeterState.NONE:
                state.add_metric([*labels, st.value], 1.0 if m.state is st else 0.0)
        non_miner.add_metric(labels, m.non_miner_load_w)
        unseen.add_metric(labels, m.unseen_w)
        if m.energy_import_wh is not None:
            energy.add_metric(labels, m.energy_import_wh * 3600.0)
    return families


# (key, name after megawatch_<site|fleet>_, help after "Site "/"Fleet ") of the energy accounts (collector/energy.py)
ENERGY_COUNTERS = (
    ("judged_j", "energy_joules", "energy by the figure judged against the allocation (a trusted meter, else the "
     "upper bound), left-Riemann over cycles, kept across restarts, in joules."),
    ("measured_j", "energy_measured_joules", "energy measured (the measured part of the judged figure), in joules."),
    ("allowance_j", "energy_allowance_joules", "energy allowed for draw not known at the time (the allowance "
     "part of the judged figure), in joules."),
    ("estimated_j", "energy_estimated_joules", "energy of miners whose power is estimated from hashrate and J/TH "
     "(part of measured), in joules."),
    ("unknown_j", "energy_unknown_joules", "energy of gaps between cycles too long to trust (collector down), "
     "counted at the larger of the last figure and the allocation, not in the judged energy, in joules."),
    ("unknown_s", "energy_unknown_seconds", "time in gaps between cycles counted as unknown energy, in seconds."),
    ("allocated_j", "allocation_energy_joules", "allocation in force integrated over time (schedules followed), "
     "in joules."),
    ("over_j", "energy_over_allocation_joules", "energy above the allocation in force, in joules."),
    ("over_s", "over_allocation_seconds", "time the judged figure was above the allocation in force, in seconds."),
    ("hashes", "hashes", "hashes computed by fresh agents' miners (hashrate integrated over time), a count."),
    ("expected_btc", "expected_btc", "bitcoin expected from the measured hashrate at the configured difficulty "
     "and block reward: expected, not mined (pool payouts are not read), in BTC."),
)


def energy_families(svc: CollectorService | None) -> list[Metric]:
    """Energy and production accounts per site and for the fleet, and the production settings they use."""
    families: list[Metric] = []
    accounts = svc.energy.accounts if svc is not None else {}
    production = svc.config.production if svc is not None else None
    for kind in ("site", "fleet"):
        what = "Site" if kind == "site" else "Fleet"
        for key, name, help_ in ENERGY_COUNTERS:
            fam = CounterMetricFamily(f"megawatch_{kind}_{name}", f"{what} {help_}", labels=[kind])
            if key != "expected_btc" or production is not None:
                for (k, label), account in sorted(accounts.items()):
                    if k == kind and _configured(svc, k, label):
                        fam.add_metric([label], getattr(account.totals, key))
            families.append(fam)
    difficulty = GaugeMetricFamily("megawatch_production_difficulty", "Network difficulty the collector's expected "
                                   "BTC uses (sites file production.difficulty), a number.")
    reward = GaugeMetricFamily("megawatch_production_block_reward_btc", "Block subsidy plus fees per block the "
                               "collector's expected BTC uses (sites file production), in BTC.")
    if production is not None:
        difficulty.add_metric([], production.difficulty)
        reward.add_metric([], production.btc_per_block)
    return [*families, difficulty, reward]


def _configured(svc: CollectorService | None, kind: str, name: str) -> bool:
    # Accounts of a site since removed stay in the state file but are not served (its series simply ends).
    if svc is None:
        return False
    return name == svc.config.fleet_name if kind == "fleet" else svc.config.site(name) is not None
