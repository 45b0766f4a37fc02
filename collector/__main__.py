"""Total every site's draw against its power allocation and raise alerts.

Polls each site's agents (/api/v1/summary), adds their shards up per site, applies the facility overhead
(PUE and auxiliary load), compares the result with the allocation in force, and sends alerts to
Alertmanager (and an optional webhook). Serves /metrics, /api/v1/sites, /api/v1/alerts and /healthz.

  megawatch collector --config configs/sites.yaml
  megawatch collector --check-config configs/sites.yaml

SIGHUP re-reads the config before the next cycle (sites, allocations, schedules, overhead, agents,
thresholds, poll interval); a bad file keeps the running config and logs config_reload_failed
(megawatch_collector_config_last_reload_successful 0). alerting, state_file, agent_client, listen,
web_config_file and log settings need a restart (logged as needs_restart).
SIGTERM/SIGINT stop it after a bounded attempt to deliver pending alerts.
Exit codes: 0 stopped by a signal, 1 the port could not be bound or a loop failed, 2 a bad config or flag.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from megawatch.common import daemon
from megawatch.common.daemon import Daemon, ReloadStatus, Settings
from megawatch.common.logs import get_logger

if TYPE_CHECKING:
    from megawatch.collector.config import CollectorConfig
    from megawatch.collector.service import CollectorService


class CollectorProgram:
    """The collector as the shared daemon shape sees it."""

    name = "collector"
    config_help = "sites, allocations, thresholds and alerting (e.g. configs/sites.yaml)"
    listen_keys = ("listen.address", "listen.port")

    def load(self, path: str) -> CollectorConfig:
        from megawatch.collector.config import load_collector_config

        return load_collector_config(path)

    def summary(self, config: CollectorConfig) -> str:
        agents = sum(len(s.agents) for s in config.sites)
        return f"fleet {config.fleet_name}, {len(config.sites)} sites, {agents} agents"

    def facts(self, config: CollectorConfig) -> dict[str, object]:
        from megawatch.collector.config import public_url

        return {"fleet": config.fleet_name, "sites": len(config.sites),
                "agents": sum(len(s.agents) for s in config.sites), "interval_s": config.poll_interval_s,
                "alertmanagers": [public_url(u) for u in config.alerting.alertmanager_urls]}

    def settings(self, config: CollectorConfig) -> Settings:
        return Settings(config.path, config.listen_address, config.listen_port, config.web, config.log_format,
                        config.log_level)

    def with_settings(self, config: CollectorConfig, s: Settings) -> CollectorConfig:
        return replace(config, listen_address=s.host, listen_port=s.port, web=s.web, log_format=s.log_format,
                       log_level=s.log_level)

    def restart_only(self, current: CollectorConfig, new: CollectorConfig) -> tuple[CollectorConfig, list[str]]:
        from megawatch.collector.service import restart_only

        return restart_only(current, new)

    def prepare(self) -> None:
        """Nothing process-wide to tune: the collector's cycle is small."""

    @asynccontextmanager
    async def open(self, config: CollectorConfig,
                   reload_status: ReloadStatus) -> AsyncIterator[Daemon[CollectorConfig]]:
        import aiohttp

        from megawatch.collector.service import CollectorService

        async with aiohttp.ClientSession(raise_for_status=False) as session:
            # The alerts' link back here is set once the port is bound (port 0 is known only then).
            service = CollectorService(config, session, "", reload_status=reload_status)
            running = _CollectorDaemon(service)
            try:
                yield running
            finally:
                await running.close()


class _CollectorDaemon(Daemon["CollectorConfig"]):
    def __init__(self, service: CollectorService) -> None:
        from megawatch.collector.web import make_app

        super().__init__(make_app(service))
        self.service = service
        self._notifier: asyncio.Task[None] | None = None
        self._log = get_logger()

    def apply(self, config: CollectorConfig) -> None:
        self.service.reconfigure(config)

    def started(self, url: str) -> None:
        from megawatch.collector.service import generator_url

        self.service.notifier.generator_url = generator_url(self.service.config, url)

    async def run(self) -> None:
        # The notifier outlives the poll loop: on a stop it still delivers what is pending (drain).
        self._notifier = asyncio.create_task(self.service.notifier.run(), name="notifier")
        poller = asyncio.create_task(self.service.run(), name="poller")
        try:
            done, _ = await asyncio.wait({poller, self._notifier}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a loop that failed: its exception stops the collector
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            self.service.meters.close()

    def stopping(self) -> dict[str, object]:
        return {"pending_alerts": sum(n for _, n in self.service.notifier.pending())}

    async def drain(self) -> None:
        notifier = self.service.notifier
        limit_s = self.service.config.alerting.shutdown_timeout_s
        if self._notifier is not None and not self._notifier.done() and not await notifier.drain(timeout_s=limit_s):
            self._log.error("alerts_undelivered", timeout_s=limit_s,
                            pending_batches={t.name: n for t, n in notifier.pending() if n})

    async def close(self) -> None:
        if self._notifier is not None:
            self._notifier.cancel()
            await asyncio.gather(self._notifier, return_exceptions=True)


PROGRAM = CollectorProgram()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    daemon.add_arguments(parser, PROGRAM)


def run(args: argparse.Namespace) -> int:
    return daemon.run(PROGRAM, args)


if __name__ == "__main__":
    from megawatch.cli import main

    main(["collector", *sys.argv[1:]])
