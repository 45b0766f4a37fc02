"""The collector's cycle: read every agent, total the sites, evaluate the rules, hand alerts to the notifier."""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import aiohttp
from aiohttp import web

from megawatch.collector.aggregate import aggregate_fleet
from megawatch.collector.alertmanager import Notifier
from megawatch.collector.alertstate import load_alerts, save_alerts
from megawatch.collector.catalogue import ALERTS
from megawatch.collector.config import CollectorConfig, public_url
from megawatch.collector.model import AgentObservation, Alert, AlertPhase, FleetTotals
from megawatch.collector.rules import Evaluation, RuleEngine
from megawatch.collector.sources import AgentReader, observe
from megawatch.common.logs import get_logger

@dataclass
class CycleStats:
    cycles: int = 0
    last_started: float | None = None
    last_finished: float | None = None
    last_duration_s: float | None = None
    fetches: Counter[tuple[str, str]] = field(default_factory=Counter)  # (agent url, ok|error|not_ready)
    fetch_duration_s: dict[str, float] = field(default_factory=dict)
    reload_ok: bool | None = None  # None until the first SIGHUP
    reload_at: float | None = None


class CollectorService:
    """Owns the collector's state; `poll_once` is the only writer, web handlers and exposition read."""

    def __init__(self, config: CollectorConfig, session: aiohttp.ClientSession, generator_url: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        client = config.agent_client
        self.reader = AgentReader(
            session, config.poll_timeout_s, clock,
            auth=aiohttp.BasicAuth(client.username, client.password or "") if client.username else None,
            ssl_context=ssl.create_default_context(cafile=str(client.ca_file)) if client.ca_file else None)
        self.engine = RuleEngine(config.thresholds)
        self.notifier = Notifier(config.alerting, session, generator_url, clock)
        self.observations: dict[str, AgentObservation] = {}
        self.fleet: FleetTotals | None = None
        self.evaluation = Evaluation(active=(), changes=())
        self.stats = CycleStats()
        self.site_of = {url: s.id for s in config.sites for url in s.agents}
        self._log = get_logger()
        self._reload_requested = False
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

    def request_reload(self) -> None:
        """Ask for the config to be re-read before the next cycle (from SIGHUP): never mid-cycle."""
        self._reload_requested = True

    async def poll_once(self) -> FleetTotals:
        if self._reload_requested:
            self._reload_requested = False
            self.reload()
        started = self.clock()
        results = await self.reader.fetch_all(list(self.site_of))
        now = self.clock()
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
        fleet = aggregate_fleet(self.config, self.observations, now)
        self._note_duplicates(fleet)
        evaluation = self.engine.evaluate(fleet, now)
        for alert in evaluation.changes:
            labels = dict(alert.labels)
            event = ALERTS[alert.name].log_event
            self._log.warning(event if alert.phase is AlertPhase.FIRING else f"{event}_resolved",
                              site=labels.get("site"), agent=labels.get("agent"), summary=alert.summary)
        self.notifier.submit(evaluation, now)
        self.fleet, self.evaluation = fleet, evaluation
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

    def apply_config(self, new: CollectorConfig) -> list[str]:
        """Take a reloaded config between cycles; return what could not change without a restart.

        Sites, allocations, schedules, overhead, agents, thresholds and the poll interval change at once;
        alert state and the agents' last known values carry over for what remains. Alerting targets, the
        listen address, TLS and auth and the state file keep their old values (made once at start).
        """
        kept = [name for name, old_value, new_value in (
            ("alerting", self.config.alerting, new.alerting),
            ("listen.address", self.config.listen_address, new.listen_address),
            ("listen.port", self.config.listen_port, new.listen_port),
            ("web_config_file", self.config.web, new.web),
            ("state_file", self.config.state_file, new.state_file),
            ("agent_client", self.config.agent_client, new.agent_client)) if old_value != new_value]
        self.config = replace(new, alerting=self.config.alerting, listen_address=self.config.listen_address,
                              listen_port=self.config.listen_port, web=self.config.web,
                              state_file=self.config.state_file, agent_client=self.config.agent_client)
        self.site_of = {url: s.id for s in new.sites for url in s.agents}
        self.observations = {u: o for u, o in self.observations.items() if u in self.site_of}
        self.stats.fetches = Counter({k: n for k, n in self.stats.fetches.items() if k[0] in self.site_of})
        self.stats.fetch_duration_s = {u: d for u, d in self.stats.fetch_duration_s.items() if u in self.site_of}
        self.reader.timeout_s = new.poll_timeout_s
        self.engine.thresholds = new.thresholds
        return kept

    def reload(self) -> bool:
        """Re-read the config file; on any problem keep the running config (atomic) and say why."""
        from megawatch.collector.config import load_collector_config
        from megawatch.common.configfile import ConfigError

        self.stats.reload_at = self.clock()
        try:
            new = load_collector_config(self.config.path)
        except ConfigError as exc:
            self.stats.reload_ok = False
            self._log.error("config_reload_failed", path=self.config.path, problems=[str(p) for p in exc.problems])
            return False
        kept = self.apply_config(new)
        self.stats.reload_ok = True
        self._log.info("config_reloaded", path=self.config.path, sites=len(new.sites), agents=len(self.site_of),
                       needs_restart=kept or None)
        return True

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

    def healthy(self) -> bool:
        last = self.stats.last_finished
        return last is not None and self.clock() - last <= 3 * self.config.poll_interval_s


def generator_url(config: CollectorConfig, address: str, port: int) -> str:
    scheme = config.web.scheme if config.web is not None else "http"
    base = config.alerting.external_url or f"{scheme}://{address}:{port}"
    return f"{base.rstrip('/')}/api/v1/alerts"


async def serve(config: CollectorConfig, address: str, port: int) -> None:
    """Run the collector until SIGINT/SIGTERM: HTTP, the poll loop and alert delivery."""
    from megawatch.collector.web import make_app
    from megawatch.common.webconfig import protect

    log = get_logger()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service: CollectorService | None = None
    loop.add_signal_handler(signal.SIGHUP, lambda: service.request_reload() if service is not None else None)
    async with aiohttp.ClientSession(raise_for_status=False) as session:
        service = CollectorService(config, session, generator_url(config, address, port))
        app = make_app(service)
        protect(app, config.web)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            tcp = web.TCPSite(runner, address, port, ssl_context=config.web.ssl_context if config.web else None)
            await tcp.start()
            bound = _bound_port(tcp) or port
            service.notifier.generator_url = generator_url(config, address, bound)  # port 0 is known now
            scheme = config.web.scheme if config.web is not None else "http"
            log.info("collector_listening", url=f"{scheme}://{address}:{bound}", sites=len(config.sites),
                     basic_auth=bool(config.web and config.web.users),
                     agents=len(service.site_of), alertmanagers=list(config.alerting.alertmanager_urls))
            poller = asyncio.create_task(service.run())
            notifier = asyncio.create_task(service.notifier.run())
            stopper = asyncio.create_task(stop.wait())
            try:
                # A crashed loop must stop the process (and be seen), not leave a server that looks alive.
                await asyncio.wait({poller, notifier, stopper}, return_when=asyncio.FIRST_COMPLETED)
                await _cancel(poller, stopper)
                log.info("collector_stopping", pending_alerts=sum(n for _, n in service.notifier.pending()))
                limit_s = service.config.alerting.shutdown_timeout_s  # the reloaded config's, if any
                if not notifier.done() and not await service.notifier.drain(timeout_s=limit_s):
                    log.error("alerts_undelivered", timeout_s=limit_s,
                              pending_batches={t.name: n for t, n in service.notifier.pending() if n})
            finally:
                await _cancel(poller, notifier, stopper)
            for task in (poller, notifier):
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            await runner.cleanup()


def _bound_port(site: web.TCPSite) -> int | None:
    server = site._server  # aiohttp keeps the asyncio server here; the only way to learn an ephemeral port
    sockets = getattr(server, "sockets", None) or ()
    return int(sockets[0].getsockname()[1]) if sockets else None


async def _cancel(*tasks: asyncio.Task[object]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
