"""Pure: agents' last known summaries -> per-site and fleet totals against allocations.

Fresh agents give measured power and their own allowance. An agent that is stale keeps contributing its
last known figures, all of them as allowance, never 0 W; an agent never heard from counts at the site's
unknown-agent allowance. So a site's upper bound never drops because it went out of sight.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from megawatch.collector.config import CollectorConfig, Site, public_url
from megawatch.collector.model import (
    AgentObservation,
    AgentSummary,
    AgentView,
    Draw,
    FleetTotals,
    SiteStatus,
    SiteTotals,
    add,
)


def agent_age_s(obs: AgentObservation, now: float) -> float | None:
    """Age of an agent's data now: time since the fetch plus how old its cycle already was then."""
    if obs.summary is None or obs.fetched_at is None:
        return None
    return max(0.0, now - obs.fetched_at) + (obs.summary.age_at_fetch_s or 0.0)


def view_agent(obs: AgentObservation, now: float, stale_after_s: float) -> AgentView:
    age = agent_age_s(obs, now)
    # Labels, alerts and the JSON API name the agent without any user:password@ or ?token= in its URL.
    return AgentView(url=public_url(obs.url), up=obs.up, stale=age is None or age > stale_after_s,
                     has_data=obs.summary is not None, age_s=age, last_error=obs.last_error,
                     down_since=obs.down_since)


def _ratio(part: float | None, whole: float | None) -> float | None:
    if part is None or whole is None or whole <= 0:
        return None
    return part / whole


def _share(estimate_w: float | None, miner_w: float | None) -> float | None:
    # Firmware-only agents report no estimated power at all: that share is 0, not unknown.
    return _ratio(estimate_w if estimate_w is not None else 0.0, miner_w)


def _status(views: tuple[AgentView, ...], draw: Draw, margin_w: float) -> SiteStatus:
    """Worst first: no_data, stale, dark (all allowance), partial (some), ok (all measured, all agents fresh).

    The agents' margin on draws they know (estimated, or by firmware) is allowance, judged with the rest, but
    it stands for no miner out of sight: a site whose every miner is read is ok, however it is read.
    """
    if not any(v.has_data for v in views):
        return SiteStatus.NO_DATA
    if all(v.stale for v in views):
        return SiteStatus.STALE
    allowance = (draw.miner_allowance_w or 0.0) - margin_w
    allowance = allowance if allowance > 1e-6 else 0.0  # what a float sum leaves of the margin is no miner
    if allowance > 0 and not draw.miner_power_w:
        return SiteStatus.DARK
    if allowance > 0 or not all(v.up and not v.stale for v in views):
        # An agent that just went down still has young data: partial until that data ages out into allowance.
        return SiteStatus.PARTIAL
    return SiteStatus.OK


@dataclass(frozen=True, slots=True)
class _Part:
    """One agent's share of a site's figures: fresh parts measure, carried and unknown ones are allowance."""

    hashrate_hs: float | None = None
    power_firmware_w: float | None = None
    power_estimate_w: float | None = None
    power_allowance_w: float | None = None
    miners_up: int | None = None
    miners_down: int | None = None
    miners_stale: int | None = None
    miners_total: int | None = None
    miners_power_unknown: int | None = None
    allowance_last_known: int | None = None
    allowance_nameplate: int | None = None
    allowance_default: int | None = None
    agents_allowed_for: int = 0
    margin_w: float = 0.0  # of power_allowance_w: the agent's margin on draws it knows


def _part(summary: AgentSummary | None, stale: bool, unknown_agent_w: float) -> _Part:
    if summary is None:  # never answered: nothing known but that its miners may be drawing
        return _Part(power_allowance_w=unknown_agent_w, agents_allowed_for=1)
    counted = _Part(hashrate_hs=summary.hashrate_hs, miners_up=summary.miners_up, miners_down=summary.miners_down,
                    miners_stale=summary.miners_stale, miners_total=summary.miners_total,
                    miners_power_unknown=summary.miners_power_unknown)
    if stale:
        # Its last figures are carried, never 0 W, but nothing in them is measured now: all of it is allowance.
        carried = summary.upper_bound_w
        return replace(counted, power_allowance_w=carried if carried is not None else unknown_agent_w,
                       agents_allowed_for=1)
    allowed = summary.power_allowance_w
    if summary.power_w is None and not allowed:  # fresh, yet no power figure at all: as good as never heard from
        allowed = unknown_agent_w
    return replace(counted, power_firmware_w=summary.power_firmware_w, power_estimate_w=summary.power_estimate_w,
                   power_allowance_w=allowed, allowance_last_known=summary.allowance_last_known,
                   allowance_nameplate=summary.allowance_nameplate, allowance_default=summary.allowance_default,
                   margin_w=(summary.allowance_margin_w or 0.0) if allowed == summary.power_allowance_w else 0.0)


