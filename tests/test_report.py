"""`megawatch report`: periods, counter arithmetic, and its three outputs (the e2e test reads a real Prometheus)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from datetime import UTC, datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest

from megawatch.report import Prometheus, Row, _increase, counter_increases, parse_time, periods, render_csv, render_json
from megawatch.reporthtml import render_html

OSLO = ZoneInfo("Europe/Oslo")


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_counter_increase_sums_rises_and_takes_a_fall_as_a_restart_from_zero() -> None:
    assert _increase([(1, 10.0), (2, 15.0), (3, 20.0)], 5.0) == (15.0, 0)
    # Restarted without its state file at t=3: 20 -> 4 means 4 counted since the restart.
    assert _increase([(1, 10.0), (2, 20.0), (3, 4.0), (4, 9.0)], 5.0) == (24.0, 1)
    assert _increase([(1, 10.0), (2, 12.0)], None) == (2.0, 0)  # no value before: from the first sample


def test_days_and_months_begin_at_local_midnight() -> None:
    start, end = ts("2026-10-24T12:00:00+02:00"), ts("2026-10-26T06:00:00+01:00")
    days = list(periods(start, end, "day", OSLO))
    # 25 October 2026 is 25 hours long in Oslo (summer time ends); the window's ends are cut to it.
    assert [(b - a) / 3600 for a, b in days] == [12, 25, 6]
    months = list(periods(ts("2026-11-15T00:00:00+00:00"), ts("2027-01-02T00:00:00+00:00"), "month",
                          ZoneInfo("UTC")))
    assert [datetime.fromtimestamp(a, UTC).date().isoformat() for a, _ in months] == [
        "2026-11-15", "2026-12-01", "2027-01-01"]
    assert list(periods(1.0, 2.0, None, OSLO)) == [(1.0, 2.0)]


def test_times_are_read_in_the_report_time_zone_unless_they_say() -> None:
    assert parse_time("2026-12-01", OSLO, 0) == ts("2026-12-01T00:00:00+01:00")
    assert parse_time("2026-12-01T06:00", OSLO, 0) == ts("2026-12-01T06:00:00+01:00")
    assert parse_time("2026-12-01T06:00Z", OSLO, 0) == ts("2026-12-01T06:00:00+00:00")
    assert parse_time("1700000000.5", OSLO, 0) == 1700000000.5
    assert parse_time("now", OSLO, 42.0) == 42.0
    with pytest.raises(Exception, match="expected 'now'"):
        parse_time("yesterday", OSLO, 0)


class CannedPrometheus(Prometheus):
    """Answers the report's counter queries from fixed samples, as Prometheus would; counts them."""

    UNITS: ClassVar[dict[str, int]] = {"s": 1, "m": 60, "d": 86400}

    def __init__(self, samples: dict[str, list[tuple[float, float]]]) -> None:
        super().__init__("http://127.0.0.1:1")
        self.samples = samples
        self.raw_reads = 0

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        m = re.fullmatch(r"(?:(last_over_time|resets)\()?megawatch_\w+\{[^}]*\}\[(\d+)([smd])\]\)?", expr)
        assert m is not None, expr
        function, since = m.group(1), at - int(m.group(2)) * self.UNITS[m.group(3)]
        out = []
        for site, pts in self.samples.items():
            inside = [(t, v) for t, v in pts if since < t <= at]
            labels = {"__name__": "x", "site": site, "instance": "c:9300", "job": "megawatch-collector"}
            if function is None:
                self.raw_reads += 1
                out.append({"metric": labels, "values": [[t, str(v)] for t, v in inside]})
            elif inside:
                value = inside[-1][1] if function == "last_over_time" else \
                    sum(1 for (_, a), (_, b) in itertools.pairwise(inside) if b < a)
                out.append({"metric": labels, "value": [at, str(value)]})
        return out


def test_a_period_counts_from_the_last_sample_at_or_before_its_start() -> None:
    prom = CannedPrometheus({"a": [(0, 0.0), (10, 100.0), (20, 200.0), (30, 250.0)],
                             "b": [(15, 7.0), (25, 9.0)]})
    got = counter_increases(prom, "site", "energy_joules", 10, 30)
    assert got["a"] == (150.0, 0, None)
    assert got["b"] == (2.0, 0, 15.0)  # begins inside the period: from its first sample, and said so
    assert prom.raw_reads == 2  # b's samples were read (the query returns every series)


def test_a_reset_reads_the_samples_and_counts_across_it() -> None:
    prom = CannedPrometheus({"a": [(0, 0.0), (10, 100.0), (20, 30.0), (30, 80.0)]})
    assert counter_increases(prom, "site", "energy_joules", 10, 30)["a"] == (80.0, 1, None)
    quiet = CannedPrometheus({"a": [(t, 10.0 * t) for t in range(0, 3601, 15)]})
    assert counter_increases(quiet, "site", "energy_joules", 600, 3600)["a"] == (30000.0, 0, None)
    assert quiet.raw_reads == 0  # an hour of samples never read: two values and a reset count


def row(start: str, end: str, energy: float, over: float = 0.0) -> Row:
    return Row(start, end, "site", "site-a", energy, 24.0, energy / 24, 1.2, 1.2, over, 3600.0 if over else 0.0,
               0.5, 1800.0, 0.5 / (energy + 0.5), 0.05, 0.1, 50_000.0, 0.02, 0.02 / energy, 18.5, 0, None)


def test_csv_json_and_html_carry_every_figure() -> None:
    rows = [row("2026-12-01T00:00:00+00:00", "2026-12-02T00:00:00+00:00", 20.0),
            row("2026-12-02T00:00:00+00:00", "2026-12-03T00:00:00+00:00", 25.0, over=1.0)]
    parsed = list(csv.DictReader(io.StringIO(render_csv(rows))))
    assert parsed[1]["energy_mwh"] == "25.0" and parsed[1]["over_mwh"] == "1.0" and parsed[0]["data_from"] == ""
    meta = {"from": rows[0].period_start, "to": rows[1].period_end, "step": "day", "timezone": "UTC"}
    doc = json.loads(render_json(rows, meta))
    assert doc["rows"][0]["expected_btc"] == 0.02 and doc["step"] == "day"
    html = render_html(rows, meta, "December <test>")
    assert "<title>December &lt;test&gt;</title>" in html
    assert html.count("<svg") == 1 and "<td>45</td>" in html  # the summary adds the days: 20 + 25 MWh
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing loaded from elsewhere


def test_bad_flags_and_an_unreachable_prometheus_are_one_line_each(tmp_path: Any) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def report(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "megawatch.cli", "report", "--prometheus",
                               f"http://127.0.0.1:{port}", *argv], capture_output=True, text=True, timeout=60)

    down = report("--from", "2026-12-01", "--to", "2026-12-02")
    assert down.returncode == 1 and down.stderr.count("\n") == 1 and "cannot query" in down.stderr, down.stderr
    bad = report("--from", "yesterday")
    assert bad.returncode == 2 and "expected 'now'" in bad.stderr and "Traceback" not in bad.stderr
    backwards = report("--from", "2026-12-02", "--to", "2026-12-01")
    assert backwards.returncode == 2 and "must be after" in backwards.stderr
    many = report("--from", "2000-01-01", "--to", "2026-01-01", "--step", "day")
    assert many.returncode == 2 and "more than 1000 periods" in many.stderr
