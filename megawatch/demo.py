"""Run the whole system on loopback and print where to look (`make demo`).

Simulated power-plant sites (configs/sim/demo.yaml, one process), an agent per site (each its own process),
the collector (configs/national/sites-demo.yaml, the 1:50 twin of configs/national/sites.yaml), and
Prometheus and Alertmanager when they are installed. After --drift-after seconds one site's load creeps
over its allocation through the simulator's control endpoint, so an alert can be seen firing. Ctrl-C (or
SIGTERM) stops every process the demo started. Configs, logs and data go to a temp dir, removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from megawatch.common.configfile import ConfigError, ConfigProblem
from megawatch.demoplan import (
    CONFIGS,
    CONTROL_USER,
    PORTS,
    ROOT,
    SCALES,
    DemoError,
    make_plan,
    pick_port,
    prometheus_config,
)

OVER_BY = 1.06  # the drifting site ends at 106% of its allocation: past the 2% hysteresis


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", choices=sorted(SCALES), default="full",
                        help="full: 10,000 miners over five sites; small: 1/40 of that (default: %(default)s)")
    parser.add_argument("--sim-config", metavar="FILE", default=str(CONFIGS / "sim" / "demo.yaml"),
                        help="simulated fleet (default: configs/sim/demo.yaml)")
    parser.add_argument("--sites-config", metavar="FILE", default=str(CONFIGS / "national" / "sites-demo.yaml"),
                        help="sites and allocations (default: configs/national/sites-demo.yaml)")
    parser.add_argument("--agent-config", metavar="FILE", default=str(CONFIGS / "agent-demo.yaml"),
                        help="agent settings used at every site (default: configs/agent-demo.yaml)")
    parser.add_argument("--drift-site", metavar="SITE", default="wind-west", help="site that drifts over")
    parser.add_argument("--drift-after", type=float, default=60.0, metavar="S",
                        help="seconds after start-up before the drift begins (default: %(default)s)")
    parser.add_argument("--drift-ramp", type=float, default=20.0, metavar="S",
                        # argparse %-formats help strings: the percent sign must be doubled.
                        help=f"seconds the drift takes to reach {OVER_BY * 100:.0f}%% of the allocation "
                             "(default: %(default)s)")
    parser.add_argument("--curtail-mode", choices=("auto", "plan"), default="auto",
                        help="curtailment mode of the drifting site: auto brings it back under; plan only shows the "
                             "plan, so it stays over and SiteOverAllocation fires (default: %(default)s)")
    parser.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus or Alertmanager")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, data) at exit")


def run(args: argparse.Namespace) -> int:
    try:
        check_configs(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    try:
        return asyncio.run(Demo(args).main())
    except DemoError as exc:
        print(f"megawatch demo: {exc}", file=sys.stderr)
        return 1


def check_configs(args: argparse.Namespace) -> None:
    """Validate the three files with their own loaders first: a bad one is reported as file:line, not a crash."""
    from megawatch.agent.config import load_agent_config
    from megawatch.collector.config import load_collector_config
    from megawatch.simulator.config import load_fleet_config

    problems: list[ConfigProblem] = []
    for load, path in ((load_fleet_config, args.sim_config), (load_collector_config, args.sites_config),
                       (load_agent_config, args.agent_config)):
        try:
            load(path)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    sites = [s.id for s in load_fleet_config(args.sim_config).sites]
    if args.drift_site not in sites:
        raise ConfigError([ConfigProblem(args.sim_config, None, "--drift-site",
                                         f"{args.drift_site!r} is not a site here (known: {', '.join(sites)})")])



class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while the demo was still starting up."""


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str
    headers: dict[str, str] | None = None  # basic auth, for the agent that takes commands


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children: list[Child] = []
        self.stop = asyncio.Event()
        self.started = time.monotonic()

    async def main(self) -> int:
        workdir = Path(tempfile.mkdtemp(prefix="megawatch-demo-"))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                self.http = http
                return await self._run(workdir)
        finally:
            self._stop_children()
            if self.args.keep:
                print(f"configs, logs and data kept in {workdir}", flush=True)
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    def _start(self, name: str, argv: list[str], workdir: Path, url: str) -> Child:
        log = workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        child = Child(name, popen, log, url)
        self.children.append(child)
        print(f"  started {name} (pid {popen.pid})", flush=True)
        return child

    def _megawatch(self, name: str, workdir: Path, url: str, *args: str) -> Child:
        return self._start(name, [sys.executable, "-m", "megawatch.cli", *args], workdir, url)

    async def _ready(self, child: Child, path: str, timeout_s: float, check: Any = None) -> Any:
        """Poll `child.url + path` until it answers 200 (and `check(body)` holds), or fail naming the child."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.stop.is_set():
                raise Interrupted
            if child.popen.poll() is not None:
                tail = child.log.read_text(errors="replace")[-1500:]
                raise DemoError(f"{child.name} exited with code {child.popen.returncode}:\n{tail}")
            try:
                async with self.http.get(child.url + path, headers=child.headers) as resp:
                    if resp.status == 200:
                        body = await resp.json(content_type=None) if check else None
                        if check is None or check(body):
                            return body
            except (TimeoutError, OSError, ValueError, aiohttp.ClientError):
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"{child.name} not ready at {child.url}{path} after {timeout_s:g} s "
                                f"(log: {child.log})")
            try:
                await asyncio.wait_for(self.stop.wait(), 0.25)
            except TimeoutError:
                pass

    async def _run(self, workdir: Path) -> int:
        args = self.args
        am_bin = None if args.no_prometheus else (shutil.which("prometheus-alertmanager")
                                                  or shutil.which("alertmanager"))
        prom_bin = None if args.no_prometheus else shutil.which("prometheus")
        am_port = pick_port(PORTS["alertmanager"]) if am_bin else None
        am_url = f"http://127.0.0.1:{am_port}" if am_port else None
        plan = make_plan(args, workdir, am_url)
        miners = sum(sum(g["count"] for g in s["groups"]) for s in plan.sites)
        print(f"megawatch demo: {len(plan.sites)} sites, {miners:,} simulated miners (work dir {workdir})",
              flush=True)
        try:
            sim = self._megawatch("simulator", workdir, f"http://127.0.0.1:{plan.control_port}", "simulate",
                                  "--config", str(plan.sim), "--log-format", "json")
            await self._ready(sim, "/api/v1/truth", 120)
            agents = [self._megawatch(f"agent-{site}", workdir, f"http://127.0.0.1:{port}", "agent",
                                      "--config", str(path)) for site, (path, port) in plan.agents.items()]
            if plan.password_file is not None and plan.control_site is not None:
                password = plan.password_file.read_text().strip()
                auth = {"Authorization": aiohttp.BasicAuth(CONTROL_USER, password).encode()}
                for agent in agents:
                    if agent.name == f"agent-{plan.control_site}":
                        agent.headers = auth
            waits = [self._ready(a, "/api/v1/summary", 120, lambda b: b["cycle"]["number"] > 0) for a in agents]
            am = None
            if am_bin and am_port:  # starts while the agents run their first cycle
                (workdir / "alertmanager").mkdir()
                am = self._start("alertmanager", [
                    am_bin, f"--config.file={CONFIGS / 'prometheus' / 'alertmanager.yml'}",
                    f"--storage.path={workdir / 'alertmanager'}", f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=", "--log.level=warn"], workdir, f"http://127.0.0.1:{am_port}")
                waits.append(self._ready(am, "/-/ready", 30))
            await asyncio.gather(*waits)
            collector = self._megawatch("collector", workdir, f"http://127.0.0.1:{plan.collector_port}",
                                        "collector", "--config", str(plan.sites_config), "--log-format", "json")
            every_site = {s["id"] for s in plan.sites}
            waits = [self._ready(collector, "/api/v1/sites", 60, lambda b: {
                s["id"] for s in b.get("sites", []) if s.get("status") != "no_data"} == every_site)]
            prom = None
            if prom_bin:
                port = pick_port(PORTS["prometheus"])
                config = workdir / "prometheus.yml"
                config.write_text(prometheus_config(plan, f"127.0.0.1:{am_port}" if am_port else None,
                                                    15 if args.scale == "full" else 5))
                prom = self._start("prometheus", [
                    prom_bin, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'prometheus'}",
                    f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], workdir,
                    f"http://127.0.0.1:{port}")
                waits.append(self._ready(prom, "/-/ready", 30))
            await asyncio.gather(*waits)
        except Interrupted:
            print("megawatch demo: interrupted during start-up; stopping", flush=True)
            return 130
        self._banner(sim, agents, collector, prom, am)
        return await self._watch(sim, collector)

    def _banner(self, sim: Child, agents: list[Child], collector: Child, prom: Child | None,
                am: Child | None) -> None:
        lines = ["", f"megawatch demo is running. Status page: {collector.url}/", "Also open:",
                 f"  collector   {collector.url}/api/v1/sites   (alerts: /api/v1/alerts, metrics: /metrics)"]
        lines += [f"  agent       {a.url}/metrics   ({a.name.removeprefix('agent-')})" for a in agents]
        lines.append(f"  simulator   {sim.url}/api/v1/truth   (ground truth)")
        if prom:
            lines.append(f"  prometheus  {prom.url}/alerts   (graph: {prom.url}/graph)")
        else:
            why = "--no-prometheus" if self.args.no_prometheus else "not installed"
            lines.append(f"  prometheus  not started ({why}): the collector alone totals and alerts")
        if am:
            lines.append(f"  alertmanager {am.url}/#/alerts")
        lines += [
            "",
            "Grafana: copy grafana/provisioning/datasources/megawatch.yaml and grafana/provisioning/dashboards/",
            "  megawatch.yaml into Grafana's provisioning dir, set the datasource url to "
            f"{prom.url if prom else '<prometheus>'}",
            f"  and the provider's path to {ROOT / 'grafana' / 'dashboards'}; restart Grafana and open the",
            "  'megawatch / Fleet overview' dashboard.",
            "",
            f"In {self.args.drift_after:g} s site {self.args.drift_site} drifts over its allocation. "
            + ("It is in curtailment mode auto:\nthe collector stops miners through its agent until it is back "
               "under" if self.args.curtail_mode == "auto" else "It is in curtailment mode plan:\nthe plan is "
               "shown, nothing is sent, and the alert fires after the hold"),
            f"(see {collector.url}/api/v1/curtailment); every other site is in mode plan (shown, never sent).",
            "To try mode approve, see docs/curtailment.md. Ctrl-C stops everything.",
            f"megawatch demo: ready ({time.monotonic() - self.started:.0f} s to start)",
        ]
        print("\n".join(lines), flush=True)

    async def _watch(self, sim: Child, collector: Child) -> int:
        drift_at = time.monotonic() + self.args.drift_after
        steps: list[float] | None = None
        seen: set[tuple[str, str]] = set()
        curtailed: dict[str, int] = {}
        next_alert_check = 0.0
        while not self.stop.is_set():
            for child in self.children:
                if child.popen.poll() is not None:
                    print(f"megawatch demo: {child.name} exited with code {child.popen.returncode} "
                          f"(log: {child.log}); stopping", file=sys.stderr, flush=True)
                    return 1
            now = time.monotonic()
            if steps is None and now >= drift_at:
                steps = await self._drift_plan(collector)
            if steps and now >= drift_at:
                factor = steps.pop(0)
                await self._set_load(sim, factor)
                drift_at = now + self.args.drift_ramp / max(1, len(steps) + 1)
            if now >= next_alert_check:
                next_alert_check = now + 5
                await self._print_new_alerts(collector, seen)
                await self._print_curtailment(collector, curtailed)
            try:
                await asyncio.wait_for(self.stop.wait(), 0.5)
            except TimeoutError:
                pass
        print("\nmegawatch demo: stopping", flush=True)
        return 0

    async def _drift_plan(self, collector: Child) -> list[float]:
        """Load factors that take the drift site from now to OVER_BY x its allocation, in a few steps."""
        site = self.args.drift_site
        async with self.http.get(collector.url + "/api/v1/sites") as resp:
            body = await resp.json(content_type=None)
        view = next((s for s in body.get("sites", []) if s["id"] == site), None)
        miner_w = None if view is None else (view.get("power_firmware_w") or 0) + (view.get("power_estimate_w") or 0)
        if view is None or not miner_w or not view.get("allocation_w"):
            print(f"megawatch demo: no draw known for site {site!r}; no drift", flush=True)
            return []
        target = (OVER_BY * view["allocation_w"] - view["aux_w"]) / view["pue"] / miner_w
        n = max(1, math.ceil(self.args.drift_ramp / 5))
        print(f"megawatch demo: site {site} drifts from {view['facility_power_w'] / 1e6:.2f} MW toward "
              f"{OVER_BY * view['allocation_w'] / 1e6:.2f} MW (allocation {view['allocation_w'] / 1e6:.2f} MW)",
              flush=True)
        return [1 + (target - 1) * (i + 1) / n for i in range(n)]

    async def _set_load(self, sim: Child, factor: float) -> None:
        url = f"{sim.url}/api/v1/sites/{self.args.drift_site}/load"
        async with self.http.post(url, json={"factor": round(factor, 4)}) as resp:
            if resp.status != 200:
                print(f"megawatch demo: {url} answered {resp.status}: {await resp.text()}", flush=True)
                return
        print(f"megawatch demo: site {self.args.drift_site} load x{factor:.3f}", flush=True)

    async def _print_new_alerts(self, collector: Child, seen: set[tuple[str, str]]) -> None:
        try:
            async with self.http.get(collector.url + "/api/v1/alerts") as resp:
                body = await resp.json(content_type=None)
        except (TimeoutError, OSError, ValueError, aiohttp.ClientError):
            return
        for alert in body.get("active", []):
            key = (alert["alertname"], alert["labels"].get("site", ""))
            if alert["state"] == "firing" and key not in seen:
                seen.add(key)
                print(f"ALERT firing: {alert['alertname']} {alert['summary']}", flush=True)

    async def _print_curtailment(self, collector: Child, last: dict[str, int]) -> None:
        """One line whenever the number of miners curtailed at a site changes."""
        try:
            async with self.http.get(collector.url + "/api/v1/curtailment") as resp:
                body = await resp.json(content_type=None)
        except (TimeoutError, OSError, ValueError, aiohttp.ClientError):
            return
        for site in body.get("sites", []):
            count = len(site.get("curtailed", []))
            if count != last.get(site["site"], 0):
                last[site["site"]] = count
                kw = sum(c["power_w"] for c in site["curtailed"]) / 1e3
                print(f"megawatch demo: site {site['site']} ({site['mode']}): {count} miner(s) curtailed, "
                      f"{kw:.0f} kW", flush=True)

    def _stop_children(self) -> None:
        """SIGTERM in reverse start order, SIGKILL after 10 s: nothing the demo started outlives it."""
        for child in reversed(self.children):
            if child.popen.poll() is None:
                child.popen.terminate()
        deadline = time.monotonic() + 10
        for child in reversed(self.children):
            try:
                child.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"megawatch demo: {child.name} did not stop in 10 s; killing it", file=sys.stderr)
                child.popen.kill()
                child.popen.wait()
        if self.children:
            print(f"megawatch demo: stopped {len(self.children)} process{'es' if len(self.children) > 1 else ''}",
                  flush=True)
