"""Poll every miner of a site on time and export Prometheus metrics.

  megawatch agent --config configs/agent.yaml          run: poll, serve /metrics, /healthz, /api/v1/*
  megawatch agent --check-config configs/agent.yaml    validate only: "ok: ..." and exit 0, or errors and exit 2

SIGTERM and SIGINT stop the agent cleanly (the current cycle is cancelled, the HTTP server closed).
SIGHUP re-reads the config and applies it at the start of the next cycle (miners, poll settings, control):
miners still listed keep their readings. A bad file is refused (config_reload_failed, one line per
problem; megawatch_agent_config_last_reload_successful 0) and the running config stays. site, agent_id,
http, exposition, web_config_file and log settings need a restart (logged as needs_restart).
Exit codes: 0 stopped by a signal, 1 the port could not be bound, 2 a bad config or flag.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from megawatch.common import daemon
from megawatch.common.daemon import Daemon, ReloadStatus, Settings

if TYPE_CHECKING:
    from aiohttp import web

    from megawatch.agent.config import AgentConfig
    from megawatch.agent.poller import Poller


class AgentProgram:
    """The agent as the shared daemon shape sees it."""

    name = "agent"
    config_help = "agent config (e.g. configs/agent.yaml)"
    listen_keys = ("http.listen", "http.port")

    def load(self, path: str) -> AgentConfig:
        from megawatch.agent.config import load_agent_config

        return load_agent_config(path)

    def summary(self, config: AgentConfig) -> str:
        return f"site {config.site}, {len(config.miners)} miners"

    def facts(self, config: AgentConfig) -> dict[str, object]:
        return {"site": config.site, "agent": config.agent_id, "miners": len(config.miners),
                "interval_s": config.poll.interval_s, "concurrency": config.poll.concurrency}

    def settings(self, config: AgentConfig) -> Settings:
        return Settings(config.path, config.http.listen, config.http.port, config.web, config.log_format,
                        config.log_level)

    def with_settings(self, config: AgentConfig, s: Settings) -> AgentConfig:
        return replace(config, http=replace(config.http, listen=s.host, port=s.port), web=s.web,
                       log_format=s.log_format, log_level=s.log_level)

    def restart_only(self, current: AgentConfig, new: AgentConfig) -> tuple[AgentConfig, list[str]]:
        fixed = {"site": (current.site, new.site), "agent_id": (current.agent_id, new.agent_id),
                 "exposition": (current.exposition, new.exposition)}
        return (replace(new, site=current.site, agent_id=current.agent_id, exposition=current.exposition),
                [name for name, (old, wanted) in fixed.items() if old != wanted])

    def prepare(self) -> None:
        from megawatch.agent.runtime import tune_gc

        tune_gc()

    @asynccontextmanager
    async def open(self, config: AgentConfig, reload_status: ReloadStatus) -> AsyncIterator[Daemon[AgentConfig]]:
        from prometheus_client import CollectorRegistry
        from prometheus_client.process_collector import ProcessCollector

        from megawatch.agent.exposition import FleetCollector
        from megawatch.agent.poller import Poller
        from megawatch.agent.resources import ShortageCollector
        from megawatch.agent.state import FleetState
        from megawatch.agent.web import make_app
        from megawatch.common.httplimits import check_fd_limit

        # One socket per poll in flight (a reload that raises poll.concurrency is not checked again).
        check_fd_limit(self.name, polls=min(config.poll.concurrency, len(config.miners)))
        state = FleetState(config.site, len(config.miners))
        registry = CollectorRegistry()
        registry.register(FleetCollector(state))
        registry.register(daemon.ReloadCollector(self.name, reload_status))
        ProcessCollector(registry=registry)  # RSS and CPU of the agent, for the 200 MB budget
        poller = Poller(config, state)
        registry.register(ShortageCollector(config.site, poller.shortage))
        # The poller runs in the app's cleanup_ctx: it starts with the server and stops with it.
        yield _AgentDaemon(make_app(config, state, registry, poller=poller), poller)


class _AgentDaemon(Daemon["AgentConfig"]):
    def __init__(self, app: web.Application, poller: Poller) -> None:
        super().__init__(app)
        self.poller = poller

    def apply(self, config: AgentConfig) -> None:
        self.poller.reconfigure(config)

    async def run(self) -> None:
        from megawatch.agent.runtime import collect_young

        await collect_young()


PROGRAM = AgentProgram()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    daemon.add_arguments(parser, PROGRAM)


def run(args: argparse.Namespace) -> int:
    return daemon.run(PROGRAM, args)


if __name__ == "__main__":
    from megawatch.cli import main

    main(["agent", *sys.argv[1:]])
