"""Every metric the agent exports, defined here; per-miner families rendered by a fast path of ours.

prometheus_client's generate_latest costs ~6 us per sample (measured: 1.1 s for 10,000 miners' 200,000), which
would block the event loop and the polling. The per-miner families are therefore described once in
`MINER_FAMILIES` and either rendered straight to text (`render_miners`, what /metrics serves) or built as
prometheus_client families (`MinerCollector`, the reference the tests compare the fast text against).
Site totals and the agent's own metrics are few: `FleetCollector` serves them through a registry.

Unknown is absent: a None field gives no series, never a 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from megawatch.agent.config import ExpositionSettings
from megawatch.agent.inventory import EVENTS
from megawatch.agent.model import MinerReading
from megawatch.agent.plausibility import FIELDS
from megawatch.agent.state import ALLOWANCE_BASES, OUTCOMES, FleetSnapshot, FleetState, MinerState, MinerStatus

PREFIX = "megawatch_"
Sample = tuple[tuple[str, ...], float]  # extra label values (after site, miner), value


@dataclass(frozen=True, slots=True)
class MinerFamily:
    """One per-miner metric family: its samples come from one MinerState."""

    name: str  # without the `_total` suffix for counters, as prometheus_client names them
    kind: str  # "gauge" or "counter"
    help: str
    labels: tuple[str, ...]  # after site and miner
    samples: Callable[[MinerState, ExpositionSettings], Iterable[Sample]]
    # Fast paths for `render_miners` (same values as `samples`, fewer calls per sample):
    field: str | None = None  # a MinerReading attribute, exported while the reading counts
    value: Callable[[MinerState], float | None] | None = None  # one label-less value of the state

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name


_Samples = Callable[[MinerState, ExpositionSettings], Iterable[Sample]]


def _reading(name: str) -> tuple[_Samples, str, None]:
    """One reading field, exported while the reading counts (up or stale); no series when unknown."""
    get = attrgetter(name)

    def samples(m: MinerState, _: ExpositionSettings) -> Iterable[Sample]:
        current = m.current
        v = None if current is None else get(current)
        return () if v is None or not math.isfinite(v) else (((), v),)

    return samples, name, None


def _state(get: Callable[[MinerState], float | None]) -> tuple[_Samples, None, Callable[[MinerState], float | None]]:
    def samples(m: MinerState, _: ExpositionSettings) -> Iterable[Sample]:
        v = get(m)
        return () if v is None else (((), v),)

    return samples, None, get


def _power(m: MinerState, _: ExpositionSettings) -> Iterable[Sample]:
    current = m.current
    if current is None or current.power_w is None or current.power_source is None:
        return ()
    return (((current.power_source.value,), current.power_w),)


def _temperatures(m: MinerState, settings: ExpositionSettings) -> Iterable[Sample]:
    current = m.current
    if current is None:
        return
    for board in current.boards:
        if board.chip_temp_c is not None:
            yield (str(board.index), "chip"), board.chip_temp_c
        if settings.board_temperatures and board.board_temp_c is not None:
            yield (str(board.index), "board"), board.board_temp_c


def _fans(m: MinerState, _: ExpositionSettings) -> Iterable[Sample]:
    current = m.current
    if current is None:
        return
    for fan in current.fans:
        if fan.rpm is not None:
            yield (str(fan.index),), fan.rpm


def _info(m: MinerState, _: ExpositionSettings) -> Iterable[Sample]:
    r = m.reading  # identity outlives the grace period: keep the last known
    if r is None and m.dialect is None:
        return ()
    return ((
        (r.model or "", r.firmware or "", r.firmware_version or "", m.dialect or "") if r is not None
        else ("", "", "", m.dialect or ""), 1.0),)


def _pools(m: MinerState, settings: ExpositionSettings) -> Iterable[Sample]:
    current = m.current
    if current is None:
        return
    for pool in current.pools:
        if settings.all_pools or pool.active:
            yield (str(pool.index), pool.url, pool.user or "", pool.status or ""), 1.0


MINER_FAMILIES: tuple[MinerFamily, ...] = (
    MinerFamily(PREFIX + "miner_up", "gauge",
                "1 when the latest poll of the miner succeeded, else 0 (a ratio, no unit).", (),
                *_state(lambda m: 1.0 if m.status is MinerStatus.UP else 0.0)),
    MinerFamily(PREFIX + "miner_stale", "gauge",
                "1 while a failed miner's last reading is still counted within the grace period (no unit).", (),
                *_state(lambda m: 1.0 if m.status is MinerStatus.STALE else 0.0)),
    MinerFamily(PREFIX + "miner_stale_age_seconds", "gauge",
                "Age of a stale miner's last good reading, in seconds.", (), *_state(lambda m: m.stale_age_s)),
    MinerFamily(PREFIX + "miner_last_success_timestamp_seconds", "gauge",
                "Unix time of the miner's last successful poll, in seconds.", (), *_state(lambda m: m.last_success_s)),
    MinerFamily(PREFIX + "miner_poll_duration_seconds", "gauge",
                "Duration of the miner's latest poll, in seconds.", (), *_state(lambda m: m.poll_duration_s)),
    MinerFamily(PREFIX + "miner_hashrate_hashes_per_second", "gauge",
                "Hashrate over the firmware's short window (5 to 30 s), in hashes per second.", (),
                *_reading("hashrate_hs")),
    MinerFamily(PREFIX + "miner_hashrate_average_hashes_per_second", "gauge",
                "Average hashrate since the miner started, in hashes per second.", (),
                *_reading("hashrate_avg_hs")),
    MinerFamily(PREFIX + "miner_power_watts", "gauge",
                "Power draw in watts, measured by the firmware or estimated from the model's J/TH.", ("source",),
                _power),
    MinerFamily(PREFIX + "miner_power_limit_watts", "gauge",
                "Power limit set in the firmware, in watts.", (), *_reading("power_limit_w")),
    MinerFamily(PREFIX + "miner_power_unknown", "gauge",
                "1 when the miner's power draw in watts is unknown (never reported as 0 W), else 0.", (),
                *_state(lambda m: 1.0 if m.power_w is None else 0.0)),
    MinerFamily(PREFIX + "miner_temperature_celsius", "gauge",
                "Hash board temperature by sensor (chip or board), in degrees Celsius.", ("board", "sensor"),
                _temperatures),
    MinerFamily(PREFIX + "miner_fan_rpm", "gauge", "Fan speed, in revolutions per minute.", ("fan",), _fans),
    MinerFamily(PREFIX + "miner_shares_accepted", "counter", "Shares accepted by the pools, a count of shares.", (),
                *_reading("shares_accepted")),
    MinerFamily(PREFIX + "miner_shares_rejected", "counter", "Shares rejected by the pools, a count of shares.", (),
                *_reading("shares_rejected")),
    MinerFamily(PREFIX + "miner_shares_stale", "counter", "Stale shares, a count of shares.", (),
                *_reading("shares_stale")),
    MinerFamily(PREFIX + "miner_hardware_errors", "counter", "Hardware errors reported, a count of errors.", (),
                *_reading("hardware_errors")),
    MinerFamily(PREFIX + "miner_uptime_seconds", "gauge", "Time since the mining software started, in seconds.",
                (), *_reading("uptime_s")),
    MinerFamily(PREFIX + "miner_info", "gauge",
                "Model, firmware and dialect of the miner as labels; the value is always 1 (no unit).",
                ("model", "firmware", "firmware_version", "dialect"), _info),
    MinerFamily(PREFIX + "miner_pool_info", "gauge",
                "The miner's active pool as labels; the value is always 1 (no unit).",
                ("pool", "url", "user", "status"), _pools),
)


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


class MinerRenderer:
    """Renders the per-miner families to text (format 0.0.4); keep one per process for its caches.

    Hot path (10,000 miners x ~20 series per cycle). Each miner's `site=..,miner=..` label text is built
    once for a fleet and reused every cycle; extra label sets (boards, fans, model, pool) repeat from
    cycle to cycle and are cached too, bounded.
    """

    _MAX_CACHED_LABELS = 200_000

    def __init__(self, settings: ExpositionSettings) -> None:
        self._settings = settings
        self._labels: dict[str, dict[Any, Any]] = {}  # by family
        self._fleet_key: tuple[object, ...] = ()
        self._heads: list[str] = []  # `site="..",miner=".."`, one per miner, in snapshot order

    def _heads_for(self, snapshot: FleetSnapshot) -> list[str]:
        # Targets, not names: a name is formatted on every access, a target compares by identity first.
        key = (snapshot.site, *(m.target for m in snapshot.miners))
        if key != self._fleet_key:
            site = _escape(snapshot.site)
            self._heads = [f'site="{site}",miner="{_escape(m.name)}"' for m in snapshot.miners]
            self._fleet_key = key
        return self._heads

    def render(self, snapshot: FleetSnapshot) -> str:
        return "".join(self.render_parts(snapshot))

    def render_parts(self, snapshot: FleetSnapshot, block: int = 1000) -> Iterator[str]:
        """The text one family and `block` miners at a time: a consumer that compresses or writes each part
        as it comes never holds the whole text (~20 MB at 10,000 miners), its encoded copy, nor even one
        family's (the temperatures alone were ~12 MB of lines, text and bytes at once at 10,000 miners)."""
        settings = self._settings
        miners = snapshot.miners
        heads_of_fleet = self._heads_for(snapshot)
        currents = [m.current for m in miners]
        if sum(map(len, self._labels.values())) > self._MAX_CACHED_LABELS:
            self._labels.clear()
        for family in MINER_FAMILIES:
            name = family.sample_name
            yield f"# HELP {name} {family.help}\n# TYPE {name} {family.kind}\n"
            for start in range(0, len(miners), block):
                stop = start + block
                text = self._family_lines(family, heads_of_fleet[start:stop], miners[start:stop],
                                          currents[start:stop], settings)
                if text:
                    yield text

    def _family_lines(self, family: MinerFamily, heads_of_fleet: list[str], miners: tuple[MinerState, ...],
                      currents: list[MinerReading | None], settings: ExpositionSettings) -> str:
        name = family.sample_name
        # The sample prefix `name{site=..,miner=..` of each miner, for this family and block only: kept for
        # every family it was ~23 MB at 10,000 miners, and rebuilding it costs no measurable render time.
        opening = f"{name}{{"
        close = "," if family.labels else "} "
        heads = [f"{opening}{h}{close}" for h in heads_of_fleet]
        if family.field is not None:
            get = attrgetter(family.field)
            # `v - v == 0` drops None's neighbours NaN and inf: unknown is absent.
            lines = [f"{p}{v}\n" for p, c in zip(heads, currents, strict=True)
                     if c is not None and (v := get(c)) is not None and v - v == 0]
        elif family.value is not None:
            value = family.value
            lines = [f"{p}{v}\n" for p, m in zip(heads, miners, strict=True) if (v := value(m)) is not None]
        elif name in _INDEXED:
            # Boards and fans: the label text depends only on the slot number, cached by it.
            lines = _INDEXED[name](heads, currents, settings, self._labels.setdefault(name, {}))
        else:
            extra, samples = family.labels, family.samples
            cache = self._labels.setdefault(name, {})
            lines = []
            for p, m in zip(heads, miners, strict=True):
                for values, v in samples(m, settings):
                    labels = cache.get(values)
                    if labels is None:
                        labels = ",".join(f'{k}="{_escape(x)}"' for k, x in zip(extra, values, strict=True))
                        cache[values] = labels
                    lines.append(f"{p}{labels}}} {v}\n")
        return "".join(lines)


