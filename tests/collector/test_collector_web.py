"""The collector end to end in one process: fake agents -> poll_once -> /metrics, /api/v1/*, alerts out."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from megawatch.collector.config import Alerting, CollectorConfig, Site, Thresholds
from megawatch.collector.service import CollectorService
from megawatch.collector.web import make_app
from tests.collector.fakes import FakeAgent, FakeAlertmanager, fake_agent, fake_alertmanager

MW = 1e6


class Clock:
    def __init__(self, t: float = 1_795_820_400.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


Rig = tuple[CollectorService, TestClient[Any, Any], list[FakeAgent], FakeAlertmanager, Clock]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with (fake_agent(FakeAgent("a", power_firmware_w=4 * MW, power_estimate_w=1 * MW)) as a1,
                fake_agent(FakeAgent("a", power_firmware_w=3 * MW, power_estimate_w=None)) as a2,
                fake_agent(FakeAgent("b", power_firmware_w=2 * MW)) as b1,
                fake_alertmanager(FakeAlertmanager()) as am, aiohttp.ClientSession() as session):
        config = CollectorConfig(
            path="t.yaml", fleet_name="f", fleet_allocation_w=25 * MW, allow_oversubscription=False,
            sites=(Site("a", "Site A", 10 * MW, 1.1, 0.2 * MW, (a1.url, a2.url)),
                   Site("b", "Site B", 10 * MW, 1.0, 0.0, (b1.url,))),
            thresholds=replace(Thresholds(), hold_s=10, stale_after_s=30),
            alerting=Alerting(alertmanager_urls=(am.url,), retry_base_s=0.01, retry_max_s=0.05),
            poll_interval_s=5, poll_timeout_s=1)
        clock = Clock()
        service = CollectorService(config, session, "http://127.0.0.1:9300/api/v1/alerts", clock=clock)
        async with TestClient(TestServer(make_app(service))) as client:
            yield service, client, [a1, a2, b1], am, clock


async def test_metrics_show_site_totals_against_allocation(rig: Rig) -> None:
    service, client, _, _, _ = rig
    assert (await client.get("/healthz")).status == 503  # no cycle yet
    await service.poll_once()
    assert (await client.get("/healthz")).status == 200
    m = samples(await (await client.get("/metrics")).text())
    a = (("site", "a"),)
    assert m[("megawatch_site_facility_power_watts", a)] == pytest.approx(8 * MW * 1.1 + 0.2 * MW)
    assert m[("megawatch_site_allocation_watts", a)] == 10 * MW
    assert m[("megawatch_site_utilisation_ratio", a)] == pytest.approx(0.9)
    assert m[("megawatch_site_headroom_watts", a)] == pytest.approx(1 * MW)
    assert m[("megawatch_site_miner_power_watts", (("site", "a"), ("source", "estimate")))] == 1 * MW
    assert m[("megawatch_site_total_miners", (("site", "a"), ("state", "total")))] == 200
    assert m[("megawatch_site_stale", a)] == 0
    assert m[("megawatch_site_status", (("site", "a"), ("status", "ok")))] == 1
    assert m[("megawatch_fleet_facility_power_watts", (("fleet", "f"),))] == pytest.approx(11 * MW)
    assert m[("megawatch_fleet_allocation_watts", (("fleet", "f"),))] == 25 * MW
    assert m[("megawatch_collector_cycles_total", ())] == 1


async def test_two_urls_of_a_site_reporting_one_agent_id_show_in_metrics_and_log_once(rig: Rig) -> None:
    service, client, (_, a2, _), _, clock = rig  # both of site a's fakes report agent id fake-a
    with capture_logs() as logs:
        for _ in range(3):
            await service.poll_once()
            clock.t += 5
        m = samples(await (await client.get("/metrics")).text())
        assert m[("megawatch_site_duplicate_agent_ids", (("site", "a"),))] == 1
        assert m[("megawatch_site_duplicate_agent_ids", (("site", "b"),))] == 0
        a2.agent = "fake-a-2"
        await service.poll_once()
        await service.poll_once()
    m = samples(await (await client.get("/metrics")).text())
    assert m[("megawatch_site_duplicate_agent_ids", (("site", "a"),))] == 0
    # The observation is logged at once; the SiteDuplicateAgentId alert (site_duplicate_agent_id) after its hold.
    events = [(e["event"], e.get("site"), e.get("agent_ids")) for e in logs
              if e["event"].startswith("duplicate_agent_id")]
    assert events == [("duplicate_agent_id", "a", ["fake-a"]), ("duplicate_agent_id_resolved", "a", None)]


async def test_over_allocation_alert_flows_to_alertmanager_and_resolves(rig: Rig) -> None:
    service, client, (a1, _, _), am, clock = rig
    a1.power_firmware_w = 6 * MW  # site A: (6 + 1 + 3) x 1.1 + 0.2 = 11.2 MW against 10 MW
    await service.poll_once()
    clock.t += 5
    await service.poll_once()
    alerts = (await (await client.get("/api/v1/alerts")).json())["active"]
    assert {(x["alertname"], x["state"]) for x in alerts} >= {("SiteOverAllocation", "pending")}
    clock.t += 5
    await service.poll_once()  # held for 10 s: fires
    runner = asyncio.create_task(service.notifier.run())
    try:
        (batch,) = await am.wait_for(1)
        names = {(x["labels"]["alertname"], x["labels"]["site"]) for x in batch}
        assert ("SiteOverAllocation", "a") in names and all(site == "a" for _, site in names)
        over = next(x for x in batch if x["labels"]["alertname"] == "SiteOverAllocation")
        summary = over["annotations"]["summary"]
        assert "draws up to 11.20 MW against its 10.00 MW allocation (+1.20 MW, 112.0%)" in summary
        a1.power_firmware_w = 4 * MW
        clock.t += 5
        await service.poll_once()
        batches = await am.wait_for(2)
        resolved = [x for x in batches[1] if x["labels"]["alertname"] == "SiteOverAllocation"]
        assert resolved and resolved[0]["endsAt"] < over["endsAt"]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    body = await (await client.get("/api/v1/alerts")).json()
    assert any(x["alertname"] == "SiteOverAllocation" and x["state"] == "resolved" for x in body["resolved"])


async def test_killed_agent_is_carried_stale_not_zero(rig: Rig) -> None:
    service, client, (_, a2, _), _, clock = rig
    await service.poll_once()
    a2.mode = "error"
    clock.t += 31
    await service.poll_once()
    sites = {s["id"]: s for s in (await (await client.get("/api/v1/sites")).json())["sites"]}
    a = sites["a"]
    # a2's 3 MW still counted: as allowance, since nothing in it is measured now.
    assert a["miner_power_w"] == 5 * MW and a["miner_allowance_w"] == 3 * MW and a["miner_upper_bound_w"] == 8 * MW
    assert a["allocation_w"] == a["base_allocation_w"] == 10 * MW and a["pue"] == 1.1 and a["schedule"] == []
    assert a["status"] == "partial" and a["stale"] is True and a["data_age_s"] > 30
    assert [x["up"] for x in a["agents"]] == [True, False]
    m = samples(await (await client.get("/metrics")).text())
    assert m[("megawatch_site_stale", (("site", "a"),))] == 1
    assert m[("megawatch_site_agents", (("site", "a"), ("state", "stale")))] == 1
    assert m[("megawatch_collector_agent_up", (("agent", a2.url), ("site", "a")))] == 0


async def test_unknown_is_absent_from_metrics() -> None:
    async with aiohttp.ClientSession() as session:
        config = CollectorConfig(path="t", fleet_name="f", fleet_allocation_w=MW, allow_oversubscription=False,
                                 sites=(Site("a", "A", MW, 1.0, 0.0, ("http://127.0.0.1:9",)),),
                                 thresholds=Thresholds(), alerting=Alerting(), poll_timeout_s=0.5)
        service = CollectorService(config, session, "http://x/")
        await service.poll_once()
        async with TestClient(TestServer(make_app(service))) as client:
            m = samples(await (await client.get("/metrics")).text())
    assert ("megawatch_site_miner_power_watts", (("site", "a"), ("source", "firmware"))) not in m
    assert ("megawatch_site_total_hashrate_hashes_per_second", (("site", "a"),)) not in m
    assert m[("megawatch_site_allocation_watts", (("site", "a"),))] == MW
    # Never heard from: taken to draw its allocation, all of it allowance; never 0 W.
    assert m[("megawatch_site_facility_power_watts", (("site", "a"),))] == MW
    assert m[("megawatch_site_allowance_ratio", (("site", "a"),))] == 1.0
    assert m[("megawatch_site_status", (("site", "a"), ("status", "no_data")))] == 1


async def test_promtool_check_metrics_is_clean(rig: Rig) -> None:
    service, client, _, _, _ = rig
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")  # CI installs it (.ci/run); tests/e2e fail CI when it is missing
    await service.poll_once()
    text = await (await client.get("/metrics")).text()
    proc = await asyncio.to_thread(subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True,
                                   text=True, timeout=30, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr


async def test_an_agent_of_another_site_is_not_counted(rig: Rig) -> None:
    service, client, (_, a2, _), _, _ = rig
    a2.site = "b"
    await service.poll_once()
    site_a = (await (await client.get("/api/v1/sites")).json())["sites"][0]
    assert site_a["miner_power_w"] == 5 * MW and site_a["status"] == "partial"
    assert site_a["agents"][1]["last_error"] == "agent reports site 'b', but t.yaml lists it under site 'a'"
