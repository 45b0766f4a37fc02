"""Pure: one site's curtailment step - which miners to stop, verify or restart now (docs/curtailment.md).

Steered by the site's judged figure (the facility upper bound, or a fresh meter), never by what the miners
alone report, against limit = the lowest allocation in force within the lead time x (1 - margin).

- Over the limit: stop miners in the operator's order (priority, then those whose firmware measures their
  draw, then least efficient J/TH first), just
  enough to cover the need; the last one taken may overshoot by at most its own draw. Miners commanded but
  not yet seen stopped by a poll count as already shed, so a slow poll never doubles a shed.
- Verify: a commanded miner whose agent polled it after the command and still sees it hashing after
  `verify_s` did not comply; it is released from our list, marked, and the next candidate is taken.
- Under limit x (1 - hysteresis) for `hold_s`: restart the most efficient curtailed miners whose draw fits the
  headroom, at most `restore_per_step` per step, each off for at least `min_off_s`; the hold starts again after
  each step (staggered restarts). An unknown figure never restores anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from megawatch.collector.config import Site

# Firmware the agents can stop over their API (agent/control.py); others are never candidates.
CURTAILABLE = frozenset({"cgminer", "bfgminer", "bosminer", "luxos", "avalon"})
STOPPED_SHARE = 0.05  # a miner hashing under this share of what it did before the command has stopped
TH = 1e12


@dataclass(frozen=True, slots=True)
class MinerView:
    """One miner as its agent's /api/v1/miners shows it."""

    name: str  # host:port
    agent: str  # the agent URL that polls it
    dialect: str | None
    state: str
    hashrate_hs: float | None
    power_w: float | None
    last_poll_s: float | None
    power_source: str | None = None  # firmware (measured) or estimate (J/TH x hashrate)

    @property
    def j_per_th(self) -> float | None:
        if not self.hashrate_hs or self.power_w is None:
            return None
        return self.power_w / (self.hashrate_hs / TH)


@dataclass(frozen=True, slots=True)
class Curtailed:
    """A miner megawatch stopped and must restart: kept in the audit log across restarts."""

    miner: str
    agent: str
    since: float  # when the command was sent
    power_w: float  # facility watts it drew before (what stopping it should save)
    hashrate_hs: float  # what it hashed before
    j_per_th: float | None
    verified: bool = False  # a poll after the command saw it stopped
    # The agent's own clock when it sent the command: its polls' times are compared with this, so a clock
    # difference between the collector's host and the agent's cannot pass an old poll off as a new one.
    agent_at: float | None = None


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # curtail | restore
    miner: str
    agent: str
    power_w: float  # facility watts it should shed (curtail) or add (restore)
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    site: str
    at: float
    limit_w: float | None
    figure_w: float | None
    need_w: float  # facility watts still to shed beyond what commanded miners will (0 when under)
    pending_w: float  # commanded, not yet seen stopped
    actions: tuple[Action, ...]
    reasons: tuple[str, ...]
    verified: tuple[str, ...] = ()  # miners seen stopped this step
    not_complied: tuple[tuple[str, str], ...] = ()  # (miner, why): released, next candidate taken
    came_back: tuple[str, ...] = ()  # seen stopped before, hashing again by themselves: released

    @property
    def planned_w(self) -> float:
        return sum(a.power_w for a in self.actions if a.kind == "curtail")

    def key(self) -> tuple[tuple[str, str], ...]:
        """What the plan would do, without figures: an approval is for this."""
        return tuple((a.kind, a.miner) for a in self.actions)


@dataclass(frozen=True, slots=True)
class SiteState:
    """What the planner remembers for a site between steps."""

    curtailed: dict[str, Curtailed] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # miner -> why it is no longer a candidate
    headroom_since: float | None = None


def allocation_ahead(site: Site, now: float, lead_s: float) -> float:
    """The lowest allocation in force from now to now + lead (each minute a window may start is looked at)."""
    lowest = site.allocation_at(now)
    t = math.floor(now / 60.0) * 60.0 + 60.0
    while t <= now + lead_s:  # at most 360 steps: lead_s is at most 6 h
        lowest = min(lowest, site.allocation_at(t))
        t += 60.0
    return min(lowest, site.allocation_at(now + lead_s))