def _temperature_lines(heads: list[str], currents: list[MinerReading | None], settings: ExpositionSettings,
                       cache: dict[Any, Any]) -> list[str]:
    """Same samples as `_temperatures`, label text cached per board index."""
    boards_too = settings.board_temperatures
    lines: list[str] = []
    for p, c in zip(heads, currents, strict=True):
        if c is None:
            continue
        for board in c.boards:
            chip, board_temp = board.chip_temp_c, board.board_temp_c
            if chip is None and (board_temp is None or not boards_too):
                continue
            labels = cache.get(board.index)
            if labels is None:
                index = _escape(str(board.index))
                labels = cache[board.index] = (f'board="{index}",sensor="chip"}} ',
                                               f'board="{index}",sensor="board"}} ')
            if chip is not None:
                lines.append(f"{p}{labels[0]}{chip}\n")
            if boards_too and board_temp is not None:
                lines.append(f"{p}{labels[1]}{board_temp}\n")
    return lines


def _fan_lines(heads: list[str], currents: list[MinerReading | None], _: ExpositionSettings,
               cache: dict[Any, Any]) -> list[str]:
    """Same samples as `_fans`, label text cached per fan index."""
    lines: list[str] = []
    for p, c in zip(heads, currents, strict=True):
        if c is None:
            continue
        for fan in c.fans:
            rpm = fan.rpm
            if rpm is not None:
                labels = cache.get(fan.index)
                if labels is None:
                    labels = cache[fan.index] = f'fan="{_escape(str(fan.index))}"}} '
                lines.append(f"{p}{labels}{rpm}\n")
    return lines


