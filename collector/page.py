"""The status page: / (the fleet), /sites/{id} (one site), the JSON they poll and the files they load.

Everything the pages need is served from here (package data in collector/static/): sites are often offline,
so nothing comes from another origin, and the Content-Security-Policy says so to the browser as well.

The pages poll /api/v1/overview every `refresh_s` (the collector's cycle, at most 5 s) rather than hold a
server-sent event stream open: a poll is one plain request that basic auth, TLS and any proxy handle like
every other, the page knows how old its data is from the time of its last good answer, and a collector that
goes away needs no reconnect logic - the next poll fails, the page says so, and the one after recovers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
from aiohttp import web

from megawatch.collector.config import Site
from megawatch.collector.curtailapi import curtailment_json
from megawatch.collector.model import Alert, AlertPhase, Severity, SiteStatus, SiteTotals
from megawatch.collector.service import CollectorService
from megawatch.common.httpbody import read_capped
from megawatch.common.redact import public_url
from megawatch.common.strictjson import json_response

PAGE_VERSION = 1
REFRESH_MAX_S = 5.0  # a slow collector cycle still lets the page notice a dead collector within 5 s
REFRESH_MIN_S = 0.5
NEAR_RATIO = 0.95  # a site at 95% of its allocation is shown as a warning before it is over
HOT_C = 85.0  # a chip this hot is among the worst miners (most firmware throttles from about 90 °C)
WORST_MINERS = 25
MINERS_TIMEOUT_S = 3.0
MINERS_MAX_BYTES = 16 << 20  # a 10,000-miner shard answers in about 5 MB
MINERS_CACHE_S = 10.0  # reloads of a site page within this reuse the last fetch: agents are not hammered
MINERS_AGENTS_IN_FLIGHT = 4
SCHEDULE_HORIZON_DAYS = 8  # every weekly window starts or ends within this

CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
STATIC_FILES = ("fleet.html", "site.html", "page.css", "page.js", "fleet.js", "site.js", "favicon.svg")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a collector upgraded in place serves its new page at once
}
LEVELS = ("critical", "unknown", "warning", "ok")  # worst first; the page colours rows by these

SiteView = Callable[[SiteTotals, float], dict[str, Any]]
AlertView = Callable[[Alert], dict[str, Any]]


def load_static() -> dict[str, bytes]:
    root = resources.files("megawatch.collector") / "static"
    return {name: (root / name).read_bytes() for name in STATIC_FILES}


def next_allocation_change(site: Site, at_s: float) -> dict[str, float] | None:
    """When the allocation in force next changes and to what, from the schedule; None when it never does.

    Allocations change only where some window starts or ends, so those instants (local time, each day of the
    horizon, DST handled by the zone) are the only candidates.
    """
    if not site.schedule:
        return None
    current = site.allocation_at(at_s)
    candidates: set[float] = set()
    for window in site.schedule:
        zone = ZoneInfo(window.timezone)
        today = datetime.fromtimestamp(at_s, zone).date()
        for offset in range(SCHEDULE_HORIZON_DAYS + 1):
            day = today + timedelta(days=offset)
            for clock in (window.start, window.end):
                instant = datetime.combine(day, clock, tzinfo=zone).timestamp()
                if instant > at_s:
                    candidates.add(instant)
    for instant in sorted(candidates):
        allocation = site.allocation_at(instant)
        if allocation != current:
            return {"at": instant, "allocation_w": allocation}
    return None


def site_level(totals: SiteTotals, alerts: list[Alert]) -> str:
    """How bad a site looks at a glance: over its allocation or a critical alert, then unknown figures."""
    ratio = totals.draw.utilisation_ratio
    if (ratio is not None and ratio > 1.0) or any(a.severity is Severity.CRITICAL for a in alerts):
        return "critical"
    if totals.status in (SiteStatus.NO_DATA, SiteStatus.STALE, SiteStatus.DARK) or ratio is None:
        return "unknown"
    if totals.status is SiteStatus.PARTIAL or alerts or ratio >= NEAR_RATIO:
        return "warning"
    return "ok"


def worst_first(entry: tuple[SiteTotals, str]) -> tuple[int, float, str]:
    totals, level = entry
    ratio = totals.draw.utilisation_ratio
    return LEVELS.index(level), -(ratio if ratio is not None else math.inf), totals.site_id


def refresh_s(poll_interval_s: float) -> float:
    return max(REFRESH_MIN_S, min(REFRESH_MAX_S, poll_interval_s))


def overview(service: CollectorService, site_view: SiteView, alert_view: AlertView,
             only: str | None = None) -> dict[str, Any]:
    """What the pages show: fleet, sites worst first with their firing alerts, and how fresh it all is.

    The fleet page gets each site's agent counts, not its agent list (500 agents would be most of the
    payload); `only` gives one site with its agents, for the site page.
    """
    now = service.clock()
    fleet = service.fleet
    firing = sorted((a for a in service.evaluation.active if a.phase is AlertPhase.FIRING),
                    key=lambda a: (a.severity is not Severity.CRITICAL, a.name))
    body: dict[str, Any] = {
        "version": PAGE_VERSION, "served_at": now, "fleet_name": service.config.fleet_name,
        "poll_interval_s": service.config.poll_interval_s, "refresh_s": refresh_s(service.config.poll_interval_s),
        "stall_limit_s": service.stall_limit_s(), "last_cycle_at": service.stats.last_finished,
        "at": None, "fleet": None, "fleet_alerts": [], "sites": [],
    }
    if fleet is None:
        return body
    by_site: dict[str, list[Alert]] = {}
    for alert in firing:
        by_site.setdefault(dict(alert.labels).get("site", ""), []).append(alert)
    ranked = sorted(((t, site_level(t, by_site.get(t.site_id, []))) for t in fleet.sites), key=worst_first)
    curtailment = {c["site"]: curtailment_view(c) for c in curtailment_json(service.curtailer)["sites"]}
    sites = []
    for t, level in ranked:
        if only is not None and t.site_id != only:
            continue
        # Shaping 500 agents' views costs most of a poll: only the site page gets them.
        view = site_view(t if only is not None else replace(t, agents=()), fleet.at)
        if only is None:
            del view["agents"]
        view["agents_total"] = len(t.agents)
        view["agents_up"] = sum(1 for a in t.agents if a.up)
        view["level"] = level
        view["alerts"] = [alert_view(a) for a in by_site.get(t.site_id, [])]
        view["curtailment"] = curtailment.get(t.site_id)
        sites.append(view)
    body.update(at=fleet.at, sites=sites, fleet_alerts=[alert_view(a) for a in by_site.get("", [])],
                fleet={"name": fleet.name, "stale": fleet.stale, "sites_stale": fleet.sites_stale,
                       "allocation_w": fleet.draw.allocation_w, "facility_power_w": fleet.draw.facility_power_w,
                       "facility_measured_w": fleet.draw.facility_measured_w,
                       "facility_allowance_w": fleet.draw.facility_allowance_w,
                       "facility_upper_bound_w": fleet.draw.facility_upper_bound_w,
                       "utilisation_ratio": fleet.draw.utilisation_ratio, "miner_power_w": fleet.draw.miner_power_w,
                       "miners_total": fleet.draw.miners_total, "miners_up": fleet.draw.miners_up,
                       "sites": len(fleet.sites)})
    return body


def curtailment_view(site: dict[str, Any]) -> dict[str, Any]:
    """A site's curtailment at a glance (the whole of it is /api/v1/curtailment): what is off, what is planned."""
    plan = site["plan"] or {}
    actions = plan.get("actions", [])
    return {"mode": site["mode"], "shed_w": site["shed_w"], "curtailed": len(site["curtailed"]),
            "need_w": plan.get("need_w"), "planned_w": plan.get("planned_w"),
            "stops": sum(1 for a in actions if a["action"] == "curtail"),
            "restores": sum(1 for a in actions if a["action"] == "restore"),
            "reasons": plan.get("reasons", []), "awaiting_approval": site["awaiting_approval"] is not None,
            "refused": len(site["refused"])}


