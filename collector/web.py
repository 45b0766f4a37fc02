"""HTTP: /metrics, /api/v1/sites, /api/v1/alerts, /healthz, and the status page at / (collector/page.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from megawatch.collector.config import Site
from megawatch.collector.curtailapi import CurtailmentCollector, add_curtailment_routes
from megawatch.collector.exposition import SiteCollector
from megawatch.collector.model import Alert, SiteTotals
from megawatch.collector.page import add_routes, next_allocation_change
from megawatch.collector.service import CollectorService
from megawatch.collector.sitemeter import figure_source, meter_json
from megawatch.common.daemon import health
from megawatch.common.strictjson import json_response

API_VERSION = 1
SERVICE: web.AppKey[CollectorService] = web.AppKey("service", CollectorService)


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "alertname": alert.name, "labels": dict(alert.labels), "severity": alert.severity.value,
        "state": alert.phase.value, "since": alert.since, "fired_at": alert.fired_at,
        "resolved_at": alert.resolved_at, "summary": alert.summary, "description": alert.description,
        "value": alert.value,
    }


def site_json(t: SiteTotals, site: Site | None, at: float) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if site is not None:  # why the allocation in force is what it is
        config = {"base_allocation_w": site.allocation_w, "pue": site.pue, "aux_w": site.aux_w,
                  "schedule": [{"days": sorted(w.days), "from": w.start.isoformat("minutes"),
                                "to": "24:00" if w.end_of_day else w.end.isoformat("minutes"),
                                "timezone": w.timezone, "allocation_w": w.allocation_w} for w in site.schedule],
                  "allocation_next_change": next_allocation_change(site, at)}
    return {
        "id": t.site_id, "name": t.name, "status": t.status.value, "stale": t.stale,
        "data_age_s": t.data_age_s, **dataclasses.asdict(t.draw), **config,
        "figure_source": figure_source(t).value, "meter": meter_json(t.meter),
        "agents": [dataclasses.asdict(a) for a in t.agents],
    }


async def sites(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    fleet = svc.fleet
    if fleet is None:
        return json_response({"version": API_VERSION, "at": None, "fleet": None, "sites": []}, status=503)
    body = {
        "version": API_VERSION,
        "at": fleet.at,
        "fleet": {"name": fleet.name, "stale": fleet.stale, "sites_stale": fleet.sites_stale,
                  **dataclasses.asdict(fleet.draw)},
        "sites": [site_json(t, svc.config.site(t.site_id), fleet.at) for t in fleet.sites],
    }
    return json_response(body)


async def alerts(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return json_response({
        "version": API_VERSION,
        "active": [alert_json(a) for a in svc.evaluation.active],
        "resolved": [alert_json(a) for a in svc.engine.resolved],
    })


async def healthz(request: web.Request) -> web.Response:
    """200 while cycles keep finishing; 503 before the first one and when none ended for 3 intervals."""
    svc = request.app[SERVICE]
    last = svc.stats.last_finished
    return health(svc.health_problem(), cycle=svc.stats.cycles,
                  last_cycle_age_s=None if last is None else max(0.0, svc.clock() - last),
                  poll_interval_s=svc.config.poll_interval_s, stall_limit_s=svc.stall_limit_s())


def make_app(service: CollectorService) -> web.Application:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SiteCollector(service))
    registry.register(CurtailmentCollector(service.curtailer))
    app = web.Application()
    app[SERVICE] = service
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    app.router.add_get("/api/v1/sites", sites)
    app.router.add_get("/api/v1/alerts", alerts)
    app.router.add_get("/healthz", healthz)
    add_curtailment_routes(app, service.curtailer, service.config.web)
    add_routes(app, service, lambda t, at: site_json(t, service.config.site(t.site_id), at), alert_json)
    return app