_INDEXED = {
    PREFIX + "miner_temperature_celsius": _temperature_lines,
    PREFIX + "miner_fan_rpm": _fan_lines,
}


def render_miners(snapshot: FleetSnapshot, settings: ExpositionSettings) -> str:
    """Text exposition of every per-miner family in `snapshot` (see MinerRenderer)."""
    return MinerRenderer(settings).render(snapshot)


class MinerCollector(Collector):
    """The per-miner families through prometheus_client: slow, kept as the reference for `render_miners`."""

    def __init__(self, state: FleetState, settings: ExpositionSettings) -> None:
        self._state = state
        self._settings = settings

    def describe(self) -> Iterator[Metric]:
        for family in MINER_FAMILIES:
            yield _family(family)

    def collect(self) -> Iterator[Metric]:
        snapshot = self._state.snapshot
        for family in MINER_FAMILIES:
            metric = _family(family)
            for m in snapshot.miners:
                for values, v in family.samples(m, self._settings):
                    metric.add_metric([snapshot.site, m.name, *values], v)
            yield metric


def _family(family: MinerFamily) -> GaugeMetricFamily | CounterMetricFamily:
    labels = ["site", "miner", *family.labels]
    if family.kind == "counter":
        return CounterMetricFamily(family.name, family.help, labels=labels)
    return GaugeMetricFamily(family.name, family.help, labels=labels)


