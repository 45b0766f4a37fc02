"""The collector's cycle: read every agent, total the sites, evaluate the rules, hand alerts to the notifier."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import aiohttp

from megawatch.collector.aggregate import aggregate_fleet
from megawatch.collector.alertmanager import Notifier
from megawatch.collector.alertstate import load_alerts, save_alerts
from megawatch.collector.catalogue import ALERTS
from megawatch.collector.config import CollectorConfig, public_url
from megawatch.collector.curtailer import Curtailer
from megawatch.collector.energy import EnergyBook, energy_path
from megawatch.collector.history import History
from megawatch.collector.meterclient import MeterReader
from megawatch.collector.model import AgentObservation, Alert, AlertPhase, FleetTotals
from megawatch.collector.production import samples as energy_samples
from megawatch.collector.rules import Evaluation, RuleEngine
from megawatch.collector.sitemeter import MeterObservation, apply_meters, observe_meter, remember_unseen
from megawatch.collector.sources import AgentReader, observe
from megawatch.common.daemon import ReloadStatus
from megawatch.common.logs import get_logger


@dataclass
class CycleStats:
    cycles: int = 0
    last_started: float | None = None
    last_finished: float | None = None
    last_duration_s: float | None = None
    fetches: Counter[tuple[str, str]] = field(default_factory=Counter)  # (agent url, ok|error|not_ready)
    fetch_duration_s: dict[str, float] = field(default_factory=dict)


class CollectorService:
    """Owns the collector's state; `poll_once` is the only writer, web handlers and exposition read."""

    def __init__(self, config: CollectorConfig, session: aiohttp.ClientSession, generator_url: str,
                 clock: Callable[[], float] = time.time, reload_status: ReloadStatus | None = None) -> None:
        self.config = config
        self.reload_status = reload_status or ReloadStatus()  # written by the shared SIGHUP reload
        self.clock = clock
        client = config.agent_client
        self.reader = AgentReader(
            session, config.poll_timeout_s, clock,
            auth=aiohttp.BasicAuth(client.username, client.password or "") if client.username else None,
            ssl_context=ssl.create_default_context(cafile=str(client.ca_file)) if client.ca_file else None)
        self.curtailer = Curtailer(config, session, clock, auth=self.reader.auth, ssl_context=self.reader.ssl_context)
        self.engine = RuleEngine(config.thresholds)
        self.notifier = Notifier(config.alerting, session, generator_url, clock)
        self.observations: dict[str, AgentObservation] = {}
        self.fleet: FleetTotals | None = None
        self.evaluation = Evaluation(active=(), changes=())
        self.stats = CycleStats()
        self.history = History(config.poll_interval_s)  # the status page's chart: bounded, in memory
        self.site_of = {url: s.id for s in config.sites for url in s.agents}
        self.meters = MeterReader()  # site meters, read in the same cycle as the agents
        self.meters.configure({s.id: s.meter for s in config.sites if s.meter is not None})
        self.meter_obs: dict[str, MeterObservation] = {}
        # Energy accounts survive a restart only with a state file (kept beside it): see collector/energy.py.
        self.energy = EnergyBook(energy_path(config.state_file) if config.state_file is not None else None)
        self._log = get_logger()
        self._pending: CollectorConfig | None = None  # a reloaded config, taken before the next cycle
        self._saved: object = None  # what was last written to the state file
        self._duplicates: dict[str, tuple[str, ...]] = {}  # site -> agent ids last logged as duplicated
        if config.state_file is not None:
            restored = load_alerts(config.state_file)
            self.engine.restore(restored)
            self.evaluation = Evaluation(active=self.engine.active, changes=())
            self._saved = self._persisted_view(self.engine.active)
            if restored:
                self._log.info("alert_state_restored", path=str(config.state_file), alerts=[
                    f"{a.name}:{dict(a.labels).get('site', '')}:{a.phase.value}" for a in restored])

    def reconfigure(self, config: CollectorConfig) -> None:
        """Take a reloaded config before the next cycle (from SIGHUP), never mid-cycle."""
        self._pending = config

    async def poll_once(self) -> FleetTotals:
        if self._pending is not None:
            self.apply_config(self._pending)
            self._pending = None
        started = self.clock()
        results, meter_results = await asyncio.gather(self.reader.fetch_all(list(self.site_of)),
                                                      self.meters.read_all())
        now = self.clock()
        for site_id, meter_result in meter_results.items():
            metered = self.config.site(site_id)
            if metered is not None and metered.meter is not None:
                self.meter_obs[site_id] = observe_meter(self.meter_obs.get(site_id), meter_result, now,
                                                        metered.meter, metered.allocation_at(now))
        for result in results:
            site = self.site_of[result.url]
            if result.summary is not None and result.summary.site not in (None, site):
                # Counting a shard under the wrong site would put its MW against the wrong allocation.
                result = replace(result, summary=None, error=f"agent reports site {result.summary.site!r}, "
                                 f"but {self.config.path} lists it under site {site!r}")
            prev = self.observations.get(result.url)
            obs = observe(prev, result, now)
            self.observations[result.url] = obs
            outcome = "error" if result.error else "ok" if result.summary is not None else "not_ready"
            self.stats.fetches[(result.url, outcome)] += 1
            self.stats.fetch_duration_s[result.url] = result.duration_s
            if prev is not None and prev.up != obs.up:
                self._log.info("agent_up" if obs.up else "agent_unreachable", site=self.site_of[result.url],
                               agent=public_url(result.url), error=result.error)
        fleet = apply_meters(aggregate_fleet(self.config, self.observations, now), self.config, self.meter_obs, now)
        for totals in fleet.sites:
            if totals.meter is not None and totals.site_id in self.meter_obs:
                self.meter_obs[totals.site_id] = remember_unseen(self.meter_obs[totals.site_id], totals.meter)
        self._note_duplicates(fleet)
        self.energy.record(energy_samples(fleet, self.config, self.observations, now), now, self.energy_gap_s())
        evaluation = self.engine.evaluate(fleet, now)
        for alert in evaluation.changes:
            labels = dict(alert.labels)
            event = ALERTS[alert.name].log_event
            self._log.warning(event if alert.phase is AlertPhase.FIRING else f"{event}_resolved",
                              site=labels.get("site"), agent=labels.get("agent"), summary=alert.summary)
        self.notifier.submit(evaluation, now)
        self.fleet, self.evaluation = fleet, evaluation
        self.history.record(fleet)
        await self.curtailer.step(fleet)  # after the totals it steers by (docs/curtailment.md)
        self._save_state(evaluation, now)
        s = self.stats
        s.cycles += 1
        s.last_started, s.last_finished = started, self.clock()
        s.last_duration_s = max(0.0, s.last_finished - started)
        return fleet

    def _note_duplicates(self, fleet: FleetTotals) -> None:
        """Log once when a site's set of duplicated agent ids changes (the metric shows it all along)."""
        for site in fleet.sites:
            if site.duplicate_agent_ids != self._duplicates.get(site.site_id, ()):
                self._duplicates[site.site_id] = site.duplicate_agent_ids
                if site.duplicate_agent_ids:
                    self._log.warning("duplicate_agent_id", site=site.site_id, agent_ids=list(site.duplicate_agent_ids),
                                      agents=[a.url for a in site.agents])
                else:
                    self._log.info("duplicate_agent_id_resolved", site=site.site_id)

    @staticmethod
    def _persisted_view(active: tuple[Alert, ...]) -> object:
        # Messages and values change every cycle; the file is rewritten only when what a restart needs does.
        return tuple((a.key, a.phase, a.since, a.fired_at) for a in active)

    def _save_state(self, evaluation: Evaluation, now: float) -> None:
        path = self.config.state_file
        view = self._persisted_view(evaluation.active)
        if path is None or view == self._saved:
            return
        try:
            save_alerts(path, evaluation.active, now)
        except OSError as exc:
            # Alerting goes on; only a restart would forget. Retried next cycle (_saved is not updated).
            self._log.error("alert_state_write_failed", path=str(path), error=str(exc))
            return
        self._saved = view

    def apply_config(self, new: CollectorConfig) -> None:
        """Take a reloaded config between cycles (restart_only already kept what is made once at start).

        Sites, allocations, schedules, overhead, agents, thresholds and the poll interval change at once;
        alert state and the agents' last known values carry over for what remains.
        """
        self.config = new
        self.site_of = {url: s.id for s in new.sites for url in s.agents}
        self.observations = {u: o for u, o in self.observations.items() if u in self.site_of}
        self.stats.fetches = Counter({k: n for k, n in self.stats.fetches.items() if k[0] in self.site_of})
        self.stats.fetch_duration_s = {u: d for u, d in self.stats.fetch_duration_s.items() if u in self.site_of}
        self.reader.timeout_s = new.poll_timeout_s
        metered = {s.id: s.meter for s in new.sites if s.meter is not None}
        before = {site: client.config for site, client in self.meters.clients.items()}
        self.meters.configure(metered)  # a meter moved or remapped starts afresh: its readings are another's
        self.meter_obs = {site: o for site, o in self.meter_obs.items() if before.get(site) == metered.get(site)}
        self.engine.thresholds = new.thresholds
        self.curtailer.config = replace(new, curtailment_audit_file=self.curtailer.config.curtailment_audit_file)

    async def run(self) -> None:
        """Poll every interval until cancelled; a slow cycle delays the next, never overlaps it."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.poll_once()
            next_at += self.config.poll_interval_s  # read each cycle: a reload may change it
            behind = loop.time() - next_at
            if behind > 0:
                self._log.warning("collector_cycle_overran", behind_s=round(behind, 3))
                next_at = loop.time()
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def health_problem(self) -> str | None:
        """Why /healthz fails: no cycle finished yet, or none for 3 intervals; None when healthy."""
        last, limit = self.stats.last_finished, self.stall_limit_s()
        if last is None:
            return "no collector cycle finished yet"
        age = self.clock() - last
        return f"no collector cycle finished for {age:.0f} s (limit {limit:.0f} s)" if age > limit else None

    def stall_limit_s(self) -> float:
        return 3 * self.config.poll_interval_s

    def energy_gap_s(self) -> float:
        """An interval between cycles longer than this is counted as unknown energy, not at the last figures:
        the stall limit, or the staleness line when that is longer (data that old is not trusted anyway)."""
        return max(self.stall_limit_s(), self.config.thresholds.stale_after_s)


def restart_only(current: CollectorConfig, new: CollectorConfig) -> tuple[CollectorConfig, list[str]]:
    """`new` with what is made once at start kept from `current`, and the names of those that differ.

    Alerting targets, the state file and the agent client (TLS, credentials) stay as started; listen, TLS
    and auth of the server and logging are the shared daemon settings (common/daemon.py).
    """
    kept = [name for name, old_value, new_value in (
        ("alerting", current.alerting, new.alerting),
        ("state_file", current.state_file, new.state_file),
        ("agent_client", current.agent_client, new.agent_client)) if old_value != new_value]
    return replace(new, alerting=current.alerting, state_file=current.state_file,
                   agent_client=current.agent_client), kept


def generator_url(config: CollectorConfig, base_url: str) -> str:
    """The link every alert carries back to this collector (alerting.external_url when set)."""
    return f"{(config.alerting.external_url or base_url).rstrip('/')}/api/v1/alerts"
