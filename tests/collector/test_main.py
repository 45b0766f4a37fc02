"""`megawatch collector` as people run it: --help, a taken port, SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.common.test_daemon import wait_for

ROOT = Path(__file__).resolve().parents[2]


def collector(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "megawatch.cli", "collector", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_help_says_what_it_does_and_how() -> None:
    out = subprocess.run([sys.executable, "-m", "megawatch.cli", "collector", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30, check=False).stdout
    for words in ("allocation", "--check-config", "--config", "--listen", "/api/v1/alerts", "Alertmanager"):
        assert words in out


def test_taken_port_is_one_clear_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = collector("--config", "configs/sites.yaml", "--listen", f"127.0.0.1:{port}", "--log-format", "json")
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "Traceback" not in err
    event = json.loads(err.strip().splitlines()[-1])
    assert event["event"] == "http_listen_failed" and event["port"] == port


def test_bad_listen_flag() -> None:
    proc = collector("--config", "configs/sites.yaml", "--listen", "nowhere")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "--listen: expected HOST:PORT" in err


def test_sigterm_stops_cleanly() -> None:
    proc = collector("--config", "configs/sites.yaml", "--listen", "127.0.0.1:0", "--log-format", "json")
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    line = ""
    while time.monotonic() < deadline and "collector_started" not in line:
        line = proc.stderr.readline()  # bounded: the process logs this line at start or exits (EOF)
        if not line and proc.poll() is not None:
            break
    assert "collector_started" in line, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "collector_stopping" in err and "Traceback" not in err


def _started_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    for _ in range(50):  # the first lines a starting collector logs; bounded
        line = proc.stderr.readline()
        if not line:
            break
        if '"collector_started"' in line:
            return str(json.loads(line)["url"])
    raise AssertionError(f"collector did not start (exit {proc.poll()})")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def _healthy(url: str) -> bool | None:
    """True once /healthz answers 200; None while it says 503 (no cycle finished yet)."""
    try:
        _get(url + "/healthz")
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            return None
        raise
    return True


SITES = """
fleet: {name: f, allocation_mw: 100}
sites:
  - id: a
    allocation_mw: %s
    agents: [http://127.0.0.1:9]
poll: {interval_s: 0.5, timeout_s: 0.4}
listen: {address: 127.0.0.1, port: 0}
"""


def test_sighup_reloads_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(SITES % 10)
    proc = collector("--config", str(path), "--log-format", "json")
    try:
        url = _started_url(proc)

        def allocation() -> float:
            return float(json.loads(_get(url + "/api/v1/sites"))["sites"][0]["allocation_w"])

        wait_for(lambda: allocation() if _healthy(url) else None, 10, "the first cycle")
        assert allocation() == 10e6
        path.write_text(SITES % 12)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: True if allocation() == 12e6 else None, 10, "the new allocation")

        path.write_text(SITES % "12MW")  # a bad edit: the running config stays
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: True if "megawatch_collector_config_last_reload_successful 0.0" in _get(url + "/metrics")
                  else None, 10, "the failed reload to show")
        assert allocation() == 12e6 and proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    failed = next(e for e in events if e["event"] == "config_reload_failed")
    assert failed["problems"] == [f"{path}:5: sites[0].allocation_mw: expected a number > 0, got '12MW'"]
