"""Real processes for end-to-end tests: Alertmanager, Prometheus, megawatch subprocesses.

Not a conftest.py: tests/conftest.py is imported as the module `conftest` (`from conftest import ...`), and a
second conftest.py here would take that name. Test modules import the fixtures they use from here.

Each runs on a free loopback port with its own temp dir, is waited on with a bounded deadline (polling its
API, never a bare sleep) and is always torn down. A missing binary skips locally but fails under CI=true:
an e2e test that silently skips in CI proves nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs prometheus and prometheus-alertmanager)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(probe: Callable[[], Awaitable[T | None]], timeout_s: float, what: str,
                     every_s: float = 0.1) -> T:
    """Poll `probe` until it returns something other than None/False; fail naming `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            value = await probe()
            if value is not None and value is not False:
                return value
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}"
                                 + (f" (last error: {last_error!r})" if last_error else ""))
        await asyncio.sleep(every_s)


@dataclass
class Proc:
    """A started process whose output goes to a log file (shown when a test fails)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout_s)


class Procs:
    """Starts processes and stops them all, in reverse order, whatever happens."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Proc] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=ROOT, env={**os.environ, **(env or {})})
        proc = Proc(name, popen, log)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()

    def report(self) -> str:
        return "\n".join(f"--- {p.name} (exit {p.popen.poll()}) ---\n{p.output()}" for p in self.started)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    managed = Procs(tmp_path)
    try:
        yield managed
    finally:
        managed.stop_all()
        print(managed.report())  # captured: pytest shows it only when the test failed


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        if resp.status != 200:
            return None
        return await resp.json(content_type=None)


async def start_alertmanager(procs: Procs, http: aiohttp.ClientSession, port: int | None = None) -> Proc:
    """The real Alertmanager with the shipped config, clustering off, state in a temp dir."""
    binary = require_binary("prometheus-alertmanager")
    port = port or free_port()
    storage = procs.tmp / "alertmanager"
    storage.mkdir()
    proc = procs.start("alertmanager", [
        binary, f"--config.file={ROOT / 'configs' / 'prometheus' / 'alertmanager.yml'}",
        f"--storage.path={storage}", f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
        "--log.level=warn",
    ])
    return await _until_ready(proc, f"http://127.0.0.1:{port}", http, 15)


async def start_prometheus(procs: Procs, http: aiohttp.ClientSession, config: str) -> Proc:
    """The real Prometheus with `config` (rule_files relative to configs/prometheus), TSDB in a temp dir."""
    binary = require_binary("prometheus")
    port = free_port()
    config_path = procs.tmp / "prometheus.yml"
    config_path.write_text(config)
    rules = procs.tmp / "rules"
    if not rules.exists():
        shutil.copytree(ROOT / "configs" / "prometheus" / "rules", rules)
    proc = procs.start("prometheus", [
        binary, f"--config.file={config_path}", f"--storage.tsdb.path={procs.tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ])
    return await _until_ready(proc, f"http://127.0.0.1:{port}", http, 20)


async def _until_ready(proc: Proc, url: str, http: aiohttp.ClientSession, timeout_s: float) -> Proc:
    proc.url = url

    async def ready() -> bool:
        assert proc.alive(), f"{proc.name} exited:\n{proc.output()}"
        async with http.get(proc.url + "/-/ready") as resp:
            return resp.status == 200

    await wait_until(ready, timeout_s, f"{proc.name} /-/ready")
    return proc


def megawatch(procs: Procs, name: str, *args: str) -> Proc:
    return procs.start(name, [sys.executable, "-m", "megawatch.cli", *args], env={"PYTHONUNBUFFERED": "1"})


async def listening_url(proc: Proc, event: str, timeout_s: float = 15) -> str:
    """The URL a megawatch process logged in its `event` JSON line (it may have bound port 0)."""
    async def find() -> str | None:
        assert proc.alive(), f"{proc.name} exited:\n{proc.output()}"
        for line in proc.output().splitlines():
            if event in line and line.startswith("{"):
                doc = json.loads(line)
                if doc.get("event") == event and "url" in doc:
                    return str(doc["url"])
        return None

    return await wait_until(find, timeout_s, f"{proc.name} to log {event}")


async def alertmanager_alerts(http: aiohttp.ClientSession, am: Proc, alertname: str) -> list[dict[str, Any]]:
    """Active alerts of one name in Alertmanager's v2 API."""
    async with http.get(am.url + "/api/v2/alerts", params={"filter": f'alertname="{alertname}"'}) as resp:
        resp.raise_for_status()
        alerts: list[dict[str, Any]] = await resp.json()
    return [a for a in alerts if a.get("status", {}).get("state") == "active"]


async def start_prometheus_in(procs: Procs, http: aiohttp.ClientSession, name: str, config: str,
                              files: dict[str, str] | None = None) -> Proc:
    """Like start_prometheus, for several servers in one test: each gets `procs.tmp/name/` for its config,
    the `files` written beside it (rule files, by relative path) and its TSDB, and its own log."""
    binary = require_binary("prometheus")
    home = procs.tmp / name
    home.mkdir()
    for relative, text in (files or {}).items():
        (home / relative).parent.mkdir(parents=True, exist_ok=True)
        (home / relative).write_text(text)
    (home / "prometheus.yml").write_text(config)
    port = free_port()
    proc = procs.start(name, [
        binary, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ])
    return await _until_ready(proc, f"http://127.0.0.1:{port}", http, 20)



# The e2e configs' timings: short, so alerts fire and clear within a test.
POLL_S = 1.0
HOLD_S = 2.0
STALE_S = 3.0
AGENT_POLL_S = 1.0


# ---- Configs and processes shared by the e2e tests (collector, shards, federation, dashboards, faults) ----


def sites_yaml(path: Path, agents: dict[str, list[str]], allocation_mw: dict[str, float], am_url: str,
               pue: float = 1.0, shutdown_timeout_s: float | None = None) -> Path:
    lines = ["fleet: {name: e2e, allocation_mw: %g}" % (sum(allocation_mw.values()) + 1), "sites:"]
    for site, urls in agents.items():
        lines += [f"  - id: {site}", f"    allocation_mw: {allocation_mw[site]}", f"    pue: {pue}",
                  f"    agents: [{', '.join(urls)}]"]
    lines += [
        "thresholds:", f"  hold_s: {HOLD_S}", f"  stale_after_s: {STALE_S}",
        "alerting:", f"  alertmanager_urls: [{am_url}]", "  resend_interval_s: 2", "  retry_base_s: 0.1",
        "  retry_max_s: 0.5",
        *([f"  shutdown_timeout_s: {shutdown_timeout_s}"] if shutdown_timeout_s is not None else []),
        "listen: {address: 127.0.0.1, port: 0}",
        f"poll: {{interval_s: {POLL_S}, timeout_s: 0.8}}",
        # Expected BTC for the energy and production series (docs/energy.md): difficulty 1e14, 3.125 + 0.25 BTC.
        "production: {difficulty: 100000000000000, block_subsidy_btc: 3.125, fees_per_block_btc: 0.25}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_collector(procs: Procs, config: Path, http: aiohttp.ClientSession) -> Proc:
    proc = megawatch(procs, "collector", "collector", "--config", str(config), "--log-format", "json")
    proc.url = await listening_url(proc, "collector_started")

    async def healthy() -> bool:
        async with http.get(proc.url + "/healthz") as resp:
            return resp.status == 200

    await wait_until(healthy, 10, "collector /healthz")
    return proc


async def site_view(http: aiohttp.ClientSession, collector: Proc, site: str) -> dict[str, Any]:
    body = await get_json(http, collector.url + "/api/v1/sites")
    return next(s for s in body["sites"] if s["id"] == site)


def agent_yaml(path: Path, site: str, miners: list[Any], *, agent_id: str | None = None,
               interval_s: float = AGENT_POLL_S, connect_s: float = 0.5, request_s: float = 0.8,
               stale_grace_s: float = 2) -> Path:
    """An agent config for `miners` (simulated: host, port, dialect), short timings for tests."""
    lines = [f"site: {site}", f"agent_id: {agent_id or site + '-e2e'}", "miners:"]
    for m in miners:
        lines.append(f"  - {{address: {m.host}, port: {m.port}, dialect: {m.dialect}}}")
    lines += [
        "poll:", f"  interval_s: {interval_s}", f"  connect_timeout_s: {connect_s}",
        f"  request_timeout_s: {request_s}",
        "  jitter_s: 0", f"  stale_grace_s: {stale_grace_s}",
        "http: {listen: 127.0.0.1, port: 0}",
        "log: {format: json, level: info}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_agent(procs: Procs, config: Path, http: aiohttp.ClientSession) -> Proc:
    proc = megawatch(procs, f"agent-{config.stem}", "agent", "--config", str(config))

    async def started() -> str | None:
        assert proc.alive(), f"{proc.name} exited:\n{proc.output()}"
        for line in proc.output().splitlines():
            if '"agent_started"' in line:
                host, port = json.loads(line)["listen"][0]
                return f"http://{host}:{port}"
        return None

    proc.url = await wait_until(started, 15, f"{proc.name} to start")

    async def summary_ready() -> dict[str, Any] | None:
        body = await get_json(http, proc.url + "/api/v1/summary")
        return body if body and body["totals"]["power_w"] is not None else None

    await wait_until(summary_ready, 10, f"{proc.name}'s first poll cycle")
    return proc


def prometheus_yml(agents: dict[str, Proc], collector: Proc) -> str:
    targets = "\n".join(
        f"      - targets: ['{p.url.removeprefix('http://')}']\n        labels: {{site: {site}}}"
        for site, p in agents.items())
    return f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [rules/megawatch.rules.yml]
scrape_configs:
  - job_name: megawatch-agent
    static_configs:
{targets}
  - job_name: megawatch-collector
    static_configs:
      - targets: ['{collector.url.removeprefix('http://')}']
"""
