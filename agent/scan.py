"""Find the miners on a network: every host answering the miner API, with dialect, make, model and firmware.

  megawatch scan 10.10.0.0/22                              a table on stdout (progress on stderr at a terminal)
  megawatch scan 10.10.0.0/22 --exclude 10.10.1.0/24       skip addresses (gateways, switches, other gear)
  megawatch scan 10.10.0.1-10.10.3.254 --format json       or csv; one row per miner found
  megawatch scan 10.10.0.0/22 --write-config agent.yaml --site north
                                                           an agent config listing every miner found

Targets are CIDR blocks, FIRST-LAST ranges or single addresses. Serial, MAC, hostname, hash boards and nameplate
hashrate are shown where the firmware reports them over its API. Only read commands are sent (the agent's
read-only allow-list). More than 65,536 addresses is refused without --allow-large (a /8 typed for a /24).
Exit codes: 0 scanned, 1 some addresses could not be probed (no file descriptor), or no config written (nothing
found, or it could not be written), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import resource
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO

from megawatch.agent.config import DEFAULT_PORT, MinerTarget, load_agent_config, parse_addresses
from megawatch.agent.discovery import Outcome, Probe, probe, sweep
from megawatch.agent.inventory import FIELDS, to_csv
from megawatch.agent.modeltable import load_model_table
from megawatch.agent.protocol import client
from megawatch.common.configfile import ConfigError

LARGE = 65_536  # a /16: more is refused without --allow-large
MAX_ADDRESSES = 1 << 24  # even with it: a /8
TABLE = (("ADDRESS", "address"), ("DIALECT", "dialect"), ("MAKE", "make"), ("MODEL", "model"),
         ("FIRMWARE", "firmware"), ("VERSION", "firmware_version"), ("SERIAL", "serial"), ("MAC", "mac"),
         ("HOSTNAME", "hostname"), ("BOARDS", "hashboards"), ("NAMEPLATE_THS", "nameplate_ths"))
CSV_COLUMNS = ("address", "port", *FIELDS)


class UsageError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="+", metavar="NETWORK",
                        help="a CIDR block (10.0.0.0/24), a range (10.0.0.1-10.0.0.200) or an address")
    parser.add_argument("--exclude", action="append", default=[], metavar="NETWORK",
                        help="addresses not to probe, in the same forms (repeatable)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="miner API port (default: 4028)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output (default: table)")
    # Measured on 10,000 simulated miners: at 1024 the scanner's own loop fell so far behind that ~1% of connects
    # finished after their deadline and those miners read as empty; at 256 none did, in the same time.
    parser.add_argument("--concurrency", type=int, default=256,
                        help="addresses probed at once (default: 256, lowered to fit the open-file limit)")
    parser.add_argument("--connect-timeout", type=float, default=1.0, metavar="SECONDS",
                        help="an address that does not accept within this is empty (default: 1)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="whole probe of one address, every command (default: 5)")
    parser.add_argument("--allow-large", action="store_true", help=f"allow more than {LARGE:,} addresses")
    parser.add_argument("--write-config", metavar="FILE", help="write an agent config listing every miner found")
    parser.add_argument("--site", default="site", help="site name in the written config (default: site)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even at a terminal")


def run(args: argparse.Namespace) -> int:
    try:
        targets = plan(args.targets, args.exclude, args.port, args.allow_large)
        if args.concurrency < 1 or args.connect_timeout <= 0 or args.timeout < args.connect_timeout:
            raise UsageError("--concurrency must be at least 1 and 0 < --connect-timeout <= --timeout")
        if not 1 <= args.port <= 65535:
            raise UsageError(f"--port: expected 1 to 65535, got {args.port}")
    except UsageError as exc:
        print(f"megawatch scan: {exc}", file=sys.stderr)
        return 2
    progress = None if args.no_progress or not sys.stderr.isatty() else Progress(len(targets), sys.stderr)
    started = time.monotonic()
    probes = _run(scan(targets, concurrency=args.concurrency, connect_s=args.connect_timeout,
                           request_s=args.timeout, progress=progress))
    elapsed = time.monotonic() - started
    if progress is not None:
        progress.finish()
    found = sorted((p for p in probes if p.outcome is Outcome.FOUND), key=lambda p: _sort_key(p.target))
    counts = {o.value: sum(1 for p in probes if p.outcome is o) for o in Outcome}
    write_output(sys.stdout, args.format, found, probes, counts, elapsed)
    print(f"scanned {len(targets):,} addresses in {elapsed:.2f} s: {counts['found']:,} miners, "
          f"{counts['not_miner']:,} answering but not a miner API, {counts['empty']:,} empty"
          + (f", {counts['unscanned']:,} not probed (no file descriptor)" if counts["unscanned"] else ""),
          file=sys.stderr)
    if args.write_config and not found:
        # The agent refuses a config without miners: nothing is written rather than a file that fails its check.
        print(f"megawatch scan: --write-config: no miner found, {args.write_config} not written", file=sys.stderr)
        return 1
    if args.write_config:
        try:
            write_config(Path(args.write_config), args.site, found, args.targets)
        except (OSError, ConfigError) as exc:
            print(f"megawatch scan: --write-config: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.write_config}: {len(found):,} miners", file=sys.stderr)
    return 1 if counts["unscanned"] else 0


def _run(main: Coroutine[Any, Any, list[Probe]]) -> list[Probe]:
    """On uvloop where installed, as the agent runs: a scan is connect after connect, twice as fast there."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def plan(specs: list[str], excludes: list[str], port: int, allow_large: bool) -> list[MinerTarget]:
    """Every address to probe, in order, without duplicates or excluded ones."""
    blocks = [_block(spec) for spec in specs]
    skip = [_block(spec) for spec in excludes]
    total = sum(b.stop - b.start for b, _ in blocks)
    limit = MAX_ADDRESSES if allow_large else LARGE
    if total > limit:
        hint = "" if allow_large else " (give --allow-large if that is meant)"
        raise UsageError(f"{total:,} addresses to scan; at most {limit:,}{hint}")
    seen: set[tuple[int, int]] = set()
    targets = []
    for block, version in blocks:
        make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        for number in block:
            if (version, number) in seen or any(number in r for r, v in skip if v == version):
                continue
            seen.add((version, number))
            targets.append(MinerTarget(str(make(number)), port))
    return targets


