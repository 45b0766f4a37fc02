"""Serve a fleet of simulated miners on loopback.

Not built yet (issue 2).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="fleet file (configs/sim/*.yaml)")


def run(args: argparse.Namespace) -> int:
    print("megawatch simulate: not built yet", file=sys.stderr)
    return 2
