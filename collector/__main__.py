"""Total every site's draw against its power allocation and raise alerts.

Not built yet: the collector is issue 4.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="sites and allocations (configs/sites.yaml)")


def run(args: argparse.Namespace) -> int:
    print("megawatch collector: not built yet (issue 4)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    from megawatch.cli import main

    main(["collector", *sys.argv[1:]])
