"""What the collector knows: agent summaries, per-site and fleet totals, alerts. Base units; None = unknown."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from megawatch.collector.sitemeter import SiteMeter

N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class AgentSummary:
    """One agent's /api/v1/summary, normalised. Every figure is None when the agent did not give it."""

    agent_id: str | None
    site: str | None
    cycle_ts: float | None  # POSIX time the agent's last poll cycle completed, by the agent's clock
    # How old the cycle was when the agent answered, by its own clock: immune to clock skew between hosts.
    age_at_fetch_s: float | None
    hashrate_hs: float | None
    power_firmware_w: float | None
    power_estimate_w: float | None
    miners_power_unknown: int | None
    miners_up: int | None
    miners_down: int | None
    miners_stale: int | None
    miners_total: int | None
    # Allowance for the agent's miners whose draw it does not know now (docs/accounting.md). An agent older
    # than the allowance gives none: parse_summary counts its power_unknown miners at a default instead.
    power_allowance_w: float | None = None
    allowance_last_known: int | None = None  # miners in the allowance, by basis
    allowance_nameplate: int | None = None
    allowance_default: int | None = None
    # Of power_allowance_w, the margin on draws that are known (estimated, or by firmware): no miner's unknown draw.
    allowance_margin_w: float | None = None

    @property
    def power_w(self) -> float | None:
        """Measured miner power from both sources; None when neither is known (never 0 for unknown)."""
        return add(self.power_firmware_w, self.power_estimate_w)

    @property
    def upper_bound_w(self) -> float | None:
        """Measured plus allowance: the most this agent's miners may be drawing."""
        return add(self.power_w, self.power_allowance_w)


@dataclass(frozen=True, slots=True)
class AgentObservation:
    """The collector's memory of one agent: its last good summary and how the last fetch went."""

    url: str
    summary: AgentSummary | None = None  # last good summary, kept while the agent is down
    fetched_at: float | None = None  # collector clock when `summary` was fetched
    up: bool = False  # the last fetch succeeded
    last_error: str | None = None
    consecutive_failures: int = 0
    down_since: float | None = None


class SiteStatus(StrEnum):
    """How much of a site's figure is measured now, worst first (docs/accounting.md)."""

    NO_DATA = "no_data"  # no agent has ever answered: the figure is the unknown-agent allowance alone
    STALE = "stale"  # no agent fresh: every figure is carried from the last known values, as allowance
    DARK = "dark"  # agents answer, but no miner's draw is measured: the figure is all allowance
    PARTIAL = "partial"  # part of the figure is allowance, or some agent is down, stale or never heard from
    OK = "ok"  # every agent answered with fresh data and every miner's draw is measured


@dataclass(frozen=True, slots=True)
class AgentView:
    url: str
    up: bool
    stale: bool
    has_data: bool
    age_s: float | None
    last_error: str | None
    down_since: float | None


@dataclass(frozen=True, slots=True)
class Draw:
    """Power and hashrate against an allocation; shared by a site and the fleet.

    Power comes in three figures (docs/accounting.md): measured (fresh readings of fresh agents), allowance
    (miners and agents whose draw is not known now, never 0 W) and upper bound = measured + allowance, each
    for the miners and at the facility. Facility measured = miner measured x PUE + aux (aux is declared, so
    known); facility allowance = miner allowance x PUE. `facility_power_w` is the figure judged against the
    allocation: the facility upper bound, or a fresh site meter's reading instead (collector/sitemeter.py).
    """

    allocation_w: float
    hashrate_hs: float | None
    power_firmware_w: float | None  # measured
    power_estimate_w: float | None  # measured
    miner_power_w: float | None  # measured: firmware + estimate
    facility_power_w: float | None  # the site's figure for its allocation: the upper bound, or a fresh meter
    utilisation_ratio: float | None  # facility power / allocation
    headroom_w: float | None  # allocation - facility power; negative when over
    estimated_power_ratio: float | None  # share of measured miner power that is our estimate
    miners_up: int | None
    miners_down: int | None
    miners_stale: int | None
    miners_total: int | None
    miners_power_unknown: int | None
    miner_allowance_w: float | None = None
    miner_upper_bound_w: float | None = None
    facility_measured_w: float | None = None
    facility_allowance_w: float | None = None
    facility_upper_bound_w: float | None = None
    allowance_ratio: float | None = None  # facility allowance / facility upper bound (margin included)
    allowance_last_known: int | None = None  # miners in the allowance, by basis
    allowance_nameplate: int | None = None
    allowance_default: int | None = None
    agents_allowed_for: int | None = None  # agents whose whole figure is allowance (stale or never answered)
    # Of the facility allowance, the agents' margin on draws they know (estimated): no miner out of sight.
    facility_margin_w: float | None = None

    # Properties, not fields: a figure re-based later (a site meter, collector/sitemeter.py) keeps them true.
    @property
    def facility_unknown_w(self) -> float | None:
        """The allowance for draw not known now (miners or agents out of sight): the margin is uncertainty on
        known draw, not unknown draw. Never below 0 W: a trusted meter leaves no allowance, yet keeps the margin."""
        if self.facility_allowance_w is None:
            return None
        return max(0.0, self.facility_allowance_w - (self.facility_margin_w or 0.0))

    @property
    def unknown_ratio(self) -> float | None:
        """The share of the facility upper bound that is not known now: what SiteUnknownShareHigh judges."""
        upper = self.facility_upper_bound_w
        if upper is None or upper <= 0:
            return None
        return (self.facility_unknown_w or 0.0) / upper


@dataclass(frozen=True, slots=True)
class SiteTotals:
    """A site at one instant. Its draw includes carried values from stale agents (see `status`)."""

    site_id: str
    name: str
    status: SiteStatus
    draw: Draw
    data_age_s: float | None  # age of the oldest data counted in the totals
    stale: bool
    agents: tuple[AgentView, ...]
    # agent_ids that more than one of the site's agent URLs report: one agent listed twice (counted twice),
    # or two shards sharing an id (not told apart). Flagged, never silently dropped: either guess is wrong.
    duplicate_agent_ids: tuple[str, ...] = ()
    # The site's feeder meter beside its miners' figure; when its state is ok, draw.facility_power_w is the
    # meter's reading (collector/sitemeter.py). None: the site has no meter.
    meter: SiteMeter | None = None


@dataclass(frozen=True, slots=True)
class FleetTotals:
    name: str
    at: float
    draw: Draw
    sites_stale: int  # sites with no fresh agent at all
    stale: bool  # some figure in the fleet's draw is stale
    sites: tuple[SiteTotals, ...]


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"


class AlertPhase(StrEnum):
    PENDING = "pending"  # condition holds, hold time not yet over
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert instance; identity is (name, labels)."""

    name: str
    labels: tuple[tuple[str, str], ...]  # besides alertname and severity: site, agent, fleet
    severity: Severity
    phase: AlertPhase
    since: float  # when the condition started (pending) - the "since when" an operator reads
    fired_at: float | None
    resolved_at: float | None
    summary: str
    description: str
    value: float | None

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.name, self.labels


def add(*values: N | None) -> N | None:
    """Sum the known values; None only when none is known (an unknown is never counted as 0)."""
    known = [v for v in values if v is not None]
    return sum(known[1:], known[0]) if known else None
