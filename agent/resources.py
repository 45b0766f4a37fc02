"""The agent's own shortages (no file descriptor for a poll's socket): counted, logged once, never the miner's.

A poll that cannot open its socket never reached the miner. It is counted here (megawatch_agent_fd_exhausted_
total), logged once per episode (agent_fd_exhausted ... agent_fd_exhausted_ended) and makes /healthz fail
while it lasts; the miner is neither marked down nor backed off, and its last reading ages as any unpolled
reading does (stale within the grace period).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from structlog.typing import FilteringBoundLogger


class Shortage:
    """Polls the agent could not make for want of descriptors, by cycle and in total."""

    def __init__(self, log: FilteringBoundLogger) -> None:
        self._log = log
        self.total = 0  # polls not made, since start
        self.in_cycle = 0  # in the cycle under way
        self.last_cycle = 0  # in the last finished cycle
        self.active = False  # an episode is under way: since a cycle that missed polls, until one that did not

    def missed(self, miner: str, error: str) -> None:
        self.total += 1
        self.in_cycle += 1
        if not self.active:
            self.active = True
            self._log.error("agent_fd_exhausted", miner=miner, error=error,
                            hint="the agent's own open-file limit, not the miner: see megawatch_agent_fd_"
                                 "exhausted_total and process_open_fds / process_max_fds")

    def cycle_done(self, cycle: int) -> None:
        if self.active and self.in_cycle == 0:
            self.active = False
            self._log.info("agent_fd_exhausted_ended", cycle=cycle, polls_missed_total=self.total)
        self.last_cycle, self.in_cycle = self.in_cycle, 0

    def problem(self) -> str | None:
        """For /healthz: why the agent is failing, while an episode lasts."""
        if not self.active:
            return None
        return (f"out of file descriptors: {self.last_cycle or self.in_cycle} polls could not open a socket "
                "(the agent's own limit, not the miners)")


class ShortageCollector(Collector):
    def __init__(self, site: str, shortage: Shortage) -> None:
        self._site, self._shortage = site, shortage

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> list[Metric]:
        total = CounterMetricFamily(
            "megawatch_agent_fd_exhausted", "Polls the agent could not make because it had no file descriptor "
            "left for the socket (its own limit, not the miner's), a count of polls.", labels=["site"])
        total.add_metric([self._site], self._shortage.total)
        active = GaugeMetricFamily(
            "megawatch_agent_fd_exhausted_active", "1 while the agent's latest cycle could not make every poll "
            "for want of file descriptors, else 0 (a flag).", labels=["site"])
        active.add_metric([self._site], 1.0 if self._shortage.active else 0.0)
        return [total, active]
