"""`megawatch collector` as people run it: --help, a taken port, SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    assert event["event"] == "listen_failed" and event["port"] == port


def test_bad_listen_flag() -> None:
    proc = collector("--config", "configs/sites.yaml", "--listen", "nowhere")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "--listen: expected HOST:PORT" in err


def test_sigterm_stops_cleanly() -> None:
    proc = collector("--config", "configs/sites.yaml", "--listen", "127.0.0.1:0", "--log-format", "json")
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    line = ""
    while time.monotonic() < deadline and "collector_listening" not in line:
        line = proc.stderr.readline()  # bounded: the process logs this line at start or exits (EOF)
        if not line and proc.poll() is not None:
            break
    assert "collector_listening" in line, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "collector_stopping" in err and "Traceback" not in err