# ---- Worst miners, fetched from the site's agents on demand ----------------------------------------------

def miner_rank(miner: dict[str, Any]) -> tuple[int, str] | None:
    """Why a miner is among the worst (rank, reason), worst first; None for a healthy one."""
    state = miner.get("state")
    temp = miner.get("chip_temp_max_c")
    if state == "down":
        return 0, "down"
    if state == "stale":
        return 1, "stale"
    if isinstance(temp, int | float) and temp >= HOT_C:
        return 2, "hot"
    if miner.get("problems"):
        return 3, "implausible"
    return None


def worst_miners(by_agent: dict[str, list[dict[str, Any]]], limit: int = WORST_MINERS) -> dict[str, Any]:
    ranked = []
    counts = {"down": 0, "stale": 0, "hot": 0, "implausible": 0}
    for agent, miners in by_agent.items():
        for m in miners:
            rank = miner_rank(m)
            if rank is None:
                continue
            counts[rank[1]] += 1
            temp = m.get("chip_temp_max_c")
            ranked.append((rank[0], -(temp if isinstance(temp, int | float) else -math.inf), str(m.get("miner")),
                           {**m, "agent": agent, "reason": rank[1],
                            "detail_url": f"{agent}/api/v1/miners?state={m.get('state')}"}))
    ranked.sort(key=lambda r: r[:3])
    return {"counts": counts, "miners": [r[3] for r in ranked[:limit]]}


