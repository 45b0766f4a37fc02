"""The `megawatch` command: one entry point, one subcommand per process kind."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType


def _subcommands() -> dict[str, tuple[ModuleType, str]]:
    # Imported here so `megawatch --help` stays fast and a broken subcommand cannot break the others.
    from megawatch import demo, report
    from megawatch.agent import __main__ as agent_main
    from megawatch.agent import scan
    from megawatch.collector import __main__ as collector_main
    from megawatch.collector import promrules
    from megawatch.simulator import __main__ as simulate_main

    return {
        "simulate": (simulate_main, "serve a fleet of simulated miners on loopback"),
        "agent": (agent_main, "poll a site's miners and export Prometheus metrics"),
        "scan": (scan, "find the miners on a network: dialect, model, firmware, serial and MAC"),
        "collector": (collector_main, "total sites against their power allocations and raise alerts"),
        "rules": (promrules, "write the Prometheus rules from the alert catalogue and a sites file"),
        "report": (report, "energy against allocation and expected production per site and fleet, from Prometheus"),
        "demo": (demo, "run simulated sites, agents and the collector together on loopback"),
    }


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="megawatch",
        description="Monitor Bitcoin-mining fleets against their allocated grid power.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, summary) in _subcommands().items():
        child = sub.add_parser(
            name, help=summary, description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(child)
        child.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
