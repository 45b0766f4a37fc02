"""Serve a fleet of simulated miners on loopback (`megawatch simulate --config configs/sim/FILE.yaml`).

Every miner listens on its own 127.x.y.z:4028 (or on consecutive ports of one address with a site's
`port_base`) and answers like its firmware dialect; the control endpoint (loopback only) serves the
ground truth and injects load changes and faults. Fleets larger than `miners_per_worker` are spread over
worker processes. `--check-config FILE` only validates the file ("ok: ..." and exit 0, or every problem as
file:line: key: problem on stderr and exit 2). Stop: SIGINT/SIGTERM (exit 0). Exit code 2 on a bad config,
1 when the fleet cannot start.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

from megawatch.common import daemon
from megawatch.common.logs import configure_logging, get_logger
from megawatch.simulator.config import FleetConfig, is_token, load_fleet_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    daemon.add_config_arguments(parser, "fleet file (configs/sim/*.yaml)")
    daemon.add_log_arguments(parser, in_config=False)
    parser.add_argument("--control-token", metavar="TOKEN",
                        help="require 'Authorization: Bearer TOKEN' on the control endpoint (instead of "
                             "control.token in the fleet file; 16 to 256 characters)")


def run(args: argparse.Namespace) -> int:
    loaded = daemon.load_or_report((load_fleet_config, args.check_config or args.config))
    if loaded is None:
        return daemon.EXIT_CONFIG
    config: FleetConfig = loaded[0]
    if args.check_config:
        print(f"ok: {config.count} miners in {len(config.sites)} sites")
        return daemon.EXIT_OK
    if args.control_token is not None:
        if not is_token(args.control_token):
            print("megawatch simulate: --control-token: expected 16 to 256 printable characters without spaces",
                  file=sys.stderr)
            return daemon.EXIT_CONFIG
        config = dataclasses.replace(config, control=dataclasses.replace(config.control, token=args.control_token))
    configure_logging(args.log_format or "auto", args.log_level or "info")
    return daemon.run_loop(serve(config))


async def serve(config: FleetConfig) -> int:
    """Serve the fleet until SIGTERM/SIGINT (exit 0), or exit 1 when it cannot start."""
    stop = asyncio.Event()
    with daemon.stop_signals(stop.set):
        return await _serve(config, stop)


async def _serve(config: FleetConfig, stop: asyncio.Event) -> int:
    from megawatch.simulator.control import start_control
    from megawatch.simulator.fleet import FleetStartError
    from megawatch.simulator.workers import start_backend

    log = get_logger()
    try:
        backend = await start_backend(config)
    except FleetStartError as exc:
        log.error("fleet_start_failed", error=str(exc))
        print(f"megawatch simulate: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            runner, port = await start_control(backend, config.control.host, config.control.port,
                                               config.control.token)
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