def _order(settings_site: Site, m: MinerView) -> tuple[int, bool, float]:
    entry = settings_site.curtailment.priority_of(m.name)
    # Within a priority, miners whose firmware measures their draw go first: stopping one lowers the judged
    # figure. A stopped miner whose draw is estimated reports 0 H/s, which J/TH cannot turn into watts, so its
    # agent keeps counting it at its nameplate (never optimistic): stopping it lowers only the true draw.
    # Then least efficient first; unknown efficiency last.
    return (entry.priority if entry else 0, m.power_source != "firmware", -(m.j_per_th or 0.0))


def verify(state: SiteState, miners: Sequence[MinerView], now: float, verify_s: float
           ) -> tuple[SiteState, list[str], list[tuple[str, str]], list[str]]:
    """Mark commanded miners seen stopped; release those still hashing `verify_s` after their command, and
    those seen stopped that hash again by themselves (a reboot clears cgminer's in-memory disable flag)."""
    seen = {m.name: m for m in miners}
    curtailed = dict(state.curtailed)
    refused = dict(state.refused)
    verified, failed, back = [], [], []
    for name, c in state.curtailed.items():
        m = seen.get(name)
        sent = c.agent_at if c.agent_at is not None else c.since
        if m is None or m.last_poll_s is None or m.last_poll_s <= sent:
            continue  # no poll since the command yet
        if c.verified:
            if m.hashrate_hs is not None and m.hashrate_hs > c.hashrate_hs * 0.5:
                del curtailed[name]  # not ours to restart any more; its draw is in the figure again
                back.append(name)
            continue
        if m.hashrate_hs is not None and m.hashrate_hs <= c.hashrate_hs * STOPPED_SHARE:
            curtailed[name] = replace(c, verified=True)
            verified.append(name)
        elif now - c.since >= verify_s:
            why = (f"still hashing {m.hashrate_hs / TH:.1f} TH/s {now - c.since:.0f} s after the command"
                   if m.hashrate_hs is not None else "hashrate unknown after the command")
            del curtailed[name]
            refused[name] = why
            failed.append((name, why))
    return replace(state, curtailed=curtailed, refused=refused), verified, failed, back


def needs_miners(site: Site, figure_w: float | None, state: SiteState, now: float) -> bool:
    """Whether this step needs the miner lists: to shed, or to verify a command. Under the limit with every
    command verified, nothing is read (a 10,000-miner list every cycle would be wasted)."""
    if any(not c.verified for c in state.curtailed.values()):
        return True
    if figure_w is None:
        return False
    return figure_w > allocation_ahead(site, now, site.curtailment.lead_s) * (1.0 - site.curtailment.margin_ratio)


