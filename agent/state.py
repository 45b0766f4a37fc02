"""FleetState: the latest outcome of every miner, published as one immutable snapshot per cycle.

One writer (the poller) builds a whole `FleetSnapshot` at the end of a cycle and swaps it in with one
assignment, so readers (exposition, the JSON API) always see one cycle's readings together, never a mix.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from megawatch.agent.config import AccountingSettings, MinerTarget
from megawatch.agent.model import MinerReading, PowerSource
from megawatch.agent.modeltable import ModelTable
from megawatch.agent.protocol.errors import ErrorKind

OK = "ok"
OUTCOMES: tuple[str, ...] = (OK, *(kind.value for kind in ErrorKind))


class MinerStatus(StrEnum):
    UP = "up"  # the last poll succeeded
    # The last poll failed; the last reading is younger than the grace period: its hashrate still counts, its
    # power is allowance (last_known), not measured.
    STALE = "stale"
    DOWN = "down"  # failed, and no reading or one older than the grace period: hashrate unknown, power allowance


class AllowanceBasis(StrEnum):
    """Why a miner whose draw is not known now is counted at the figure it is (docs/accounting.md)."""

    LAST_KNOWN = "last_known"  # its last fresh draw, within accounting.last_known_horizon_s
    NAMEPLATE = "nameplate"  # the larger of its model's nominal power and its last known draw
    DEFAULT = "default"  # no model to go by: the larger of accounting.unknown_miner_w and its last known draw
    # Not miners of unknown draw: the margin on draws taken from the model table (measured as estimated, or a
    # last known or nameplate figure) and on firmware-reported ones, accounting.*_margin_ratio of the figure.
    ESTIMATE_MARGIN = "estimate_margin"
    FIRMWARE_MARGIN = "firmware_margin"


ALLOWANCE_BASES: tuple[AllowanceBasis, ...] = tuple(AllowanceBasis)
UNKNOWN_BASES = (AllowanceBasis.LAST_KNOWN, AllowanceBasis.NAMEPLATE, AllowanceBasis.DEFAULT)
DEFAULT_ACCOUNTING = AccountingSettings()


@dataclass(frozen=True, slots=True)
class MinerState:
    """What the agent knows about one miner after a cycle. Times are wall-clock unix seconds."""

    target: MinerTarget
    status: MinerStatus
    reading: MinerReading | None = None  # the last good reading, however old; see `current`
    last_success_s: float | None = None
    last_poll_s: float | None = None  # None until polled (and while backed off from the start)
    poll_duration_s: float | None = None
    consecutive_failures: int = 0
    last_error: ErrorKind | None = None
    dialect: str | None = None
    stale_age_s: float | None = None  # set only while STALE

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def current(self) -> MinerReading | None:
        """The reading that still counts: the last one while up or stale, none once down."""
        return None if self.status is MinerStatus.DOWN else self.reading

    @property
    def power_w(self) -> float | None:
        current = self.current
        return None if current is None else current.power_w


def classify(
    ok: bool, reading: MinerReading | None, last_success_s: float | None, now_s: float, grace_s: float
) -> tuple[MinerStatus, float | None]:
    """Status and stale age of a miner whose latest poll succeeded (`ok`) or failed at `now_s`."""
    if ok:
        return MinerStatus.UP, None
    if reading is None or last_success_s is None:
        return MinerStatus.DOWN, None
    age = max(0.0, now_s - last_success_s)
    if age <= grace_s:
        return MinerStatus.STALE, age
    return MinerStatus.DOWN, None


def allowance(m: MinerState, now_s: float, settings: AccountingSettings,
              models: ModelTable | None) -> tuple[float, AllowanceBasis] | None:
    """What a miner whose draw is not measured now is counted at, and why; None when it is measured.

    Measured means a fresh reading (the last poll succeeded) with a power figure. Anything else is never
    0 W and never less than the last draw we saw.
    """
    reading = m.reading
    if m.status is MinerStatus.UP and reading is not None and reading.power_w is not None:
        return None
    last = reading.power_w if reading is not None else None
    if last is not None and m.last_success_s is not None \
            and now_s - m.last_success_s <= settings.last_known_horizon_s:
        return last, AllowanceBasis.LAST_KNOWN
    # The hint in the config wins (it overrides the reported model in readings too); a miner never read has no other.
    spec = models.lookup(m.target.model or (reading.model if reading is not None else None)) if models else None
    if spec is not None:
        return max(spec.nominal_power_w, last or 0.0), AllowanceBasis.NAMEPLATE
    return max(settings.unknown_miner_w, last or 0.0), AllowanceBasis.DEFAULT


@dataclass(frozen=True, slots=True)
class SiteTotals:
    """A site's figures after one cycle. W and H/s.

    Power is in three figures: measured (fresh readings, by source), allowance (miners whose draw is not
    known now, see `allowance`) and their sum, the upper bound: what the site may be drawing at most as far
    as anyone can tell. Hashrate sums the miners whose reading still counts (up and stale).
    """

    configured: int
    up: int
    stale: int
    down: int
    hashrate_hs: float
    power_firmware_w: float  # measured, reported by the miners
    power_estimate_w: float  # measured: a fresh hashrate x the model's J/TH
    power_unknown_miners: int  # miners counted in the allowance, not measured
    power_allowance_w: float = 0.0
    # By AllowanceBasis value: miners (a miner with a margin on its last known draw is in two) and watts.
    allowance_miners: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(ALLOWANCE_BASES, 0)))
    allowance_w: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(ALLOWANCE_BASES, 0.0)))
    # Of `configured` (every miner counted): found in scan ranges, and listed ones that never answered (no
    # answer this run, none remembered in the inventory: a wrong address, or a unit that never came up).
    discovered: int = 0
    missing: int = 0

    @property
    def power_w(self) -> float:
        """Measured power: fresh readings only."""
        return self.power_firmware_w + self.power_estimate_w

    @property
    def power_upper_bound_w(self) -> float:
        return self.power_w + self.power_allowance_w


def _margin(m: MinerState, figure: float, basis: AllowanceBasis | None,
            settings: AccountingSettings) -> tuple[float, AllowanceBasis] | None:
    """The margin on a miner's figure (measured when `basis` is None), and which; None for a default.

    The model table holds a model's nominal figures, never a real unit's: its spread, a hot intake, wear and
    PSU loss all draw more. A firmware figure is a reading, with no margin unless configured.
    """
    if basis is AllowanceBasis.DEFAULT:
        return None  # the configured default is chosen to be generous already
    source = m.reading.power_source if m.reading is not None else None
    if basis is AllowanceBasis.NAMEPLATE or source is not PowerSource.FIRMWARE:
        ratio, kind = settings.estimate_margin_ratio, AllowanceBasis.ESTIMATE_MARGIN
    else:
        ratio, kind = settings.firmware_margin_ratio, AllowanceBasis.FIRMWARE_MARGIN
    return (figure * ratio, kind) if ratio > 0 and figure > 0 else None


def summarise(miners: Iterable[MinerState], configured: int, now_s: float = math.inf,
              settings: AccountingSettings = DEFAULT_ACCOUNTING, models: ModelTable | None = None) -> SiteTotals:
    """The site's totals at `now_s` (wall clock); without a time every last known draw is past its horizon."""
    up = stale = down = 0
    hashrate = firmware = estimate = 0.0
    bases = dict.fromkeys(ALLOWANCE_BASES, 0)
    watts = dict.fromkeys(ALLOWANCE_BASES, 0.0)

    def allow(w: float, basis: AllowanceBasis) -> None:
        watts[basis] += w
        bases[basis] += 1

    for m in miners:
        if m.status is MinerStatus.UP:
            up += 1
        elif m.status is MinerStatus.STALE:
            stale += 1
        else:
            down += 1
        current = m.current
        if current is not None and current.hashrate_hs is not None:
            hashrate += current.hashrate_hs
        allowed_for = allowance(m, now_s, settings, models)
        if allowed_for is not None:
            allow(*allowed_for)
            figure, basis = allowed_for
        elif current is not None and current.power_source is PowerSource.FIRMWARE:
            figure, basis = current.power_w or 0.0, None  # measured: allowance() returned None only with a figure
            firmware += figure
        elif current is not None:
            figure, basis = current.power_w or 0.0, None
            estimate += figure
        else:
            continue
        margin = _margin(m, figure, basis, settings)
        if margin is not None:
            allow(*margin)
    # Miners not in the snapshot yet (before their first poll) are never 0 W either: the default each.
    unseen = max(0, configured - (up + stale + down))
    watts[AllowanceBasis.DEFAULT] += unseen * settings.unknown_miner_w
    bases[AllowanceBasis.DEFAULT] += unseen
    return SiteTotals(configured, up, stale, down, hashrate, firmware, estimate,
                      sum(bases[b] for b in UNKNOWN_BASES), sum(watts.values()),
                      MappingProxyType({b.value: n for b, n in bases.items()}),
                      MappingProxyType({b.value: w for b, w in watts.items()}))


