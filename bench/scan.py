"""`python -m bench.scan`: `megawatch scan` beside pyasic's network scan, on the same simulated fleets, same run.

  python -m bench.scan                     the sparse /22, a full /21 and a /18 holding 10,000 miners (~3-6 min)
  python -m bench.scan --cases sparse      one case (sparse, full21, large)
  python -m bench.scan --no-pyasic         megawatch alone (without the bench extra)

Each fleet is served by `megawatch simulate` pinned to the fleet core; each scanner runs in its own process on
the client core, one after the other, against the same fleet: `megawatch scan`'s own code (agent/scan.py, on
uvloop as the command runs) and `pyasic.network.MinerNetwork.from_subnet(...).scan()` as a pyasic user calls it
(its default loop; on the sparse case also on uvloop, for a like-for-like loop). Only the scan is timed, not
interpreter start-up or imports. A miner is identified correctly when the scanner names its model (the model
table's reading of both names) and, for megawatch, its dialect too. Results: bench/results/scan-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.fleets import mix
from bench.procs import REPO, BenchError, Cores, Proc, http_json, megawatch_command, pin

RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    title: str
    network: str
    miners: int
    density: float
    scans: tuple[str, ...] = ()  # subnets of `network` scanned too: the same fleet, fewer addresses
    repeats: int = 1  # each scanner's time is the median of this many scans


CASES = (
    # pyasic's scan still finds miners in the smaller subnets of the same fleet: speed compared where both work.
    Case("sparse", "sparse /22 (60% of addresses)", "127.70.0.0/22", 600, 0.6, ("127.70.0.0/24", "127.70.0.0/23"), 3),
    Case("full21", "full /21", "127.72.0.0/21", 2046, 1.0),
    Case("large", "/18 holding 10,000 miners", "127.80.0.0/18", 10_000, 0.63),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(c.key for c in CASES), help="comma-separated case keys")
    parser.add_argument("--no-pyasic", action="store_true", help="megawatch alone")
    parser.add_argument("--peer", choices=("megawatch", "pyasic"), help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=("default", "uvloop"), default="default", help=argparse.SUPPRESS)
    parser.add_argument("--network", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        return _peer(args.peer, args.network, args.loop)
    chosen = [c for c in CASES if c.key in args.cases.split(",")]
    if not chosen:
        parser.error(f"--cases: expected some of {', '.join(c.key for c in CASES)}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = RESULTS / f"scan-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    cores = Cores.pick()
    pin(0, cores.fleet)
    print(f"cores: {cores.describe()}", flush=True)
    results = []
    try:
        for case in chosen:
            results.extend(run_case(case, work, cores, pyasic=not args.no_pyasic))
    except BenchError as exc:
        print(f"bench.scan: {exc}", file=sys.stderr)
        return 1
    out = RESULTS / f"scan-{stamp}.json"
    out.write_text(json.dumps({"cores": cores.describe(), "cases": results}, indent=1))
    print_table(results)
    print(f"\nresults: {out}")
    return 0


def fleet_file(case: Case, path: Path) -> Path:
    net = ipaddress.IPv4Network(case.network)
    site = {"id": f"scan-{case.key}", "address": str(net.network_address + 1), "port": 4028,
            "groups": [{"count": c, "model": m, "dialect": d} for c, m, d in mix(case.miners)]}
    if case.density < 1:
        site["density"] = case.density
    path.write_text(yaml.safe_dump({"seed": 9, "tick_s": 5, "control": {"host": "127.0.0.1", "port": 0},
                                    "miners_per_worker": 10_000, "sites": [site]}, sort_keys=False))
    return path


def run_case(case: Case, work: Path, cores: Cores, *, pyasic: bool) -> list[dict[str, Any]]:
    logs = work / case.key
    logs.mkdir(exist_ok=True)
    print(f"\n[{case.title}] starting {case.miners:,} simulated miners in {case.network}", flush=True)
    sim = Proc("simulator", [*megawatch_command(), "simulate", "--config", str(fleet_file(case, logs / "fleet.yaml")),
                             "--log-format", "json"], logs / "simulator.log", cores.fleet, pipe_stdout=True)
    try:
        url = ""
        deadline = time.monotonic() + 180
        while not url:
            line = sim.read_line(max(1.0, deadline - time.monotonic()))
            if line.startswith("control endpoint:"):
                url = line.split()[2].rstrip("/")
        rows = (http_json(url + "/api/v1/miners", 60) or {}).get("miners", [])
        truth = {row["host"]: row for row in rows}
        whole = ipaddress.IPv4Network(case.network)
        if len(truth) != case.miners or not all(ipaddress.IPv4Address(h) in whole for h in truth):
            raise BenchError(f"{case.title}: the simulator serves {len(truth)} miners, not {case.miners} in {whole}")
        # One untimed scan first: the simulator renders each miner's replies once per tick and caches them, so
        # whichever scanner came first would pay for the others.
        run_peer("megawatch", "uvloop", case.network, logs, cores)
        results = []
        for network in (*case.scans, case.network):
            net = ipaddress.IPv4Network(network)
            inside = {h: row for h, row in truth.items()
                      if net.network_address < ipaddress.IPv4Address(h) < net.broadcast_address}
            title = case.title if network == case.network else f"  same fleet, {network}"
            result: dict[str, Any] = {"case": case.key, "title": title, "network": network,
                                      "addresses": net.num_addresses - 2, "miners": len(inside), "scanners": {}}
            runs = [("megawatch", "uvloop")]
            if pyasic:
                runs.append(("pyasic", "default"))
                if case.key == "sparse":
                    runs.append(("pyasic", "uvloop"))
            print(f"  {network}: {len(inside):,} miners in {result['addresses']:,} addresses", flush=True)
            for peer, loop in runs:
                name = peer if loop == "default" or peer == "megawatch" else f"{peer} (uvloop)"
                tries = [score(run_peer(peer, loop, network, logs, cores), inside) for _ in range(case.repeats)]
                scored = sorted(tries, key=lambda t: t["seconds"] or float("inf"))[len(tries) // 2]
                scored["all_seconds"] = [t["seconds"] for t in tries]
                seconds = scored["seconds"]
                scored["addresses_per_s"] = result["addresses"] / seconds if seconds else None
                scored["identified_per_s"] = scored["correct"] / seconds if seconds else None
                result["scanners"][name] = scored
                print(f"    {name:<18} {seconds or 0:7.2f} s  found {scored['found']:>6,}  correct "
                      f"{scored['correct']:>6,} of {len(inside):,}"
                      + (f"  ({scored['error']})" if scored.get("error") else ""), flush=True)
            results.append(result)
        return results
    finally:
        sim.stop()


def run_peer(peer: str, loop: str, network: str, logs: Path, cores: Cores) -> dict[str, Any]:
    tag = f"{peer}-{loop}-{network.replace('/', '_')}"
    out = logs / f"{tag}.json"
    proc = Proc(peer, [sys.executable, "-m", "bench.scan", "--peer", peer, "--loop", loop, "--network", network],
                logs / f"{tag}.log", cores.client, pipe_stdout=True)
    try:
        line = proc.read_line(900)
    except BenchError as exc:
        return {"seconds": None, "found": [], "error": str(exc)[:300]}
    finally:
        proc.stop()
    out.write_text(line)
    answer: dict[str, Any] = json.loads(line)
    return answer


def score(answer: dict[str, Any], truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from megawatch.agent.modeltable import load_model_table

    table = load_model_table()
    correct = 0
    wrong: list[str] = []
    for host, dialect, model in answer.get("found", []):
        row = truth.get(host)
        ok = row is not None and table.lookup(model) is table.lookup(row["model"]) \
            and (dialect is None or dialect == row["dialect"])
        correct += ok
        if not ok and len(wrong) < 5:
            wrong.append(f"{host}: {dialect or ''} {model!r}")
    return {"seconds": answer.get("seconds"), "found": len(answer.get("found", [])), "correct": correct,
            "wrong_examples": wrong, "error": answer.get("error")}


def print_table(results: list[dict[str, Any]]) -> None:
    print("\nfleet                         addresses  miners  scanner              seconds   addr/s  ident/s   found"
          "  correct")
    for r in results:
        first = True
        for name, s in r["scanners"].items():
            head = f"{r['title']:<29} {r['addresses']:>9,} {r['miners']:>7,}" if first else " " * 47
            first = False
            secs = "-" if s["seconds"] is None else f"{s['seconds']:.2f}"
            aps = "-" if not s.get("addresses_per_s") else f"{s['addresses_per_s']:,.0f}"
            ips = "-" if not s.get("identified_per_s") else f"{s['identified_per_s']:,.0f}"
            print(f"{head}  {name:<18} {secs:>8} {aps:>8} {ips:>8} {s['found']:>7,} {s['correct']:>8,}")
        ours, theirs = r["scanners"].get("megawatch"), r["scanners"].get("pyasic")
        if ours and theirs and ours["seconds"] and theirs["seconds"]:
            print(" " * 49 + f"megawatch {theirs['seconds'] / ours['seconds']:.1f}x faster than pyasic's scan; "
                             f"{ours['correct']:,} vs {theirs['correct']:,} identified correctly")


# -- the scanners, each in its own process --------------------------------------------------------------------

def _peer(peer: str, network: str, loop: str) -> int:
    if peer == "megawatch":
        from megawatch.agent.discovery import Outcome
        from megawatch.agent.scan import plan, scan

        async def go() -> list[list[Any]]:
            probes = await scan(plan([network], [], 4028, True), connect_s=1.0, request_s=5.0)  # the CLI's defaults
            return [[p.target.address, p.dialect, p.identity.model if p.identity else None]
                    for p in probes if p.outcome is Outcome.FOUND]
    else:
        logging.disable(logging.CRITICAL)
        warnings.simplefilter("ignore")
        from pyasic.network import MinerNetwork

        async def go() -> list[list[Any]]:
            miners = await MinerNetwork.from_subnet(network).scan()
            return [[str(m.ip), None, m.model] for m in miners]

    t0 = time.monotonic()
    error = None
    try:
        if loop == "uvloop":
            import uvloop

            found = uvloop.run(go())
        else:
            found = asyncio.run(go())
    except Exception as exc:  # a scanner that fails is reported, not hidden
        found, error = [], f"{type(exc).__name__}: {exc}"[:300]
    seconds = time.monotonic() - t0
    print(json.dumps({"seconds": seconds, "found": found, "error": error}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
