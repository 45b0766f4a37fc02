"""`python -m bench` (`make bench`): the figures of bench/README.md beside a raw loop and pyasic, as JSON too.

  python -m bench                              10,000 miners, median of 3 cycles, Prometheus, pyasic
  python -m bench --miners 50 --no-pyasic --no-prometheus --interval 1 --agent-cycles 2   (the smoke test)
  python -m bench --accounting                 only the accounting phase: each site's figure against the truth

Results: bench/results/<UTC time>.json and bench/results/latest.json; process logs and the generated
configs beside them in bench/results/<UTC time>/. Exit code 0 when the bench ran (whatever the verdicts),
1 when a phase could not run or (--accounting) a site's figure, or outside a surge its miners' upper bound, was
below the truth, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import accounting, collector_phase, figures, fleets
from bench.fleets import AgentSpec, FleetSpec
from bench.harness import Budget, Options, run
from bench.procs import BenchError

RESULTS = Path(__file__).resolve().parent / "results"


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected miner counts like 10000 or 1000,10000, got {text!r}") from None
    if any(not 1 <= n <= 60_000 for n in sizes):
        raise argparse.ArgumentTypeError("each fleet size must be between 1 and 60,000 miners")
    return sizes


def _latency(text: str) -> tuple[float, ...]:
    """"200" -> (0.2,); "50-300" -> five delays from 50 to 300 ms, each for a fifth of the fleet."""
    try:
        low, _, high = text.partition("-")
        first, last = float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds like 200 or 50-300, got {text!r}") from None
    if not 0 <= first <= last <= 10_000:
        raise argparse.ArgumentTypeError(f"expected 0 <= low <= high <= 10000 ms, got {text!r}")
    if first == last:
        return (first / 1000,)
    steps = LATENCY_SHARES - 1
    return tuple(round((first + (last - first) * i / steps) / 1000, 4) for i in range(LATENCY_SHARES))


LATENCY_SHARES = 5


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--miners", type=_sizes, default=[10_000], help="fleet size(s), comma-separated (default 10000)")
    p.add_argument("--cycles", type=int, default=3, choices=range(1, 11), metavar="N",
                   help="measured cycles per peer; the median is the figure (default 3)")
    p.add_argument("--agent-cycles", type=int, default=4, choices=range(1, 21), metavar="N",
                   help="agent cycles observed under scraping after its first (default 4: three or more "
                        "steady-state scrapes after Prometheus's first)")
    p.add_argument("--interval", type=float, default=15.0, help="the agent's poll and scrape interval, s (default 15)")
    p.add_argument("--latency-ms", type=_latency, default=(),
                   help="delay simulated replies like real miners: 200 delays every reply 200 ms; 50-300 spreads "
                        "delays of 50 to 300 ms evenly over the miners (default: instant replies)")
    p.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="requests in flight, for the agent and every peer alike (default: the agent's own); "
                        "with latency, in flight >= miners/s x reply time")
    p.add_argument("--no-pyasic", action="store_true", help="leave the pyasic peer out")
    p.add_argument("--no-prometheus", action="store_true", help="scrape the agent from the bench instead")
    p.add_argument("--no-shards", action="store_true", help="leave out one agent vs two shard agents")
    p.add_argument("--base-address", default="127.60.0.1", help="first simulated miner (default 127.60.0.1)")
    p.add_argument("--collector-agents", type=int, default=collector_phase.AGENTS, metavar="N",
                   help="the collector's round over N agent summaries; 0 leaves it out (default 200)")
    p.add_argument("--accounting", action="store_true",
                   help="run only the accounting phase: fault mixes against the simulator's truth (bench/README.md)")
    p.add_argument("--accounting-miners", type=int, default=300, choices=range(4, 2001), metavar="N",
                   help="miners per site in the accounting phase, 4 sites (default 300)")
    p.add_argument("--accounting-cycles", type=int, default=8, choices=range(1, 61), metavar="N",
                   help="collector cycles checked per fault mix (default 8)")
    p.add_argument("--accounting-mixes", type=_mixes, default=list(accounting.MIXES), metavar="A,B",
                   help="fault mixes, in order (default all: " + ",".join(accounting.MIXES) + ")")
    p.add_argument("--time-budget", type=float, default=590.0, help="stop after this many seconds (default 590)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory (default bench/results)")
    return p


def _mixes(text: str) -> list[str]:
    keys = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [k for k in keys if k not in accounting.MIXES]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown fault mix {', '.join(unknown) or text!r} "
                                         f"(known: {', '.join(accounting.MIXES)})")
    return keys


def _agent_spec(interval: float) -> AgentSpec:
    if interval >= 15:
        return AgentSpec(interval_s=interval)  # the agent's own default deadlines
    # Short runs (the smoke test): deadlines must stay below the interval (agent/config.py checks it).
    return AgentSpec(interval_s=interval, connect_timeout_s=interval * 0.4, request_timeout_s=interval * 0.8)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every process the harness started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.interval < 1:
        print("python -m bench: --interval must be at least 1 s (the agent's minimum)", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.time_budget)
    if args.accounting:
        return _accounting(args, out, stamp, budget, sys.argv[1:] if argv is None else argv)
    document: dict[str, Any] = {
        "started_utc": stamp, "caveat": figures.CAVEAT, "argv": sys.argv[1:] if argv is None else argv,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": len(os.sched_getaffinity(0)), "versions": _versions(), "tree": _tree()},
        "runs": [],
    }
    failed = False
    for miners in args.miners:
        fleet = FleetSpec(miners, base_address=args.base_address, latency_s=args.latency_ms)
        agent = dataclasses.replace(_agent_spec(args.interval), concurrency=args.concurrency)
        options = Options(fleet, cycles=args.cycles, agent_cycles=args.agent_cycles, agent=agent,
                          pyasic=not args.no_pyasic, prometheus=not args.no_prometheus, shards=not args.no_shards,
                          logs=out / stamp / f"{miners}")
        result = run(options, budget, say=lambda line: print(line, flush=True))
        result["figures"] = figures.judge(result)
        failed |= "error" in result
        document["runs"].append(result)
        print()
        print(figures.report(result, result["figures"]), flush=True)
        print()
    if document["runs"]:
        document["across_sizes"] = figures.across_sizes(document["runs"])
        print(figures.report_rows(document["across_sizes"]), flush=True)
        print()
    if args.collector_agents > 0:
        document["collector"] = _collector(args.collector_agents, out / stamp / "collector", budget)
        failed |= document["collector"]["figure"]["verdict"] == "ERROR"
    document["finished_utc"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    text = json.dumps(document, indent=2, default=str)
    (out / f"{stamp}.json").write_text(text)
    (out / "latest.json").write_text(text)
    print(f"results: {out / (stamp + '.json')} (also {out / 'latest.json'})")
    return 1 if failed else 0


def _accounting(args: argparse.Namespace, out: Path, stamp: str, budget: Budget, argv: list[str]) -> int:
    document: dict[str, Any] = {"started_utc": stamp, "argv": argv, "phase": "accounting",
                                "machine": {"python": platform.python_version(), "tree": _tree()}}
    code = 0
    try:
        result = accounting.measure(out / stamp / "accounting", miners=args.accounting_miners,
                                    mixes=args.accounting_mixes, cycles=args.accounting_cycles,
                                    base=args.base_address, budget=budget, say=lambda line: print(line, flush=True))
        document["accounting"] = result
        print()
        print(accounting.report(result), flush=True)
        code = 1 if result["violations"] or result["upper_bound_violations"] else 0
    except BenchError as exc:
        document["error"] = str(exc)
        print(f"accounting phase stopped early: {exc}", flush=True)
        code = 1
    document["finished_utc"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    text = json.dumps(document, indent=2, default=str)
    (out / f"{stamp}-accounting.json").write_text(text)
    (out / "latest-accounting.json").write_text(text)
    print(f"results: {out / (stamp + '-accounting.json')} (also {out / 'latest-accounting.json'})")
    return code


def _collector(agents: int, logs: Path, budget: Budget) -> dict[str, Any]:
    result, error = None, None
    try:
        budget.cap(60)
        result = collector_phase.measure(logs, agents=agents, sites=max(1, agents // 10),
                                         say=lambda line: print(line, flush=True))
    except BenchError as exc:
        error = str(exc)
    figure = collector_phase.judge(result, error)
    print(figures.report_rows([figure]), flush=True)
    print()
    return {"result": result, "figure": figure}


def _tree() -> dict[str, object]:
    """The commit measured, and whether the working tree had uncommitted changes."""
    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=fleets.REPO, capture_output=True, text=True, timeout=10,
                                  check=False)
        except OSError:
            return ""
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "changed_files": len(git("status", "--porcelain").splitlines())}


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("megawatch", "uvloop", "aiohttp", "prometheus-client", "pyasic"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


if __name__ == "__main__":
    sys.exit(main())
