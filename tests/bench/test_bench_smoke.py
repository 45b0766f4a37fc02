"""The bench cannot rot silently: it runs end to end on a tiny fleet and reports every figure.

No timing is asserted (this is a shared 2-core machine): only that each figure was measured and judged,
and that every peer read every miner. pyasic and Prometheus are left out here; a missing pyasic must
give a SKIPPED figure with its reason, never a number.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIGURES = {"poll_cycle_s", "ratio_raw", "ratio_pyasic", "metrics_render_s", "overruns", "peak_rss_mib",
           "series_per_miner", "scrape_duration_s", "shards_relative_difference"}
MINERS = 50


def _run_bench(out: Path) -> subprocess.CompletedProcess[str]:
    # A block of its own, so a bench or another test run elsewhere on this machine does not collide.
    base = f"127.{random.randint(150, 199)}.{random.randint(0, 255)}.1"
    argv = [sys.executable, "-m", "bench", "--miners", str(MINERS), "--cycles", "1", "--agent-cycles", "1",
            "--interval", "1", "--no-pyasic", "--no-prometheus", "--base-address", base, "--out", str(out),
            "--time-budget", "150", "--collector-agents", "6"]
    return subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=200)


@pytest.mark.slow
def test_small_bench_reports_every_figure_with_a_number_and_a_verdict(tmp_path: Path) -> None:
    done = _run_bench(tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    document = json.loads((tmp_path / "latest.json").read_text())
    (run,) = document["runs"]
    figures = {f["key"]: f for f in run["figures"]}
    assert set(figures) == FIGURES
    for key, figure in figures.items():
        if key == "ratio_pyasic":
            assert figure["verdict"] == "SKIPPED" and "pyasic" in figure["reason"]
            assert figure["value"] is None
            continue
        if key == "scrape_duration_s":  # Prometheus's own figure: none without it
            assert figure["verdict"] == "SKIPPED" and "Prometheus" in figure["reason"]
            continue
        assert isinstance(figure["value"], (int, float)) and math.isfinite(figure["value"]), figure
        assert figure["verdict"] in ("PASS", "FAIL"), figure
    # Every peer replayed the same plan and read every miner in every cycle.
    assert set(run["peers"]) == {"megawatch-uvloop", "raw-default", "raw-uvloop"}
    requests = {p["setup"]["requests_per_cycle"] for p in run["peers"].values()}
    assert len(requests) == 1 and requests.pop() >= MINERS
    for peer in run["peers"].values():
        assert [c["miners_ok"] for c in peer["cycles"]] == [MINERS], peer
    assert run["agent"]["scraper"] == "bench-http" and run["agent"]["scrapes"]["scrapes"] >= 1
    assert run["agent"]["series"]["miners_seen"] == MINERS
    # One agent and two shard agents over the same (frozen) fleet agree on every total.
    shards = run["shards"]
    assert shards["counts_differ"] == [] and shards["one"]["up"] == MINERS
    assert figures["shards_relative_difference"]["verdict"] == "PASS"
    # Memory per miner needs two sizes: with one it says so rather than guessing.
    (memory,) = document["across_sizes"]
    assert memory["verdict"] == "SKIPPED" and "one fleet size" in memory["reason"]
    # The collector's round read every agent summary, added up under the agents' sites.
    collector = document["collector"]
    assert collector["result"]["agents_up"] == 6 and collector["result"]["fleet_miners_total"] == 6 * 2_500
    assert collector["figure"]["verdict"] in ("PASS", "FAIL") and collector["figure"]["title"] in done.stdout
    # The printed table carries each figure's verdict and the caveat about comparing across runs.
    assert "compare figures only within one run" in done.stdout
    for figure in figures.values():
        assert figure["title"] in done.stdout


def test_a_peer_without_pyasic_says_why_instead_of_measuring(tmp_path: Path) -> None:
    blocked = tmp_path / "site" / "pyasic"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('pyasic blocked for this test', name='pyasic')\n")
    agent = tmp_path / "agent.yaml"
    agent.write_text("site: t\nminers:\n  - address: 127.0.0.1\n")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([["127.0.0.1", 4028, ["summary"]]]))
    done = subprocess.run(
        [sys.executable, "-m", "bench.peer", "--kind", "pyasic", "--loop", "default", "--agent-config", str(agent),
         "--plan", str(plan)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=60, input="",
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.splitlines()[0])
    assert "pyasic" in answer["error"] and "ready" not in answer


def test_a_second_fleet_size_is_still_pinned_apart() -> None:
    # The harness pins itself to the fleet core during a size; the next size must still find both cores
    # (it once found one, and ran the 10,000- and 30,000-miner sizes unpinned).
    code = ("import os; from bench.procs import Cores; first = Cores.pick(); "
            "os.sched_setaffinity(0, {first.fleet}); print(first == Cores.pick() and first.client is not None)")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: nothing to pin apart")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.strip() == "True", done.stderr


def test_scrape_duration_judges_the_scrapes_after_the_first_full_one() -> None:
    # At 30,000 miners Prometheus can scrape before the agent's first cycle ends (almost no series): the
    # scrape that creates every series is the first full one, shown apart; only later ones are judged.
    from bench.figures import _scrape_duration

    agent = {"scraper": "prometheus", "scrapes": {"duration_s": [0.05, 8.6, 1.2, 0.9], "failed": 0,
                                                  "samples": [26.0, 634526.0, 634526.0, 634526.0]}}
    figure = _scrape_duration(10_000, agent, {"skipped": {}}, "")
    assert figure["value"] == 1.2 and figure["verdict"] == "FAIL"
    assert figure["detail"]["first_s"] == 8.6 and figure["detail"]["before_first_cycle_s"] == [0.05]
    agent["scrapes"].update(duration_s=[0.05, 8.6], samples=[26.0, 634526.0])
    assert _scrape_duration(10_000, agent, {"skipped": {}}, "x")["verdict"] == "ERROR"  # no steady state seen