def plan_site(site: Site, figure_w: float | None, miners: Sequence[MinerView], state: SiteState, now: float
              ) -> tuple[Plan, SiteState]:
    """One step for one site: the plan (what to send now, and why) and the planner's state after it."""
    cfg = site.curtailment
    state, verified, failed, back = verify(state, miners, now, cfg.verify_s)
    allocation = allocation_ahead(site, now, cfg.lead_s)
    limit = allocation * (1.0 - cfg.margin_ratio)
    reasons: list[str] = []
    if allocation < site.allocation_at(now):
        reasons.append(f"a schedule window lowers the allocation to {allocation / 1e6:.3f} MW within "
                       f"{cfg.lead_s:.0f} s: steering to it now")
    pending = sum(c.power_w for c in state.curtailed.values() if not c.verified)
    base = Plan(site=site.id, at=now, limit_w=limit, figure_w=figure_w, need_w=0.0, pending_w=pending, actions=(),
                reasons=(), verified=tuple(verified), not_complied=tuple(failed), came_back=tuple(back))
    if figure_w is None:
        reasons.append("the site's figure is unknown: nothing is shed or restored on a guess")
        return replace(base, reasons=tuple(reasons)), replace(state, headroom_since=None)
    need = figure_w - pending - limit
    if need > 0:
        actions = _shed(site, miners, state, need)
        got = sum(a.power_w for a in actions)
        reasons.append(f"figure {figure_w / 1e6:.3f} MW is over the limit {limit / 1e6:.3f} MW "
                       f"(allocation x (1 - {cfg.margin_ratio:g})) by {(figure_w - limit) / 1e3:.0f} kW"
                       + (f", {pending / 1e3:.0f} kW already commanded" if pending else "")
                       + f": stopping {len(actions)} miner(s), {got / 1e3:.0f} kW")
        if got < need:
            reasons.append(f"{(need - got) / 1e3:.0f} kW short: rate limit ({cfg.max_step_ratio:g} of the site "
                           "per step) or no more candidates")
        return replace(base, need_w=need, actions=tuple(actions), reasons=tuple(reasons)), \
            replace(state, headroom_since=None)
    floor = limit * (1.0 - cfg.hysteresis_ratio)
    if pending or not state.curtailed or figure_w > floor:
        if state.curtailed and not pending:
            reasons.append(f"under the limit, not under limit x (1 - {cfg.hysteresis_ratio:g}) = "
                           f"{floor / 1e6:.3f} MW: holding")
        return replace(base, reasons=tuple(reasons)), replace(state, headroom_since=None)
    since = state.headroom_since if state.headroom_since is not None else now
    state = replace(state, headroom_since=since)
    if now - since < cfg.hold_s:
        reasons.append(f"headroom for {now - since:.0f} s of the {cfg.hold_s:.0f} s hold before restoring")
        return replace(base, reasons=tuple(reasons)), state
    actions = _restore(site, state, floor - figure_w, now)
    if actions:
        reasons.append(f"headroom {(floor - figure_w) / 1e3:.0f} kW has lasted {now - since:.0f} s: restarting "
                       f"{len(actions)} miner(s), {sum(a.power_w for a in actions) / 1e3:.0f} kW")
        state = replace(state, headroom_since=None)  # the hold starts again: staggered restarts
    return replace(base, actions=tuple(actions), reasons=tuple(reasons)), state


def _shed(site: Site, miners: Sequence[MinerView], state: SiteState, need: float) -> list[Action]:
    cfg = site.curtailment
    candidates = []
    for m in miners:
        entry = cfg.priority_of(m.name)
        if (m.name in state.curtailed or m.name in state.refused or m.dialect not in CURTAILABLE
                or (entry is not None and entry.never) or m.state != "up" or not m.hashrate_hs
                or m.power_w is None):
            continue
        candidates.append(m)
    candidates.sort(key=lambda m: _order(site, m))
    cap = max(1, int(len(miners) * cfg.max_step_ratio))
    actions: list[Action] = []
    shed = 0.0
    for m in candidates:
        if shed >= need or len(actions) >= cap:
            break
        watts = (m.power_w or 0.0) * site.pue
        jth = f"{m.j_per_th:.1f} J/TH" if m.j_per_th is not None else "J/TH unknown"
        actions.append(Action("curtail", m.name, m.agent, watts, f"{jth}, {watts / 1e3:.1f} kW"))
        shed += watts
    return actions


def _restore(site: Site, state: SiteState, headroom: float, now: float) -> list[Action]:
    cfg = site.curtailment
    ready = [c for c in state.curtailed.values() if c.verified and now - c.since >= cfg.min_off_s]
    ready.sort(key=lambda c: (-(p.priority if (p := cfg.priority_of(c.miner)) else 0),
                              c.j_per_th if c.j_per_th is not None else math.inf))
    actions: list[Action] = []
    room = headroom
    for c in ready:
        if len(actions) >= cfg.restore_per_step:
            break
        if c.power_w > room:
            continue
        actions.append(Action("restore", c.miner, c.agent, c.power_w,
                              f"fits the headroom ({room / 1e3:.0f} kW left), off {now - c.since:.0f} s"))
        room -= c.power_w
    return actions


def curtailed_from(action: Action, miner: MinerView | None, now: float, agent_at: float | None) -> Curtailed:
    """The record kept for a miner once its stop command was accepted."""
    return Curtailed(miner=action.miner, agent=action.agent, since=now, power_w=action.power_w,
                     hashrate_hs=(miner.hashrate_hs or 0.0) if miner is not None else 0.0,
                     j_per_th=miner.j_per_th if miner is not None else None, agent_at=agent_at)
