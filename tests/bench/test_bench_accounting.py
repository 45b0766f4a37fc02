"""`python -m bench --accounting` runs end to end on a tiny fleet, and its check can fail.

The phase's figures are the simulator's and the collector's; what must hold here is that it prints its table
for every mix and finds no site figure below the truth. The check itself is tried on made-up rows: a figure
under the truth is a violation, a meter's figure is allowed the meter's accuracy and no more.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.accounting import METER_TOLERANCE, SITES, judge, report, row
from bench.accounting import MIXES as ALL_MIXES

REPO = Path(__file__).resolve().parents[2]
MIXES = ("none", "hung10")


@pytest.mark.slow
def test_tiny_accounting_phase_prints_every_mix_and_no_violation(tmp_path: Path) -> None:
    base = f"127.{random.randint(150, 199)}.{random.randint(0, 200)}.1"  # a block of its own
    argv = [sys.executable, "-m", "bench", "--accounting", "--accounting-miners", "8", "--accounting-cycles", "2",
            "--accounting-mixes", ",".join(MIXES), "--base-address", base, "--out", str(tmp_path),
            "--time-budget", "240"]
    done = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    out = done.stdout
    assert "truth > figure: 0 violation(s)" in out and "VIOLAT" not in out
    assert "their upper bound (outside surge mixes): 0 violation(s)" in out
    for key in MIXES:
        table = out.split(f"\n{key}: ", 1)[1].split("\n\n", 1)[0].splitlines()
        assert "measured only" in table[1] and "upper bound" in table[1] and "figure [source]" in table[1]
        assert [line.split()[0] for line in table[2:]] == [s.id for s in SITES]
    result = json.loads((tmp_path / "latest-accounting.json").read_text())["accounting"]
    assert result["violations"] == 0 and [m["key"] for m in result["mixes"]] == list(MIXES)
    assert result["upper_bound_violations"] == 0
    _, hung = result["mixes"]
    # One of the eight miners of every site hung: it is allowed for, never counted as 0 W.
    last = hung["cycles"][-1]
    assert all(r["allowance_w"] > 0 and r["status"] == "partial" for r in last), last
    assert all(r["upper_bound_w"] > r["measured_only_w"] for r in last)


def _site(figure: float, source: str, unseen: float = 0.0) -> dict[str, Any]:
    return {"id": "a", "pue": 1.0, "aux_w": 0.0, "miner_power_w": 900.0, "miner_allowance_w": 50.0,
            "facility_power_w": figure, "figure_source": source, "status": "partial", "allowance_ratio": 0.05,
            "meter": {"state": "ok" if source == "meter" else "down", "power_w": 1000.0, "unseen_w": unseen}}


TRUTH = {"power_w": 1000.0, "power_w_reported": 500.0, "power_w_reported_true": 500.0,
         "power_w_estimable": 400.0, "power_w_unmeasured": 500.0,
         "meter": {"truth_w": 1000.0, "fault": None, "extra_load_w": 0.0}}


def test_a_figure_under_the_truth_is_a_violation_and_a_meter_gets_only_its_accuracy() -> None:
    spec = SITES[0]
    assert row(_site(950.0, "miners"), TRUTH, spec)["violation"]
    assert not row(_site(1000.0, "miners"), TRUTH, spec)["violation"]
    # A meter (or the meter's last excess carried on fallback) is an instrument: within its accuracy...
    within = 1000.0 * (1 - METER_TOLERANCE / 2)
    assert not row(_site(within, "meter"), TRUTH, spec)["violation"]
    assert not row(_site(within, "miners", unseen=50.0), TRUTH, spec)["violation"]
    # ...and no further.
    beyond = 1000.0 * (1 - 2 * METER_TOLERANCE)
    assert row(_site(beyond, "meter"), TRUTH, spec)["violation"]
    r = row(_site(950.0, "miners"), TRUTH, spec)
    # The miners' own upper bound (900 + 50 W) is under what they draw, and the estimate error shows why.
    assert r["upper_bound_short"] and r["err_estimate"] == pytest.approx(-0.25)
    assert r["err_measured_only"] == pytest.approx(-0.10)


def test_the_miners_upper_bound_under_their_draw_is_a_violation_except_in_a_surge() -> None:
    spec = SITES[0]
    # Metered: the figure (the meter's) is right, but the miners' own upper bound (950 W) is under their draw.
    short = row(_site(1000.0, "meter"), TRUTH, spec)
    covered = row(_site(1000.0, "meter") | {"miner_allowance_w": 100.0}, TRUTH, spec)
    assert short["upper_bound_short"] and not short["violation"] and not covered["upper_bound_short"]
    said: list[str] = []
    at_rest = judge(ALL_MIXES["none"], [[short], [covered]], said.append)
    assert at_rest["upper_bound_violations"] == 1 and at_rest["violations"] == 0
    assert len(said) == 1 and "!!! VIOLATION none site a: the miners truly draw 1.0 kW" in said[0]
    # A surge draws more at the same hashrate: no reading shows it, so it is shown, not counted.
    surge = judge(ALL_MIXES["surge"], [[short]], said.append)
    assert surge["upper_bound_violations"] == 0 and surge["upper_bound_short"] == 1 and len(said) == 1
    text = report({"miners_per_site": 1, "cycles": 2, "mixes": [at_rest | {"settle_s": 0.0}, surge],
                   "violations": 0, "upper_bound_short": 2, "upper_bound_violations": 1})
    assert "miners' truth > their upper bound (outside surge mixes): 1 violation(s)" in text
    assert "VIOLATED in 1 of 2 cycles" in text.split("\nsurge: ")[0]
    assert "in a mix the miners cannot see" in text
