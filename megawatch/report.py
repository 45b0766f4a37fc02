"""Energy and production report per site and for the fleet, read from Prometheus's HTTP API.

  megawatch report --prometheus http://127.0.0.1:9090 --from 2026-11-01 --to 2026-12-01 --step day \\
      --format html --out november.html

For each period (the whole window, or each day or month in --timezone): energy used against the energy
allocated (the allocation in force x time, schedules followed), peak draw, time and energy over the
allocation, the unknown, allowance and estimated shares, average hashrate, expected BTC, BTC per MWh and
J/TH. Every figure comes from the collector's counters (docs/energy.md): the difference between the last
scrape at or before the period's end and the last at or before its start, so days add up to their month
and a report equals the collector's own counters. A counter that went back (a collector restarted without
its state file) is summed piece by piece and the period says so (`resets`).
Exit codes: 0 written, 1 Prometheus could not be read, 2 a bad flag.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from megawatch.common.textout import emit

J_PER_MWH = 3.6e9
JOB = 'job="megawatch-collector"'
# Report field <- counter after megawatch_<site|fleet>_ (collector/exposition.py ENERGY_COUNTERS)
COUNTERS = {
    "energy": "energy_joules", "measured": "energy_measured_joules", "allowance": "energy_allowance_joules",
    "estimated": "energy_estimated_joules", "unknown": "energy_unknown_joules",
    "unknown_s": "energy_unknown_seconds", "allocated": "allocation_energy_joules",
    "over": "energy_over_allocation_joules", "over_s": "over_allocation_seconds", "hashes": "hashes",
    "expected_btc": "expected_btc",
}
MAX_PERIODS = 1000  # a typo in --from must not become a million queries
TIMEOUT_S = 30.0
BEFORE_CARRY = "31d"  # how far back the value a period starts from is looked for
RECENT_S = 600.0  # a scrape this close before a period's start is its starting value (no samples read)
RECENT = "10m"


class ReportError(Exception):
    """Prometheus could not be read; the message says what and where."""


@dataclass(frozen=True, slots=True)
class Row:
    """One site (or the fleet) over one period. None = unknown (no data), never 0."""

    period_start: str
    period_end: str
    scope: str  # site | fleet
    name: str
    energy_mwh: float | None
    allocated_mwh: float | None
    used_ratio: float | None  # energy / allocated
    peak_mw: float | None
    peak_utilisation_ratio: float | None
    over_mwh: float | None
    over_s: float | None
    unknown_mwh: float | None  # gaps the collector did not see (not in energy_mwh)
    unknown_s: float | None
    unknown_share: float | None  # unknown / (energy + unknown)
    allowance_share: float | None  # of energy: allowed for, not measured
    estimated_share: float | None  # of energy: estimated from hashrate and J/TH
    avg_hashrate_ths: float | None
    expected_btc: float | None  # expected from hashrate and difficulty, not mined
    btc_per_mwh: float | None
    j_per_th: float | None
    resets: int  # counter resets within the period (a restart without the state file: data lost there)
    data_from: str | None  # set when the counters begin inside the period: nothing before this is counted


class Prometheus:
    def __init__(self, url: str, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        body = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"}).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/query", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                doc = json.loads(reply.read(64 << 20))
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode(errors="replace")
            raise ReportError(f"{self.url}: HTTP {exc.code} for {expr!r}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ReportError(f"{self.url}: cannot query: {getattr(exc, 'reason', exc)}") from None
        if doc.get("status") != "success":
            raise ReportError(f"{self.url}: {doc.get('errorType')}: {doc.get('error')} for {expr!r}")
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result


def _increase(points: list[tuple[float, float]], start: float | None) -> tuple[float, int]:
    """Sum of a counter's rises from `start` (else its first point) over `points`; a fall is a reset."""
    total, resets = 0.0, 0
    prev = start
    for _, value in points:
        if prev is not None:
            if value >= prev:
                total += value - prev
            else:
                total += value
                resets += 1
        prev = value
    return total, resets


def _range_s(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def _key(metric: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in metric.items() if k != "__name__"))


