"""Total every site's draw against its power allocation and raise alerts.

Polls each site's agents (/api/v1/summary), adds their shards up per site, applies the facility overhead
(PUE and auxiliary load), compares the result with the allocation in force, and sends alerts to
Alertmanager (and an optional webhook). Serves /metrics, /api/v1/sites, /api/v1/alerts and /healthz.

  megawatch collector --config configs/sites.yaml
  megawatch collector --check-config configs/sites.yaml

SIGHUP re-reads the config before the next cycle (sites, allocations, schedules, overhead, agents,
thresholds, poll interval); a bad file keeps the running config and logs config_reload_failed.
SIGTERM/SIGINT stop it after a bounded attempt to deliver pending alerts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from megawatch.common.configfile import ConfigError
from megawatch.common.logs import LEVELS, configure_logging, get_logger


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default="configs/sites.yaml",
                        help="sites, allocations, thresholds and alerting (default: %(default)s)")
    parser.add_argument("--check-config", metavar="FILE", nargs="?", const="",
                        help="validate FILE (default: --config), print every problem as file:line: key: problem, "
                             "and exit (0 = valid, 2 = invalid)")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="override listen.address/listen.port from the config (e.g. 127.0.0.1:0)")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                        help="TLS and basic auth for every endpoint, in Prometheus's exporter web-config format "
                             "(overrides web_config_file in the config)")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                        help="console on a terminal, JSON lines otherwise (default: %(default)s)")
    parser.add_argument("--log-level", choices=LEVELS, default="info", help="(default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from megawatch.collector.config import load_collector_config
    from megawatch.common.webconfig import load_web_config

    path = args.check_config or args.config
    try:
        config = load_collector_config(path)
        if args.web_config_file:
            config = replace(config, web=load_web_config(args.web_config_file))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check_config is not None:
        print(f"{path}: ok ({len(config.sites)} sites, "
              f"{sum(len(s.agents) for s in config.sites)} agents)", file=sys.stderr)
        return 0
    address, port = config.listen_address, config.listen_port
    if args.listen:
        host, sep, port_text = args.listen.rpartition(":")
        if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
            print(f"--listen: expected HOST:PORT such as 127.0.0.1:9300, got {args.listen!r}", file=sys.stderr)
            return 2
        address, port = host, int(port_text)
    configure_logging(args.log_format, args.log_level)
    from megawatch.collector.service import serve

    try:
        asyncio.run(serve(config, address, port))
    except OSError as exc:
        get_logger().error("listen_failed", address=address, port=port, error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    from megawatch.cli import main

    main(["collector", *sys.argv[1:]])
