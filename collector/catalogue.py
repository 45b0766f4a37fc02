"""Every alert megawatch raises, defined once; the collector's rules and the Prometheus rules are made from it.

An entry says what is judged (the figure, for each path: the collector's `measure` and Prometheus's `value`
expression), against which line (a key of the sites file, `source`), how it reads (summary and action
templates) and who raises it (`paths`). Numbers never live here: lines and hold times come from the sites
file (`thresholds:`, allocations), so `megawatch rules --config SITES.yaml` and the collector reading the
same file judge alike.

Templates use Python format fields, rendered by each path in its own way: who, value, line, clear (the line an
alert with hysteresis clears below), excess and ratio (value - line and value / line, for lines that are
series). The collector fills them with its figures; `megawatch rules` with Prometheus template code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from megawatch.collector.model import Severity, SiteTotals


class AlertPath(StrEnum):
    COLLECTOR = "collector"  # the collector's RuleEngine, sent as source="collector"
    PROMETHEUS = "prometheus"  # a site's Prometheus, rules from `megawatch rules`
    CENTRAL = "central"  # the central Prometheus federating site servers (`megawatch rules --central`)


class Subject(StrEnum):
    SITE = "site"
    AGENT = "agent"
    FLEET = "fleet"
    COLLECTOR = "collector"
    SITE_SERVER = "site_server"


class Unit(StrEnum):
    WATTS = "W"
    RATIO = "ratio"
    SECONDS = "s"
    COUNT = "count"


@dataclass(frozen=True, slots=True)
class AlertSpec:
    name: str
    severity: Severity
    subject: Subject
    log_event: str  # the collector logs it firing, and `<log_event>_resolved`
    means: str  # for docs/alerts.md: what happened
    summary: str  # template, see the module docstring
    action: str  # template: what to do; the description in both paths
    value: str  # PromQL: the figure judged (or, with no line, the whole condition)
    unit: Unit
    op: str = ">"  # value op line
    line: str = ""  # PromQL of the line; "{<threshold key>}" for a thresholds: value; "" when value is a condition
    source: str = ""  # the sites-file key the line comes from ("" when there is no line)
    hysteresis: bool = False  # clears only below line x (1 - thresholds.hysteresis_ratio)
    measure: Callable[[Any], float | None] | None = None  # the collector's figure for a subject; None: unknown
    limit: Callable[[Any], float] | None = None  # the collector's line when it is not a thresholds: value
    paths: frozenset[AlertPath] = frozenset({AlertPath.COLLECTOR, AlertPath.PROMETHEUS})
    only_prometheus: str = ""  # why the collector cannot raise it, when it is not in AlertPath.COLLECTOR
    # For a power figure judged on its upper bound: the {measured} and {allowance} fields of the text, as PromQL
    # series of the subject (Prometheus) and the collector's figures for it.
    parts: tuple[str, str] | None = None
    measure_parts: Callable[[Any], tuple[float | None, float | None]] | None = None

    @property
    def threshold(self) -> str | None:
        """The key under `thresholds:` that sets the line, if the line is one."""
        return self.source.removeprefix("thresholds.") if self.source.startswith("thresholds.") else None

    @property
    def line_is_series(self) -> bool:
        return bool(self.line) and self.threshold is None and not _is_number(self.line)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _stale_age(site: SiteTotals) -> float | None:
    # An agent never heard from makes the site stale however young the other agents' data is.
    if any(not a.has_data for a in site.agents):
        return math.inf
    return site.data_age_s


def _down_ratio(site: SiteTotals) -> float | None:
    down, total = site.draw.miners_down, site.draw.miners_total
    return down / total if down is not None and total is not None and total > 0 else None


# Carried figures. The agents' series: their last known values for 10 minutes after an agent stops answering,
# never 0 W (SiteDataStale and AgentDown say it happened). The collector's config series (allocation, PUE,
# aux, duplicates): their last known values for a day, so the Prometheus path keeps judging the agents' power
# against the allocation while the collector is down (CollectorDown says it is).
AGENT_CARRY = "10m"
COLLECTOR_CARRY = "1d"

# What a site draws at the grid, as judged: its upper bound, measured plus allowance (docs/accounting.md).
SITE_POWER = "site:megawatch_facility_power_watts:sum"
SITE_MEASURED = "site:megawatch_facility_measured_watts:sum"
SITE_ALLOWANCE = "site:megawatch_facility_allowance_watts:sum"
SITE_ALLOCATION = "site:megawatch_allocation_watts:max"
# Of the allowance, the agents' margin on draws they estimate (uncertainty on known draw), and the rest: draw not
# known now. SiteUnknownShareHigh judges the latter, so a healthy all-estimated site does not fire it.
SITE_MARGIN = "site:megawatch_facility_margin_watts:sum"
SITE_UNKNOWN = "site:megawatch_facility_unknown_watts:sum"
FLEET_POWER = "fleet:megawatch_facility_power_watts:sum"
FLEET_MEASURED = "fleet:megawatch_facility_measured_watts:sum"
FLEET_ALLOWANCE = "fleet:megawatch_facility_allowance_watts:sum"
FLEET_ALLOCATION = "fleet:megawatch_allocation_watts:max"
UPPER_BOUND_CARRY = "1d"  # an agent's upper bound outlives its answers: losing sight of a site never lowers it


def _draw_parts(subject: Any) -> tuple[float | None, float | None]:
    return subject.draw.facility_measured_w, subject.draw.facility_allowance_w


def _unknown_parts(subject: Any) -> tuple[float | None, float | None]:
    return subject.draw.facility_measured_w, subject.draw.facility_unknown_w

ALERTS: dict[str, AlertSpec] = {a.name: a for a in (
    AlertSpec(
        "SiteOverAllocation", Severity.CRITICAL, Subject.SITE, "site_over_allocation",
        means="The site may draw more than the allocation in force (its schedule applied), facility overhead "
              "included: judged on its upper bound, measured plus the allowance for miners whose draw is not "
              "known now, so losing sight of miners never clears it.",
        summary="{who} draws up to {value} against its {line} allocation ({excess}, {ratio}): {measured} measured, "
                "{allowance} allowed for.",
        action="Shed at least the excess now; the alert clears below {clear}.",
        value=SITE_POWER, unit=Unit.WATTS, line=SITE_ALLOCATION, source="sites[].allocation_mw",
        hysteresis=True, measure=lambda s: s.draw.facility_power_w, limit=lambda s: s.draw.allocation_w,
        parts=(SITE_MEASURED, SITE_ALLOWANCE), measure_parts=_draw_parts),
    AlertSpec(
        "SiteNearAllocation", Severity.WARNING, Subject.SITE, "site_near_allocation",
        means="The site's upper bound (measured plus allowance) is `near_ratio` of its allocation or more: little "
              "headroom is left.",
        summary="{who} is at up to {value} of its allocation (warning at {line}): {measured} measured, {allowance} "
                "allowed for.",
        action="Hold back load increases; the warning clears below {clear}.",
        value="site:megawatch_utilisation:ratio", unit=Unit.RATIO, op=">=", line="{near_ratio}",
        source="thresholds.near_ratio", hysteresis=True, measure=lambda s: s.draw.utilisation_ratio,
        parts=(SITE_MEASURED, SITE_ALLOWANCE), measure_parts=_draw_parts),
    AlertSpec(
        "SiteUnknownShareHigh", Severity.WARNING, Subject.SITE, "site_unknown_share_high",
        means="More than `unknown_share_ratio` of the site's figure is allowance for draw not known now (miners or "
              "agents out of sight): too much of it is assumed to trust the figure. The agents' margin on the draws "
              "they estimate is uncertainty on known draw and does not count.",
        summary="{who}: {value} of its figure is allowance for draw not known now (warning above {line}): "
                "{measured} measured, {allowance} allowed for miners or agents out of sight.",
        action="Find why miners do not answer (hung APIs, a switch, a down agent) and whether their power is "
               "still on; the over-allocation alerts count them at their allowance meanwhile.",
        value="site:megawatch_unknown:ratio", unit=Unit.RATIO, line="{unknown_share_ratio}",
        source="thresholds.unknown_share_ratio", hysteresis=True, measure=lambda s: s.draw.unknown_ratio,
        parts=(SITE_MEASURED, SITE_UNKNOWN), measure_parts=_unknown_parts),
    AlertSpec(
        "SiteDataStale", Severity.WARNING, Subject.SITE, "site_data_stale",
        means="Some of the site's agent data is older than `stale_after_s`; its last known figures are still "
              "counted, never as 0 W.",
        summary="{who} data is stale (oldest: {value}; stale after {line}).",
        action="Check the site's agents and the network to them.",
        value="site:megawatch_data_age_seconds:max", unit=Unit.SECONDS, line="{stale_after_s}",
        source="thresholds.stale_after_s", measure=_stale_age),
    AlertSpec(
        "AgentDown", Severity.WARNING, Subject.AGENT, "agent_down",
        means="An agent does not answer; its site's totals carry its last known figures.",
        summary="{who} does not answer.",
        action="Check the agent process and its host; the site's totals carry its last known figures meanwhile.",
        value='up{job="megawatch-agent"} == 0', unit=Unit.COUNT, measure=lambda a: 0.0 if a.up else 1.0),
    AlertSpec(
        "FleetOverAllocation", Severity.CRITICAL, Subject.FLEET, "fleet_over_allocation",
        means="All sites together may draw more than the fleet's allocation (their upper bounds added up).",
        summary="{who} draws up to {value} against its {line} allocation ({excess}, {ratio}): {measured} measured, "
                "{allowance} allowed for.",
        action="Shed load at the sites with the least headroom; the alert clears below {clear}.",
        value=FLEET_POWER, unit=Unit.WATTS, line=FLEET_ALLOCATION, source="fleet.allocation_mw", hysteresis=True,
        measure=lambda f: f.draw.facility_power_w, limit=lambda f: f.draw.allocation_w,
        parts=(FLEET_MEASURED, FLEET_ALLOWANCE), measure_parts=_draw_parts,
        paths=frozenset({AlertPath.COLLECTOR, AlertPath.PROMETHEUS, AlertPath.CENTRAL})),
    AlertSpec(
        "SiteMinersDown", Severity.WARNING, Subject.SITE, "site_miners_down",
        means="`miners_down_ratio` of the site's miners or more are down.",
        summary="{who}: {value} of its miners are down (warning at {line}).",
        action="Look for a tripped breaker, a switch or a pool outage.",
        value='sum by (site) (site:megawatch_miners:sum{state="down"}) / sum by (site) (site:megawatch_miners:sum)',
        unit=Unit.RATIO, op=">=", line="{miners_down_ratio}", source="thresholds.miners_down_ratio",
        hysteresis=True, measure=_down_ratio),
    AlertSpec(
        "SiteDuplicateAgentId", Severity.WARNING, Subject.SITE, "site_duplicate_agent_id",
        means="Two of the site's agent URLs report the same agent id: one agent listed twice (its miners "
              "counted twice), or shards sharing an id (not told apart).",
        summary="{who}: {value} agent id(s) reported by more than one agent URL.",
        action="Fix the sites file (an agent listed twice) or the agents' agent_id (shards sharing one).",
        value=f'max by (site) (last_over_time(megawatch_site_duplicate_agent_ids{{job="megawatch-collector"}}'
              f'[{COLLECTOR_CARRY}]))',
        unit=Unit.COUNT, line="0", measure=lambda s: float(len(s.duplicate_agent_ids))),
    AlertSpec(
        "CollectorDown", Severity.WARNING, Subject.COLLECTOR, "collector_down",
        means="Prometheus cannot scrape the collector, or its cycles stopped (none in 3 poll intervals). "
              "Prometheus alone alerts now, from the agents' series and the last allocation the collector served.",
        summary="{who} is down or its cycles have stalled.",
        action="Restart the collector and read its log; meanwhile Prometheus's own alerts (source=prometheus) "
               "stand in for it, judged against the last allocation it served.",
        value='up{job="megawatch-collector"} == 0 or absent(up{job="megawatch-collector"}) or '
              'time() - max by (job, instance) (megawatch_collector_last_cycle_timestamp_seconds'
              '{job="megawatch-collector"}) > {stall_s}',
        unit=Unit.COUNT, source="poll.interval_s", paths=frozenset({AlertPath.PROMETHEUS}),
        only_prometheus="A collector that is down cannot say so: only whoever scrapes it can."),
    AlertSpec(
        "SiteServerDown", Severity.WARNING, Subject.SITE_SERVER, "site_server_down",
        means="The central Prometheus cannot federate from a site's Prometheus; that site's last known totals "
              f"are carried ({AGENT_CARRY}) and its own alerts still run there.",
        summary="{who} does not answer the central tier's federation.",
        action="Check that site's Prometheus and the network to it; its own alerts still run there.",
        value='up{job="megawatch-federate"} == 0', unit=Unit.COUNT, paths=frozenset({AlertPath.CENTRAL}),
        only_prometheus="Only the central tier federates from site servers."),
    AlertSpec(
        "SiteMeterMismatch", Severity.WARNING, Subject.SITE, "site_meter_mismatch",
        means="The site's meter and its miners' figure (miner power x PUE + aux + declared non-miner load) "
              "differ by more than `meter_mismatch_ratio`: estimates or PUE off, load nobody declared, a meter "
              "set up wrong, or power taken past the miners. A trusted meter stays the site's figure; one below "
              "what the miners measure by more than the ratio is not trusted (docs/meters.md).",
        summary="{who}: its meter and its miners' figure differ by {value} (warning at {line}).",
        action="Compare meter and miners' figure (/api/v1/sites); correct PUE, aux or non_miner_load_mw, check "
               "the meter's scale and wiring, and look for load that should not be on the feeder.",
        value='abs(max by (site) (megawatch_site_reconciliation_ratio{job="megawatch-collector"}))',
        unit=Unit.RATIO, line="{meter_mismatch_ratio}", source="thresholds.meter_mismatch_ratio", hysteresis=True,
        measure=lambda s: abs(s.meter.reconciliation_ratio)
        if s.meter is not None and s.meter.reconciliation_ratio is not None else None),
)}

COLLECTOR_ALERT_NAMES = tuple(n for n, a in ALERTS.items() if AlertPath.COLLECTOR in a.paths)
STALL_CYCLES = 3  # as the collector's /healthz: no cycle for this many poll intervals is a stall


def mw(watts: float) -> str:
    """Format a power for people (kW below 1 MW, so small sites stay readable); the data stays in W."""
    if abs(watts) < 1e6:
        return f"{watts / 1e3:,.1f} kW"
    return f"{watts / 1e6:,.2f} MW"


def duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def figure(unit: Unit, value: float, *, signed: bool = False) -> str:
    """A live figure as the collector shows it."""
    if unit is Unit.WATTS:
        return ("+" if signed and value >= 0 else "") + mw(value)
    if unit is Unit.RATIO:
        return f"{value:.1%}"
    if unit is Unit.SECONDS:
        return duration(value) if math.isfinite(value) else "never answered"
    return f"{value:g}"


def setting(unit: Unit, value: float) -> str:
    """A configured line as both paths show it (it is written into the Prometheus rules as text)."""
    return f"{value * 100:g}%" if unit is Unit.RATIO else figure(unit, value)


_FIELD = re.compile(r"\{([a-z_]+)\}")


def fill(template: str, fields: dict[str, str]) -> str:
    """Replace {name} for the names given; PromQL's own braces ({job="..."}) and other fields stay as they are."""
    return _FIELD.sub(lambda m: fields.get(m.group(1), m.group(0)), template)
