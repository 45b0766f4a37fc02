"""The collector as a real process against a real Alertmanager.

1. Fake agents (small aiohttp apps serving the summary JSON): over allocation fires for site A only, within
   hold time + two poll intervals, and resolves; a dead agent turns its site stale, its power still counted.
2. The real thing: simulator (two sites) + agents + collector + Alertmanager + Prometheus, driven through the
   simulator's control endpoint; Prometheus's recording-rule totals equal the collector's within 1%.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.collector.fakes import FakeAgent, fake_agent
from tests.e2e.conftest import (
    Proc, Procs, alertmanager_alerts, free_port, get_json, listening_url, megawatch, start_alertmanager,
    wait_until,
)

pytestmark = pytest.mark.e2e

POLL_S = 1.0
HOLD_S = 2.0
STALE_S = 3.0
MW = 1e6


def sites_yaml(path: Path, agents: dict[str, list[str]], allocation_mw: dict[str, float], am_url: str,
               pue: float = 1.0) -> Path:
    lines = ["fleet: {name: e2e, allocation_mw: %g}" % (sum(allocation_mw.values()) + 1), "sites:"]
    for site, urls in agents.items():
        lines += [f"  - id: {site}", f"    allocation_mw: {allocation_mw[site]}", f"    pue: {pue}",
                  f"    agents: [{', '.join(urls)}]"]
    lines += [
        "thresholds:", f"  hold_s: {HOLD_S}", f"  stale_after_s: {STALE_S}",
        "alerting:", f"  alertmanager_urls: [{am_url}]", "  resend_interval_s: 2", "  retry_base_s: 0.1",
        "  retry_max_s: 0.5",
        "listen: {address: 127.0.0.1, port: 0}",
        f"poll: {{interval_s: {POLL_S}, timeout_s: 0.8}}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_collector(procs: Procs, config: Path, http: aiohttp.ClientSession) -> Proc:
    proc = megawatch(procs, "collector", "collector", "--config", str(config), "--log-format", "json")
    proc.url = await listening_url(proc, "collector_listening")

    async def healthy() -> bool:
        async with http.get(proc.url + "/healthz") as resp:
            return resp.status == 200

    await wait_until(healthy, 10, "collector /healthz")
    return proc


async def site_view(http: aiohttp.ClientSession, collector: Proc, site: str) -> dict[str, Any]:
    body = await get_json(http, collector.url + "/api/v1/sites")
    return next(s for s in body["sites"] if s["id"] == site)


def for_site(alerts: list[dict[str, Any]], site: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("site") == site]


async def test_fake_agents_over_allocation_resolve_and_stale(procs: Procs, http: aiohttp.ClientSession) -> None:
    am = await start_alertmanager(procs, http)
    async with (fake_agent(FakeAgent("site-a", power_firmware_w=8 * MW)) as a,
                fake_agent(FakeAgent("site-b", power_firmware_w=8 * MW)) as b):
        config = sites_yaml(procs.tmp / "sites.yaml", {"site-a": [a.url], "site-b": [b.url]},
                            {"site-a": 10, "site-b": 10}, am.url)
        collector = await start_collector(procs, config, http)

        # Push A over: the alert must reach Alertmanager within hold time + two poll intervals.
        a.power_firmware_w = 11 * MW
        pushed = time.monotonic()
        over = await wait_until(
            lambda: _alerts_for(http, am, "SiteOverAllocation", "site-a"), HOLD_S + 2 * POLL_S + 2.0,
            "SiteOverAllocation for site-a in Alertmanager")
        took = time.monotonic() - pushed
        assert took >= HOLD_S * 0.9, f"fired after {took:.1f} s, before the {HOLD_S} s hold time"
        summary = over[0]["annotations"]["summary"]
        assert "draws 11.00 MW against its 10.00 MW allocation (+1.00 MW, 110.0%)" in summary
        assert over[0]["labels"]["severity"] == "critical" and over[0]["labels"]["source"] == "collector"
        assert not for_site(await alertmanager_alerts(http, am, "SiteOverAllocation"), "site-b")

        # Bring it back under the clear line: the alert resolves in Alertmanager.
        a.power_firmware_w = 9 * MW

        async def resolved() -> bool:
            return not for_site(await alertmanager_alerts(http, am, "SiteOverAllocation"), "site-a")

        await wait_until(resolved, 2 * POLL_S + 3.0, "SiteOverAllocation for site-a to resolve")
        body = await get_json(http, collector.url + "/api/v1/alerts")
        assert any(x["alertname"] == "SiteOverAllocation" and x["labels"]["site"] == "site-a"
                   for x in body["resolved"])

    # Both fake agents are gone now (servers closed): their sites turn stale, power carried, not 0.
    stale = await wait_until(lambda: _alerts_for(http, am, "SiteDataStale", "site-a"),
                             STALE_S + HOLD_S + 2 * POLL_S + 2.0, "SiteDataStale for site-a")
    assert "its last known 9.00 MW is still counted" in stale[0]["annotations"]["summary"]
    view = await site_view(http, collector, "site-a")
    assert view["status"] == "stale" and view["stale"] is True
    assert view["miner_power_w"] == 9 * MW and view["facility_power_w"] == 9 * MW
    assert await wait_until(lambda: _alerts_for(http, am, "AgentDown", "site-a"), HOLD_S + 2 * POLL_S + 2.0,
                            "AgentDown for site-a")
    assert collector.alive()


async def _alerts_for(http: aiohttp.ClientSession, am: Proc, name: str, site: str) -> list[dict[str, Any]] | None:
    found = for_site(await alertmanager_alerts(http, am, name), site)
    return found or None


async def test_alertmanager_down_at_first_gets_the_alert_when_it_comes_up(procs: Procs,
                                                                           http: aiohttp.ClientSession) -> None:
    am_port = free_port()
    async with fake_agent(FakeAgent("site-a", power_firmware_w=12 * MW)) as a:
        config = sites_yaml(procs.tmp / "sites.yaml", {"site-a": [a.url]}, {"site-a": 10},
                            f"http://127.0.0.1:{am_port}")
        collector = await start_collector(procs, config, http)

        async def firing_in_collector() -> bool:
            body = await get_json(http, collector.url + "/api/v1/alerts")
            return any(x["alertname"] == "SiteOverAllocation" and x["state"] == "firing" for x in body["active"])

        await wait_until(firing_in_collector, HOLD_S + 2 * POLL_S + 2.0, "the collector to fire")
        metrics = await (await http.get(collector.url + "/metrics")).text()
        assert f'megawatch_collector_notification_target_up{{target="http://127.0.0.1:{am_port}"}} 0.0' in metrics

        am = await start_alertmanager(procs, http, port=am_port)
        await wait_until(lambda: _alerts_for(http, am, "SiteOverAllocation", "site-a"), 5.0,
                         "the held-back alert to reach Alertmanager once it is up")
