"""Poll every miner of a site on time and export Prometheus metrics.

  megawatch agent --config configs/agent.yaml          run: poll, serve /metrics, /healthz, /api/v1/*
  megawatch agent --check-config configs/agent.yaml    validate only: "ok: ..." and exit 0, or errors and exit 2

SIGTERM and SIGINT stop the agent cleanly (the current cycle is cancelled, the HTTP server closed).
SIGHUP re-reads the config and applies it at the start of the next cycle (miners, poll settings, control):
miners still listed keep their readings. A bad file is refused (config_reload_failed, one line per
problem; megawatch_agent_config_last_reload_successful 0) and the running config stays. site, agent_id,
http, exposition and log settings need a restart (logged as needs_restart).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from megawatch.common.configfile import ConfigError
from megawatch.common.logs import LEVELS, configure_logging, get_logger

if TYPE_CHECKING:
    from megawatch.agent.config import AgentConfig
    from megawatch.agent.exposition import ReloadStatus
    from megawatch.agent.poller import Poller
    from megawatch.common.webconfig import WebConfig

EXIT_CONFIG = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", metavar="FILE", help="agent config to run with (e.g. configs/agent.yaml)")
    what.add_argument("--check-config", metavar="FILE", help="only validate FILE: print 'ok: ...' or every "
                                                               "problem as file:line: key: problem (exit 2)")
    parser.add_argument("--log-format", choices=("auto", "json", "console"),
                        help="override log.format from the config (auto: console on a terminal, else JSON)")
    parser.add_argument("--log-level", choices=LEVELS, help="override log.level from the config")
    parser.add_argument("--listen", metavar="ADDR", help="override http.listen")
    parser.add_argument("--port", type=int, metavar="PORT", help="override http.port (0: any free port)")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                        help="TLS and basic auth for every endpoint, in Prometheus's exporter web-config format "
                             "(overrides web_config_file in the config)")


def run(args: argparse.Namespace) -> int:
    from megawatch.agent.config import load_agent_config
    from megawatch.agent.runtime import tune_gc
    from megawatch.common.webconfig import load_web_config

    path = args.check_config or args.config
    try:
        config = load_agent_config(path)
        web_config = load_web_config(args.web_config_file) if args.web_config_file else config.web
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"ok: site {config.site}, {len(config.miners)} miners")
        return 0
    configure_logging(args.log_format or config.log_format, args.log_level or config.log_level)  # type: ignore[arg-type]
    tune_gc()
    try:
        import uvloop
    except ImportError:  # optional at runtime: the default loop works, measured ~1.6x slower
        return asyncio.run(serve(config, args.listen, args.port, web_config))
    return uvloop.run(serve(config, args.listen, args.port, web_config))


async def serve(config: AgentConfig, listen: str | None = None, port: int | None = None,
                web_config: WebConfig | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT; return the exit code."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry
    from prometheus_client.process_collector import ProcessCollector

    from megawatch.agent.exposition import FleetCollector, ReloadCollector, ReloadStatus
    from megawatch.agent.poller import Poller
    from megawatch.agent.state import FleetState
    from megawatch.agent.web import make_app
    from megawatch.common.webconfig import protect

    log = get_logger(site=config.site)
    state = FleetState(config.site, len(config.miners))
    registry = CollectorRegistry()
    registry.register(FleetCollector(state))
    reload_status = ReloadStatus()
    registry.register(ReloadCollector(reload_status))
    ProcessCollector(registry=registry)  # RSS and CPU of the agent, for the 200 MB budget
    poller = Poller(config, state)
    app = make_app(config, state, registry, poller=poller)
    protect(app, web_config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, bind_port = listen or config.http.listen, config.http.port if port is None else port
    site = web.TCPSite(runner, host, bind_port, ssl_context=web_config.ssl_context if web_config else None)
    try:
        await site.start()
    except OSError as exc:
        log.error("http_listen_failed", listen=host, port=bind_port, error=str(exc))
        await runner.cleanup()
        return 1
    log.info("agent_started", agent=config.agent_id, miners=len(config.miners),
             listen=[list(a[:2]) for a in runner.addresses], scheme=web_config.scheme if web_config else "http",
             basic_auth=bool(web_config and web_config.users),
             interval_s=config.poll.interval_s, concurrency=config.poll.concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()
    running = [config]  # the config in force, replaced by each good reload

    async def reload() -> None:
        running[0] = await _reload(running[0], poller, reload_status)

    def on_hup() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for task in list(reloads):
            task.cancel()
        log.info("agent_stopping")
        await runner.cleanup()
    log.info("agent_stopped")
    return 0


async def _reload(current: AgentConfig, poller: Poller, status: ReloadStatus) -> AgentConfig:
    """Re-read the config file; hand a good one to the poller, keep the current one on any problem."""
    from megawatch.agent.config import load_agent_config

    log = get_logger(site=current.site)
    status.at_s = time.time()
    try:
        # In a thread: expanding a large fleet's CIDR blocks must not stall the polling on the event loop.
        new = await asyncio.to_thread(load_agent_config, current.path)
    except ConfigError as exc:
        status.successful = False
        log.error("config_reload_failed", path=current.path, problems=[str(p) for p in exc.problems])
        return current
    fixed = {"site": (current.site, new.site), "agent_id": (current.agent_id, new.agent_id),
             "http": (current.http, new.http), "exposition": (current.exposition, new.exposition),
             "log": ((current.log_format, current.log_level), (new.log_format, new.log_level))}
    needs_restart = [name for name, (old, wanted) in fixed.items() if old != wanted]
    applied = replace(new, site=current.site, agent_id=current.agent_id, http=current.http, web=current.web,
                      exposition=current.exposition, log_format=current.log_format, log_level=current.log_level)
    poller.reconfigure(applied)
    status.successful = True
    log.info("config_reloaded", path=current.path, miners=len(applied.miners),
             interval_s=applied.poll.interval_s, needs_restart=needs_restart or None)
    return applied


if __name__ == "__main__":
    from megawatch.cli import main

    main(["agent", *sys.argv[1:]])
