"""Every dashboard query against a real Prometheus scraping simulator-backed agents and the collector.

Grafana cannot run here, so the dashboards are proven the way Grafana would use them: each template
variable's label_values() query and each panel query (variables substituted with real values,
$__rate_interval fixed) goes to Prometheus's HTTP API, as a range query for graphs and an instant query for
tables; each must be accepted and return data. A failure names the dashboard, the panel and the query.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from tests.e2e import processes
from tests.e2e.processes import (
    ROOT,
    Proc,
    Procs,
    agent_yaml,
    get_json,
    prometheus_yml,
    sites_yaml,
    start_agent,
    start_alertmanager,
    start_collector,
    start_prometheus,
    wait_until,
)
from tests.grafana.catalogue import (
    Query,
    load_dashboards,
    panel_queries,
    parse_label_values,
    substitute,
    variable_queries,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
procs = processes.procs
http = processes.http

RATE_INTERVAL = "30s"  # $__rate_interval: >= 4 scrapes at the 1 s scrape interval used here
DATA_TIMEOUT_S = 40.0


async def _ask(http: aiohttp.ClientSession, prom: Proc, q: Query, expr: str) -> str | None:
    """None when Prometheus accepts `expr` and returns data; else why not."""
    now = time.time()
    if q.instant:
        path, params = "/api/v1/query", {"query": expr, "time": f"{now:.3f}"}
    else:
        path, params = "/api/v1/query_range", {"query": expr, "start": f"{now - 60:.3f}", "end": f"{now:.3f}",
                                               "step": "2"}
    async with http.post(prom.url + path, data=params) as resp:
        body = await resp.json(content_type=None)
    if body.get("status") != "success":
        return f"rejected: {body.get('errorType')}: {body.get('error')}"
    if not body["data"]["result"]:
        return "no data"
    return None


async def _label_values(http: aiohttp.ClientSession, prom: Proc, query: str) -> list[str]:
    selector, label = parse_label_values(query)
    query_string = "?" + urlencode({"match[]": selector}) if selector else ""
    body = await get_json(http, prom.url + f"/api/v1/label/{label}/values{query_string}")
    assert body is not None and body["status"] == "success", f"label_values rejected: {query}"
    return sorted(body["data"])


async def _failures(http: aiohttp.ClientSession, prom: Proc, queries: list[Query],
                    values: dict[str, str]) -> list[str]:
    out = []
    for q in queries:
        expr = substitute(q.expr, values)
        why = await _ask(http, prom, q, expr)
        if why is not None:
            out.append(f"{q.where()}: {why}\n    {expr}")
    return out


async def test_every_dashboard_query_returns_data(procs: Procs, http: aiohttp.ClientSession,
                                                  make_sim_fleet: Any) -> None:
    sim = await make_sim_fleet(frozen=False, tick_s=1.0, per_group=2)  # 2 sites x 8 profiles x 2 = 32 miners
    assert len(sim.miners) == 32
    # Trouble at site A for the worst-first miners table: one down, one hot, one hashing at half its model's rate.
    site_a = [m for m in sim.miners if m.site == "site-a"]
    trouble = {kind: next(m for m in site_a if m.dialect == dialect)
               for kind, dialect in (("offline", "cgminer"), ("overheat", "luxos"), ("hashrate_drop", "btminer"))}
    sim.set_fault([trouble["offline"]], "offline")
    sim.set_fault([trouble["overheat"]], "overheat")
    sim.set_fault([trouble["hashrate_drop"]], "hashrate_drop", drop=0.5)
    agents = {}
    for site in ("site-a", "site-b"):
        mine = [m for m in sim.miners if m.site == site]
        agents[site] = await start_agent(procs, agent_yaml(procs.tmp / f"{site}.yaml", site, mine), http)

    # Site A's allocation is half its draw, so alerts fire (ALERTS and the collector's alert series have data).
    draw = {}
    for site, agent in agents.items():
        totals = (await get_json(http, agent.url + "/api/v1/summary"))["totals"]
        draw[site] = totals["power_w"]["firmware"] + totals["power_w"]["estimate"]
    allocation_mw = {"site-a": draw["site-a"] * 0.5 / 1e6, "site-b": draw["site-b"] * 2 / 1e6}
    # A real Alertmanager: with none, the collector's shutdown waits to deliver the alert it holds.
    am = await start_alertmanager(procs, http)
    config = sites_yaml(procs.tmp / "sites.yaml", {s: [p.url] for s, p in agents.items()}, allocation_mw, am.url)
    collector = await start_collector(procs, config, http)

    # The shipped rules, evaluated every second and with their hold times cut to one second.
    rules = procs.tmp / "rules"
    rules.mkdir()
    text = (ROOT / "configs" / "prometheus" / "rules" / "megawatch.rules.yml").read_text()
    (rules / "megawatch.rules.yml").write_text(
        text.replace("interval: 15s", "interval: 1s").replace("for: 1m", "for: 1s").replace("for: 5m", "for: 1s"))
    prom = await start_prometheus(procs, http, prometheus_yml(agents, collector))

    dashboards = load_dashboards()
    started = time.monotonic()

    async def choose_values() -> dict[str, dict[str, str]] | None:
        """Variable values per dashboard, as Grafana would offer them (the first of each list)."""
        chosen: dict[str, dict[str, str]] = {}
        for name, d in dashboards.items():
            values = {"__rate_interval": RATE_INTERVAL, "__interval": "2s", "datasource": "prometheus"}
            for q in variable_queries(name, d):
                options = await _label_values(http, prom, substitute(q.expr, values))
                if not options:
                    return None
                values[q.ref] = options[0]
                if q.ref == "site":
                    assert options == ["site-a", "site-b"], f"{q.where()}: {options}"
                if q.ref == "miner":
                    values["__miners"] = ",".join(options)
            chosen[name] = values
        return chosen

    chosen = await wait_until(choose_values, DATA_TIMEOUT_S, "every template variable to list values")

    async def all_have_data() -> bool:
        return all([not await _failures(http, prom, panel_queries(n, d), chosen[n])
                    for n, d in dashboards.items() if n != "miner.json"])

    try:
        await wait_until(all_have_data, DATA_TIMEOUT_S - (time.monotonic() - started), "every panel to have data",
                         every_s=1.0)
    except AssertionError:
        pass  # report below, query by query
    failures = []
    for name, d in dashboards.items():
        if name == "miner.json":
            continue
        failures += await _failures(http, prom, panel_queries(name, d), chosen[name])

    # The miner dashboard: the first miner in the list whose every panel has data. Which series a miner has
    # depends on its firmware (only some report a power limit): for the others Grafana shows "No data" on
    # that one series, the truth; but one miner must light up every panel and every miner's queries must run.
    miner_queries = panel_queries("miner.json", dashboards["miner.json"])
    values = chosen["miner.json"]
    first_failures: list[str] | None = None
    lit = None
    for miner in values["__miners"].split(","):
        found = await _failures(http, prom, miner_queries, {**values, "miner": miner})
        assert not [f for f in found if "rejected" in f], found
        if not found:
            lit = miner
            break
        first_failures = first_failures if first_failures is not None else found
    if lit is None:
        failures += first_failures or ["miner.json: no miners"]
    assert not failures, "dashboard queries without data:\n" + "\n".join(failures)

    # The site's miners table puts them first, worst first: down, then hot, then low hashrate.
    [score] = [q for q in panel_queries("site.json", dashboards["site.json"])
               if q.panel.startswith("Miners (worst")][:1]
    body = await get_json(http, prom.url + "/api/v1/query?" + urlencode(
        {"query": substitute(score.expr, {**chosen["site.json"], "site": "site-a"})}))
    ranked = sorted(body["data"]["result"], key=lambda r: -float(r["value"][1]))
    worst = [(r["metric"]["miner"], float(r["value"][1])) for r in ranked]
    names = {kind: f"{m.host}:{m.port}" for kind, m in trouble.items()}
    assert [m for m, _ in worst[:3]] == [names["offline"], names["overheat"], names["hashrate_drop"]], worst[:5]
    assert worst[0][1] >= 1000 and 100 <= worst[1][1] < 1000 and 10 <= worst[2][1] < 100, worst[:4]
    assert all(v < 10 for _, v in worst[3:]), worst[3:]
    total = sum(len(panel_queries(n, d)) + len(variable_queries(n, d)) for n, d in dashboards.items())
    print(f"{total} dashboard queries answered with data ({time.monotonic() - started:.1f} s after Prometheus "
          f"started); miner dashboard lit by {lit}")
