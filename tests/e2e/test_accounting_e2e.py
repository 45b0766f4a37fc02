"""Conservative accounting end to end: simulator, agent, collector, Alertmanager (and Prometheus).

1. A site over its allocation whose miners all hang (a wire fault: they keep hashing and drawing) goes dark:
   nothing is measured, its last known draw is allowance, and SiteOverAllocation keeps firing in the
   collector and in Prometheus; it never resolves, however long the miners stay silent.
2. 400 miners truly at 103% of the allocation with 30 of them hung: the measured figure alone reads under
   the allocation, the upper bound over it, and SiteOverAllocation reaches Alertmanager within the hold time
   and two collector cycles.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from megawatch.collector.config import load_collector_config
from megawatch.collector.promrules import render
from tests.conftest import make_config
from tests.e2e import processes
from tests.e2e.processes import (
    HOLD_S,
    POLL_S,
    Proc,
    Procs,
    agent_yaml,
    alertmanager_alerts,
    get_json,
    prometheus_yml,
    site_view,
    sites_yaml,
    start_agent,
    start_alertmanager,
    start_collector,
    start_prometheus,
    wait_until,
)

pytestmark = pytest.mark.e2e
procs = processes.procs
http = processes.http

MW = 1e6
SITE = "site-a"
# Firmware-reported power only, so the measured figure is the simulator's own reported draw and the test is
# about what is not seen, not about estimate error.
FIRMWARE_GROUPS = (("btminer", "Whatsminer M30S++"), ("luxos", "Antminer S21"), ("bosminer", "Antminer S19j Pro"))


async def _over_in_alertmanager(http: aiohttp.ClientSession, am: Proc) -> list[dict[str, Any]] | None:
    found = [a for a in await alertmanager_alerts(http, am, "SiteOverAllocation") if a["labels"].get("site") == SITE]
    return found or None


async def _collector_alerts(http: aiohttp.ClientSession, collector: Proc) -> dict[str, Any]:
    body: dict[str, Any] = await get_json(http, collector.url + "/api/v1/alerts")
    return body


def _firing(body: dict[str, Any], name: str) -> bool:
    return any(a["alertname"] == name and a["state"] == "firing" and a["labels"].get("site") == SITE
               for a in body["active"])


async def _prom_firing(http: aiohttp.ClientSession, prom: Proc) -> bool:
    query = f'ALERTS{{alertname="SiteOverAllocation",alertstate="firing",site="{SITE}"}}'
    body = await get_json(http, prom.url + "/api/v1/query?" + urlencode({"query": query}))
    return bool(body["data"]["result"])


async def _true_w(sim: Any) -> float:
    return float((await sim.truth())["sites"][SITE]["power_w"])


async def _hang(http: aiohttp.ClientSession, sim: Any, fraction: float) -> None:
    async with http.post(sim.control_url + "/api/v1/faults",
                         json={"site": SITE, "fault": "hang", "fraction": fraction}) as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.slow
async def test_a_dark_site_keeps_its_over_allocation_firing(procs: Procs, http: aiohttp.ClientSession,
                                                            make_sim_fleet: Any) -> None:
    am = await start_alertmanager(procs, http)
    sim = await make_sim_fleet(make_config(FIRMWARE_GROUPS[:1], sites=1, per_group=20))
    agent = await start_agent(procs, agent_yaml(procs.tmp / "agent.yaml", SITE, sim.miners), http)
    truth = await _true_w(sim)
    allocation_mw = round(truth * 0.87 / MW, 6)  # the 80.9 kW against 70 kW
    config = sites_yaml(procs.tmp / "sites.yaml", {SITE: [agent.url]}, {SITE: allocation_mw}, am.url)
    # Prometheus judges with the rules `megawatch rules` writes from this very sites file (1 s, 2 s hold).
    (procs.tmp / "rules").mkdir()
    (procs.tmp / "rules" / "megawatch.rules.yml").write_text(render(load_collector_config(config), str(config)))
    collector = await start_collector(procs, config, http)
    prom = await start_prometheus(procs, http, prometheus_yml({SITE: agent}, collector))

    await wait_until(lambda: _over_in_alertmanager(http, am), HOLD_S + 3 * POLL_S + 2.0,
                     "SiteOverAllocation from the collector in Alertmanager")
    await wait_until(lambda: _prom_firing(http, prom), HOLD_S + 10.0, "SiteOverAllocation firing in Prometheus")

    await _hang(http, sim, 1.0)
    hung_at = time.monotonic()

    async def dark() -> dict[str, Any] | None:
        view = await site_view(http, collector, SITE)
        return view if view["status"] == "dark" else None

    view = await wait_until(dark, 10.0, "the site to read dark")
    print(f"dark site: status dark {time.monotonic() - hung_at:.2f} s after the hang")
    # Watch past the agent's stale grace (2 s) and the hold time: the figure never drops, nothing resolves.
    watch_until = time.monotonic() + 2 + HOLD_S + 4 * POLL_S
    seen = 0
    while time.monotonic() < watch_until:
        view = await site_view(http, collector, SITE)
        assert view["status"] == "dark", view
        assert not view["miner_power_w"] and view["allowance_ratio"] == 1.0, view
        assert view["facility_power_w"] >= truth * 0.99, (view["facility_power_w"], truth)
        assert _firing(await _collector_alerts(http, collector), "SiteOverAllocation")
        assert await _over_in_alertmanager(http, am)
        assert await _prom_firing(http, prom)
        seen += 1
        await wait_until(_cycles_past(http, collector, await _cycles(http, collector)), 3 * POLL_S,
                         "the collector's next cycle")
    assert seen >= 5
    body = await _collector_alerts(http, collector)
    assert not any(a["alertname"] == "SiteOverAllocation" for a in body["resolved"]), body["resolved"]
    over = next(a for a in body["active"] if a["alertname"] == "SiteOverAllocation")
    assert "0.0 kW measured" in over["summary"] and "Data: dark" in over["description"], over
    assert view["allowance_last_known"] == 20
    await wait_until(lambda: _unknown_share(http, collector), HOLD_S + 3 * POLL_S, "SiteUnknownShareHigh to fire")
    # Prometheus's own figure is the upper bound too, all of it allowance.
    query = f'site:megawatch_allowance:ratio{{site="{SITE}"}}'
    ratio = await get_json(http, prom.url + "/api/v1/query?" + urlencode({"query": query}))
    assert float(ratio["data"]["result"][0]["value"][1]) == 1.0
    # The share SiteUnknownShareHigh judges leaves the estimate margin out; dark miners are all unknown draw.
    query = f'site:megawatch_unknown:ratio{{site="{SITE}"}}'
    unknown = await get_json(http, prom.url + "/api/v1/query?" + urlencode({"query": query}))
    assert float(unknown["data"]["result"][0]["value"][1]) > 0.5, unknown


async def _unknown_share(http: aiohttp.ClientSession, collector: Proc) -> bool:
    return _firing(await _collector_alerts(http, collector), "SiteUnknownShareHigh")


async def _cycles(http: aiohttp.ClientSession, collector: Proc) -> float:
    text = await (await http.get(collector.url + "/metrics")).text()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("megawatch_collector_cycles_total "))


def _cycles_past(http: aiohttp.ClientSession, collector: Proc, seen: float) -> Callable[[], Awaitable[bool]]:
    async def past() -> bool:
        return await _cycles(http, collector) > seen

    return past


@pytest.mark.slow
async def test_a_half_dark_site_over_its_allocation_fires(procs: Procs, http: aiohttp.ClientSession,
                                                          make_sim_fleet: Any) -> None:
    am = await start_alertmanager(procs, http)
    per_group = 400 // len(FIRMWARE_GROUPS) + 1
    sim = await make_sim_fleet(make_config(FIRMWARE_GROUPS, sites=1, per_group=per_group))
    miners = sim.miners[:400]
    agent = await start_agent(procs, agent_yaml(procs.tmp / "agent.yaml", SITE, miners), http)
    ours = {x.index for x in miners}
    rows = (await get_json(http, sim.control_url + "/api/v1/miners"))["miners"]
    truth = sum(float(m["true_power_w"]) for m in rows if m["index"] in ours)
    allocation_mw = round(truth / 1.03 / MW, 6)

    hung = miners[:30]
    sim.set_fault(hung, "hang")

    async def hung_seen() -> dict[str, Any] | None:
        summary = await get_json(http, agent.url + "/api/v1/summary")
        down = summary["miners"]["down"]  # past the stale grace: the state that used to read 95%
        return summary if down == 30 else None

    summary = await wait_until(hung_seen, 15.0, "the agent to hold the 30 hung miners down")
    measured = summary["totals"]["power_w"]["firmware"] + summary["totals"]["power_w"]["estimate"]
    print(f"half-dark site: truth {truth / 1e3:.1f} kW, allocation {allocation_mw * 1e3:.1f} kW, measured "
          f"{measured / allocation_mw / MW:.1%}, upper bound {summary['totals']['power_upper_bound_w'] / 1e3:.1f} kW")
    assert measured < allocation_mw * MW  # what the measured figure alone would say: under, silently
    assert summary["totals"]["allowance_miners"]["last_known"] == 30

    config = sites_yaml(procs.tmp / "sites.yaml", {SITE: [agent.url]}, {SITE: allocation_mw}, am.url)
    collector = await start_collector(procs, config, http)
    started = time.monotonic()
    over = await wait_until(lambda: _over_in_alertmanager(http, am), HOLD_S + 2 * POLL_S + 1.0,
                            "SiteOverAllocation for the half-dark site in Alertmanager")
    print(f"half-dark site: SiteOverAllocation in Alertmanager {time.monotonic() - started:.2f} s after the "
          f"collector came up")
    assert "allowed for" in over[0]["annotations"]["summary"], over[0]["annotations"]["summary"]
    view = await site_view(http, collector, SITE)
    assert view["status"] == "partial" and 0.05 < view["allowance_ratio"] < 0.1, view
    assert view["facility_power_w"] == pytest.approx(truth, rel=0.01)
    assert view["utilisation_ratio"] > 1.0