def counter_increases(prom: Prometheus, scope: str, counter: str, start: float,
                      end: float) -> dict[str, tuple[float, int, float | None]]:
    """name -> (increase, resets, first sample time if the series begins after `start`) over (start, end].

    Three instant queries per counter: the value at `start` (a scrape within RECENT before it), the value at
    `end` and the resets since that scrape; a month of 15 s scrapes never crosses the wire. The samples
    themselves are read only for a series that was reset, or has no scrape just before `start`.
    """
    selector = f"megawatch_{scope}_{counter}_total{{{JOB}}}"
    window = _range_s(end - start)

    def values(expr: str, at: float) -> dict[tuple[tuple[str, str], ...], float]:
        return {_key(r["metric"]): float(r["value"][1]) for r in prom.query(expr, at)}

    before = values(f"last_over_time({selector}[{RECENT}])", start)
    after = values(f"last_over_time({selector}[{window}])", end)
    resets = values(f"resets({selector}[{_range_s(end - start + RECENT_S)}])", end)
    out: dict[str, tuple[float, int, float | None]] = {}
    slow = [k for k in after if k not in before or resets.get(k, 0) > 0 or after[k] < before[k]]
    found: list[tuple[str, tuple[float, int, float | None]]] = [
        (dict(k).get(scope, ""), (after[k] - before[k], 0, None)) for k in after if k not in slow]
    if slow:
        # The last value however old (Prometheus itself may have been down a while), and every sample.
        older = values(f"last_over_time({selector}[{BEFORE_CARRY}])", start)
        for r in prom.query(f"{selector}[{window}]", end):
            k = _key(r["metric"])
            points = [(float(t), float(v)) for t, v in r["values"] if float(t) > start]
            if k not in slow or not points:
                continue
            base = older.get(k)
            increase, n = _increase(points, base)
            found.append((dict(k).get(scope, ""), (increase, n, points[0][0] if base is None else None)))
    for name, figures in found:
        if name not in out or figures[0] > out[name][0]:  # two collectors (HA): the larger, never the sum
            out[name] = figures
    return out


def peaks(prom: Prometheus, scope: str, metric: str, start: float, end: float) -> dict[str, float]:
    expr = f"max by ({scope}) (max_over_time(megawatch_{scope}_{metric}{{{JOB}}}[{_range_s(end - start)}]))"
    return {r["metric"].get(scope, ""): float(r["value"][1]) for r in prom.query(expr, end)}


