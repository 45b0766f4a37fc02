"""The collector's curtailment API without basic auth: shown, never decided."""

from __future__ import annotations

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from megawatch.collector.config import Alerting, CollectorConfig, Site, Thresholds
from megawatch.collector.curtailconfig import CurtailSettings
from megawatch.collector.service import CollectorService
from megawatch.collector.web import make_app


async def test_approving_is_refused_when_the_collector_has_no_basic_auth(tmp_path):
    site = Site("a", "A", 1e6, 1.0, 0.0, ("http://127.0.0.1:9",), curtailment=CurtailSettings(mode="approve"))
    config = CollectorConfig(path="t", fleet_name="f", fleet_allocation_w=1e6, allow_oversubscription=False,
                             sites=(site,), thresholds=Thresholds(), alerting=Alerting(), poll_timeout_s=0.5,
                             curtailment_audit_file=tmp_path / "audit.jsonl")
    async with aiohttp.ClientSession() as session:
        service = CollectorService(config, session, "http://x/")
        async with TestClient(TestServer(make_app(service))) as client:
            resp = await client.post("/api/v1/curtailment/a/approve", json={"plan": 1})
            assert resp.status == 403 and "basic auth" in (await resp.json())["error"]
            doc = await (await client.get("/api/v1/curtailment")).json()
            assert doc["sites"][0]["mode"] == "approve" and doc["sites"][0]["awaiting_approval"] is None
    assert not (tmp_path / "audit.jsonl").exists()


async def test_a_reload_changes_the_mode_and_keeps_the_audit_file(tmp_path):
    from dataclasses import replace

    site = Site("a", "A", 1e6, 1.0, 0.0, ("http://127.0.0.1:9",), curtailment=CurtailSettings(mode="auto"))
    config = CollectorConfig(path="t", fleet_name="f", fleet_allocation_w=1e6, allow_oversubscription=False,
                             sites=(site,), thresholds=Thresholds(), alerting=Alerting(), poll_timeout_s=0.5,
                             curtailment_audit_file=tmp_path / "audit.jsonl")
    async with aiohttp.ClientSession() as session:
        service = CollectorService(config, session, "http://x/")
        quiet = replace(site, curtailment=CurtailSettings(mode="plan"))
        service.apply_config(replace(config, sites=(quiet,), curtailment_audit_file=tmp_path / "other.jsonl"))
        assert service.curtailer.config.site("a").curtailment.mode == "plan"
        assert service.curtailer.config.curtailment_audit_file == tmp_path / "audit.jsonl"
