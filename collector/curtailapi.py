"""Curtailment over HTTP and in metrics: GET /api/v1/curtailment, the approve/reject calls, and the gauges.

POST /api/v1/curtailment/{site}/approve (or /reject) with `{"plan": <id>}` decides the plan waiting for a
site in mode `approve`. It is refused (403) unless the collector's web config has basic_auth_users, and the
user who approved is written to the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from megawatch.collector.curtail import Plan
from megawatch.collector.curtailconfig import MODES
from megawatch.collector.curtailer import Curtailer
from megawatch.common.httpbody import read_capped
from megawatch.common.strictjson import json_response
from megawatch.common.webconfig import BasicAuth, WebConfig, _parse_basic

CURTAILER: web.AppKey[Curtailer] = web.AppKey("curtailer", Curtailer)


def plan_json(plan: Plan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    return {"at": plan.at, "limit_w": plan.limit_w, "figure_w": plan.figure_w, "need_w": plan.need_w,
            "pending_w": plan.pending_w, "planned_w": plan.planned_w, "reasons": list(plan.reasons),
            "actions": [{"action": a.kind, "miner": a.miner, "power_w": a.power_w, "why": a.reason}
                        for a in plan.actions],
            "not_complied": [{"miner": m, "why": why} for m, why in plan.not_complied]}


def curtailment_json(c: Curtailer) -> dict[str, Any]:
    sites = []
    for site in c.config.sites:
        state = c.states.get(site.id)
        held = c.pending.get(site.id)
        sites.append({
            "site": site.id, "mode": site.curtailment.mode, "plan": plan_json(c.plans.get(site.id)),
            "awaiting_approval": {"plan": held.id, **(plan_json(held.plan) or {})} if held else None,
            "curtailed": [{"miner": k.miner, "since": k.since, "power_w": k.power_w, "verified": k.verified}
                          for k in (state.curtailed.values() if state else ())],
            "shed_w": shed_w(c, site.id),
            "refused": [{"miner": m, "why": why} for m, why in (state.refused.items() if state else ())],
        })
    return {"version": 1, "audit_file": str(c.audit.path) if c.audit.path else None, "sites": sites}


def shed_w(c: Curtailer, site_id: str) -> float:
    state = c.states.get(site_id)
    return sum(k.power_w for k in state.curtailed.values() if k.verified) if state else 0.0


def add_curtailment_routes(app: web.Application, curtailer: Curtailer, web_config: WebConfig | None) -> None:
    app[CURTAILER] = curtailer
    # Checked here as well as by the server-wide middleware: a decision must never be taken anonymously.
    auth = BasicAuth(web_config.users) if web_config is not None and web_config.users else None

    async def show(request: web.Request) -> web.Response:
        return json_response(curtailment_json(request.app[CURTAILER]))

    async def decide(request: web.Request) -> web.Response:
        if auth is None:
            return json_response({"error": "approving needs basic auth: a web_config_file with basic_auth_users"},
                                 status=403)
        header = request.headers.get("Authorization")
        if not await auth.allows(header, request.remote or ""):
            return json_response({"error": "basic auth required"}, status=401)
        credentials = _parse_basic(header)
        who = credentials[0] if credentials else "?"
        try:
            body = json.loads(await read_capped(request.content, 4096))
            plan_id = body["plan"]
            if not isinstance(plan_id, int) or isinstance(plan_id, bool):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return json_response({"error": 'expected a JSON body {"plan": <id of the plan awaiting approval>}'},
                                 status=400)
        status, doc = await request.app[CURTAILER].decide_pending(
            request.match_info["site"], plan_id, request.match_info["decision"] == "approve", who)
        return json_response(doc, status=status)

    app.router.add_get("/api/v1/curtailment", show)
    app.router.add_post("/api/v1/curtailment/{site}/{decision:approve|reject}", decide)


class CurtailmentCollector(Collector):
    """The curtailment gauges and command counter, read from the curtailer's state; no I/O."""

    def __init__(self, curtailer: Curtailer) -> None:
        self._c = curtailer

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        c = self._c
        mode = GaugeMetricFamily("megawatch_site_curtailment_mode",
                                 "Site curtailment mode: 1 for the current one of off, plan, approve, auto.",
                                 labels=["site", "mode"])
        planned = GaugeMetricFamily("megawatch_site_curtailment_planned_watts",
                                    "Facility power the site's latest plan would stop, in watts.", labels=["site"])
        need = GaugeMetricFamily("megawatch_site_curtailment_need_watts",
                                 "Facility power still to shed to reach allocation x (1 - margin), in watts.",
                                 labels=["site"])
        shed = GaugeMetricFamily("megawatch_site_curtailment_shed_watts",
                                 "Facility power of miners megawatch stopped and saw stopped, in watts.",
                                 labels=["site"])
        miners = GaugeMetricFamily("megawatch_site_curtailed_miners",
                                   "Miners megawatch has stopped and must restart, a count.", labels=["site"])
        waiting = GaugeMetricFamily("megawatch_site_curtailment_awaiting_approval",
                                    "1 while a plan waits for an operator's approval (mode approve), a flag.",
                                    labels=["site"])
        commands = CounterMetricFamily("megawatch_curtailment_commands",
                                       "Stop and restart commands sent through the agents, by outcome.",
                                       labels=["site", "action", "outcome"])
        for site in c.config.sites:
            for m in MODES:
                mode.add_metric([site.id, m], 1.0 if site.curtailment.mode == m else 0.0)
            plan = c.plans.get(site.id)
            planned.add_metric([site.id], plan.planned_w if plan else 0.0)
            need.add_metric([site.id], plan.need_w if plan else 0.0)
            shed.add_metric([site.id], shed_w(c, site.id))
            state = c.states.get(site.id)
            miners.add_metric([site.id], float(len(state.curtailed)) if state else 0.0)
            waiting.add_metric([site.id], 1.0 if site.id in c.pending else 0.0)
        for (site_id, action, outcome), n in sorted(c.commands.items()):
            commands.add_metric([site_id, action, outcome], float(n))
        yield from (mode, planned, need, shed, miners, waiting, commands)
