"""Run simulated sites, an agent per site and the collector on loopback, and print where to look.

Not built yet: the demo is issue 5.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="simulated fleet for the demo")


def run(args: argparse.Namespace) -> int:
    print("megawatch demo: not built yet (issue 5)", file=sys.stderr)
    return 2
