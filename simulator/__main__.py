"""Serve a fleet of simulated miners on loopback (`megawatch simulate --config configs/sim/FILE.yaml`).

Every miner listens on its own 127.x.y.z:4028 (or on consecutive ports of one address with a site's
`port_base`) and answers like its firmware dialect; the control endpoint (loopback only) serves the
ground truth and injects load changes and faults. Fleets larger than `miners_per_worker` are spread over
worker processes. Exit: SIGINT/SIGTERM. Exit code 2 on a bad config, 1 when the fleet cannot start.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from megawatch.simulator.config import FleetConfig, load_fleet_config
from megawatch.common.configfile import ConfigError
from megawatch.common.logs import LEVELS, configure_logging, get_logger


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", required=True, help="fleet file (configs/sim/*.yaml)")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
    parser.add_argument("--log-level", choices=LEVELS, default="info")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_fleet_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    configure_logging(args.log_format, args.log_level)
    _use_uvloop()
    return asyncio.run(serve(config))


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency off Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(config: FleetConfig) -> int:
    from megawatch.simulator.control import start_control
    from megawatch.simulator.fleet import FleetStartError
    from megawatch.simulator.workers import start_backend

    log = get_logger()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        backend = await start_backend(config)
    except FleetStartError as exc:
        log.error("fleet_start_failed", error=str(exc))
        print(f"megawatch simulate: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            runner, port = await start_control(backend, config.control.host, config.control.port)
        except OSError as exc:
            print(f"megawatch simulate: control endpoint {config.control.host}:{config.control.port}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 1
        for line in backend.describe():
            print(line, flush=True)
            log.info("fleet_listening", where=line)
        control_url = f"http://{config.control.host}:{port}/api/v1/truth"
        print(f"control endpoint: http://{config.control.host}:{port}/ (ground truth: {control_url})", flush=True)
        log.info("simulator_ready", miners=config.count, control=f"{config.control.host}:{port}",
                 startup_s=round(backend.startup_s, 3), workers=backend.workers)
        await stop.wait()
        log.info("simulator_stopping")
        await runner.cleanup()
    finally:
        await backend.close()
    return 0
