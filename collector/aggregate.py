"""Pure: agents' last known summaries -> per-site and fleet totals against allocations.

An agent that is down or stale keeps contributing its last known figures, flagged stale with their age;
it never turns into 0 W. Only a site no agent has ever answered for has unknown (None) power.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

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


def _status(views: tuple[AgentView, ...]) -> SiteStatus:
    if not any(v.has_data for v in views):
        return SiteStatus.NO_DATA
    if all(v.up and not v.stale for v in views):
        return SiteStatus.OK
    # An agent that just went down still has young data: the site is partial until that data ages out.
    return SiteStatus.PARTIAL if any(not v.stale for v in views) else SiteStatus.STALE


def make_draw(allocation_w: float, parts: Sequence[AgentSummary | Draw],
              overhead: Callable[[float], float] | None = None) -> Draw:
    """Add agent summaries (a site) or draws (the fleet) up; `overhead` maps miner power to facility power."""
    firmware_w = add(*(p.power_firmware_w for p in parts))
    estimate_w = add(*(p.power_estimate_w for p in parts))
    miner_w = add(firmware_w, estimate_w)
    if isinstance(next(iter(parts), None), Draw):
        facility_w = add(*(p.facility_power_w for p in parts if isinstance(p, Draw)))
    else:
        facility_w = overhead(miner_w) if overhead is not None and miner_w is not None else miner_w
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
    )


def aggregate_site(site: Site, observations: Mapping[str, AgentObservation], now: float,
                   stale_after_s: float) -> SiteTotals:
    """Add the site's agent shards up, apply its overhead and compare with the allocation in force at `now`."""
    obs = [observations.get(url) or AgentObservation(url=url) for url in site.agents]
    views = tuple(view_agent(o, now, stale_after_s) for o in obs)
    summaries = [o.summary for o in obs if o.summary is not None]
    ages = [v.age_s for v in views if v.age_s is not None]
    ids = Counter(s.agent_id for s in summaries if s.agent_id is not None)
    return SiteTotals(
        site_id=site.id,
        name=site.name,
        status=_status(views),
        draw=make_draw(site.allocation_at(now), summaries, site.facility_power_w),
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
