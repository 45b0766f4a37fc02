"""Poll every miner of a site on time and export Prometheus metrics.

Not built yet: the agent is issue 3.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="agent config (configs/agent.yaml)")


def run(args: argparse.Namespace) -> int:
    print("megawatch agent: not built yet (issue 3)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    from megawatch.cli import main

    main(["agent", *sys.argv[1:]])
