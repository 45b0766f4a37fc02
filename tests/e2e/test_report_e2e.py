"""`megawatch report` against a real Prometheus scraping the collector, over a window of recorded data.

Simulator + agents + collector (state file, production settings) + Prometheus at a 1 s scrape: the collector
is restarted mid-window on the same port and state file; the report over the window must give exactly the
collector's own counter values as scraped at the window's edges (energy, allocation energy, over, unknown,
hashes, expected BTC), no reset and no unknown time across the restart, and energy that matches the average
judged draw over the window. The HTML report renders in headless Chromium with nothing loaded from elsewhere;
its screenshot goes to tests/artifacts/report/ (git-ignored).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e import processes
from tests.e2e.processes import (
    ROOT,
    Proc,
    Procs,
    agent_yaml,
    free_port,
    get_json,
    listening_url,
    megawatch,
    prometheus_yml,
    sites_yaml,
    start_agent,
    start_alertmanager,
    start_prometheus,
    wait_until,
)
from tests.e2e.test_status_page_e2e import chromium

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
procs = processes.procs
http = processes.http

ARTIFACTS = ROOT / "tests" / "artifacts" / "report"
DIFFICULTY, REWARD = 1e14, 3.125 + 0.25
COUNTERS = {"energy_mwh": ("energy_joules", 3.6e9), "allocated_mwh": ("allocation_energy_joules", 3.6e9),
            "over_mwh": ("energy_over_allocation_joules", 3.6e9), "over_s": ("over_allocation_seconds", 1.0),
            "unknown_mwh": ("energy_unknown_joules", 3.6e9), "unknown_s": ("energy_unknown_seconds", 1.0),
            "expected_btc": ("expected_btc", 1.0)}


async def _query(http: aiohttp.ClientSession, prom: Proc, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
    async with http.post(prom.url + "/api/v1/query", data=params) as resp:
        body = await resp.json(content_type=None)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def _scrapes(http: aiohttp.ClientSession, prom: Proc, site: str) -> list[tuple[float, float]]:
    rows = await _query(http, prom, f'megawatch_site_energy_joules_total{{site="{site}"}}[10m]')
    return [(float(t), float(v)) for t, v in rows[0]["values"]] if rows else []


async def _start_collector(procs: Procs, config: Path, port: int, http: aiohttp.ClientSession) -> Proc:
    proc = megawatch(procs, f"collector-{len(procs.started)}", "collector", "--config", str(config),
                     "--log-format", "json")
    proc.url = await listening_url(proc, "collector_started")
    assert proc.url.endswith(f":{port}"), proc.url

    async def healthy() -> bool:
        async with http.get(proc.url + "/healthz") as resp:
            return resp.status == 200

    await wait_until(healthy, 10, "collector /healthz")
    return proc


def _report(prom: Proc, start: float, end: float, fmt: str, out: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "megawatch.cli", "report", "--prometheus", prom.url,
                           "--from", f"{start:.3f}", "--to", f"{end:.3f}", "--format", fmt, "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


async def test_report_gives_the_collectors_counters_across_a_restart(procs: Procs, http: aiohttp.ClientSession,
                                                                      make_sim_fleet: Any) -> None:
    sim = await make_sim_fleet(frozen=False, tick_s=1.0, per_group=1)  # 2 sites x 8 profiles = 16 miners
    agents = {}
    for site in ("site-a", "site-b"):
        mine = [m for m in sim.miners if m.site == site]
        agents[site] = await start_agent(procs, agent_yaml(procs.tmp / f"{site}.yaml", site, mine), http)
    draw = {}
    for site, agent in agents.items():
        totals = (await get_json(http, agent.url + "/api/v1/summary"))["totals"]
        draw[site] = totals["power_w"]["firmware"] + totals["power_w"]["estimate"]
    # Site A is allocated 80 % of its draw (over all the time), site B twice its draw.
    allocation_mw = {"site-a": draw["site-a"] * 0.8 / 1e6, "site-b": draw["site-b"] * 2 / 1e6}
    am = await start_alertmanager(procs, http)
    port = free_port()
    config = sites_yaml(procs.tmp / "sites.yaml", {s: [p.url] for s, p in agents.items()}, allocation_mw, am.url)
    text = config.read_text().replace("port: 0}", f"port: {port}}}").replace("stale_after_s: 3", "stale_after_s: 10")
    config.write_text(text + f"state_file: {procs.tmp / 'state.json'}\n")  # production: as sites_yaml sets it
    collector = await _start_collector(procs, config, port, http)
    rules = procs.tmp / "rules"
    rules.mkdir()
    shipped = (ROOT / "configs" / "prometheus" / "rules" / "megawatch.rules.yml").read_text()
    (rules / "megawatch.rules.yml").write_text(shipped.replace("interval: 15s", "interval: 1s"))
    prom = await start_prometheus(procs, http, prometheus_yml(agents, collector))

    async def scraped(n: int) -> list[tuple[float, float]] | None:
        got = await _scrapes(http, prom, "site-a")
        return got if len(got) >= n else None

    before = await wait_until(lambda: scraped(15), 40, "15 scrapes of the collector's energy counters")
    collector.stop()  # SIGTERM; the same port and state file next
    collector = await _start_collector(procs, config, port, http)
    await wait_until(lambda: scraped(len(before) + 15), 40, "15 more scrapes after the restart")
    points = await _scrapes(http, prom, "site-a")
    start, end = points[1][0], points[-1][0]
    assert start < before[-1][0] < end  # the restart is inside the window

    _report(prom, start, end, "json", procs.tmp / "report.json")
    doc = json.loads((procs.tmp / "report.json").read_text())
    rows = {(r["scope"], r["name"]): r for r in doc["rows"]}
    assert set(rows) == {("site", "site-a"), ("site", "site-b"), ("fleet", "e2e")}
    for (scope, name), row in rows.items():
        for field, (counter, scale) in COUNTERS.items():
            series = f'megawatch_{scope}_{counter}_total{{{scope}="{name}"}}'
            at_end = float((await _query(http, prom, series, end))[0]["value"][1])
            at_start = float((await _query(http, prom, series, start))[0]["value"][1])
            assert row[field] * scale == pytest.approx(at_end - at_start, rel=1e-9, abs=1e-12), (name, field)
        assert row["resets"] == 0 and row["data_from"] is None, row
        assert row["unknown_s"] == 0, row  # a restart shorter than the gap limit is counted, not unknown
        # Neither double counted nor dropped: the energy is the average judged draw over the window.
        avg = await _query(http, prom, f'avg_over_time(megawatch_{scope}_facility_power_watts{{{scope}="{name}"}}'
                                       f'[{round((end - start) * 1000)}ms])', end)
        assert row["energy_mwh"] * 3.6e9 / (end - start) == pytest.approx(float(avg[0]["value"][1]), rel=0.03)
    site_a, site_b = rows[("site", "site-a")], rows[("site", "site-b")]
    assert site_a["over_mwh"] > 0 and site_a["over_s"] == pytest.approx(end - start, rel=0.05)
    assert site_b["over_mwh"] == 0 and site_b["over_s"] == 0
    hashes = site_a["avg_hashrate_ths"] * 1e12 * (end - start)
    assert site_a["expected_btc"] == pytest.approx(hashes * REWARD / (DIFFICULTY * 2**32), rel=1e-9)

    # The recording rules: expected BTC per second from the hashrate and the collector's difficulty.
    rate = await _query(http, prom, 'site:megawatch_expected_btc_per_second:sum{site="site-a"}')
    hashrate = await _query(http, prom, 'site:megawatch_hashrate_hashes_per_second:sum{site="site-a"}')
    assert float(rate[0]["value"][1]) == pytest.approx(
        float(hashrate[0]["value"][1]) * REWARD / (DIFFICULTY * 2**32), rel=1e-9)
    for record in ("site:megawatch_joules_per_terahash:ratio", "site:megawatch_expected_btc_per_megawatt_hour:ratio",
                   "fleet:megawatch_expected_btc_per_second:sum", "site:megawatch_energy_joules:rate1h"):
        assert await _query(http, prom, record), f"{record}: no data"

    _report(prom, start, end, "csv", procs.tmp / "report.csv")
    assert (procs.tmp / "report.csv").read_text().splitlines()[0].startswith("period_start,period_end,scope,name")
    html = procs.tmp / "report.html"
    _report(prom, start, end, "html", html)
    async with chromium(procs.tmp / "chromium") as page:
        await page.open(html.as_uri())
        assert await page.js("return document.querySelectorAll('svg rect').length") >= 6
        assert await page.js("return document.title") == "Energy and production report"
        errors = await page.console_errors()
        assert not errors, errors
        urls, _ = await page.network()
        assert urls and all(u.startswith("file://") for u in urls), urls
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page_height = await page.js("return Math.min(4000, document.documentElement.scrollHeight)")
        await page.call(page.driver.set_window_size, 1280, max(600, int(page_height) + 120))
        await page.call(page.driver.save_screenshot, str(ARTIFACTS / "report.png"))
