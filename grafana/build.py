"""Build the Grafana dashboards in grafana/dashboards/*.json: `python grafana/build.py`.

The JSON is generated so that ids, grid positions, datasource references and links cannot go wrong by
hand; tests/grafana/ checks the committed files equal this output and that every query names a metric
the agent or the collector really exports. Power is in W (Grafana's `watt` scales to kW/MW/GW) and
hashrate in H/s (`Hs` scales to TH/s, PH/s, EH/s), as the metrics are: no conversion in the queries.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["megawatch"]
SITE = 'site="$site"'
MINER = 'site="$site", miner="$miner"'
RATE = "[$__rate_interval]"
HOT_C = 85  # chip temperature counted as hot in the worst-first table
SITE_URL = "/d/megawatch-site/megawatch-site?var-site={site}&${{datasource:queryparam}}&${{__url_time_range}}"
MINER_URL = ("/d/megawatch-miner/megawatch-miner?var-site={site}&var-miner={miner}"
             "&${{datasource:queryparam}}&${{__url_time_range}}")

Json = dict[str, Any]


def target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Json:
    t: Json = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto",
               "range": not instant, "instant": instant}
    if table:
        t["format"] = "table"
    return t


def thresholds(*steps: tuple[float, str], base: str = "green") -> Json:
    return {"mode": "absolute", "steps": [{"color": base, "value": None},
                                          *({"color": c, "value": v} for v, c in steps)]}


UTILISATION_STEPS = thresholds((0.95, "orange"), (1.0, "red"))
UP_MAPPING = [{"type": "value", "options": {"0": {"text": "down", "color": "red"},
                                            "1": {"text": "up", "color": "green"}}}]


def override(name: str, **props: Any) -> Json:
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": k.replace("_", "."), "value": v} for k, v in props.items()]}


def regex_override(pattern: str, **props: Any) -> Json:
    return {"matcher": {"id": "byRegexp", "options": pattern},
            "properties": [{"id": k.replace("_", "."), "value": v} for k, v in props.items()]}


DASHED = {"custom_lineStyle": {"fill": "dash", "dash": [10, 10]}, "custom_lineWidth": 2, "color": {
    "mode": "fixed", "fixedColor": "red"}}


def panel(kind: str, title: str, targets: list[Json], unit: str, *, w: int = 6, h: int = 5,
          description: str = "", steps: Json | None = None, overrides: Iterable[Json] = (),
          options: Json | None = None, custom: Json | None = None, links: list[Json] | None = None,
          mappings: list[Json] | None = None, transformations: list[Json] | None = None,
          minmax: tuple[float | None, float | None] = (None, None)) -> Json:
    defaults: Json = {"unit": unit, "thresholds": steps or thresholds(), "mappings": mappings or []}
    if kind in ("timeseries",):
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "spanNulls": False, **(custom or {})}
    elif custom:
        defaults["custom"] = custom
    if minmax[0] is not None:
        defaults["min"] = minmax[0]
    if minmax[1] is not None:
        defaults["max"] = minmax[1]
    if links:
        defaults["links"] = links
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    p: Json = {"type": kind, "title": title, "description": description, "datasource": DS,
               "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
               "options": options or {}, "_size": (w, h)}
    if transformations:
        p["transformations"] = transformations
    return p


def stat(title: str, targets: list[Json], unit: str, **kw: Any) -> Json:
    opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value", "graphMode": "area", "textMode": "auto", "justifyMode": "auto"}
    opts.update(kw.pop("options", {}))
    return panel("stat", title, targets, unit, w=kw.pop("w", 4), h=kw.pop("h", 4), options=opts, **kw)


def series(title: str, targets: list[Json], unit: str, **kw: Any) -> Json:
    opts = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, targets, unit, w=kw.pop("w", 12), h=kw.pop("h", 8), options=opts, **kw)


def table(title: str, targets: list[Json], unit: str, *, sort_by: str | None = None, desc: bool = True,
          hide: Iterable[str] = ("Time",), **kw: Any) -> Json:
    transforms: list[Json] = [{"id": "merge", "options": {}}]
    if sort_by:
        transforms.append({"id": "sortBy", "options": {"sort": [{"field": sort_by, "desc": desc}]}})
    transforms.append({"id": "organize", "options": {"excludeByName": {h: True for h in hide}}})
    return panel("table", title, targets, unit, w=kw.pop("w", 24), h=kw.pop("h", 10),
                 options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
                 transformations=transforms, **kw)


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def variables(*names: str) -> list[Json]:
    out: list[Json] = [{"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus",
                        "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []}]
    queries = {
        "site": ("Site", "label_values(megawatch_site_allocation_watts, site)"),
        "miner": ("Miner", f"label_values(megawatch_miner_up{{{SITE}}}, miner)"),
    }
    for name in names:
        label, query = queries[name]
        out.append({"type": "query", "name": name, "label": label, "datasource": DS,
                    "query": {"query": query, "refId": f"var-{name}"}, "definition": query,
                    "refresh": 2, "sort": 1, "multi": False, "includeAll": False, "current": {},
                    "options": [], "hide": 0, "regex": ""})
    return out


def dashboard(uid: str, title: str, description: str, panels: list[Json], var_names: tuple[str, ...]) -> Json:
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_size")
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = i
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x, row_h = x + w, max(row_h, h)
    return {
        "uid": uid, "title": title, "description": description, "tags": TAGS, "schemaVersion": 39,
        "version": 1, "editable": True, "graphTooltip": 1, "timezone": "browser", "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"}, "fiscalYearStartMonth": 0, "liveNow": False,
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "megawatch", "type": "dashboards", "tags": TAGS, "asDropdown": False,
                   "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False}],
        "templating": {"list": variables(*var_names)},
        "panels": panels,
    }


def site_link(site: str) -> list[Json]:
    return [{"title": "Open the site dashboard", "url": SITE_URL.format(site=site)}]


# --- Fleet overview ------------------------------------------------------------------------------------

def fleet() -> Json:
    by_site = "${__field.labels.site}"
    panels = [
        row("Fleet against its national allocation"),
        stat("Fleet draw", [target("max(megawatch_fleet_facility_power_watts)", "draw")], "watt",
             description="Facility draw of every site as judged against the allocations: measured plus the "
                         "allowance for miners whose draw is not known now (miner power x PUE + auxiliary load)."),
        stat("National allocation", [target("max(megawatch_fleet_allocation_watts)", "allocation")], "watt",
             description="The fleet's total grid allocation in force now."),
        stat("Headroom", [target("max(megawatch_fleet_headroom_watts)", "headroom")], "watt",
             steps=thresholds((0, "green"), base="red"), description="Allocation minus draw; red when over."),
        stat("Utilisation", [target("max(megawatch_fleet_utilisation_ratio)", "utilisation")], "percentunit",
             steps=UTILISATION_STEPS),
        stat("Hashrate", [target("max(megawatch_fleet_total_hashrate_hashes_per_second)", "hashrate")], "Hs"),
        stat("Miners up / total", [target('max(megawatch_fleet_total_miners{state="up"})', "up"),
                                   target('max(megawatch_fleet_total_miners{state="total"})', "total")],
             "none", options={"textMode": "value_and_name", "graphMode": "none"}),
        series("Fleet draw vs national allocation", [
            target("max(megawatch_fleet_facility_power_watts)", "draw (collector)"),
            target("fleet:megawatch_facility_power_watts:sum", "draw (Prometheus rules)"),
            target("max(megawatch_fleet_allocation_watts)", "national allocation"),
        ], "watt", overrides=[override("national allocation", **DASHED)]),
        panel("bargauge", "Utilisation per site (the line is the allocation)", [
            target("sort_desc(max by (site) (megawatch_site_utilisation_ratio))", "{{site}}", instant=True),
        ], "percentunit", w=12, h=8, steps=UTILISATION_STEPS, minmax=(0, 1.2), links=site_link(by_site),
            options={"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
            description="Facility draw / allocation in force; orange from 95 %, red over the allocation. "
                        "Click a bar for the site."),
        panel("barchart", "Draw and allocation per site", [
            target("max by (site) (megawatch_site_facility_power_watts)", instant=True, table=True),
            target("max by (site) (megawatch_site_allocation_watts)", instant=True, table=True),
        ], "watt", w=24, h=8, links=site_link("${__data.fields.site}"),
            transformations=[{"id": "merge", "options": {}},
                             {"id": "organize", "options": {"excludeByName": {"Time": True}}}],
            overrides=[override("Value #A", displayName="draw"),
                       override("Value #B", displayName="allocation", color={"mode": "fixed", "fixedColor": "red"})],
            options={"xField": "site", "orientation": "vertical", "groupWidth": 0.7, "barWidth": 0.9,
                     "showValue": "auto", "legend": {"displayMode": "list", "placement": "bottom"}},
            description="Facility draw beside the allocation in force, per site (MW)."),
        series("Fleet draw: measured, allowance and upper bound", [
            target("max(megawatch_fleet_facility_measured_watts)", "measured"),
            target("max(megawatch_fleet_facility_allowance_watts)", "allowance"),
            target("max(megawatch_fleet_facility_upper_bound_watts)", "upper bound"),
            target("max(megawatch_fleet_allocation_watts)", "national allocation"),
        ], "watt", overrides=[override("national allocation", **DASHED)],
            description="Measured: fresh readings. Allowance: miners and agents not seen now, at their last known "
                        "draw, nameplate or a default. The upper bound is what the allocation is judged on."),
        series("Share of each site's figure allowed for, not measured", [
            target("max by (site) (megawatch_site_allowance_ratio)", "{{site}}"),
        ], "percentunit", links=site_link(by_site), steps=thresholds((0.1, "orange")),
            custom={"thresholdsStyle": {"mode": "line"}, "fillOpacity": 0},
            description="SiteUnknownShareHigh warns past thresholds.unknown_share_ratio (10 % by default)."),
        row("Sites"),
        table("Sites (most utilised first; click a site)", [
            target("max by (site) (megawatch_site_utilisation_ratio)", instant=True, table=True),
            target("max by (site) (megawatch_site_facility_power_watts)", instant=True, table=True),
            target("max by (site) (megawatch_site_allocation_watts)", instant=True, table=True),
            target("max by (site) (megawatch_site_headroom_watts)", instant=True, table=True),
            target("max by (site) (megawatch_site_total_hashrate_hashes_per_second)", instant=True, table=True),
            target('max by (site) (megawatch_site_total_miners{state="up"})', instant=True, table=True),
            target('max by (site) (megawatch_site_total_miners{state="total"})', instant=True, table=True),
            target("max by (site) (megawatch_site_estimated_power_ratio)", instant=True, table=True),
            target("max by (site) (megawatch_site_data_age_seconds)", instant=True, table=True),
            target("max by (site) (megawatch_site_allowance_ratio)", instant=True, table=True),
        ], "watt", sort_by="Utilisation", h=9, overrides=[
            override("site", links=site_link("${__value.raw}"), unit="none"),
            override("Value #A", displayName="Utilisation", unit="percentunit",
                     custom_cellOptions={"type": "color-background"}, thresholds=UTILISATION_STEPS),
            override("Value #B", displayName="Draw"), override("Value #C", displayName="Allocation"),
            override("Value #D", displayName="Headroom"),
            override("Value #E", displayName="Hashrate", unit="Hs"),
            override("Value #F", displayName="Miners up", unit="none"),
            override("Value #G", displayName="Miners", unit="none"),
            override("Value #H", displayName="Estimated power", unit="percentunit"),
            override("Value #I", displayName="Data age", unit="s"),
            override("Value #J", displayName="Allowed for", unit="percentunit"),
        ]),
        series("Draw vs allocation per site", [
            target("max by (site) (megawatch_site_facility_power_watts)", "{{site}} draw"),
            target("max by (site) (megawatch_site_allocation_watts)", "{{site}} allocation"),
        ], "watt", links=site_link(by_site), overrides=[
            regex_override(".* allocation", custom_lineStyle={"fill": "dash", "dash": [10, 10]}, custom_lineWidth=2),
        ]),
        series("Utilisation over time", [
            target("max by (site) (megawatch_site_utilisation_ratio)", "{{site}}"),
            target("max(megawatch_fleet_utilisation_ratio)", "fleet"),
        ], "percentunit", steps=UTILISATION_STEPS, links=site_link(by_site),
            custom={"thresholdsStyle": {"mode": "line+area"}, "fillOpacity": 0}),
        series("Headroom per site", [target("max by (site) (megawatch_site_headroom_watts)", "{{site}}")],
               "watt", steps=thresholds((0, "green"), base="red"), links=site_link(by_site),
               custom={"thresholdsStyle": {"mode": "line"}}),
        series("Hashrate per site", [target("max by (site) (megawatch_site_total_hashrate_hashes_per_second)",
                                            "{{site}}")], "Hs", links=site_link(by_site),
               custom={"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 30}),
        *energy_panels("fleet", ""),
        row("Data quality and alerts"),
        stat("Power estimated", [target("max(megawatch_fleet_estimated_power_ratio)", "estimated")],
             "percentunit", description="Share of miner power estimated from the model's J/TH, not measured."),
        stat("Miners with unknown power", [target("max(megawatch_fleet_total_power_unknown_miners)", "unknown")],
             "none", steps=thresholds((1, "orange"))),
        stat("Sites stale", [target("max(megawatch_fleet_sites_stale)", "stale")], "none",
             steps=thresholds((1, "red"))),
        stat("Alerts firing (Prometheus)", [target('count(ALERTS{alertstate="firing"}) or vector(0)', "firing")],
             "none", steps=thresholds((1, "red"))),
        stat("Alerts firing (collector)", [target('sum(megawatch_collector_alerts{phase="firing"})', "firing")],
             "none", steps=thresholds((1, "red"))),
        stat("Agents down", [target('sum(megawatch_site_agents{state!="up"})', "agents")], "none",
             steps=thresholds((1, "red"))),
        table("Firing alerts", [target('ALERTS{alertstate="firing"}', instant=True, table=True)], "none",
              hide=("Time", "Value", "__name__", "alertstate"), h=7,
              overrides=[override("site", links=site_link("${__value.raw}"))]),
        series("Power estimated per site", [target("max by (site) (megawatch_site_estimated_power_ratio)",
                                                   "{{site}}")], "percentunit", h=7),
        series("Data age per site", [target("max by (site) (megawatch_site_data_age_seconds)", "{{site}}")], "s",
               h=7, steps=thresholds((60, "red")), custom={"thresholdsStyle": {"mode": "line"}}),
    ]
    return dashboard("megawatch-fleet", "megawatch / Fleet overview",
                     "Every site's draw against its allocation, the fleet against the national allocation.",
                     panels, ())


# --- Energy and production (docs/energy.md): the collector's counters over the last day --------------------

def _inc(scope: str, counter: str, match: str, by: str = "", window: str = "1d") -> str:
    return f"max{by}(increase(megawatch_{scope}_{counter}_total{{{match}}}[{window}]))"


def energy_panels(scope: str, match: str) -> list[Json]:
    """The energy and production row of the fleet (scope "fleet") or of one site ("site", match site="$site").

    Every figure is from the collector's counters, as `megawatch report` computes it: efficiency over the day
    (J/TH = energy / hashes, BTC/MWh = expected BTC / energy), not a momentary ratio.
    """
    used, allocated = _inc(scope, "energy_joules", match), _inc(scope, "allocation_energy_joules", match)
    unknown, btc = _inc(scope, "energy_unknown_joules", match), _inc(scope, "expected_btc", match)
    hashes = _inc(scope, "hashes", match)
    panels = [
        row(("Fleet" if scope == "fleet" else "$site") + " energy and expected production (last 24 h)"),
        stat("Energy used", [target(f"{used} / 3600", "used")], "watth",
             description="The judged figure (a trusted meter, else the upper bound) integrated by the collector over "
                         "the last 24 h; time the collector did not see is apart, as unknown energy."),
        stat("Energy allocated", [target(f"{allocated} / 3600", "allocated")], "watth",
             description="The allocation in force x time over the last 24 h, schedules followed."),
        stat("Used of allocated", [target(f"{used} / {allocated}", "used")], "percentunit",
             steps=UTILISATION_STEPS),
        stat("Over the allocation", [
            target(f"{_inc(scope, 'energy_over_allocation_joules', match)} / 3600", "energy over"),
            target(_inc(scope, "over_allocation_seconds", match), "time over")],
             "watth", steps=thresholds((1e-9, "red")), options={"textMode": "value_and_name", "graphMode": "none"},
             overrides=[override("time over", unit="s")]),
        stat("Unknown energy", [target(f"{unknown} / ({used} + {unknown})", "unknown")], "percentunit",
             steps=thresholds((0.01, "orange"), (0.1, "red")),
             description="Share of the last 24 h's energy the collector did not see (down, or a gap in its cycles), "
                         "counted at the larger of the last figure and the allocation."),
        stat("Expected BTC", [target(btc, "expected")], "none", options={"graphMode": "none"},
             description="Expected from the measured hashrate at the configured network difficulty and block reward "
                         "over the last 24 h: expected, not mined (pool payouts are not read)."),
        stat("BTC per MWh", [target(f"{btc} / ({used} / 3.6e9)", "BTC/MWh")], "none", w=3,
             options={"graphMode": "none"}, description="Expected BTC per MWh used over the last 24 h."),
        stat("J/TH", [target(f"{used} / ({hashes} / 1e12)", "J/TH")], "none", w=3, options={"graphMode": "none"},
             description="Energy used per TH hashed over the last 24 h: the efficiency the site is judged by."),
        series("Average draw per hour and allocation", [
            target(_inc(scope, "energy_joules", match, window="1h") + " / 3600", "average draw, last hour"),
            target(f"max(megawatch_{scope}_allocation_watts{{{match}}})", "allocation"),
        ], "watt", overrides=[override("allocation", **DASHED)],
            description="Energy used in the hour before each point, per second: the energy-weighted draw a utility "
                        "bills, beside the allocation in force."),
        series("Expected BTC per day", [
            target(_inc(scope, "expected_btc", match, window="1h") + " * 24", "expected BTC/day"),
        ], "none", description="At the hashrate and difficulty of the hour before each point: expected, not mined."),
    ]
    if scope == "fleet":
        panels.append(table("Energy per site, last 24 h (click a site)", [
            target(_inc("site", "energy_joules", "", " by (site) ") + " / 3.6e9", instant=True, table=True),
            target(_inc("site", "allocation_energy_joules", "", " by (site) ") + " / 3.6e9", instant=True,
                   table=True),
            target(_inc("site", "energy_over_allocation_joules", "", " by (site) ") + " / 3.6e9", instant=True,
                   table=True),
            target(_inc("site", "expected_btc", "", " by (site) "), instant=True, table=True),
            target(f"{_inc('site', 'energy_joules', '', ' by (site) ')} / on (site) "
                   f"({_inc('site', 'hashes', '', ' by (site) ')} / 1e12)", instant=True, table=True),
        ], "none", sort_by="Used MWh", h=8, overrides=[
            override("site", links=site_link("${__value.raw}")),
            override("Value #A", displayName="Used MWh", decimals=3),
            override("Value #B", displayName="Allocated MWh", decimals=3),
            override("Value #C", displayName="Over MWh", decimals=3),
            override("Value #D", displayName="Expected BTC", decimals=6),
            override("Value #E", displayName="J/TH", decimals=1),
        ]))
    return panels

# --- Site ----------------------------------------------------------------------------------------------

def _score() -> str:
    """Worst first: down 1000, hot 100, low hashrate 10, plus hardware errors per minute (capped at 9).

    Low hashrate is below 80% of the median of the same model at the site: a miner's own average drops
    with it, and models differ 15-fold (S9 to S21), so neither is a fair yardstick.
    """
    up = f"max by (site, miner) (megawatch_miner_up{{{SITE}}})"
    zero = f"{up} * 0"
    by_model = (f"(megawatch_miner_hashrate_hashes_per_second{{{SITE}}} "
                f"* on (site, miner) group_left (model) megawatch_miner_info{{{SITE}}})")
    hot = (f"(max by (site, miner) (megawatch_miner_temperature_celsius{{{SITE}, sensor=\"chip\"}}) "
           f">= bool {HOT_C}) * 100 or on (site, miner) {zero}")
    low = (f"max by (site, miner) ({by_model} < bool on (site, model) group_left "
           f"0.8 * quantile by (site, model) (0.5, {by_model})) * 10 or on (site, miner) {zero}")
    errs = (f"clamp_max(max by (site, miner) (rate(megawatch_miner_hardware_errors_total{{{SITE}}}{RATE})) * 60, 9) "
            f"or on (site, miner) {zero}")
    return f"(1 - {up}) * 1000 + on (site, miner) ({hot}) + on (site, miner) ({low}) + on (site, miner) ({errs})"


def curtailment_panels() -> list[Json]:
    """The site's curtailment (docs/curtailment.md): its mode, what the plan would stop, what is stopped."""
    return [
        row("$site curtailment"),
        stat("Curtailment mode", [target(f"max by (mode) (megawatch_site_curtailment_mode{{{SITE}}}) == 1",
                                         "{{mode}}")], "none", w=4, options={"graphMode": "none", "textMode": "name"},
             description="off: nothing read; plan: shown, never sent; approve: sent once an operator approves; "
                         "auto: sent."),
        stat("Miners curtailed", [target(f"max(megawatch_site_curtailed_miners{{{SITE}}})", "curtailed")], "none",
             w=4, description="Miners megawatch stopped and will restart when there is room again."),
        stat("Awaiting approval", [target(f"max(megawatch_site_curtailment_awaiting_approval{{{SITE}}})", "plan")],
             "none", w=4, steps=thresholds((1, "orange")), options={"graphMode": "none"},
             description="1 while a plan waits for an operator (mode approve)."),
        series("Curtailment: still needed, planned, shed", [
            target(f"max(megawatch_site_curtailment_need_watts{{{SITE}}})", "still needed"),
            target(f"max(megawatch_site_curtailment_planned_watts{{{SITE}}})", "planned"),
            target(f"max(megawatch_site_curtailment_shed_watts{{{SITE}}})", "shed (seen stopped)"),
        ], "watt", w=12,
            description="Facility watts: what is still over allocation x (1 - margin) beyond commands sent, what "
                        "the latest plan would stop, and what miners seen stopped drew before."),
    ]


