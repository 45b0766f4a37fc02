"""The dashboards as files: built from grafana/build.py, well-formed for Grafana, querying only real metrics."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.grafana.catalogue import (
    DASHBOARDS,
    ROOT,
    known_series,
    load_dashboards,
    metric_names,
    panel_queries,
    panels,
    parse_label_values,
    variable_queries,
)

DS = {"type": "prometheus", "uid": "${datasource}"}
# Grafana unit ids the dashboards may use (Grafana's valueFormats; a typo would show raw numbers).
UNITS = {"watt", "Hs", "percentunit", "none", "s", "celsius", "rotrpm", "cpm", "ops",
         "watth"}  # watth: Grafana's watt-hour, shown as kWh, MWh, GWh as the value grows
DASHBOARD_FILES = ("fleet.json", "miner.json", "site.json")


def _build() -> Any:
    spec = importlib.util.spec_from_file_location("grafana_build", ROOT / "grafana" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return load_dashboards()


@pytest.fixture(scope="module")
def series() -> set[str]:
    return known_series()


def test_the_committed_json_is_what_build_py_writes() -> None:
    build = _build()
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(build.DASHBOARDS) == list(DASHBOARD_FILES)
    for name, make in build.DASHBOARDS.items():
        assert (DASHBOARDS / name).read_text() == build.render(make), \
            f"grafana/dashboards/{name} is out of date: run `python grafana/build.py`"


def test_dashboard_basics(dashboards: dict[str, dict[str, Any]]) -> None:
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    for name, d in dashboards.items():
        assert 36 <= d["schemaVersion"] <= 41, name
        assert d["tags"] == ["megawatch"], name
        ds_vars = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
        assert [(v["name"], v["query"]) for v in ds_vars] == [("datasource", "prometheus")], name


def test_panel_ids_are_unique_and_positions_do_not_overlap(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        cells: dict[tuple[int, int], str] = {}
        for p in panels(d):
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{name}: {p['title']!r} is wider than the grid"
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: {p['title']!r} overlaps {cells[(x, y)]!r}"
                    cells[(x, y)] = p["title"]


def test_every_query_goes_through_the_datasource_variable(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        for p in panels(d):
            if p["type"] == "row":
                continue
            assert p["datasource"] == DS, f"{name}: {p['title']!r} datasource {p['datasource']}"
            assert p["targets"], f"{name}: {p['title']!r} has no query"
            for t in p["targets"]:
                assert t["datasource"] == DS, f"{name}: {p['title']!r} {t['refId']} datasource {t['datasource']}"
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"] == DS, f"{name}: variable {v['name']}"
    # No hard-wired datasource anywhere in the files (an export from a Grafana would carry its uid).
    for path in DASHBOARDS.glob("*.json"):
        uids = set(re.findall(r'"uid":\s*"([^"]*)"', path.read_text()))
        assert uids <= {"${datasource}", "-- Grafana --", json.loads(path.read_text())["uid"]}, (path.name, uids)


def test_every_panel_has_a_unit(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        for p in panels(d):
            if p["type"] == "row":
                continue
            unit = p["fieldConfig"]["defaults"].get("unit")
            assert unit in UNITS, f"{name}: {p['title']!r} unit {unit!r} (known: {sorted(UNITS)})"
            for o in p["fieldConfig"]["overrides"]:
                for prop in o["properties"]:
                    if prop["id"] == "unit":
                        assert prop["value"] in UNITS, f"{name}: {p['title']!r} override unit {prop['value']!r}"


def test_power_and_hashrate_panels_use_scaling_units(dashboards: dict[str, dict[str, Any]]) -> None:
    # W and H/s scale to MW and TH/s..EH/s in Grafana; a power or hashrate panel in any other unit would lie.
    for name, d in dashboards.items():
        for p in panels(d):
            if p["type"] in ("row", "table"):
                continue
            exprs = " ".join(t["expr"] for t in p["targets"])
            unit = p["fieldConfig"]["defaults"]["unit"]
            if "hashes_per_second" in exprs:
                assert unit == "Hs", f"{name}: {p['title']!r}"
            elif "watts" in exprs and "unknown" not in exprs:
                assert unit == "watt", f"{name}: {p['title']!r}"


def test_queries_name_only_exported_series(dashboards: dict[str, dict[str, Any]], series: set[str]) -> None:
    assert "megawatch_miner_up" in series and "megawatch_site_allocation_watts" in series  # the render worked
    unknown = []
    for name, d in dashboards.items():
        for q in panel_queries(name, d):
            names = metric_names(q.expr)
            assert names, f"{q.where()}: no metric in {q.expr!r}"
            unknown += [f"{q.where()}: {n}" for n in sorted(names - series)]
        for q in variable_queries(name, d):
            selector, _ = parse_label_values(q.expr)
            assert selector is not None
            unknown += [f"{q.where()}: {n}" for n in sorted(metric_names(selector) - series)]
    assert not unknown, "series that neither the agent nor the collector exports:\n" + "\n".join(unknown)


def test_the_metric_name_reader_finds_names_and_skips_the_rest() -> None:
    expr = ('sum by (site) (rate(megawatch_miner_shares_total{site="$site", x="a{b}"}[$__rate_interval])) '
            '/ on (site) group_left (model) site:megawatch_x:sum > bool 0.8 * 1e6 or vector(0)')
    assert metric_names(expr) == {"megawatch_miner_shares_total", "site:megawatch_x:sum"}


def test_variables_and_links_connect_fleet_site_and_miner(dashboards: dict[str, dict[str, Any]]) -> None:
    names = {d["uid"]: [v["name"] for v in d["templating"]["list"]] for d in dashboards.values()}
    assert names == {"megawatch-fleet": ["datasource"], "megawatch-site": ["datasource", "site"],
                     "megawatch-miner": ["datasource", "site", "miner"]}
    uids = set(names)

    def links(d: dict[str, Any]) -> list[str]:
        text = json.dumps(d["panels"])
        return re.findall(r'"url": "(/d/[^"]+)"', text)

    fleet, site = dashboards["fleet.json"], dashboards["site.json"]
    assert any(u.startswith("/d/megawatch-site/") and "var-site=" in u for u in links(fleet))
    assert any(u.startswith("/d/megawatch-miner/") and "var-miner=" in u for u in links(site))
    for d in dashboards.values():
        for url in links(d):
            assert url.split("/")[2] in uids, url
            assert "${datasource:queryparam}" in url and "${__url_time_range}" in url, url


def test_provisioning_files_point_grafana_at_prometheus_and_the_dashboards() -> None:
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/megawatch.yaml").read_text())
    assert ds["apiVersion"] == 1
    [source] = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http://") and source["access"] == "proxy"
    prov = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/megawatch.yaml").read_text())
    [provider] = prov["providers"]
    assert provider["type"] == "file" and Path(provider["options"]["path"]).is_absolute()


def test_site_and_miner_queries_are_filtered_by_their_variables(dashboards: dict[str, dict[str, Any]]) -> None:
    # A query that forgot `site="$site"` would show the whole fleet's figures under one site's title.
    for name, needles in (("site.json", ['site="$site"']), ("miner.json", ['site="$site"', 'miner="$miner"'])):
        for q in panel_queries(name, dashboards[name]):
            for needle in needles:
                for selector in re.findall(r"megawatch_\w+(\{[^}]*\})?", q.expr):
                    assert needle in selector, f"{q.where()}: a selector without {needle}: {q.expr}"
