"""A metered site end to end: the simulator (its miners and its SunSpec feeder meter over Modbus TCP), an
agent, the collector, a real Alertmanager and a real Prometheus (rules written by `megawatch rules` from the
same sites file).

(c) With the meter fresh, the site's figure is the meter's, within 1% of the simulator's truth, and the
    allocation is judged on it: load only the meter sees pushes the site over while the miners' figure is
    still under, and SiteOverAllocation fires.
(d) That load makes meter and miners diverge by 10%: SiteMeterMismatch fires in the collector (to
    Alertmanager) and in Prometheus.
(e) The meter goes offline: the site falls back to its miners' figure, status says so (figure_source miners,
    meter down), and the load only the meter saw is carried, so the over-allocation alert does not resolve.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from tests.e2e import processes
from tests.e2e.processes import (
    HOLD_S,
    POLL_S,
    Proc,
    Procs,
    agent_yaml,
    alertmanager_alerts,
    free_port,
    get_json,
    megawatch,
    prometheus_yml,
    site_view,
    start_agent,
    start_alertmanager,
    start_collector,
    start_prometheus,
    wait_until,
)

pytestmark = pytest.mark.e2e
procs = processes.procs
http = processes.http

SITE = "m"
PUE, AUX_KW = 1.05, 3.0
METER_STALE_S = 3.0
MISMATCH = 0.05
ALLOCATION_MARGIN = 1.05  # allocation = the meter's truth x this at the start


def sim_yaml(path: Path, control_port: int, meter_port: int) -> Path:
    octet = 20 + os.getpid() % 200  # a /24 of our own: parallel runs never share miner addresses
    path.write_text(f"""\
seed: 11
tick_s: 1
control: {{host: 127.0.0.1, port: {control_port}}}
sites:
  - id: {SITE}
    address: 127.78.{octet}.1
    ambient_c: 25
    groups:
      - {{count: 6, model: Antminer S19 Pro, dialect: bmminer}}
      - {{count: 6, model: Whatsminer M30S++, dialect: btminer}}
      - {{count: 4, model: Antminer S19, dialect: cgminer}}
    meter: {{port: {meter_port}, unit_id: 1, map: sunspec, pue: {PUE}, aux_kw: {AUX_KW}}}
""")
    return path


def sites_yaml(path: Path, agent: Proc, meter_port: int, allocation_mw: float, am: Proc) -> Path:
    path.write_text(f"""\
fleet: {{name: e2e, allocation_mw: 10}}
sites:
  - id: {SITE}
    allocation_mw: {allocation_mw:.6f}
    pue: {PUE}
    aux_mw: {AUX_KW / 1000}
    agents: [{agent.url}]
    meter: {{host: 127.0.0.1, port: {meter_port}, unit_id: 1, map: sunspec, timeout_s: 0.8,
             stale_after_s: {METER_STALE_S}}}
