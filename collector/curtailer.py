"""The collector's curtailment loop: read the miners, plan, and per the site's mode show, await approval or act.

Runs once per collector cycle, after the totals. Only sites not in mode `off` have their agents' miner lists
read (GET /api/v1/miners, one deadline and a byte cap per agent). Commands go to the agent that polls the
miner (POST /api/v1/control/{miner}/{action}); the collector never speaks to a miner. Every plan, decision,
command and outcome goes to the audit log (collector/audit.py), from which the curtailed miners are rebuilt
at start.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import aiohttp

from megawatch.collector import audit as ev
from megawatch.collector.audit import AuditLog
from megawatch.collector.config import CollectorConfig, Site, public_url
from megawatch.collector.curtail import Action, MinerView, Plan, SiteState, curtailed_from, needs_miners, plan_site
from megawatch.collector.model import FleetTotals
from megawatch.common.httpbody import read_capped
from megawatch.common.logs import get_logger

MAX_MINERS_BYTES = 64 << 20  # 10,000 miners' rows are ~10 MB
CONTROL_TIMEOUT_S = 30.0
# A 1,000-miner step takes ~30 round trips, not 1,000 (each miner still gets its commands one at a time).
COMMANDS_AT_ONCE = 32
# Agent answers that mean the miner itself said no (502) or cannot be stopped (409): it is not asked again.
# Anything else (auth, overload, an agent down) is the path's failure, and the miner stays a candidate.
MINER_REFUSED = (409, 502)  # a LuxOS logon + curtail + logoff is three exchanges of up to the agent's deadline


@dataclass(frozen=True, slots=True)
class Sent:
    """What an agent said about one command."""

    ok: bool
    detail: str  # the miner's replies, or why it failed
    commands: list[str] = field(default_factory=list)  # what the agent sent the miner
    agent_at: float | None = None  # the agent's clock when it had sent them
    miner_refused: bool = False  # the miner (not the path to it) said no


@dataclass(frozen=True, slots=True)
class Pending:
    """A plan waiting for an operator (mode approve)."""

    id: int
    plan: Plan


class Curtailer:
    def __init__(self, config: CollectorConfig, session: aiohttp.ClientSession, clock: Callable[[], float],
                 auth: aiohttp.BasicAuth | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.session = session
        self.clock = clock
        self.auth = auth
        self.ssl_context = ssl_context
        self.audit = AuditLog(config.curtailment_audit_file)
        self.states: dict[str, SiteState] = {}
        for site_id, held in self.audit.curtailed().items():
            # The log names agents without credentials: commands go to the URL the config gives.
            site = config.site(site_id)
            urls = {public_url(u): u for u in site.agents} if site is not None else {}
            self.states[site_id] = SiteState(curtailed={
                name: replace(c, agent=urls.get(c.agent, c.agent)) for name, c in held.items()})
        self.plans: dict[str, Plan] = {}
        self.pending: dict[str, Pending] = {}
        self.commands: Counter[tuple[str, str, str]] = Counter()  # (site, action, ok|failed)
        self.miner_errors: dict[str, str] = {}  # agent URL -> why its miners could not be read
        self.views: dict[str, dict[str, MinerView]] = {}  # site -> its miners as last read
        self._next_id = 1
        self._planned: dict[str, tuple[tuple[str, str], ...]] = {}  # last plan key written to the audit log
        self._lock = asyncio.Lock()  # a cycle's step and an operator's approval never interleave
        self._log = get_logger()
        for site_id, restored in self.states.items():
            self._log.info("curtailment_restored_from_audit", site=site_id, miners=sorted(restored.curtailed))

    async def step(self, fleet: FleetTotals) -> None:
        async with self._lock:
            now = self.clock()
            for totals in fleet.sites:
                site = self.config.site(totals.site_id)
                if site is None or site.curtailment.mode == "off":
                    continue
                state = self.states.get(site.id, SiteState())
                figure = totals.draw.facility_power_w
                miners = await self._miners(site) if needs_miners(site, figure, state, now) else []
                plan, state = plan_site(site, figure, miners, state, now)
                self.states[site.id] = state
                self.plans[site.id] = plan
                self.views[site.id] = {m.name: m for m in miners}
                for name in plan.verified:
                    self.audit.write(now, site.id, ev.VERIFIED, "collector", miner=name)
                for name in plan.came_back:
                    self._log.warning("miner_restarted_by_itself", site=site.id, miner=name)
                    self.audit.write(now, site.id, ev.CAME_BACK, "collector", miner=name,
                                     why="hashing again without a restart command (rebooted?)")
                for name, why in plan.not_complied:
                    self._log.warning("miner_not_complied", site=site.id, miner=name, why=why)
                    self.audit.write(now, site.id, ev.NOT_COMPLIED, "collector", miner=name, why=why)
                await self._decide(site, plan, self.views[site.id], now)

    async def _decide(self, site: Site, plan: Plan, miners: dict[str, MinerView], now: float) -> None:
        mode = site.curtailment.mode
        if plan.key() and plan.key() != self._planned.get(site.id):
            self.audit.write(now, site.id, "plan", "collector", mode=mode, need_w=round(plan.need_w),
                             figure_w=plan.figure_w, limit_w=plan.limit_w, reasons=list(plan.reasons),
                             actions=[{"action": a.kind, "miner": a.miner, "power_w": round(a.power_w),
                                       "why": a.reason} for a in plan.actions])
            self._log.info("curtailment_planned", site=site.id, mode=mode, actions=len(plan.actions),
                           need_w=round(plan.need_w))
        self._planned[site.id] = plan.key()
        if mode != "approve":  # a reload moved the site out of approve: nothing waits for an operator
            self.pending.pop(site.id, None)
        if mode == "auto":
            await self._execute(site, plan, miners, "auto", now)
        elif mode == "approve":
            held = self.pending.get(site.id)
            if not plan.actions:
                self.pending.pop(site.id, None)
            elif held is None or held.plan.key() != plan.key():
                self.pending[site.id] = Pending(self._next_id, plan)
                self._next_id += 1

    async def decide_pending(self, site_id: str, plan_id: int, approve: bool, who: str) -> tuple[int, dict[str, Any]]:
        """An operator's approval or rejection of the plan waiting for `site_id`: (HTTP status, body)."""
        async with self._lock:
            site = self.config.site(site_id)
            if site is None:
                return 404, {"error": f"no site {site_id!r}"}
            if site.curtailment.mode != "approve":
                return 409, {"error": f"site {site_id!r} is in mode {site.curtailment.mode!r}, not approve"}
            held = self.pending.get(site_id)
            if held is None or held.id != plan_id:
                return 409, {"error": f"plan {plan_id} is not the plan waiting for approval",
                             "pending": held.id if held else None}
            now = self.clock()
            del self.pending[site_id]
            self.audit.write(now, site_id, "approve" if approve else "reject", who, plan=plan_id,
                             actions=[{"action": a.kind, "miner": a.miner} for a in held.plan.actions])
            self._log.info("curtailment_approved" if approve else "curtailment_rejected", site=site_id,
                           plan=plan_id, who=who)
            if not approve:
                return 200, {"plan": plan_id, "rejected": True}
            done = await self._execute(site, held.plan, self.views.get(site_id, {}), who, now)
            return 200, {"plan": plan_id, "approved": True, "results": done}

    async def _execute(self, site: Site, plan: Plan, miners: dict[str, MinerView], who: str, now: float
                       ) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        if not self.audit.healthy:  # try again: a disk that came back lets the commands go
            self.audit.write(now, site.id, "resumed", "collector", why="the audit log can be written again")
        if not self.audit.healthy:
            # What is not in the log would be forgotten by a restart (and never restarted): send nothing.
            self._log.error("curtailment_held", site=site.id, why="the audit log cannot be written")
            return results
        state = self.states.get(site.id, SiteState())
        slots = asyncio.Semaphore(COMMANDS_AT_ONCE)

        async def send(action: Action) -> Sent:
            async with slots:
                return await self._command(action.agent, action.miner, action.kind)

        outcomes = await asyncio.gather(*(send(a) for a in plan.actions))
        for action, sent in zip(plan.actions, outcomes, strict=True):
            ok, detail = sent.ok, sent.detail
            self.commands[(site.id, action.kind, "ok" if ok else "failed")] += 1
            results.append({"action": action.kind, "miner": action.miner, "ok": ok, "detail": detail})
            facts = dict(miner=action.miner, agent=public_url(action.agent), action=action.kind,
                         power_w=round(action.power_w), why=action.reason, reply=detail, commands=sent.commands)
            if not ok:
                self._log.warning("curtailment_command_failed", site=site.id, miner=action.miner,
                                  action=action.kind, error=detail)
                self.audit.write(now, site.id, "failed", who, **facts)
                if action.kind == "curtail" and sent.miner_refused:  # not asked again until restart; next one taken
                    state = replace(state, refused={**state.refused, action.miner: detail})
                continue
            if action.kind == "curtail":
                record = curtailed_from(action, miners.get(action.miner), now, sent.agent_at)
                state = replace(state, curtailed={**state.curtailed, action.miner: record})
                self.audit.write(now, site.id, ev.CURTAILED, who, hashrate_hs=record.hashrate_hs,
                                 j_per_th=record.j_per_th, agent_at=sent.agent_at, **facts)
            else:
                state = replace(state, curtailed={k: v for k, v in state.curtailed.items() if k != action.miner})
                self.audit.write(now, site.id, ev.RESTORED, who, **facts)
            self._log.info("curtailment_command_sent", site=site.id, miner=action.miner, action=action.kind, who=who)
        self.states[site.id] = state
        return results

    async def _command(self, agent: str, miner: str, action: str) -> Sent:
        url = f"{agent}/api/v1/control/{quote(miner, safe='')}/{action}"
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT_S):
                async with self.session.post(url, auth=self.auth, allow_redirects=False,
                                             ssl=self.ssl_context if self.ssl_context is not None else True) as resp:
                    body = await read_capped(resp.content, 1 << 16)
                    status = resp.status
        except TimeoutError:
            return Sent(False, f"agent gave no answer within {CONTROL_TIMEOUT_S:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Sent(False, f"agent unreachable: {type(exc).__name__}")
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        commands = [str(c) for c in doc.get("commands", []) if isinstance(c, str)]
        if status == 200 and doc.get("ok") is True:
            at = doc.get("at")
            return Sent(True, "; ".join(str(r) for r in doc.get("replies", [])), commands,
                        float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None)
        return Sent(False, f"HTTP {status}: {doc.get('error') or 'no reason given'}", commands,
                    miner_refused=status in MINER_REFUSED)

    async def _miners(self, site: Site) -> list[MinerView]:
        found = await asyncio.gather(*(self._agent_miners(url) for url in site.agents))
        return [m for part in found for m in part]

    async def _agent_miners(self, agent: str) -> list[MinerView]:
        try:
            async with asyncio.timeout(self.config.poll_timeout_s):
                async with self.session.get(agent + "/api/v1/miners", auth=self.auth, allow_redirects=False,
                                            ssl=self.ssl_context if self.ssl_context is not None else True) as resp:
                    body = await read_capped(resp.content, MAX_MINERS_BYTES)
                    status = resp.status
            if status != 200 or len(body) > MAX_MINERS_BYTES:
                raise ValueError(f"HTTP {status}" if status != 200 else "reply too large")
            rows = json.loads(body)["miners"]
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError, TypeError) as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if self.miner_errors.get(agent) != error:
                self._log.warning("agent_miners_unreadable", agent=public_url(agent), error=error)
            self.miner_errors[agent] = error
            return []
        if self.miner_errors.pop(agent, None) is not None:
            self._log.info("agent_miners_readable", agent=public_url(agent))
        return [MinerView(name=str(r.get("miner")), agent=agent, dialect=r.get("dialect"), state=str(r.get("state")),
                          hashrate_hs=_num(r.get("hashrate_hs")), power_w=_num(r.get("power_w")),
                          last_poll_s=_num(r.get("last_poll_s")), power_source=r.get("power_source"))
                for r in rows if isinstance(r, dict)]


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