class MinerFetcher:
    """One site's worst miners from its agents: bounded in time, size and concurrency, cached briefly."""

    def __init__(self, service: CollectorService, clock: Callable[[], float] = time.monotonic) -> None:
        self.service, self.clock = service, clock
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(MINERS_AGENTS_IN_FLIGHT)

    async def site(self, site: Site) -> dict[str, Any]:
        lock = self._locks.setdefault(site.id, asyncio.Lock())
        async with lock:  # a burst of page loads makes one round of fetches
            cached = self._cache.get(site.id)
            if cached is not None and self.clock() - cached[0] < MINERS_CACHE_S:
                return cached[1]
            results = await asyncio.gather(*(self._agent(url) for url in site.agents))
            by_agent = {public_url(url): miners for url, (miners, _) in zip(site.agents, results, strict=True)
                        if miners is not None}
            errors = {public_url(url): error for url, (_, error) in zip(site.agents, results, strict=True)
                      if error is not None}
            body = {"site": site.id, **worst_miners(by_agent), "errors": errors,
                    "agents_answered": len(by_agent), "agents": len(site.agents)}
            self._cache = {k: v for k, v in self._cache.items() if k in {s.id for s in self.service.config.sites}}
            self._cache[site.id] = (self.clock(), body)
            return body

    async def _agent(self, url: str) -> tuple[list[dict[str, Any]] | None, str | None]:
        reader = self.service.reader
        try:
            async with self._slots, asyncio.timeout(MINERS_TIMEOUT_S):
                async with reader.session.get(url + "/api/v1/miners", auth=reader.auth, ssl=reader.ssl_context or True,
                                              allow_redirects=False) as resp:
                    if resp.status != 200:
                        return None, f"HTTP {resp.status}"
                    raw = await read_capped(resp.content, MINERS_MAX_BYTES)
                    if len(raw) > MINERS_MAX_BYTES:
                        return None, f"answer larger than {MINERS_MAX_BYTES} bytes"
            body = orjson.loads(raw)
        except TimeoutError:
            return None, f"no answer within {MINERS_TIMEOUT_S:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            return None, str(exc) or type(exc).__name__
        except ValueError:
            return None, "answer is not JSON"
        miners = body.get("miners") if isinstance(body, dict) else None
        if not isinstance(miners, list):
            return None, "answer has no miners list"
        return [m for m in miners if isinstance(m, dict)], None


def _json(body: Any) -> web.Response:
    response = json_response(body)
    response.headers.update(SECURITY_HEADERS)
    return response


# ---- Routes ----------------------------------------------------------------------------------------------

def add_routes(app: web.Application, service: CollectorService, site_view: SiteView,
               alert_view: AlertView) -> None:
    """The pages and their JSON on `app`; basic auth and TLS reach them like every route (common/webconfig)."""
    files = load_static()
    fetcher = MinerFetcher(service)

    def send(name: str) -> web.Response:
        kind = CONTENT_TYPES[name[name.rindex("."):]]
        return web.Response(body=files[name], content_type=kind, charset="utf-8", headers=SECURITY_HEADERS)

    def known_site(request: web.Request) -> Site:
        site = service.config.site(request.match_info["site"])
        if site is None:
            raise web.HTTPNotFound(text=f"no site {request.match_info['site']!r} in this collector's config\n")
        return site

    async def fleet_page(request: web.Request) -> web.Response:
        return send("fleet.html")

    async def site_page(request: web.Request) -> web.Response:
        known_site(request)
        return send("site.html")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound(text="no such file\n")
        return send(name)

    async def overview_json(request: web.Request) -> web.Response:
        only = request.query.get("site")
        if only is not None and service.config.site(only) is None:
            raise web.HTTPNotFound(text=f"no site {only!r}\n")
        return _json(overview(service, site_view, alert_view, only))

    async def history_json(request: web.Request) -> web.Response:
        site = known_site(request)
        since = request.query.get("since")
        try:
            since_s = float(since) if since is not None else None
        except ValueError:
            raise web.HTTPBadRequest(text=f"since: expected a Unix time in seconds, got {since!r}\n") from None
        series = service.history.series(site.id, since_s) or {}
        return _json({"version": PAGE_VERSION, "site": site.id, "capacity": service.history.capacity,
                      "poll_interval_s": service.config.poll_interval_s, "series": series})

    async def miners_json(request: web.Request) -> web.Response:
        return _json(await fetcher.site(known_site(request)))

    app.router.add_get("/", fleet_page)
    app.router.add_get("/sites/{site}", site_page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/v1/overview", overview_json)
    app.router.add_get("/api/v1/sites/{site}/history", history_json)
    app.router.add_get("/api/v1/sites/{site}/worst_miners", miners_json)