def site() -> Json:
    miner_link = [{"title": "Miner ${__value.raw}", "url": MINER_URL.format(site="$site", miner="${__value.raw}")}]
    rejected = (f"sum(rate(megawatch_miner_shares_rejected_total{{{SITE}}}{RATE})) / "
                f"(sum(rate(megawatch_miner_shares_accepted_total{{{SITE}}}{RATE})) + "
                f"sum(rate(megawatch_miner_shares_rejected_total{{{SITE}}}{RATE})))")
    chip = f"max by (miner) (megawatch_miner_temperature_celsius{{{SITE}, sensor=\"chip\"}})"
    fan = f"avg by (miner) (megawatch_miner_fan_rpm{{{SITE}}})"
    panels = [
        row("$site against its allocation"),
        stat("Draw", [target(f"max(megawatch_site_facility_power_watts{{{SITE}}})", "draw")], "watt",
             description="Facility draw as judged against the allocation: measured plus allowance (miner power x "
                         "PUE + auxiliary load), or the site meter while it is trusted."),
        stat("Allocation in force", [target(f"max(megawatch_site_allocation_watts{{{SITE}}})", "allocation")],
             "watt", description="Follows the site's schedule (e.g. lower at evening peak)."),
        stat("Utilisation", [target(f"max(megawatch_site_utilisation_ratio{{{SITE}}})", "utilisation")],
             "percentunit", steps=UTILISATION_STEPS),
        stat("Headroom", [target(f"max(megawatch_site_headroom_watts{{{SITE}}})", "headroom")], "watt",
             steps=thresholds((0, "green"), base="red")),
        stat("Hashrate", [target(f"max(megawatch_site_total_hashrate_hashes_per_second{{{SITE}}})", "hashrate")],
             "Hs"),
        stat("Data status", [target(f"max by (status) (megawatch_site_status{{{SITE}}}) == 1", "{{status}}")],
             "none", w=2, options={"textMode": "name", "graphMode": "none"},
             description="ok (all measured), partial (part allowance, or an agent down), dark (agents answer, no "
                         "miner does: all allowance), stale (no agent fresh) or no_data."),
        stat("Data age", [target(f"max(megawatch_site_data_age_seconds{{{SITE}}})", "age")], "s", w=2,
             steps=thresholds((60, "red")), options={"graphMode": "none"},
             description="Age of the oldest agent data in the site's totals."),
        series("Power against the allocation", [
            target(f"max(megawatch_site_facility_power_watts{{{SITE}}})", "facility draw"),
            target(f"max by (source) (megawatch_site_miner_power_watts{{{SITE}}})", "miners ({{source}})"),
            target(f"max(megawatch_site_allocation_watts{{{SITE}}})", "allocation"),
            target(f"max(megawatch_site_base_allocation_watts{{{SITE}}})", "base allocation"),
        ], "watt", overrides=[override("allocation", **DASHED)]),
        series("Measured, allowance and upper bound", [
            target(f"max(megawatch_site_facility_measured_watts{{{SITE}}})", "measured"),
            target(f"max(megawatch_site_facility_allowance_watts{{{SITE}}})", "allowance"),
            target(f"max(megawatch_site_facility_upper_bound_watts{{{SITE}}})", "upper bound"),
            target(f"max(megawatch_site_allocation_watts{{{SITE}}})", "allocation"),
        ], "watt", overrides=[override("allocation", **DASHED)],
            description="Facility figures: measured (fresh readings, x PUE + aux), allowance for miners and agents "
                        "not seen now (x PUE) and their sum, the upper bound the allocation is judged on."),
        series("Miners allowed for, by basis", [
            target(f"max by (basis) (megawatch_site_allowance_miners{{{SITE}}})", "{{basis}}"),
        ], "none", custom={"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 40},
            description="last_known: their last draw (for accounting.last_known_horizon_s); nameplate: the model's "
                        "nominal power; default: accounting.unknown_miner_w."),
        series("Hashrate", [
            target(f"max(megawatch_site_total_hashrate_hashes_per_second{{{SITE}}})", "site"),
            target(f"sum by (instance) (megawatch_site_hashrate_hashes_per_second{{{SITE}}})", "agent {{instance}}"),
        ], "Hs"),
        series("Utilisation", [target(f"max(megawatch_site_utilisation_ratio{{{SITE}}})", "utilisation")],
               "percentunit", steps=UTILISATION_STEPS, w=8, h=7,
               custom={"thresholdsStyle": {"mode": "line+area"}, "fillOpacity": 0}),
        series("Miners by state", [
            target(f'max by (state) (megawatch_site_total_miners{{{SITE}, state!="total"}})', "{{state}}"),
        ], "none", w=8, h=7, custom={"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 40}),
        series("Power estimated and unknown", [
            target(f"max(megawatch_site_estimated_power_ratio{{{SITE}}})", "estimated share"),
            target(f"max(megawatch_site_total_power_unknown_miners{{{SITE}}})", "miners with unknown power"),
        ], "percentunit", w=8, h=7, overrides=[override("miners with unknown power", unit="none",
                                                        custom_axisPlacement="right")]),
        *energy_panels("site", SITE),
        *curtailment_panels(),
        row("Miners, worst first"),
        table("Miners (worst first: down, hot, low hashrate, hardware errors; click a miner)", [
            target(_score(), instant=True, table=True),
            target(f"max by (site, miner) (megawatch_miner_up{{{SITE}}})", instant=True, table=True),
            target(f"max by (site, miner) (megawatch_miner_hashrate_hashes_per_second{{{SITE}}})",
                   instant=True, table=True),
            target(f"max by (site, miner) (megawatch_miner_temperature_celsius{{{SITE}, sensor=\"chip\"}})",
                   instant=True, table=True),
            target(f"sum by (site, miner) (megawatch_miner_power_watts{{{SITE}}})", instant=True, table=True),
            target(f"max by (site, miner) (rate(megawatch_miner_hardware_errors_total{{{SITE}}}{RATE})) * 60",
                   instant=True, table=True),
            target(f"max by (site, miner) (rate(megawatch_miner_shares_rejected_total{{{SITE}}}{RATE})) / on "
                   f"(site, miner) (max by (site, miner) (rate(megawatch_miner_shares_accepted_total{{{SITE}}}"
                   f"{RATE})) + max by (site, miner) (rate(megawatch_miner_shares_rejected_total{{{SITE}}}{RATE})))",
                   instant=True, table=True),
            target(f"max by (site, miner, model, dialect) (megawatch_miner_info{{{SITE}}})", instant=True,
                   table=True),
        ], "none", sort_by="Score", h=12, hide=("Time", "Value #H"), overrides=[
            override("miner", links=miner_link),
            override("Value #A", displayName="Score",
                     description=f"down 1000 + chip at {HOT_C} °C or more 100 + hashrate below 80% of "
                                 "its model's site median 10 + hardware errors per minute (up to 9)"),
            override("Value #B", displayName="Up", mappings=UP_MAPPING,
                     custom_cellOptions={"type": "color-text"}),
            override("Value #C", displayName="Hashrate", unit="Hs"),
            override("Value #D", displayName="Chip max", unit="celsius",
                     thresholds=thresholds((75, "orange"), (HOT_C, "red")),
                     custom_cellOptions={"type": "color-text"}),
            override("Value #E", displayName="Power", unit="watt"),
            override("Value #F", displayName="HW errors", unit="cpm"),
            override("Value #G", displayName="Rejected", unit="percentunit"),
        ]),
        row("Temperatures, fans, shares, pools"),
        panel("histogram", "Chip temperature distribution (hottest chip per miner)",
              [target(chip, "{{miner}}", instant=True)], "celsius", w=8, h=8,
              options={"bucketCount": 30, "combine": True, "legend": {"showLegend": False}}),
        series("Chip temperature quantiles", [
            target(f"quantile(0.5, {chip})", "median"), target(f"quantile(0.9, {chip})", "p90"),
            target(f"max({chip})", "hottest"),
        ], "celsius", w=8, h=8, steps=thresholds((HOT_C, "red")), custom={"thresholdsStyle": {"mode": "line"}}),
        panel("histogram", "Fan speed distribution (mean per miner)", [target(fan, "{{miner}}", instant=True)],
              "rotrpm", w=8, h=8, options={"bucketCount": 30, "combine": True, "legend": {"showLegend": False}}),
        series("Rejected share", [target(rejected, "rejected / (accepted + rejected)")], "percentunit", w=8, h=7),
        series("Hardware errors", [
            target(f"sum(rate(megawatch_miner_hardware_errors_total{{{SITE}}}{RATE})) * 60", "site"),
        ], "cpm", w=8, h=7),
        series("Fan speed quantiles", [
            target(f"quantile(0.1, {fan})", "p10"), target(f"quantile(0.5, {fan})", "median"),
            target(f"max({fan})", "fastest"),
        ], "rotrpm", w=8, h=7),
        table("Pools", [target(f"count by (url, user, status) (megawatch_miner_pool_info{{{SITE}}})",
                               instant=True, table=True)], "none", sort_by="Value", w=12, h=7,
              overrides=[override("Value", displayName="Miners")]),
        table("Models and firmware", [target(f"count by (model, firmware, dialect) (megawatch_miner_info{{{SITE}}})",
                                             instant=True, table=True)], "none", sort_by="Value", w=12, h=7,
              overrides=[override("Value", displayName="Miners")]),
        row("Agents"),
        series("Poll cycle duration", [
            target(f"max by (instance) (megawatch_agent_cycle_duration_seconds{{{SITE}}})", "{{instance}}"),
        ], "s", w=8, h=7),
        series("Polls by outcome", [
            target(f"sum by (outcome) (rate(megawatch_agent_polls_total{{{SITE}}}{RATE}))", "{{outcome}}"),
        ], "ops", w=8, h=7, custom={"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 40}),
        series("Agent reachable from the collector", [
            target(f"max by (agent) (megawatch_collector_agent_up{{{SITE}}})", "{{agent}}"),
        ], "none", w=8, h=7, mappings=UP_MAPPING, minmax=(0, 1)),
    ]
    return dashboard("megawatch-site", "megawatch / Site",
                     "One site: power and hashrate against its allocation, its miners worst first.",
                     panels, ("site",))


# --- Miner ---------------------------------------------------------------------------------------------

def miner() -> Json:
    m = MINER
    panels = [
        row("$miner at $site"),
        stat("State", [target(f"max(megawatch_miner_up{{{m}}})", "up")], "none", mappings=UP_MAPPING,
             options={"graphMode": "none"}),
        stat("Hashrate", [target(f"max(megawatch_miner_hashrate_hashes_per_second{{{m}}})", "hashrate")], "Hs"),
        stat("Power", [target(f"sum by (source) (megawatch_miner_power_watts{{{m}}})", "{{source}}")], "watt",
             options={"textMode": "value_and_name"},
             description="Measured by the firmware or estimated from the model's J/TH (the name says which)."),
        stat("Hottest chip", [target(f"max(megawatch_miner_temperature_celsius{{{m}}})", "max")], "celsius",
             steps=thresholds((75, "orange"), (HOT_C, "red"))),
        stat("Uptime", [target(f"max(megawatch_miner_uptime_seconds{{{m}}})", "uptime")], "s",
             options={"graphMode": "none"}),
        stat("Since last good poll", [
            target(f"time() - max(megawatch_miner_last_success_timestamp_seconds{{{m}}})", "age")], "s",
             steps=thresholds((60, "red")), options={"graphMode": "none"}),
        table("Identity", [target(f"megawatch_miner_info{{{m}}}", instant=True, table=True)], "none", h=4,
              hide=("Time", "Value", "__name__", "job")),
        series("Hashrate", [
            target(f"max(megawatch_miner_hashrate_hashes_per_second{{{m}}})", "short window"),
            target(f"max(megawatch_miner_hashrate_average_hashes_per_second{{{m}}})", "average since start"),
        ], "Hs"),
        series("Power", [
            target(f"sum by (source) (megawatch_miner_power_watts{{{m}}})", "draw ({{source}})"),
            target(f"max(megawatch_miner_power_limit_watts{{{m}}})", "limit"),
        ], "watt", overrides=[override("limit", **DASHED)]),
        series("Temperatures", [
            target(f"max by (board, sensor) (megawatch_miner_temperature_celsius{{{m}}})",
                   "board {{board}} {{sensor}}"),
        ], "celsius", steps=thresholds((HOT_C, "red")), custom={"thresholdsStyle": {"mode": "line"}}),
        series("Fans", [target(f"max by (fan) (megawatch_miner_fan_rpm{{{m}}})", "fan {{fan}}")], "rotrpm"),
        series("Shares", [
            target(f"max(rate(megawatch_miner_shares_accepted_total{{{m}}}{RATE})) * 60", "accepted"),
            target(f"max(rate(megawatch_miner_shares_rejected_total{{{m}}}{RATE})) * 60", "rejected"),
            target(f"max(rate(megawatch_miner_shares_stale_total{{{m}}}{RATE})) * 60", "stale"),
        ], "cpm", w=8),
        series("Hardware errors", [
            target(f"max(rate(megawatch_miner_hardware_errors_total{{{m}}}{RATE})) * 60", "hardware errors"),
        ], "cpm", w=8),
        series("Up, stale and uptime", [
            target(f"max(megawatch_miner_up{{{m}}})", "up"),
            target(f"max(megawatch_miner_stale{{{m}}})", "stale"),
            target(f"max(megawatch_miner_uptime_seconds{{{m}}})", "uptime"),
        ], "none", w=8, overrides=[override("uptime", unit="s", custom_axisPlacement="right")]),
        series("Poll duration", [target(f"max(megawatch_miner_poll_duration_seconds{{{m}}})", "poll")], "s",
               w=12, h=7),
        table("Pool", [target(f"megawatch_miner_pool_info{{{m}}}", instant=True, table=True)], "none", w=12, h=7,
              hide=("Time", "Value", "__name__", "job", "instance", "site", "miner")),
    ]
    return dashboard("megawatch-miner", "megawatch / Miner",
                     "One miner: hashrate, temperatures, fans, power, shares, errors and uptime.",
                     panels, ("site", "miner"))


DASHBOARDS = {"fleet.json": fleet, "site.json": site, "miner.json": miner}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (OUT / name).write_text(render(build))
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