@dataclass(frozen=True, slots=True)
class AgentCounters:
    """Cumulative counters of the poller, copied into each snapshot."""

    cycles: int = 0
    overruns: int = 0
    polls: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({o: 0 for o in OUTCOMES}))
    implausible: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # values dropped, by field
    sweeps: int = 0  # discovery rescans finished
    inventory_events: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # by event name


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """One cycle's view of the site. `cycle` 0 is the empty view before the first cycle ends."""

    site: str
    cycle: int
    started_s: float | None  # wall clock
    finished_s: float | None
    duration_s: float | None
    miners: tuple[MinerState, ...]
    totals: SiteTotals
    counters: AgentCounters

    @classmethod
    def empty(cls, site: str, configured: int,
              settings: AccountingSettings = DEFAULT_ACCOUNTING) -> FleetSnapshot:
        return cls(site, 0, None, None, None, (), summarise((), configured, settings=settings), AgentCounters())


class FleetState:
    """Holds the current snapshot; the poller publishes, everyone else reads `snapshot`."""

    def __init__(self, site: str, configured: int) -> None:
        self._snapshot = FleetSnapshot.empty(site, configured)
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def snapshot(self) -> FleetSnapshot:
        return self._snapshot

    def publish(self, snapshot: FleetSnapshot) -> None:
        """Swap in a new snapshot (one assignment: readers never see half a cycle)."""
        if snapshot.cycle < self._snapshot.cycle:
            raise ValueError(f"cycle {snapshot.cycle} published after cycle {self._snapshot.cycle}")
        self._snapshot = snapshot
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for_cycle(self, cycle: int) -> FleetSnapshot:
        """Wait until cycle `cycle` (or a later one) is published; bound it with asyncio.timeout."""
        loop = asyncio.get_running_loop()
        while self._snapshot.cycle < cycle:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
        return self._snapshot