def _block(spec: str) -> tuple[range, int]:
    spec = spec.strip()
    kind = "cidr" if "/" in spec else "range" if "-" in spec else "address"
    parsed = parse_addresses(kind, spec)
    if isinstance(parsed, str):
        raise UsageError(parsed)
    return parsed


def _sort_key(target: MinerTarget) -> tuple[int, int, int]:
    ip = ipaddress.ip_address(target.address)
    return ip.version, int(ip), target.port


def _fd_room(wanted: int) -> int:
    """Raise the soft open-file limit to the hard one; return how many probes fit beside a reserve."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return max(1, min(wanted, soft - 64))


async def scan(targets: list[MinerTarget], *, concurrency: int = 256, connect_s: float = 1.0,
               request_s: float = 5.0, progress: Progress | None = None) -> list[Probe]:
    models = load_model_table()
    deadlines = client.Deadlines(connect_s=connect_s, request_s=request_s)
    results: list[Probe] = []

    def note(result: Probe) -> None:
        results.append(result)
        if progress is not None:
            progress.update(result)

    async def one(target: MinerTarget) -> Probe:
        return await probe(target, query=client.query, deadlines=deadlines, models=models, deadline_s=request_s)

    room = _fd_room(concurrency)
    await sweep(targets, one, room, note)
    # Something answered but not in time or not as a miner: probed once more, alone, so a miner that was busy
    # (or a loaded scanning host) is not missed; a device that is no miner says so again.
    again = [p.target for p in results if p.outcome is Outcome.NOT_MINER]
    if again:
        retried: list[Probe] = []
        await sweep(again, one, min(room, 64), retried.append)
        redone = {p.target for p in retried}
        results = [p for p in results if p.target not in redone] + retried
    return results


def _row(p: Probe) -> dict[str, Any]:
    ident = p.identity
    row: dict[str, Any] = {"address": p.target.address, "port": p.target.port}
    row.update({k: getattr(ident, k) if ident is not None else None for k in FIELDS})
    row["dialect"] = p.dialect
    return row


def write_output(out: TextIO, fmt: str, found: list[Probe], probes: list[Probe], counts: dict[str, int],
                 elapsed: float) -> None:
    rows = [_row(p) for p in found]
    if fmt == "json":
        others = [{"address": p.target.address, "port": p.target.port, "detail": p.detail}
                  for p in probes if p.outcome is Outcome.NOT_MINER]
        json.dump({"version": 1, "addresses": len(probes), "duration_s": round(elapsed, 3), "counts": counts,
                   "miners": rows, "not_miners": others}, out, indent=1)
        out.write("\n")
    elif fmt == "csv":
        out.write(to_csv(rows, CSV_COLUMNS))
    else:
        out.write(table(rows))


def table(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], key: str) -> str:
        if key == "address":
            return row["address"] if row["port"] == DEFAULT_PORT else f"{row['address']}:{row['port']}"
        if key == "nameplate_ths":
            return "-" if row["nameplate_hs"] is None else f"{row['nameplate_hs'] / 1e12:.1f}"
        value = row.get(key)
        return "-" if value is None else str(value)

    cells = [[title for title, _ in TABLE]] + [[cell(r, key) for _, key in TABLE] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n" for line in cells)


def write_config(path: Path, site: str, found: list[Probe], specs: list[str]) -> None:
    """An agent config listing each miner found as an expected address; checked by the agent's loader."""
    lines = [f"# Written by `megawatch scan {' '.join(specs)}`: {len(found)} miners found.",
             "# Each is listed by address: expected to be there, so one that stops answering counts as down.",
             f"site: {json.dumps(site)}", "miners:"]
    for p in found:
        ident = p.identity
        about = ", ".join(str(v) for v in (ident.model if ident else None, p.dialect,
                                          ident.serial or ident.mac if ident else None) if v)
        lines.append(f"  - address: {p.target.address}" + (f"  # {about}" if about else ""))
        if p.target.port != DEFAULT_PORT:
            lines.append(f"    port: {p.target.port}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        load_agent_config(tmp)  # what we write must be what the agent accepts
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Progress:
    """A one-line bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.out = total, out
        self.done = self.found = 0
        self._drawn = 0.0

    def update(self, result: Probe) -> None:
        self.done += 1
        self.found += result.outcome is Outcome.FOUND
        now = time.monotonic()
        if now - self._drawn >= 0.1 or self.done == self.total:
            self._drawn = now
            filled = int(30 * self.done / max(1, self.total))
            self.out.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done:,}/{self.total:,} addresses, "
                           f"{self.found:,} miners")
            self.out.flush()

    def finish(self) -> None:
        self.out.write("\n")
        self.out.flush()
