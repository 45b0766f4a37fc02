"""Poll every miner of a site on time and export Prometheus metrics.

  megawatch agent --config configs/agent.yaml          run: poll, serve /metrics, /healthz, /api/v1/*
  megawatch agent --check-config configs/agent.yaml    validate only: "ok: ..." and exit 0, or errors and exit 2

SIGTERM and SIGINT stop the agent cleanly (the current cycle is cancelled, the HTTP server closed).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

from common.configfile import ConfigError
from common.logs import LEVELS, configure_logging, get_logger

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from common.webconfig import WebConfig

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
                        help="TLS and basic auth for every endpoint, in Prometheus's exporter web-config format")


def run(args: argparse.Namespace) -> int:
    from agent.config import load_agent_config
    from common.webconfig import load_web_config

    path = args.check_config or args.config
    try:
        config = load_agent_config(path)
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"ok: site {config.site}, {len(config.miners)} miners")
        return 0
    configure_logging(args.log_format or config.log_format, args.log_level or config.log_level)  # type: ignore[arg-type]
    try:
        import uvloop
    except ImportError:  # optional at runtime: the default loop works, ~1.6x slower (PERF-NOTES)
        return asyncio.run(serve(config, args.listen, args.port, web_config))
    return uvloop.run(serve(config, args.listen, args.port, web_config))


async def serve(config: AgentConfig, listen: str | None = None, port: int | None = None,
                web_config: WebConfig | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT; return the exit code."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry
    from prometheus_client.process_collector import ProcessCollector

    from agent.exposition import FleetCollector
    from agent.poller import Poller
    from agent.state import FleetState
    from agent.web import make_app
    from common.webconfig import protect

    log = get_logger(site=config.site)
    state = FleetState(config.site, len(config.miners))
    registry = CollectorRegistry()
    registry.register(FleetCollector(state))
    ProcessCollector(registry=registry)  # RSS and CPU of the agent, for the 200 MB budget
    app = make_app(config, state, registry, poller=Poller(config, state))
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
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("agent_stopping")
        await runner.cleanup()
    log.info("agent_stopped")
    return 0


if __name__ == "__main__":
    from megawatch.cli import main

    main(["agent", *sys.argv[1:]])
