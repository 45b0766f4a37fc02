"""The Prometheus path alone: the collector is killed while a site is over its allocation; one copy per incident.

Simulator + agent + collector + a real Prometheus running the rules `megawatch rules` writes from the test's
sites file (1 s evaluations, 2 s holds) + a real Alertmanager running the shipped config with a webhook
receiver. While the collector runs, both paths fire SiteOverAllocation and Alertmanager keeps the
collector's copy (the Prometheus copy inhibited). Killed, the collector's series stop; Prometheus goes on
judging the agent's power against the last allocation the collector served, so SiteOverAllocation never
resolves, and CollectorDown fires. Once the collector's copy expires, Prometheus's carries the incident in the
same notification group: one group key, never two firing copies in one notification.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.collector.fakes import serve_app
from tests.e2e import processes
from tests.e2e.processes import (
    HOLD_S,
    POLL_S,
    ROOT,
    Proc,
    Procs,
    agent_yaml,
    free_port,
    get_json,
    prometheus_yml,
    require_binary,
    sites_yaml,
    start_agent,
    start_collector,
    start_prometheus,
    wait_until,
)

pytestmark = pytest.mark.e2e
procs = processes.procs
http = processes.http

MW = 1e6
SCRAPE_S = 1.0  # prometheus_yml's scrape and evaluation interval
RESEND_S = 2.0  # sites_yaml's alerting.resend_interval_s: the collector's alerts stay valid 4 x this


async def start_alertmanager_to(procs: Procs, http: aiohttp.ClientSession, webhook: str) -> Proc:
    """The shipped Alertmanager config (its grouping and inhibit rules under test), notifying `webhook`."""
    binary = require_binary("prometheus-alertmanager")
    config = yaml.safe_load((ROOT / "configs" / "prometheus" / "alertmanager.yml").read_text())
    config["receivers"] = [{"name": "operators", "webhook_configs": [{"url": webhook, "send_resolved": True}]}]
    config["route"]["group_interval"] = "1s"  # so a changed group is notified within the test, not a minute on
    path = procs.tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    (procs.tmp / "am-data").mkdir()
    proc = procs.start("alertmanager", [
        binary, f"--config.file={path}", f"--storage.path={procs.tmp / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"])
    proc.url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        assert proc.alive(), proc.output()
        async with http.get(proc.url + "/-/ready") as resp:
            return resp.status == 200

    await wait_until(ready, 15, "alertmanager /-/ready")
    return proc


async def am_copies(http: aiohttp.ClientSession, am: Proc, name: str, site: str) -> dict[str, str]:
    """Alertmanager's copies of one alert for one site: source -> state (active, suppressed)."""
    async with http.get(am.url + "/api/v2/alerts", params={"filter": f'alertname="{name}"'}) as resp:
        resp.raise_for_status()
        alerts: list[dict[str, Any]] = await resp.json()
    return {a["labels"]["source"]: a["status"]["state"] for a in alerts
            if a["labels"].get("site", "") == site and a["status"]["state"] != "unprocessed"}


async def prometheus_alerts(http: aiohttp.ClientSession, prom: Proc) -> dict[str, dict[str, Any]]:
    """Prometheus's own firing alerts by alertname (one site here)."""
    body = await get_json(http, prom.url + "/api/v1/alerts")
    return {a["labels"]["alertname"]: a for a in body["data"]["alerts"] if a["state"] == "firing"}


