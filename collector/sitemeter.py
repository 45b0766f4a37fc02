"""Pure: a site's meter readings -> the site's facility figure (meter, else miners) and their reconciliation.

The meter is the figure when it is trusted: its last read succeeded, its registers have moved within
`stale_after_s` (power or import counter: a gateway answering from its cache repeats the same image), and it is
plausible - not above ten times the site's allocation, and not below what the miners measure drawing right
now (x PUE + aux + declared load) by more than `thresholds.meter_mismatch_ratio`: a meter lower than that is a
scale, CT or wiring error, a stuck reading, or load fed from before the meter, and judging on it would be
optimistic. Otherwise the site falls back to the miners' figure, and `meter.state` says why.

The miners' figure is miner power x PUE + aux + the declared non-miner load: what the site would be judged on
without the meter. Reconciliation = meter - that figure, for every fresh meter value (believed or not).

Load the meter saw and the miners do not (a positive reconciliation while the meter was trusted) does not stop
because the meter did: the fallback adds the last such excess (`unseen_w`) until the meter is trusted
again, so losing the meter never lowers a site's figure below what it last showed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

from megawatch.collector.config import CollectorConfig
from megawatch.collector.meterconfig import MeterConfig
from megawatch.collector.meters import MeterReading, plausible
from megawatch.collector.model import Draw, FleetTotals, SiteTotals, add

PLAUSIBLE_MAX_ALLOCATIONS = 10.0  # a meter above 10x the allocation reads with a wrong scale or unit
NEGATIVE_TOLERANCE = 0.01  # of the allocation: an idle feeder may read a little below 0 (noise, a little export)


class MeterState(StrEnum):
    OK = "ok"  # fresh and plausible: the site's figure
    STALE = "stale"  # answers, but its power has not changed for stale_after_s
    DOWN = "down"  # the last read failed (no connection, timeout, exception reply, wrong layout)
    REJECTED = "rejected"  # answers with a value that cannot be the site's draw (named in `problems`)
    NONE = "none"  # no meter configured


class FigureSource(StrEnum):
    METER = "meter"
    MINERS = "miners"


@dataclass(frozen=True, slots=True)
class MeterResult:
    """One read attempt: a reading, or an error (meterclient.MeterClient.read)."""

    reading: MeterReading | None
    error: str | None
    duration_s: float


@dataclass(frozen=True, slots=True)
class MeterObservation:
    """The collector's memory of one site's meter."""

    reading: MeterReading | None = None  # last reading with a usable power
    changed_at: float | None = None  # collector clock when that power last took a new value
    read_at: float | None = None  # when `reading` was taken
    up: bool = False  # the last read got an answer that decoded to a usable power
    answered: bool = False  # the last read got an answer at all
    last_error: str | None = None
    problems: tuple[str, ...] = ()  # what was wrong with the last answer
    energy_import_wh: float | None = None  # last known import counter
    unseen_w: float = 0.0  # the last positive reconciliation of a trusted reading (see the module docstring)


def observe_meter(prev: MeterObservation | None, result: MeterResult, now: float, config: MeterConfig,
                  allocation_w: float) -> MeterObservation:
    """Fold one read into the meter's memory; a failed or rejected read keeps the last good value, aging."""
    prev = prev or MeterObservation()
    if result.reading is None:
        return replace(prev, up=False, answered=False, last_error=result.error, problems=())
    reading = plausible(result.reading, invert=config.invert, max_w=PLAUSIBLE_MAX_ALLOCATIONS * allocation_w,
                        tolerance_w=NEGATIVE_TOLERANCE * allocation_w)
    energy = reading.energy_import_wh if reading.energy_import_wh is not None else prev.energy_import_wh
    if reading.power_w is None:
        return replace(prev, up=False, answered=True, last_error=None, problems=reading.problems,
                       energy_import_wh=energy)
    # A steady load may repeat its power reading; a live meter's import counter still moves.
    changed = (prev.reading is None or prev.reading.power_w != reading.power_w
               or (reading.energy_import_wh is not None and reading.energy_import_wh != prev.energy_import_wh))
    return MeterObservation(reading=reading, changed_at=now if changed else prev.changed_at, read_at=now, up=True,
                            answered=True, last_error=None, problems=reading.problems, energy_import_wh=energy,
                            unseen_w=prev.unseen_w)


@dataclass(frozen=True, slots=True)
class SiteMeter:
    """A site's meter beside its miners' figure, as the API and metrics show it. None = unknown."""

    state: MeterState
    power_w: float | None  # the meter's last good reading (shown whatever the state)
    age_s: float | None  # time since that reading last changed
    up: bool  # the last read answered with a usable value
    energy_import_wh: float | None
    miners_facility_power_w: float | None  # miner power x PUE + aux + declared non-miner load
    non_miner_load_w: float
    reconciliation_w: float | None  # meter - miners' figure, while the meter value is fresh
    reconciliation_ratio: float | None  # reconciliation / miners' figure
    unseen_w: float  # the meter's last excess over the miners' figure; added to it while the meter is not trusted
    error: str | None
    problems: tuple[str, ...]


