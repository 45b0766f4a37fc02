"""Site and fleet totals: shards add up, overhead applies, stale data is carried and never becomes 0 W."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from megawatch.collector.aggregate import aggregate_fleet, aggregate_site
from megawatch.collector.model import AgentObservation, AgentSummary, SiteStatus, SiteTotals
from tests.collector.helpers import MW, make_config, make_site, make_summary, observed

STALE_AFTER = 60.0
watts = st.floats(min_value=0, max_value=5e8, allow_nan=False, allow_infinity=False)


def test_facility_power_applies_pue_and_aux_and_compares_with_allocation() -> None:
    site = make_site(allocation_mw=10, pue=1.1, aux_mw=0.5)
    obs = {site.agents[0]: observed(site.agents[0], make_summary(power_w=8 * MW, estimate_w=1 * MW), at=100)}
    t = aggregate_site(site, obs, now=101, stale_after_s=STALE_AFTER)
    assert t.draw.miner_power_w == 9 * MW
    assert t.draw.facility_power_w == pytest.approx(9 * MW * 1.1 + 0.5 * MW)
    assert t.draw.utilisation_ratio == pytest.approx(10.4 / 10)
    assert t.draw.headroom_w == pytest.approx(-0.4 * MW)
    assert t.draw.estimated_power_ratio == pytest.approx(1 / 9)
    assert t.status is SiteStatus.OK and not t.stale


@given(st.lists(st.tuples(watts, watts, st.integers(0, 10_000), st.integers(0, 10_000)), min_size=1, max_size=6))
def test_shards_add_up(shards: list[tuple[float, float, int, int]]) -> None:
    site = make_site(agents=len(shards))
    obs = {url: observed(url, make_summary(power_w=fw, estimate_w=est, up=up, down=down), at=0)
           for url, (fw, est, up, down) in zip(site.agents, shards, strict=True)}
    t = aggregate_site(site, obs, now=1, stale_after_s=STALE_AFTER)
    assert t.draw.miner_power_w == pytest.approx(sum(fw + est for fw, est, _, _ in shards))
    assert t.draw.miners_up == sum(s[2] for s in shards)
    assert t.draw.miners_total == sum(s[2] + s[3] for s in shards)


@given(st.lists(watts.filter(lambda w: w > 0), min_size=2, max_size=5), st.data())
def test_a_down_or_stale_agent_is_carried_never_zero(powers: list[float], data: st.DataObject) -> None:
    site = make_site(agents=len(powers))
    dead = data.draw(st.sets(st.integers(0, len(powers) - 1), min_size=1))
    later = data.draw(st.floats(min_value=0, max_value=1e6))
    obs = {url: observed(url, make_summary(power_w=p, estimate_w=None), at=0, up=i not in dead)
           for i, (url, p) in enumerate(zip(site.agents, powers, strict=True))}
    t = aggregate_site(site, obs, now=later, stale_after_s=STALE_AFTER)
    # The dead agents' last values are still counted: measured while young, allowance once stale.
    assert t.draw.facility_power_w == pytest.approx(sum(powers))
    assert t.status in (SiteStatus.PARTIAL, SiteStatus.STALE)
    if later > STALE_AFTER:
        assert t.stale and t.status is SiteStatus.STALE and t.data_age_s == pytest.approx(later)
        assert t.draw.miner_power_w is None and t.draw.miner_allowance_w == pytest.approx(sum(powers))
        assert t.draw.allowance_ratio == 1.0
    else:
        assert t.draw.miner_power_w == pytest.approx(sum(powers)) and t.draw.miner_allowance_w == 0.0


def test_a_stale_agent_is_allowance_beside_the_fresh_ones_measured() -> None:
    site = make_site(agents=2, pue=1.1, aux_mw=0.5)
    a, b = site.agents
    obs = {a: observed(a, make_summary(power_w=4 * MW, estimate_w=None), at=100),
           b: observed(b, make_summary(power_w=3 * MW, estimate_w=None, allowance_w=MW, unknown=300), at=0,
                       up=False)}
    t = aggregate_site(site, obs, now=100, stale_after_s=STALE_AFTER)
    d = t.draw
    assert d.miner_power_w == 4 * MW and d.miner_allowance_w == 4 * MW and d.miner_upper_bound_w == 8 * MW
    # PUE applies to both, aux once (with the measured figure: it is declared, so known).
    assert d.facility_measured_w == pytest.approx(4 * MW * 1.1 + 0.5 * MW)
    assert d.facility_allowance_w == pytest.approx(4 * MW * 1.1)
    assert d.facility_power_w == d.facility_upper_bound_w == pytest.approx(8 * MW * 1.1 + 0.5 * MW)
    assert d.allowance_ratio == pytest.approx(4.4 / 9.3)
    assert d.agents_allowed_for == 1 and t.status is SiteStatus.PARTIAL


def test_dark_partial_ok_follow_the_allowance() -> None:
    site = make_site(allocation_mw=0.07)
    url = site.agents[0]

    def at(summary: AgentSummary) -> SiteTotals:
        return aggregate_site(site, {url: observed(url, summary, at=0)}, now=1, stale_after_s=STALE_AFTER)

    ok = at(make_summary(power_w=80_900.0, estimate_w=0.0))
    assert ok.status is SiteStatus.OK and ok.draw.allowance_ratio == 0.0
    half = at(make_summary(power_w=60_000.0, estimate_w=0.0, allowance_w=20_900.0, unknown=5))
    assert half.status is SiteStatus.PARTIAL and half.draw.allowance_ratio == pytest.approx(20.9 / 80.9)
    # Every miner hung: nothing measured, but the site still draws (as far as anyone knows) 80.9 kW.
    dark = at(make_summary(power_w=0.0, estimate_w=0.0, allowance_w=80_900.0, unknown=20))
    assert dark.status is SiteStatus.DARK and dark.draw.allowance_ratio == 1.0
    assert dark.draw.facility_power_w == ok.draw.facility_power_w == 80_900.0
    assert dark.draw.utilisation_ratio == pytest.approx(80.9 / 70)


def test_status_ok_partial_stale_no_data() -> None:
    site = make_site(agents=2)
    a, b = site.agents
    fresh = make_summary()

    def status(obs: dict[str, AgentObservation], now: float = 10) -> SiteStatus:
        return aggregate_site(site, obs, now=now, stale_after_s=STALE_AFTER).status

    assert status({}) is SiteStatus.NO_DATA
    assert status({a: observed(a, fresh, 0), b: observed(b, fresh, 0)}) is SiteStatus.OK
    assert status({a: observed(a, fresh, 0)}) is SiteStatus.PARTIAL  # b never answered
    assert status({a: observed(a, fresh, 0), b: observed(b, fresh, 0, up=False)}) is SiteStatus.PARTIAL
    assert status({a: observed(a, fresh, 0), b: observed(b, fresh, 0)}, now=61) is SiteStatus.STALE


def test_no_agent_ever_answered_counts_the_site_allocation_not_zero() -> None:
    site = make_site(agents=2, pue=1.25, aux_mw=2)
    t = aggregate_site(site, {}, now=0, stale_after_s=STALE_AFTER)
    assert t.status is SiteStatus.NO_DATA and t.draw.hashrate_hs is None and t.draw.miner_power_w is None
    # A site nobody has heard from is taken to draw its whole allocation: not over it, never 0.
    assert t.draw.miner_allowance_w == pytest.approx(8 * MW / 1.25)
    assert t.draw.facility_power_w == pytest.approx(10 * MW) and t.draw.utilisation_ratio == pytest.approx(1.0)
    assert t.draw.allowance_ratio == pytest.approx(0.8) and t.draw.agents_allowed_for == 2
    assert t.draw.allocation_w == 10 * MW  # the allocation in force is always known and shown
    # Configured: that much per agent never heard from.
    configured = replace(site, unknown_agent_allowance_w=6 * MW)
    assert aggregate_site(configured, {}, now=0, stale_after_s=STALE_AFTER).draw.miner_allowance_w == 12 * MW


def test_age_counts_how_old_the_agent_cycle_was_when_fetched() -> None:
    site = make_site()
    url = site.agents[0]
    t = aggregate_site(site, {url: observed(url, make_summary(age_s=55), at=100)}, now=106, stale_after_s=60)
    assert t.data_age_s == pytest.approx(61) and t.stale


def test_unknown_power_fields_do_not_read_as_zero() -> None:
    site = make_site(agents=2)
    a, b = site.agents
    obs = {a: observed(a, make_summary(power_w=None, estimate_w=None, allowance_w=None), 0),
           b: observed(b, make_summary(power_w=2 * MW, estimate_w=None), 0)}
    t = aggregate_site(site, obs, now=1, stale_after_s=STALE_AFTER)
    assert t.draw.miner_power_w == 2 * MW
    assert t.draw.miner_allowance_w == 5 * MW  # a's share of the allocation: it gave no power figure at all
    only_unknown = aggregate_site(site, {a: obs[a]}, now=1, stale_after_s=STALE_AFTER)
    assert only_unknown.draw.miner_power_w is None and only_unknown.status is SiteStatus.DARK


def test_fleet_totals_add_sites_and_count_stale_sites() -> None:
    s1, s2 = make_site("a", port=9100), make_site("b", allocation_mw=20, port=9200, pue=1.2)
    config = make_config(s1, s2, fleet_mw=40)
    obs = {s1.agents[0]: observed(s1.agents[0], make_summary(power_w=5 * MW), 0),
           s2.agents[0]: observed(s2.agents[0], make_summary(power_w=10 * MW, up=50, down=50), 0, up=False)}
    fleet = aggregate_fleet(config, obs, now=120)
    assert fleet.draw.facility_power_w == pytest.approx(5 * MW + 12 * MW)
    # Both stale: everything is carried as allowance.
    assert fleet.draw.facility_measured_w == 0.0 and fleet.draw.facility_allowance_w == pytest.approx(17 * MW)
    assert fleet.draw.utilisation_ratio == pytest.approx(17 / 40)
    assert fleet.draw.miners_down == 50 and fleet.draw.miners_total == 200
    assert fleet.sites_stale == 2 and fleet.stale
    fresh = aggregate_fleet(replace(config), obs, now=1)
    assert fresh.sites_stale == 0 and not fresh.stale
    assert [s.status for s in fresh.sites] == [SiteStatus.OK, SiteStatus.PARTIAL]  # b's agent is down, data young


def test_an_agent_id_reported_by_two_urls_is_flagged_and_both_still_count() -> None:
    # The same agent under two addresses counts twice; two shards sharing an id cannot be told apart. The
    # collector cannot know which, so it drops neither and says so (metric, log, alert rule).
    site = make_site(agents=3)
    a, b, c = site.agents
    obs = {url: observed(url, replace(make_summary(power_w=MW, estimate_w=0.0), agent_id=agent_id), at=0)
           for url, agent_id in ((a, "plant@host:9540"), (b, "plant@host:9540"), (c, "plant@host:9541"))}
    t = aggregate_site(site, obs, now=1, stale_after_s=STALE_AFTER)
    assert t.duplicate_agent_ids == ("plant@host:9540",)
    assert t.draw.miner_power_w == 3 * MW
    obs[b] = observed(b, replace(make_summary(power_w=MW, estimate_w=0.0), agent_id="plant@other:9540"), at=0)
    assert aggregate_site(site, obs, now=1, stale_after_s=STALE_AFTER).duplicate_agent_ids == ()