def _ratio(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


def _iso(at: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(at, zone).isoformat()


def period_rows(prom: Prometheus, start: float, end: float, zone: ZoneInfo) -> list[Row]:
    rows: list[Row] = []
    for scope in ("site", "fleet"):
        counts = {field: counter_increases(prom, scope, counter, start, end) for field, counter in COUNTERS.items()}
        peak_w = peaks(prom, scope, "facility_power_watts", start, end)
        peak_u = peaks(prom, scope, "utilisation_ratio", start, end)
        names = sorted({n for c in counts.values() for n in c} | set(peak_w))
        for name in names:
            def get(field: str, name: str = name, counts: dict[str, Any] = counts) -> float | None:
                found = counts[field].get(name)
                return found[0] if found is not None else None
            energy, unknown, hashes = get("energy"), get("unknown"), get("hashes")
            btc, allocated = get("expected_btc"), get("allocated")
            firsts = [first for c in counts.values() if name in c and (first := c[name][2]) is not None]
            seen = add_known(energy, unknown)
            rows.append(Row(
                period_start=_iso(start, zone), period_end=_iso(end, zone), scope=scope, name=name,
                energy_mwh=_mwh(energy), allocated_mwh=_mwh(allocated), used_ratio=_ratio(energy, allocated),
                peak_mw=peak_w[name] / 1e6 if name in peak_w else None, peak_utilisation_ratio=peak_u.get(name),
                over_mwh=_mwh(get("over")), over_s=get("over_s"), unknown_mwh=_mwh(unknown),
                unknown_s=get("unknown_s"), unknown_share=_ratio(unknown, seen),
                allowance_share=_ratio(get("allowance"), energy), estimated_share=_ratio(get("estimated"), energy),
                avg_hashrate_ths=hashes / (end - start) / 1e12 if hashes is not None else None,
                expected_btc=btc, btc_per_mwh=_ratio(btc, _mwh(energy)),
                j_per_th=_ratio(energy, hashes / 1e12 if hashes is not None else None),
                resets=max((c[name][1] for c in counts.values() if name in c), default=0),
                data_from=_iso(min(firsts), zone) if firsts else None))
    return rows


def add_known(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _mwh(joules: float | None) -> float | None:
    return joules / J_PER_MWH if joules is not None else None


def parse_time(text: str, zone: ZoneInfo, now: float) -> float:
    """'now', POSIX seconds, an ISO date (midnight in `zone`) or an ISO date and time (in `zone` unless it says)."""
    if text == "now":
        return now
    try:
        return float(text)
    except ValueError:
        pass
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), zone).timestamp()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'now', POSIX seconds, YYYY-MM-DD or an ISO date and time, "
                                         f"got {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).timestamp()


def periods(start: float, end: float, step: str | None, zone: ZoneInfo) -> Iterator[tuple[float, float]]:
    """(start, end) of each day or month in `zone` overlapping the window, cut to it; the window if no step."""
    if step is None:
        yield start, end
        return
    local = datetime.fromtimestamp(start, zone)
    edge = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if step == "month":
        edge = edge.replace(day=1)
    t = start
    while t < end:
        if step == "day":
            nxt = datetime.combine(edge.date() + timedelta(days=1), datetime.min.time(), zone)
        else:
            nxt = datetime(edge.year + edge.month // 12, edge.month % 12 + 1, 1, tzinfo=zone)
        stop = min(end, nxt.timestamp())
        yield t, stop
        t, edge = stop, nxt


def render_csv(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(Row.__dataclass_fields__), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return out.getvalue()


def render_json(rows: list[Row], meta: dict[str, Any]) -> str:
    return json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=1) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus scraping the collector")
    parser.add_argument("--from", dest="start", required=True, metavar="TIME",
                        help="start: YYYY-MM-DD, an ISO date and time, POSIX seconds or 'now'")
    parser.add_argument("--to", dest="end", default="now", metavar="TIME", help="end, in the same forms (default: now)")
    parser.add_argument("--step", choices=("day", "month"), help="one row per day or month (default: the whole window)")
    parser.add_argument("--timezone", default="UTC", help="where days and months begin (default: UTC)")
    parser.add_argument("--format", choices=("csv", "json", "html"), default="csv", help="output (default: csv)")
    parser.add_argument("--out", metavar="FILE", help="write here (default: standard output)")
    parser.add_argument("--title", default="Energy and production report", help="the HTML report's title")


def run(args: argparse.Namespace) -> int:
    import time

    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"--timezone: unknown time zone {args.timezone!r}", file=sys.stderr)
        return 2
    now = time.time()
    try:
        start, end = parse_time(args.start, zone, now), parse_time(args.end, zone, now)
    except argparse.ArgumentTypeError as exc:
        print(f"--from/--to: {exc}", file=sys.stderr)
        return 2
    if end <= start:
        print(f"--to ({args.end}) must be after --from ({args.start})", file=sys.stderr)
        return 2
    windows = []
    for window in periods(start, end, args.step, zone):
        windows.append(window)
        if len(windows) > MAX_PERIODS:
            print(f"more than {MAX_PERIODS} periods: use a wider --step or a shorter window", file=sys.stderr)
            return 2
    prom = Prometheus(args.prometheus)
    try:
        rows = [row for a, b in windows for row in period_rows(prom, a, b, zone)]
    except ReportError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    meta = {"from": _iso(start, zone), "to": _iso(end, zone), "step": args.step or "window",
            "timezone": args.timezone, "prometheus": args.prometheus,
            "note": "expected BTC is expected from hashrate and difficulty, not mined; energy_mwh excludes "
                    "unknown_mwh (time the collector did not see), reported beside it"}
    if args.format == "csv":
        text = render_csv(rows)
    elif args.format == "json":
        text = render_json(rows, meta)
    else:
        from megawatch.reporthtml import render_html
        text = render_html(rows, meta, args.title)
    return emit(text, args.out)