def make_draw(allocation_w: float, parts: Sequence[_Part | Draw],
              overhead: Callable[[float], float] | None = None, pue: float = 1.0) -> Draw:
    """Add agents' parts (a site) or draws (the fleet) up.

    For a site, `overhead` maps measured miner power to facility power (x PUE + aux) and `pue` scales the
    allowance (aux is counted once, with the measured figure). A fleet adds its sites' facility figures.
    """
    firmware_w = add(*(p.power_firmware_w for p in parts))
    estimate_w = add(*(p.power_estimate_w for p in parts))
    miner_w = add(firmware_w, estimate_w)
    draws = [p for p in parts if isinstance(p, Draw)]
    if draws:
        allowance_w = add(*(d.miner_allowance_w for d in draws))
        facility_measured = add(*(d.facility_measured_w for d in draws))
        facility_allowance = add(*(d.facility_allowance_w for d in draws))
        facility_margin = add(*(d.facility_margin_w for d in draws))
    else:
        allowance_w = add(*(p.power_allowance_w for p in parts if isinstance(p, _Part)))
        measured = miner_w if miner_w is not None else 0.0  # nothing measured is 0 W measured, not unknown
        facility_measured = overhead(measured) if overhead is not None else measured
        facility_allowance = allowance_w * pue if allowance_w is not None else None
        facility_margin = sum(p.margin_w for p in parts if isinstance(p, _Part)) * pue
    upper_w = add(miner_w, allowance_w)
    facility_upper = add(facility_measured, facility_allowance)
    # The judged figure starts as the upper bound; a fresh site meter replaces it later (collector/sitemeter.py),
    # the upper bound staying beside it.
    facility_w = facility_upper
    return Draw(
        allocation_w=allocation_w,
        hashrate_hs=add(*(p.hashrate_hs for p in parts)),
        power_firmware_w=firmware_w,
        power_estimate_w=estimate_w,
        miner_power_w=miner_w,
        facility_power_w=facility_w,
        utilisation_ratio=_ratio(facility_w, allocation_w),
        headroom_w=allocation_w - facility_w if facility_w is not None else None,
        estimated_power_ratio=_share(estimate_w, miner_w),
        miners_up=add(*(p.miners_up for p in parts)),
        miners_down=add(*(p.miners_down for p in parts)),
        miners_stale=add(*(p.miners_stale for p in parts)),
        miners_total=add(*(p.miners_total for p in parts)),
        miners_power_unknown=add(*(p.miners_power_unknown for p in parts)),
        miner_allowance_w=allowance_w,
        miner_upper_bound_w=upper_w,
        facility_measured_w=facility_measured,
        facility_allowance_w=facility_allowance,
        facility_upper_bound_w=facility_upper,
        allowance_ratio=_ratio(facility_allowance if facility_allowance is not None else 0.0, facility_upper),
        allowance_last_known=add(*(p.allowance_last_known for p in parts)),
        allowance_nameplate=add(*(p.allowance_nameplate for p in parts)),
        allowance_default=add(*(p.allowance_default for p in parts)),
        agents_allowed_for=add(*(p.agents_allowed_for for p in parts)),
        facility_margin_w=facility_margin,
    )


def aggregate_site(site: Site, observations: Mapping[str, AgentObservation], now: float,
                   stale_after_s: float) -> SiteTotals:
    """Add the site's agent shards up, apply its overhead and compare with the allocation in force at `now`."""
    obs = [observations.get(url) or AgentObservation(url=url) for url in site.agents]
    views = tuple(view_agent(o, now, stale_after_s) for o in obs)
    summaries = [o.summary for o in obs if o.summary is not None]
    ages = [v.age_s for v in views if v.age_s is not None]
    ids = Counter(s.agent_id for s in summaries if s.agent_id is not None)
    unknown_agent_w = site.unknown_agent_w(now)
    parts = [_part(o.summary, v.stale, unknown_agent_w) for o, v in zip(obs, views, strict=True)]
    draw = make_draw(site.allocation_at(now), parts, site.facility_power_w, site.pue)
    return SiteTotals(
        site_id=site.id,
        name=site.name,
        status=_status(views, draw, sum(p.margin_w for p in parts)),
        draw=draw,
        data_age_s=max(ages) if ages else None,
        stale=any(v.stale for v in views),
        agents=views,
        duplicate_agent_ids=tuple(sorted(agent_id for agent_id, n in ids.items() if n > 1)),
    )


def aggregate_fleet(config: CollectorConfig, observations: Mapping[str, AgentObservation],
                    now: float) -> FleetTotals:
    """Every site's totals and the fleet's, against the fleet's total allocation."""
    sites = tuple(aggregate_site(s, observations, now, config.thresholds.stale_after_s) for s in config.sites)
    return FleetTotals(
        name=config.fleet_name,
        at=now,
        draw=make_draw(config.fleet_allocation_w, [s.draw for s in sites]),
        sites_stale=sum(1 for s in sites if s.status in (SiteStatus.STALE, SiteStatus.NO_DATA)),
        stale=any(s.stale for s in sites),
        sites=sites,
    )
