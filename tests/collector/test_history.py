"""The status page's history: one point per cycle in a fixed ring per site, unknown kept unknown."""

from __future__ import annotations

import math

from megawatch.collector.aggregate import aggregate_fleet
from megawatch.collector.history import MAX_POINTS, MIN_POINTS, History, Ring, capacity_for
from megawatch.collector.model import FleetTotals, SiteStatus
from tests.collector.helpers import make_config, make_site, make_summary, observed

MW = 1e6


def test_capacity_covers_six_hours_within_bounds() -> None:
    assert capacity_for(15) == 1440
    assert capacity_for(5) == MAX_POINTS
    assert capacity_for(1) == MAX_POINTS  # a fast cycle keeps a shorter window, not more memory
    assert capacity_for(3600) == MIN_POINTS


def test_ring_overwrites_the_oldest_and_keeps_unknown_as_none() -> None:
    ring = Ring(3)
    for t in range(5):
        ring.append({"t": float(t), "facility_power_w": None if t == 3 else t * MW}, "dark" if t == 3 else "ok")
    series = ring.series()
    assert series["t"] == [2.0, 3.0, 4.0]
    assert series["facility_power_w"] == [2 * MW, None, 4 * MW]
    assert series["status"] == ["ok", "dark", "ok"]
    assert series["meter_w"] == [None, None, None]
    assert ring.series(since_s=3.0)["t"] == [3.0, 4.0]
    assert ring.count == 3 and len(ring.series()["t"]) == ring.capacity


def fleet(at: float, *site_ids: str, power_w: float | None = 4 * MW) -> FleetTotals:
    sites = [make_site(s, port=9100 + 10 * i) for i, s in enumerate(site_ids)]
    config = make_config(*sites)
    obs = {url: observed(url, make_summary(power_w=power_w, estimate_w=None), at)
           for s in sites for url in s.agents}
    return aggregate_fleet(config, obs, at)


def test_history_records_every_site_each_cycle_and_forgets_removed_sites() -> None:
    history = History(poll_interval_s=15)
    for k in range(3):
        history.record(fleet(1000.0 + 15 * k, "a", "b"))
    a = history.series("a")
    assert a is not None and a["t"] == [1000.0, 1015.0, 1030.0]
    assert a["facility_power_w"] == [4 * MW] * 3 and a["allocation_w"] == [10 * MW] * 3
    history.record(fleet(1045.0, "a"))  # a reload dropped site b
    assert history.series("b") is None and set(history.rings) == {"a"}
    assert history.series("nowhere") is None


def test_memory_is_bounded_whatever_the_uptime() -> None:
    history = History(poll_interval_s=1)
    for k in range(MAX_POINTS + 500):
        history.record(fleet(float(k), "a"))
    a = history.series("a")
    assert a is not None and len(a["t"]) == MAX_POINTS and a["t"][0] == 500.0
    assert all(not math.isnan(v) for v in a["t"])
    assert history.rings["a"].series()["status"][-1] == SiteStatus.OK.value
