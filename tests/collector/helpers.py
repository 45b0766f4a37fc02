"""Builders shared by the collector tests: configs and agent summaries without YAML files."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from megawatch.collector.config import Alerting, CollectorConfig, Site, Thresholds
from megawatch.collector.model import AgentObservation, AgentSummary

MW = 1e6


def make_site(site_id: str = "a", allocation_mw: float = 10.0, agents: int = 1, pue: float = 1.0,
              aux_mw: float = 0.0, port: int = 9100) -> Site:
    return Site(id=site_id, name=f"Site {site_id.upper()}", allocation_w=allocation_mw * MW, pue=pue,
                aux_w=aux_mw * MW, agents=tuple(f"http://127.0.0.1:{port + i}" for i in range(agents)))


def make_config(*sites: Site, fleet_mw: float = 100.0, **thresholds: Any) -> CollectorConfig:
    return CollectorConfig(path="test.yaml", fleet_name="test-fleet", fleet_allocation_w=fleet_mw * MW,
                           allow_oversubscription=False, sites=sites or (make_site(),),
                           thresholds=replace(Thresholds(), **thresholds), alerting=Alerting())


def make_summary(power_w: float | None = 1e6, estimate_w: float | None = 0.0, hashrate_hs: float | None = 1e17,
                 up: int = 100, down: int = 0, total: int | None = None, age_s: float = 0.0,
                 allowance_w: float | None = 0.0, unknown: int = 0) -> AgentSummary:
    return AgentSummary(agent_id="agent", site="a", cycle_ts=None, age_at_fetch_s=age_s, hashrate_hs=hashrate_hs,
                        power_firmware_w=power_w, power_estimate_w=estimate_w, miners_power_unknown=unknown,
                        miners_up=up, miners_down=down, miners_stale=0,
                        miners_total=total if total is not None else up + down, power_allowance_w=allowance_w,
                        allowance_last_known=unknown if allowance_w is not None else None)


def observed(url: str, summary: AgentSummary | None, at: float, up: bool = True) -> AgentObservation:
    return AgentObservation(url=url, summary=summary, fetched_at=at if summary is not None else None, up=up,
                            last_error=None if up else "connection refused")
