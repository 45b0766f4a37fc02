"""The central tier on Prometheus federation: configs/prometheus/federation.yml against real servers.

Two simulated sites (frozen clock), an agent each, one collector (allocations). Two real site Prometheus
servers, each scraping its own site's agent and the collector with the repo's rules/megawatch.rules.yml and
its own external label; one real central Prometheus running the shipped federation.yml and central-rules.yml
(only targets and intervals changed for the test). The central server must answer the fleet totals (the sum of
the sites' own recording-rule series) within 1%, count each site once though the collector's allocations
arrive through both site servers, and hold no per-miner series at all while the site servers do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml

from megawatch.collector.exposition import ENERGY_COUNTERS
from tests.e2e import processes
from tests.e2e.processes import (
    ROOT,
    Proc,
    Procs,
    agent_yaml,
    get_json,
    start_agent,
    start_collector,
    start_prometheus_in,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
procs = processes.procs
http = processes.http

PROM_DIR = ROOT / "configs" / "prometheus"
SITES = ("site-a", "site-b")
PER_MINER = '{__name__=~"megawatch_miner_.*"}'


def _federated_records() -> set[str]:
    """The site records federation.yml asks for by exact name (tests/scale checks it asks for every one)."""
    config = yaml.safe_load((PROM_DIR / "federation.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j.get("metrics_path") == "/federate"]
    return {m.group(1) for s in job["params"]["match[]"] if (m := re.fullmatch(r'\{__name__="([^"]+)"\}', s))}


# The site tier's recording rules federation.yml asks for, by name.
FEDERATED = _federated_records()
# The collector's energy accounts and judged figure, for `megawatch report` at the central tier (docs/energy.md).
ENERGY = {f"megawatch_{scope}_{name}" for scope in ("site", "fleet") for name in (
    *(f"{counter}_total" for _, counter, _ in ENERGY_COUNTERS), "facility_power_watts", "utilisation_ratio")}


def fast_rules(path: Path, interval: str) -> str:
    # The shipped group intervals (15 s, 30 s) would make the test wait minutes for the first evaluations.
    text = path.read_text()
    assert f"interval: {interval}" in text, f"{path} no longer sets interval: {interval}"
    return text.replace(f"interval: {interval}", "interval: 1s")


def collector_yaml(path: Path, agents: dict[str, Proc]) -> Path:
    lines = ["fleet: {name: federation, allocation_mw: 10}", "sites:"]
    for site, agent in agents.items():
        lines += [f"  - id: {site}", "    allocation_mw: 4", "    pue: 1.1", "    aux_mw: 0.01",
                  f"    agents: [{agent.url}]"]
    lines += ["listen: {address: 127.0.0.1, port: 0}", "poll: {interval_s: 1, timeout_s: 0.8}",
              "production: {difficulty: 100000000000000}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def site_prometheus_yml(site: str, agent: Proc, collector: Proc) -> str:
    """A site server: its own agent (per-miner series) and the collector, the repo's rules, its external label."""
    return yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "external_labels": {"site_prometheus": f"{site}-prom"}},
        "rule_files": ["rules/megawatch.rules.yml"],
        "scrape_configs": [
            {"job_name": "megawatch-agent",
             "static_configs": [{"targets": [agent.url.removeprefix("http://")], "labels": {"site": site}}]},
            {"job_name": "megawatch-collector",
             "static_configs": [{"targets": [collector.url.removeprefix("http://")]}],
             # As federation.yml's header says: only its own site's series and the fleet's (no site label).
             "metric_relabel_configs": [{"source_labels": ["site"], "regex": f"{site}|", "action": "keep"}]},
        ],
    })


