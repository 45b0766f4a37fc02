"""The last hours of every site's figures, in memory, for the status page's chart.

One point per collector cycle in a fixed ring per site: columns of 8-byte floats (NaN = unknown), so memory
is bounded by the capacity, whatever the cycle rate or uptime. At the default 15 s cycle 1,440 points are
6 hours; the capacity is capped at MAX_POINTS, so a faster cycle keeps a shorter window rather than more
memory: at most MAX_POINTS x (len(COLUMNS) x 8 B + 1 B of status) = 246 KB per site, 4.9 MB for 20 sites.
Nothing is kept across restarts: Prometheus is the long-term store, this is the page's glance back.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from typing import Any

from megawatch.collector.model import FleetTotals, SiteTotals

WINDOW_S = 6 * 3600.0  # what the chart covers when the cycle allows it
MAX_POINTS = 4320  # 6 h at a 5 s cycle
MIN_POINTS = 60
# What a point holds; every value may be unknown (NaN in the ring, null in JSON).
COLUMNS = ("t", "allocation_w", "facility_power_w", "facility_measured_w", "facility_upper_bound_w",
           "meter_w", "miner_power_w")
STATUS_CODES = ("ok", "partial", "dark", "stale", "no_data")  # the status column as an index into this


def capacity_for(poll_interval_s: float) -> int:
    """Points per site: WINDOW_S of cycles, within MIN_POINTS..MAX_POINTS."""
    return max(MIN_POINTS, min(MAX_POINTS, math.ceil(WINDOW_S / max(poll_interval_s, 0.001))))


class Ring:
    """A fixed-size ring of points, oldest overwritten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._columns = {name: array("d", [math.nan]) * capacity for name in COLUMNS}
        self._status = bytearray(capacity)
        self._next = 0  # where the next point goes
        self.count = 0

    def append(self, values: dict[str, float | None], status: str) -> None:
        i = self._next
        for name, column in self._columns.items():
            value = values.get(name)
            column[i] = math.nan if value is None else float(value)
        self._status[i] = STATUS_CODES.index(status) if status in STATUS_CODES else len(STATUS_CODES) - 1
        self._next = (i + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)

    def _order(self) -> Iterable[int]:
        start = (self._next - self.count) % self.capacity
        return ((start + k) % self.capacity for k in range(self.count))

    def series(self, since_s: float | None = None) -> dict[str, list[Any]]:
        """Columns oldest first (NaN as None), from `since_s` on when given."""
        order = [i for i in self._order() if since_s is None or self._columns["t"][i] >= since_s]
        out: dict[str, list[Any]] = {
            name: [None if math.isnan(column[i]) else column[i] for i in order]
            for name, column in self._columns.items()}
        out["status"] = [STATUS_CODES[self._status[i]] for i in order]
        return out


def point(site: SiteTotals, at: float) -> dict[str, float | None]:
    d = site.draw
    meter = site.meter.power_w if site.meter is not None else None
    return {"t": at, "allocation_w": d.allocation_w, "facility_power_w": d.facility_power_w,
            "facility_measured_w": d.facility_measured_w, "facility_upper_bound_w": d.facility_upper_bound_w,
            "meter_w": meter, "miner_power_w": d.miner_power_w}


class History:
    """Every site's ring; `record` is called once per cycle by the service, the page reads `series`."""

    def __init__(self, poll_interval_s: float) -> None:
        self.capacity = capacity_for(poll_interval_s)
        self.rings: dict[str, Ring] = {}

    def record(self, fleet: FleetTotals) -> None:
        for site in fleet.sites:
            ring = self.rings.get(site.site_id)
            if ring is None:
                ring = self.rings[site.site_id] = Ring(self.capacity)
            ring.append(point(site, fleet.at), site.status.value)
        # A site removed by a reload takes its history with it: nothing unbounded survives reloads.
        for gone in set(self.rings) - {s.site_id for s in fleet.sites}:
            del self.rings[gone]

    def series(self, site_id: str, since_s: float | None = None) -> dict[str, list[Any]] | None:
        ring = self.rings.get(site_id)
        return None if ring is None else ring.series(since_s)