async def test_collector_killed_while_a_site_is_over(procs: Procs, http: aiohttp.ClientSession,
                                                     make_sim_fleet: Any) -> None:
    notifications: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        notifications.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serve_app(app) as hook_url:
        am = await start_alertmanager_to(procs, http, hook_url + "/hook")
        sim = await make_sim_fleet(sites=1)
        agent = await start_agent(procs, agent_yaml(procs.tmp / "site-a.yaml", "site-a", sim.miners), http)
        totals = (await get_json(http, agent.url + "/api/v1/summary"))["totals"]
        draw_w = totals["power_w"]["firmware"] + totals["power_w"]["estimate"]
        # The allocation is 80% of what the site draws: over by a quarter, far from the hysteresis band.
        sites = sites_yaml(procs.tmp / "sites.yaml", {"site-a": [agent.url]}, {"site-a": round(draw_w * 0.8 / MW, 6)},
                           am.url)
        rules = procs.tmp / "rules"
        rules.mkdir()
        written = subprocess.run([sys.executable, "-m", "megawatch.cli", "rules", "--config", str(sites),
                                  "--out", str(rules / "megawatch.rules.yml")], capture_output=True, text=True,
                                 timeout=60, check=False)
        assert written.returncode == 0, written.stderr
        collector = await start_collector(procs, sites, http)
        prom = await start_prometheus(procs, http, prometheus_yml({"site-a": agent}, collector) + (
            f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am.url.removeprefix('http://')}']\n"))

        # Both paths fire; Alertmanager shows the collector's copy and holds Prometheus's back.
        async def both_fire() -> bool:
            copies = await am_copies(http, am, "SiteOverAllocation", "site-a")
            return copies == {"collector": "active", "prometheus": "suppressed"}

        await wait_until(both_fire, HOLD_S + 4 * POLL_S + 10, "both copies of SiteOverAllocation in Alertmanager")
        before = (await prometheus_alerts(http, prom))["SiteOverAllocation"]

        collector.popen.kill()
        collector.popen.wait(5)
        killed = time.monotonic()

        async def collector_down() -> dict[str, Any] | None:
            return (await prometheus_alerts(http, prom)).get("CollectorDown")

        down = await wait_until(collector_down, HOLD_S + 3 * SCRAPE_S + 5, "Prometheus to fire CollectorDown")
        print(f"CollectorDown firing in Prometheus {time.monotonic() - killed:.1f} s after the kill")
        assert down["labels"]["severity"] == "warning" and down["labels"]["source"] == "prometheus"

        # Prometheus alone now: its copy takes over once the collector's expires (4 resend intervals).
        async def prometheus_carries() -> bool:
            copies = await am_copies(http, am, "SiteOverAllocation", "site-a")
            collector_down_in_am = await am_copies(http, am, "CollectorDown", "")
            return copies.get("prometheus") == "active" and collector_down_in_am.get("prometheus") == "active"

        await wait_until(prometheus_carries, 4 * RESEND_S + HOLD_S + 10,
                         "Prometheus's SiteOverAllocation and CollectorDown active in Alertmanager")
        print(f"Prometheus's copy active in Alertmanager {time.monotonic() - killed:.1f} s after the kill")
        now = (await prometheus_alerts(http, prom))["SiteOverAllocation"]
        assert now["activeAt"] == before["activeAt"], "SiteOverAllocation resolved in Prometheus meanwhile"
        assert "allocation (+" in now["annotations"]["summary"], now["annotations"]["summary"]

        # One incident, one notification group; never two firing copies of it in one notification.
        over = [n for n in notifications if n["groupLabels"].get("alertname") == "SiteOverAllocation"]
        assert {n["groupKey"] for n in over} == {over[0]["groupKey"]}, [n["groupKey"] for n in over]
        for n in over:
            firing = [a["labels"]["source"] for a in n["alerts"] if a["status"] == "firing"]
            assert len(firing) == 1, firing
        assert any(a["labels"]["source"] == "prometheus" and a["status"] == "firing" for a in over[-1]["alerts"])


async def test_alertmanager_keeps_one_copy_per_incident_collector_then_central_then_site(
        procs: Procs, http: aiohttp.ClientSession) -> None:
    """The shipped inhibit rules, copy by copy: the collector's beats the central tier's beats a site server's."""
    am = await start_alertmanager_to(procs, http, "http://127.0.0.1:9/unused")

    async def post(name: str, site: str, *sources: str) -> None:
        labels = {"alertname": name, "severity": "critical", **({"site": site} if site else {})}
        body = [{"labels": {**labels, "source": s}, "annotations": {"summary": s}} for s in sources]
        async with http.post(am.url + "/api/v2/alerts", json=body) as resp:
            assert resp.status == 200, await resp.text()

    await post("SiteOverAllocation", "a", "collector", "prometheus")
    await post("FleetOverAllocation", "", "collector", "prometheus-central", "prometheus")
    await post("SiteOverAllocation", "b", "prometheus-central", "prometheus")  # no collector copy of this one
    want = {("SiteOverAllocation", "a"): {"collector": "active", "prometheus": "suppressed"},
            ("FleetOverAllocation", ""): {"collector": "active", "prometheus-central": "suppressed",
                                          "prometheus": "suppressed"},
            ("SiteOverAllocation", "b"): {"prometheus-central": "active", "prometheus": "suppressed"}}

    async def settled() -> bool:
        return all([await am_copies(http, am, name, site) == copies for (name, site), copies in want.items()])

    await wait_until(settled, 10, "Alertmanager to keep exactly one active copy of each incident")
