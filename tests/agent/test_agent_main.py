"""`megawatch agent`: --check-config, --help, and a real run stopped by SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from megawatch.cli import make_parser

REPO = Path(__file__).resolve().parents[2]
CASES = REPO / "tests" / "config_cases"


def _megawatch(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "megawatch.cli", *args], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_check_config_ok() -> None:
    proc = _megawatch("agent", "--check-config", "configs/agent.yaml")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ok: site site-a, 40 miners\n", "")


def test_check_config_bad_prints_every_problem_and_exits_2() -> None:
    case = CASES / "wrong_types.yaml"
    proc = _megawatch("agent", "--check-config", str(case))
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 5 and all(line.startswith(f"{case}:") for line in lines)
    assert "Traceback" not in proc.stderr


def test_run_with_bad_config_exits_2_without_traceback() -> None:
    proc = _megawatch("agent", "--config", str(CASES / "overlap.yaml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is already listed by miners[0].cidr" in proc.stderr


def test_help_names_the_options() -> None:
    parser = make_parser()
    sub = parser._subparsers._group_actions[0].choices["agent"]  # type: ignore[union-attr]
    text = sub.format_help()
    for option in ("--config", "--check-config", "--log-level", "--listen", "SIGTERM", "SIGHUP"):
        assert option in text


def _wait_for_event(proc: subprocess.Popen[str], event: str, deadline_s: float) -> dict[str, object]:
    end = time.monotonic() + deadline_s
    assert proc.stderr is not None
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if doc.get("event") == event:
            return doc  # type: ignore[no-any-return]
    raise AssertionError(f"no {event!r} log line within {deadline_s} s")


@pytest.mark.slow
def test_runs_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    # Nothing listens on 127.77.0.x:9: every miner is refused, which the agent must report as down.
    config.write_text("site: t1\nminers:\n  - range: 127.77.0.1-127.77.0.5\n    port: 9\n"
                      "poll: {interval_s: 5, request_timeout_s: 1, connect_timeout_s: 0.5, jitter_s: 0}\n"
                      "log: {format: json, level: debug}\n")
    proc = subprocess.Popen([sys.executable, "-m", "megawatch.cli", "agent", "--config", str(config), "--listen", ":0"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        started = _wait_for_event(proc, "agent_started", 20)
        host, port = started["listen"][0]  # type: ignore[index]
        base = f"http://{host}:{port}"
        _wait_for_event(proc, "cycle_finished", 10)
        summary = json.load(urllib.request.urlopen(base + "/api/v1/summary", timeout=5))
        # Listed and never answered: down, and missing (none found in a scan range).
        assert summary["miners"] == {"configured": 5, "up": 0, "down": 5, "stale": 0, "discovered": 0, "missing": 5}
        assert summary["totals"]["power_unknown_miners"] == 5
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        samples = {(s.name, s.labels.get("outcome")): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        cycles = samples[("megawatch_agent_cycles_total", None)]
        # A cycle may have ended between the two requests; each polls all 5 (one failure skips no cycle).
        assert cycles >= 1 and samples[("megawatch_agent_polls_total", "unreachable")] == 5 * cycles
        assert "process_resident_memory_bytes" in text
        if shutil.which("promtool"):
            check = subprocess.run(["promtool", "check", "metrics"], check=False, input=text, capture_output=True,
                                   text=True, timeout=30)
            assert (check.returncode, check.stdout + check.stderr) == (0, "")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        _wait_for_event(proc, "agent_stopped", 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