thresholds: {{hold_s: {HOLD_S}, stale_after_s: 3, meter_mismatch_ratio: {MISMATCH}}}
alerting: {{alertmanager_urls: [{am.url}], resend_interval_s: 2, retry_base_s: 0.1, retry_max_s: 0.5}}
listen: {{address: 127.0.0.1, port: 0}}
poll: {{interval_s: {POLL_S}, timeout_s: 0.8}}
""")
    return path


async def truth(http: aiohttp.ClientSession, control: str) -> dict[str, Any]:
    body = await get_json(http, control + "/api/v1/truth")
    return body["sites"][SITE]  # type: ignore[no-any-return]


async def prom_value(http: aiohttp.ClientSession, prom: Proc, expr: str) -> float | None:
    body = await get_json(http, prom.url + "/api/v1/query?" + urlencode({"query": expr}))
    result = body["data"]["result"] if body else []
    return float(result[0]["value"][1]) if result else None


async def alerts_in_am(http: aiohttp.ClientSession, am: Proc, name: str) -> list[dict[str, Any]] | None:
    found = [a for a in await alertmanager_alerts(http, am, name) if a["labels"].get("site") == SITE]
    return found or None


@pytest.mark.slow
async def test_metered_site_judged_on_its_meter_reconciled_and_falling_back(procs: Procs,
                                                                           http: aiohttp.ClientSession) -> None:
    control_port, meter_port = free_port(), free_port()
    control = f"http://127.0.0.1:{control_port}"
    sim = megawatch(procs, "simulate", "simulate", "--config",
                    str(sim_yaml(procs.tmp / "sim.yaml", control_port, meter_port)), "--log-format", "json")

    async def serving() -> dict[str, Any] | None:
        assert sim.alive(), f"simulator exited:\n{sim.output()}"
        return await get_json(http, control + "/api/v1/miners")

    miners = (await wait_until(serving, 20, "the simulator's control endpoint"))["miners"]
    am = await start_alertmanager(procs, http)
    agent = await start_agent(procs, agent_yaml(procs.tmp / "agent.yaml", SITE, [
        type("M", (), {"host": m["host"], "port": m["port"], "dialect": m["dialect"]}) for m in miners]), http)
    start_w = (await truth(http, control))["meter"]["truth_w"]
    allocation_w = start_w * ALLOCATION_MARGIN
    config = sites_yaml(procs.tmp / "sites.yaml", agent, meter_port, allocation_w / 1e6, am)
    collector = await start_collector(procs, config, http)
    rules = procs.tmp / "rules"
    rules.mkdir()
    written = megawatch(procs, "rules", "rules", "--config", str(config), "--out",
                        str(rules / "megawatch.rules.yml"))
    assert written.popen.wait(30) == 0, written.output()
    prom = await start_prometheus(procs, http, prometheus_yml({SITE: agent}, collector))

    # (c) The meter is the site's figure, within 1% of the truth.
    async def on_meter() -> dict[str, Any] | None:
        view = await site_view(http, collector, SITE)
        return view if view["figure_source"] == "meter" and view["meter"]["state"] == "ok" else None

    view = await wait_until(on_meter, 10, "the collector to judge the site on its meter")
    true_w = (await truth(http, control))["meter"]["truth_w"]
    miners_w = view["meter"]["miners_facility_power_w"]
    print(f"metered site: meter {view['facility_power_w']:.0f} W, truth {true_w:.0f} W, "
          f"miners' figure {miners_w:.0f} W ({(miners_w - true_w) / true_w:+.2%} estimate error)")
    assert view["facility_power_w"] == pytest.approx(true_w, rel=0.01)
    assert view["facility_measured_w"] == view["facility_power_w"] and view["facility_allowance_w"] == 0
    assert view["utilisation_ratio"] == pytest.approx(view["facility_power_w"] / view["allocation_w"])
    assert abs(view["meter"]["reconciliation_ratio"]) < MISMATCH, view["meter"]
    assert not await alerts_in_am(http, am, "SiteMeterMismatch")

    # Load only the meter sees (a GPU hall nobody declared): +10% of the site. The meter now reads over the
    # allocation while the miners' figure stays under it: the alert can only come from the meter.
    extra_kw = 0.10 * start_w / 1000
    async with http.post(control + f"/api/v1/meters/{SITE}/extra_load", json={"kw": extra_kw}) as resp:
        assert resp.status == 200, await resp.text()
    pushed = time.monotonic()
    budget = HOLD_S + 3 * POLL_S + 2.0
    over = await wait_until(lambda: alerts_in_am(http, am, "SiteOverAllocation"), budget,
                            "SiteOverAllocation, judged on the meter, in Alertmanager")
    print(f"metered site: SiteOverAllocation in Alertmanager {time.monotonic() - pushed:.2f} s after the load")
    view = await site_view(http, collector, SITE)
    true_w = (await truth(http, control))["meter"]["truth_w"]
    assert view["facility_power_w"] == pytest.approx(true_w, rel=0.01) and view["facility_power_w"] > allocation_w
    assert view["meter"]["miners_facility_power_w"] < allocation_w, "the miners alone would not have fired"
    assert over[0]["labels"]["source"] == "collector"

    # (d) Meter and miners now diverge by ~10%: SiteMeterMismatch in the collector and in Prometheus.
    mismatch = await wait_until(lambda: alerts_in_am(http, am, "SiteMeterMismatch"), budget,
                                "SiteMeterMismatch in Alertmanager")
    assert "its meter and its miners' figure differ by" in mismatch[0]["annotations"]["summary"]
    ratio = (await site_view(http, collector, SITE))["meter"]["reconciliation_ratio"]
    assert ratio == pytest.approx(0.10, abs=0.03), ratio

    async def prometheus_fires(name: str) -> bool:
        value = await prom_value(http, prom, f'ALERTS{{alertname="{name}",alertstate="firing",site="{SITE}"}}')
        return value == 1.0

    await wait_until(lambda: prometheus_fires("SiteMeterMismatch"), budget + 5, "Prometheus's SiteMeterMismatch")
    await wait_until(lambda: prometheus_fires("SiteOverAllocation"), budget + 5, "Prometheus's SiteOverAllocation")
    prom_w = await prom_value(http, prom, "site:megawatch_facility_power_watts:sum")
    assert prom_w == pytest.approx(view["facility_power_w"], rel=0.01)

    # (e) The meter goes offline: fallback to the miners' figure, said in status and metrics, with the load
    # only the meter saw carried - the over-allocation does not resolve because the meter went dark.
    async with http.post(control + f"/api/v1/meters/{SITE}/fault", json={"fault": "offline"}) as resp:
        assert resp.status == 200, await resp.text()

    async def fell_back() -> dict[str, Any] | None:
        view = await site_view(http, collector, SITE)
        return view if view["figure_source"] == "miners" and view["meter"]["state"] == "down" else None

    view = await wait_until(fell_back, 3 * POLL_S + 2.0, "the collector to fall back to the miners' figure")
    assert view["meter"]["error"].startswith(("connect_failed:", "timeout:")), view["meter"]["error"]
    unseen = view["meter"]["unseen_w"]
    assert unseen == pytest.approx(extra_kw * 1000, rel=0.5), view["meter"]  # the hall, give or take estimates
    # The miners' figure is reconciled at face value; the agents' margin on their estimates is judged on top.
    assert view["facility_margin_w"] > 0
    assert view["facility_power_w"] == pytest.approx(
        view["meter"]["miners_facility_power_w"] + view["facility_margin_w"] + unseen)
    assert view["facility_allowance_w"] >= unseen  # not measured now: allowed for
    assert view["facility_power_w"] > allocation_w
    metrics = await (await http.get(collector.url + "/metrics")).text()
    assert f'megawatch_site_meter_up{{site="{SITE}"}} 0.0' in metrics
    assert f'megawatch_site_meter_trusted{{site="{SITE}"}} 0.0' in metrics
    assert f'megawatch_site_meter_state{{site="{SITE}",state="down"}} 1.0' in metrics
    for _ in range(3):  # a few more cycles: still firing everywhere
        await wait_until(lambda: alerts_in_am(http, am, "SiteOverAllocation"), 2.0, "SiteOverAllocation to stay")
        assert await prometheus_fires("SiteOverAllocation")

    async def prometheus_agrees() -> bool:
        # Prometheus learns the meter is untrusted a scrape and a rule evaluation after the collector: until then
        # its figure is the last reading, the collector's that plus the agents' margin on their estimates.
        prom_w = await prom_value(http, prom, "site:megawatch_facility_power_watts:sum")
        ours = (await site_view(http, collector, SITE))["facility_power_w"]
        return prom_w is not None and prom_w == pytest.approx(ours, rel=0.01)

    await wait_until(prometheus_agrees, 3 * POLL_S + 5.0, "Prometheus's figure to be the collector's on fallback")
    body = await get_json(http, collector.url + "/api/v1/alerts")
    assert not any(a["alertname"] == "SiteOverAllocation" for a in body["resolved"])
    assert collector.alive() and sim.alive()