class FleetCollector(Collector):
    """Site totals and the agent's own metrics, read from the current snapshot at scrape time."""

    def __init__(self, state: FleetState) -> None:
        self._state = state

    def describe(self) -> Iterator[Metric]:
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._state.snapshot)

    def _families(self, snap: FleetSnapshot | None) -> Iterator[Metric]:
        def gauge(name: str, help_: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, help_, labels=["site", *labels])

        def counter(name: str, help_: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, help_, labels=["site", *labels])

        hashrate = gauge("site_hashrate_hashes_per_second",
                         "Site hashrate summed over miners up or stale, in hashes per second.")
        power = gauge("site_power_watts",
                      "Site power measured: miners with a fresh reading, by source (firmware or estimate), in watts.",
                      ("source",))
        allowance = gauge("site_power_allowance_watts",
                          "Site power allowed for miners whose draw is not measured now (last known draw, "
                          "nameplate or the configured default; never 0) and the margin on estimated draws, "
                          "in watts.")
        upper = gauge("site_power_upper_bound_watts",
                      "Site power measured plus allowance: the most the site's miners may be drawing, in watts.")
        allowed = gauge("site_power_allowance_miners",
                        "Miners counted in the allowance by basis (last_known, nameplate, default; estimate_margin "
                        "and firmware_margin: miners whose known draw carries a margin), a count of miners.",
                        ("basis",))
        allowed_w = gauge("site_power_allowance_basis_watts",
                          "Site power allowance by basis (as site_power_allowance_miners; they add up to "
                          "site_power_allowance_watts), in watts.", ("basis",))
        unknown = gauge("site_power_unknown_miners",
                        "Miners whose draw is not measured now and is counted in the allowance (a count).")
        miners = gauge("site_miners", "Configured miners by state (up, down or stale), a count of miners.",
                       ("state",))
        configured = gauge("site_miners_configured",
                           "Miners the agent counts: listed in its config or found in its scan ranges, a count of "
                           "miners.")
        discovered = gauge("site_miners_discovered",
                           "Of the miners counted, those found in scan ranges rather than listed, a count of miners.")
        missing = gauge("site_miners_missing",
                        "Listed miners that never answered (this run, nor in the inventory), a count of miners.")
        sweeps = counter("agent_discovery_sweeps", "Rescans of the scan ranges finished, a count of sweeps.")
        events = counter("agent_inventory_events",
                         "Inventory changes by event (miner_appeared, miner_vanished, miner_swapped, "
                         "miner_firmware_changed), a count of events.", ("event",))
        duration = gauge("agent_cycle_duration_seconds", "Duration of the latest poll cycle, in seconds.")
        last = gauge("agent_last_cycle_timestamp_seconds", "Unix time the latest poll cycle ended, in seconds.")
        cycles = counter("agent_cycles", "Poll cycles completed, a count of cycles.")
        overruns = counter("agent_cycle_overruns",
                           "Poll cycles that took longer than the poll interval, a count of cycles.")
        polls = counter("agent_polls", "Miner polls by outcome (ok or the failure kind), a count of polls.",
                        ("outcome",))
        implausible = counter(
            "agent_implausible_values",
            "Values miners reported that no real miner can have (out of physical bounds, a JSON key given twice "
            "with different values, a bare NaN/Infinity), dropped as unknown and never summed; by reading field, "
            "a count of values.", ("field",))
        if snap is not None:
            site, t = snap.site, snap.totals
            configured.add_metric([site], t.configured)
            discovered.add_metric([site], t.discovered)
            if snap.cycle > 0:  # before the first cycle nothing is known: no totals rather than zeros
                missing.add_metric([site], t.missing)
                hashrate.add_metric([site], t.hashrate_hs)
                power.add_metric([site, "firmware"], t.power_firmware_w)
                power.add_metric([site, "estimate"], t.power_estimate_w)
                allowance.add_metric([site], t.power_allowance_w)
                upper.add_metric([site], t.power_upper_bound_w)
                for basis in ALLOWANCE_BASES:
                    allowed.add_metric([site, basis.value], t.allowance_miners.get(basis.value, 0))
                    allowed_w.add_metric([site, basis.value], t.allowance_w.get(basis.value, 0.0))
                miners.add_metric([site, "up"], t.up)
                miners.add_metric([site, "down"], t.down)
                miners.add_metric([site, "stale"], t.stale)
            unknown.add_metric([site], t.power_unknown_miners)
            if snap.duration_s is not None:
                duration.add_metric([site], snap.duration_s)
            if snap.finished_s is not None:
                last.add_metric([site], snap.finished_s)
            c = snap.counters
            cycles.add_metric([site], c.cycles)
            overruns.add_metric([site], c.overruns)
            for outcome in OUTCOMES:
                polls.add_metric([site, outcome], c.polls.get(outcome, 0))
            for name in FIELDS:  # every field from the start, so rate() sees the first one
                implausible.add_metric([site, name], c.implausible.get(name, 0))
            sweeps.add_metric([site], c.sweeps)
            for event in EVENTS:
                events.add_metric([site, event], c.inventory_events.get(event, 0))
        yield from (hashrate, power, allowance, upper, allowed, allowed_w, unknown, miners, configured, discovered,
                    missing, duration, last, cycles, overruns, polls, implausible, sweeps, events)

