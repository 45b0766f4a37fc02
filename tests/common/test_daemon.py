"""The shape agent and collector share (common/daemon.py), table-driven over both daemons.

The same flags, the same --check-config output, `log:` settings in the YAML with command-line overrides,
SIGHUP reload that is atomic and shows in megawatch_<daemon>_config_last_reload_successful, one log line and
exit 1 when the port is taken, and the same /healthz body.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from megawatch.cli import main, make_parser
from megawatch.common import daemon
from megawatch.common.daemon import Overrides, parse_listen

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass(frozen=True)
class Case:
    """One daemon: a config (with `{port}` and `{level}` to fill in), an edit that breaks it, and what its
    loader then says."""

    name: str
    config: str
    ok: str  # the --check-config line for `config`
    broken: tuple[str, str]  # replace this with that ...
    problem: str  # ... and this is the problem line, after "{path}:"
    listen_keys: tuple[str, str]
    # An edit that changes a setting made once at start (its key) and one that applies live (what to check).
    restart_edit: tuple[str, str, str]
    live_edit: tuple[str, str, Callable[[Any], object], object]


AGENT = Case(
    "agent",
    "site: t1\nagent_id: a1\nminers:\n  - range: 127.77.0.1-127.77.0.2\n    port: 9\n"
    "poll: {{interval_s: 1, request_timeout_s: 0.5, connect_timeout_s: 0.2, jitter_s: 0}}\n"
    "http: {{listen: 127.0.0.1, port: {port}}}\nlog: {{format: console, level: {level}}}\n",
    "ok: site t1, 2 miners\n",
    ("interval_s: 1,", "interval_s: fast,"),
    "6: poll.interval_s: expected a number >= 1, got 'fast'",
    ("http.listen", "http.port"),
    ("agent_id: a1", "agent_id: a2", "agent_id"),
    ("interval_s: 1,", "interval_s: 2,", lambda c: (c.agent_id, c.poll.interval_s), ("a1", 2.0)),
)
COLLECTOR = Case(
    "collector",
    "fleet: {{name: f, allocation_mw: 100}}\nsites:\n  - id: a\n    allocation_mw: 10\n"
    "    agents: [http://127.0.0.1:9]\npoll: {{interval_s: 0.5, timeout_s: 0.4}}\n"
    "listen: {{address: 127.0.0.1, port: {port}}}\nlog: {{format: console, level: {level}}}\n",
    "ok: fleet f, 1 sites, 1 agents\n",
    ("allocation_mw: 10\n", "allocation_mw: 10MW\n"),
    "4: sites[0].allocation_mw: expected a number > 0, got '10MW'",
    ("listen.address", "listen.port"),
    ("poll:", "alerting: {resend_interval_s: 30}\npoll:", "alerting"),
    ("allocation_mw: 10\n", "allocation_mw: 12\n", lambda c: (c.alerting.resend_interval_s, c.sites[0].allocation_w),
     (60.0, 12e6)),
)
CASES = [AGENT, COLLECTOR]
by_name = pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)


def write(path: Path, case: Case, port: int = 0, level: str = "info") -> Path:
    path.write_text(case.config.format(port=port, level=level))
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def _options(name: str) -> dict[str, tuple[Any, ...]]:
    sub = make_parser()._subparsers._group_actions[0].choices[name]  # type: ignore[union-attr]
    return {a.option_strings[-1]: (a.dest, a.metavar, tuple(a.choices or ()), a.required)
            for a in sub._actions if a.option_strings}


def test_both_daemons_take_the_same_flags() -> None:
    agent, collector = _options("agent"), _options("collector")
    assert agent == collector
    assert set(agent) == {"--help", "--config", "--check-config", "--listen", "--web.config.file", "--log-format",
                          "--log-level"}


@by_name
def test_check_config_ok_on_stdout(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "daemon.yaml", case)
    monkeypatch.chdir(tmp_path.parent)  # no default path that only resolves from the repo root
    assert cli(capsys, case.name, "--check-config", str(path)) == (0, case.ok, "")


@by_name
def test_check_config_problems_on_stderr_exit_2(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "daemon.yaml", case)
    path.write_text(path.read_text().replace(*case.broken) + "lgo: {level: info}\n")
    code, out, err = cli(capsys, case.name, "--check-config", str(path))
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"{path}:{case.problem}",
                                f"{path}:9: lgo: unknown key (did you mean 'log'?)"]


@by_name
def test_check_config_reports_the_config_and_the_web_config_together(
        case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "daemon.yaml", case)
    path.write_text(path.read_text().replace(*case.broken))
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config: {cert_file: nope.crt}\n")
    code, out, err = cli(capsys, case.name, "--check-config", str(path), "--web.config.file", str(web))
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"{path}:{case.problem}",
                                f"{web}:1: tls_server_config.key_file: required key is missing"]


@by_name
def test_a_config_is_required(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, case.name)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (f"megawatch {case.name}: error: "
                                    "one of the arguments --config --check-config is required")


@by_name
def test_log_settings_come_from_the_yaml_and_the_command_line_wins(case: Case, tmp_path: Path) -> None:
    program = daemon_program(case.name)
    settings = program.settings(program.load(str(write(tmp_path / "d.yaml", case, 9999, "warning"))))
    assert (settings.host, settings.port, settings.log_format, settings.log_level) == (
        "127.0.0.1", 9999, "console", "warning")
    overridden = Overrides(None, 0, None, "json", None).apply(settings)
    assert (overridden.host, overridden.port, overridden.log_format, overridden.log_level) == (
        "127.0.0.1", 0, "json", "warning")
    assert program.listen_keys == case.listen_keys


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9300", ("127.0.0.1", 9300)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    (":0", (None, 0)),
    ("[::1]:9300", ("::1", 9300)),
    ("localhost:65535", ("localhost", 65535)),
])
def test_listen_forms(text: str, expected: tuple[str | None, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["nowhere", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536",
                                  "::1:9300", "127.0.0.1:-1"])
def test_listen_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected HOST:PORT"):
        parse_listen(text)


class Recorder(daemon.Daemon[Any]):
    def __init__(self) -> None:
        super().__init__(web.Application())
        self.applied: list[Any] = []

    def apply(self, config: Any) -> None:
        self.applied.append(config)


@by_name
async def test_reload_applies_live_settings_and_keeps_what_needs_a_restart(case: Case, tmp_path: Path) -> None:
    program = daemon_program(case.name)
    path = write(tmp_path / "d.yaml", case)
    running = Recorder()
    status = daemon.ReloadStatus()
    reloader = daemon.Reloader(program, program.load(str(path)), Overrides(), status, running, clock=lambda: 123.0)
    old, new, key = case.restart_edit
    before, after, view, expected = case.live_edit
    path.write_text(path.read_text().replace(old, new).replace(before, after))
    with capture_logs() as logs:
        assert await reloader.reload()
    [applied] = running.applied
    assert view(applied) == expected and reloader.current is applied
    assert (status.successful, status.at_s) == (True, 123.0)
    assert [(e["event"], e["needs_restart"]) for e in logs] == [("config_reloaded", [key])]

    write(path, case).write_text(path.read_text().replace(*case.broken))
    with capture_logs() as logs:
        assert not await reloader.reload()
    assert running.applied == [applied] and reloader.current is applied and not status.successful
    assert [(e["event"], e["problems"]) for e in logs] == [("config_reload_failed", [f"{path}:{case.problem}"])]


def daemon_program(name: str) -> Any:
    if name == "agent":
        from megawatch.agent.__main__ import PROGRAM
    else:
        from megawatch.collector.__main__ import PROGRAM
    return PROGRAM


@contextmanager
def taken_port() -> Iterator[int]:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield int(busy.getsockname()[1])


@by_name
async def test_port_in_use_is_one_log_line_and_exit_1(case: Case, tmp_path: Path) -> None:
    program = daemon_program(case.name)
    with taken_port() as port:
        config = program.load(str(write(tmp_path / "d.yaml", case, port)))
        with capture_logs() as logs:
            code = await daemon.serve(program, config)
    assert code == 1
    assert [(e["event"], e.get("port"), e.get("daemon")) for e in logs] == [("http_listen_failed", port, case.name)]


@pytest.mark.parametrize("flags", [(), ("--log-format", "json")], ids=["yaml-console", "flag-json"])
@by_name
def test_port_in_use_through_the_cli(case: Case, flags: tuple[str, ...], tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", case)
    with taken_port() as port:
        proc = subprocess.run([sys.executable, "-m", "megawatch.cli", case.name, "--config", str(path),
                               "--listen", f":{port}", *flags], capture_output=True, text=True, timeout=60,
                              check=False, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    if flags:
        event = json.loads(line)
        assert (event["event"], event["listen"], event["port"]) == ("http_listen_failed", "127.0.0.1", port)
    else:  # the YAML's log.format: console
        assert not line.startswith("{") and "http_listen_failed" in line and str(port) in line


# ---- SIGHUP, /healthz and SIGTERM through the real process -------------------------------------------------

def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.05)  # polling interval of a bounded wait, not synchronisation
    raise AssertionError(f"timed out waiting for {what}")


class Running:
    """A daemon started with JSON logs to a file; its events read back as they come."""

    def __init__(self, case: Case, path: Path, log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "megawatch.cli", case.name, "--config", str(path),
                                          "--listen", "127.0.0.1:0", "--log-format", "json"],
                                         stdout=subprocess.DEVNULL, stderr=out, cwd=path.parent)
        started = wait_for(lambda: self.event(f"{case.name}_started"), 20, f"{case.name}_started")
        self.url = str(started["url"])

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def event(self, name: str, nth: int = 0) -> dict[str, Any] | None:
        assert self.proc.poll() is None, self.log.read_text()
        found = [e for e in self.events() if e["event"] == name]
        return found[nth] if len(found) > nth else None

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except urllib.error.URLError as exc:
            raise AssertionError(f"GET {path}: {exc} (exit {self.proc.poll()}):\n{self.log.read_text()}") from None

    def healthy(self) -> str | None:
        status, body = self.get("/healthz")
        return body if status == 200 else None

    def reload_gauges(self, name: str) -> tuple[float | None, float | None]:
        samples = {s.name: s.value for f in text_string_to_metric_families(self.get("/metrics")[1])
                   for s in f.samples}
        return (samples.get(f"megawatch_{name}_config_last_reload_successful"),
                samples.get(f"megawatch_{name}_config_last_reload_timestamp_seconds"))


@pytest.mark.slow
@by_name
def test_sighup_reload_sets_the_gauge_and_keeps_the_running_config(case: Case, tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", case)
    running = Running(case, path, tmp_path / "daemon.log")
    try:
        health = json.loads(wait_for(running.healthy, 10, "/healthz 200"))
        assert set(health) == {"status", "cycle", "last_cycle_age_s", "poll_interval_s", "stall_limit_s", "problem"}
        assert (health["status"], health["problem"]) == ("ok", None)
        assert running.reload_gauges(case.name) == (1.0, None)  # none tried yet

        # A good edit; the port and the log level change too: the flag keeps the port, the level needs a restart.
        before = time.time()
        write(path, case, port=1, level="debug")
        running.proc.send_signal(signal.SIGHUP)
        reloaded = wait_for(lambda: running.event("config_reloaded"), 10, "config_reloaded")
        assert reloaded["path"] == str(path) and reloaded["needs_restart"] == ["log.level"]
        ok, at = running.reload_gauges(case.name)
        assert ok == 1.0 and at is not None and at >= before - 1

        path.write_text(path.read_text().replace(*case.broken))
        running.proc.send_signal(signal.SIGHUP)
        failed = wait_for(lambda: running.event("config_reload_failed"), 10, "config_reload_failed")
        assert failed["problems"] == [f"{path}:{case.problem}"]
        assert running.reload_gauges(case.name)[0] == 0.0
        assert running.get("/healthz")[0] == 200  # the running config goes on

        write(path, case)  # fixed again: the gauge says so
        running.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: running.event("config_reloaded", 1), 10, "the second config_reloaded")
        assert running.reload_gauges(case.name)[0] == 1.0

        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=15) == 0
        events = [e["event"] for e in running.events()]
        assert events.index(f"{case.name}_stopping") < events.index(f"{case.name}_stopped") == len(events) - 1
        assert "Traceback" not in running.log.read_text()
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(timeout=5)