def central_yml(site_servers: list[Proc]) -> str:
    """The shipped federation.yml with only the site servers' addresses and the intervals changed."""
    config = yaml.safe_load((PROM_DIR / "federation.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
    config.pop("alerting")  # no Alertmanager here
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "megawatch-federate"]
    assert job["honor_labels"] is True and job["metrics_path"] == "/federate"
    job["static_configs"] = [{"targets": [p.url.removeprefix("http://") for p in site_servers]}]
    return yaml.safe_dump(config)


async def query(http: aiohttp.ClientSession, prom: Proc, expr: str) -> list[dict[str, Any]]:
    body = await get_json(http, prom.url + "/api/v1/query?" + urlencode({"query": expr}))
    assert body is not None and body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


async def scalar(http: aiohttp.ClientSession, prom: Proc, expr: str) -> float | None:
    result = await query(http, prom, expr)
    return float(result[0]["value"][1]) if len(result) == 1 else None


async def test_central_prometheus_federates_site_totals_and_no_miner_series(
        procs: Procs, http: aiohttp.ClientSession, make_sim_fleet: Any) -> None:
    sim = await make_sim_fleet(per_group=4)  # two sites x 8 dialect profiles x 4 = 64 miners, frozen clock
    agents = {site: await start_agent(
        procs, agent_yaml(procs.tmp / f"{site}.yaml", site, [m for m in sim.miners if m.site == site]), http)
        for site in SITES}
    collector = await start_collector(procs, collector_yaml(procs.tmp / "sites.yaml", agents), http)
    site_rules = {"rules/megawatch.rules.yml": fast_rules(PROM_DIR / "rules" / "megawatch.rules.yml", "15s")}
    site_servers = {site: await start_prometheus_in(procs, http, f"prom-{site}",
                                                    site_prometheus_yml(site, agents[site], collector), site_rules)
                    for site in SITES}
    central = await start_prometheus_in(
        procs, http, "prom-central", central_yml(list(site_servers.values())),
        {"central-rules.yml": fast_rules(PROM_DIR / "central-rules.yml", "30s")})

    # Each site server's own view of its site, from the repo's recording rules (per-miner data lives there).
    names = ("site:megawatch_miner_power_watts:sum", "site:megawatch_hashrate_hashes_per_second:sum",
             "site:megawatch_facility_power_watts:sum")

    async def sites_ready() -> dict[str, dict[str, float]] | None:
        own: dict[str, dict[str, float]] = {}
        for site, prom in site_servers.items():
            own[site] = {}
            for name in (*names, 'site:megawatch_miners:sum{state="up"}'):
                value = await scalar(http, prom, f'{name}{{site="{site}"}}' if "{" not in name
                                     else name.replace("{", f'{{site="{site}",'))
                if value is None:
                    return None
                own[site][name] = value
        return own

    own = await wait_until(sites_ready, 20, "both site servers to record their site totals")
    print("site servers:", own)

    fleet_rules = {"fleet:megawatch_miner_power_watts:sum": names[0],
                   "fleet:megawatch_hashrate_hashes_per_second:sum": names[1],
                   "fleet:megawatch_facility_power_watts:sum": names[2]}

    async def central_agrees() -> dict[str, float] | None:
        # Re-read the sites each round: the central must match what they hold now, within 1%.
        fresh = await sites_ready()
        if fresh is None:
            return None
        answers = {}
        for fleet_name, site_name in fleet_rules.items():
            theirs = await scalar(http, central, fleet_name)
            ours = sum(fresh[s][site_name] for s in SITES)
            if theirs is None or abs(theirs - ours) > 0.01 * ours:
                return None
            answers[fleet_name] = theirs
        up = await scalar(http, central, 'fleet:megawatch_miners:sum{state="up"}')
        if up != sum(fresh[s]['site:megawatch_miners:sum{state="up"}'] for s in SITES):
            return None
        answers["miners_up"] = up
        return answers

    answers = await wait_until(central_agrees, 20, "the central fleet totals to equal the sum of the sites (1%)")
    print("central:", answers)
    assert answers["fleet:megawatch_miner_power_watts:sum"] > 0 and answers["miners_up"] == len(sim.miners)

    # Per site too: the central answers each site as the site server does (federated, not recomputed).
    by_site = await query(http, central, "max by (site) (site:megawatch_miner_power_watts:sum)")
    assert {r["metric"]["site"]: float(r["value"][1]) for r in by_site} == pytest.approx(
        {s: own[s][names[0]] for s in SITES}, rel=0.01)
    # Where each series came from: the site servers' external label, kept by honor_labels.
    sources = await query(http, central, "count by (site_prometheus) (site:megawatch_miner_power_watts:sum)")
    assert {r["metric"].get("site_prometheus") for r in sources} == {"site-a-prom", "site-b-prom"}
    # Each site's allocation arrives once (from its own server); the fleet's through both, counted once.
    allocations = await query(http, central, "megawatch_site_allocation_watts")
    assert sorted((r["metric"]["site"], r["metric"]["site_prometheus"]) for r in allocations) == [
        ("site-a", "site-a-prom"), ("site-b", "site-b-prom")]
    assert await scalar(http, central, "count(megawatch_fleet_allocation_watts)") == len(SITES)
    # honor_labels: the collector's series keep their own job, not job="megawatch-federate" + exported_job.
    assert {r["metric"].get("job") for r in allocations} == {"megawatch-collector"}
    assert await scalar(http, central, "fleet:megawatch_allocation_watts:max") == pytest.approx(10e6)
    assert await scalar(http, central, "fleet:megawatch_sites_reporting:count") == len(SITES)

    # No per-miner series at the central tier, though each site server holds them all.
    for site, prom in site_servers.items():
        held = await scalar(http, prom, f"count({PER_MINER})")
        assert held is not None and held >= 10 * len([m for m in sim.miners if m.site == site]), (site, held)
    assert await query(http, central, f"count({PER_MINER})") == []
    # Nothing else crossed either: every name the central holds is one match[] asked for, its own fleet:*
    # recording rules or Prometheus's own scrape health (up, scrape_*). No raw agent series, no partial
    # fleet:* from a site server.
    names_held = {r["metric"]["__name__"] for r in await query(http, central, 'count by (__name__) ({__name__=~".+"})')}
    central_rules = yaml.safe_load((PROM_DIR / "central-rules.yml").read_text())["groups"][0]["rules"]
    allowed = ({r["record"] for r in central_rules if "record" in r} | FEDERATED | ENERGY
               | {"megawatch_site_allocation_watts", "megawatch_fleet_allocation_watts", "up", "ALERTS",
                  "ALERTS_FOR_STATE"})
    unexpected = {n for n in names_held - allowed if not n.startswith("scrape_")}
    assert unexpected == set(), unexpected
    assert FEDERATED <= names_held, FEDERATED - names_held
    assert ENERGY <= names_held, ENERGY - names_held
    partial = await query(http, central, '{__name__=~"fleet:.+", site_prometheus!=""}')
    assert partial == [], partial
