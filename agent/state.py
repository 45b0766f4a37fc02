"""FleetState: the latest outcome of every miner, published as one immutable snapshot per cycle.

One writer (the poller) builds a whole `FleetSnapshot` at the end of a cycle and swaps it in with one
assignment, so readers (exposition, the JSON API) always see one cycle's readings together, never a mix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from megawatch.agent.config import MinerTarget
from megawatch.agent.model import MinerReading, PowerSource
from megawatch.agent.protocol.errors import ErrorKind

OK = "ok"
OUTCOMES: tuple[str, ...] = (OK, *(kind.value for kind in ErrorKind))


class MinerStatus(StrEnum):
    UP = "up"  # the last poll succeeded
    STALE = "stale"  # the last poll failed; the last reading is younger than the grace period and still counted
    DOWN = "down"  # failed, and no reading or one older than the grace period: power and hashrate unknown


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


@dataclass(frozen=True, slots=True)
class SiteTotals:
    """Sums over the miners whose reading still counts (up and stale). W and H/s."""

    configured: int
    up: int
    stale: int
    down: int
    hashrate_hs: float
    power_firmware_w: float
    power_estimate_w: float
    power_unknown_miners: int  # counting down miners: their draw is not known, not 0

    @property
    def power_w(self) -> float:
        return self.power_firmware_w + self.power_estimate_w


def summarise(miners: Iterable[MinerState], configured: int) -> SiteTotals:
    up = stale = down = unknown = 0
    hashrate = firmware = estimate = 0.0
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
        if current is None or current.power_w is None:
            unknown += 1
        elif current.power_source is PowerSource.FIRMWARE:
            firmware += current.power_w
        else:
            estimate += current.power_w
    # Miners not in the snapshot yet (before their first poll) are unknown too, never 0 W.
    unknown += max(0, configured - (up + stale + down))
    return SiteTotals(configured, up, stale, down, hashrate, firmware, estimate, unknown)


@dataclass(frozen=True, slots=True)
class AgentCounters:
    """Cumulative counters of the poller, copied into each snapshot."""

    cycles: int = 0
    overruns: int = 0
    polls: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({o: 0 for o in OUTCOMES}))
    implausible: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # values dropped, by field


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
    def empty(cls, site: str, configured: int) -> FleetSnapshot:
        return cls(site, 0, None, None, None, (), summarise((), configured), AgentCounters())


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