def judge_meter(obs: MeterObservation | None, config: MeterConfig, miners_w: float | None, now: float,
                floor_w: float | None = None) -> SiteMeter:
    """Where the meter stands now, against the miners' figure `miners_w` (non-miner load included); a reading
    below `floor_w` (what the miners measure, less the mismatch tolerance) is not believed."""
    obs = obs or MeterObservation()
    power = obs.reading.power_w if obs.reading is not None else None
    age = now - obs.changed_at if obs.changed_at is not None else None
    fresh = power is not None and age is not None and age <= config.stale_after_s
    problems = obs.problems
    if not obs.answered:
        state = MeterState.DOWN
    elif not obs.up:
        state = MeterState.REJECTED
    elif not fresh:
        state = MeterState.STALE
    elif floor_w is not None and power is not None and power < floor_w:
        state, problems = MeterState.REJECTED, (*problems, "power_below_miners_measured")
    else:
        state = MeterState.OK
    reconciliation = ratio = None
    if fresh and obs.up and power is not None and miners_w is not None:
        reconciliation = power - miners_w
        ratio = reconciliation / miners_w if miners_w > 0 else None
    return SiteMeter(state=state, power_w=power, age_s=age, up=obs.up, energy_import_wh=obs.energy_import_wh,
                     miners_facility_power_w=miners_w, non_miner_load_w=config.non_miner_load_w,
                     reconciliation_w=reconciliation, reconciliation_ratio=ratio,
                     unseen_w=obs.unseen_w, error=obs.last_error,
                     problems=problems)


def figure_source(totals: SiteTotals) -> FigureSource:
    """What the site's facility figure comes from now."""
    meter = totals.meter
    return FigureSource.METER if meter is not None and meter.state is MeterState.OK else FigureSource.MINERS


def meter_json(meter: SiteMeter | None) -> dict[str, object]:
    """The meter as /api/v1/sites shows it ({"state": "none"} for a site without one)."""
    if meter is None:
        return {"state": MeterState.NONE.value}
    return {**asdict(meter), "state": meter.state.value, "problems": list(meter.problems)}


def remember_unseen(obs: MeterObservation, meter: SiteMeter) -> MeterObservation:
    """After a cycle: a trusted reading sets the unseen load to carry (its positive reconciliation, or none)."""
    if meter.state is not MeterState.OK or meter.reconciliation_w is None:
        return obs
    return replace(obs, unseen_w=max(0.0, meter.reconciliation_w))


def _judged(draw: Draw, measured_w: float | None, allowance_w: float | None) -> Draw:
    """`draw` at the facility re-based on `measured_w` + `allowance_w`: the figure against the allocation and
    what follows from it. The miners' own figures (miner_*) stay as the miners report them."""
    upper = add(measured_w, allowance_w)
    allocation = draw.allocation_w
    return replace(draw, facility_measured_w=measured_w, facility_allowance_w=allowance_w,
                   facility_upper_bound_w=upper, facility_power_w=upper,
                   allowance_ratio=(allowance_w or 0.0) / upper if upper is not None and upper > 0 else None,
                   utilisation_ratio=upper / allocation if upper is not None and allocation > 0 else None,
                   headroom_w=allocation - upper if upper is not None else None)


def apply_meter(totals: SiteTotals, config: MeterConfig, obs: MeterObservation | None, now: float,
                tolerance: float = 0.05) -> SiteTotals:
    """A metered site judged on its meter when trusted (all of it measured), else on its miners' figure with the
    declared non-miner load (known, like aux) and the load only the meter saw (an allowance: not measured now)."""
    d = totals.draw
    # Reconciled at face value: the agents' margin on their estimates is for judging, not a draw the meter sees.
    miners = d.facility_power_w - (d.facility_margin_w or 0.0) if d.facility_power_w is not None else None
    measured = d.facility_measured_w + config.non_miner_load_w if d.facility_measured_w is not None else None
    meter = judge_meter(obs, config, miners + config.non_miner_load_w if miners is not None else None, now,
                        measured * (1 - tolerance) if measured is not None else None)
    if meter.state is MeterState.OK:
        draw = _judged(d, meter.power_w, 0.0)
    else:
        allowance = add(d.facility_allowance_w, meter.unseen_w if meter.unseen_w > 0 else None)
        draw = _judged(d, measured, allowance)
    return replace(totals, draw=draw, meter=meter)


def apply_meters(fleet: FleetTotals, config: CollectorConfig, meters: Mapping[str, MeterObservation],
                 now: float) -> FleetTotals:
    """The fleet with every metered site judged on its figure, and the fleet on the sum of those figures."""
    sites = []
    for totals in fleet.sites:
        site = config.site(totals.site_id)
        meter = site.meter if site is not None else None
        tolerance = config.thresholds.meter_mismatch_ratio
        sites.append(apply_meter(totals, meter, meters.get(totals.site_id), now, tolerance) if meter is not None
                     else totals)
    if not any(s.meter is not None for s in sites):
        return fleet
    draw = _judged(fleet.draw, add(*(s.draw.facility_measured_w for s in sites)),
                   add(*(s.draw.facility_allowance_w for s in sites)))
    return replace(fleet, sites=tuple(sites), draw=draw)
