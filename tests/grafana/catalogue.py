"""What the agent and the collector really export, and what the dashboards really query.

The metric catalogue is read from a render of the real exposition code (the agent's per-miner text renderer
and site collector, the collector's SiteCollector with the demo's sites config), parsed back with
prometheus_client's parser: nothing here lists metric names by hand, so a rename shows up at once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
RULES = ROOT / "configs" / "prometheus" / "rules" / "megawatch.rules.yml"
SITES = ROOT / "configs" / "national" / "sites-demo.yaml"
# Prometheus's own series the dashboards may use besides ours.
PROMETHEUS_SERIES = frozenset({"ALERTS"})


@dataclass(frozen=True)
class Family:
    name: str  # as exposed: counters with `_total`
    kind: str
    help: str
    labels: tuple[str, ...]
    source: str  # "agent" or "collector"


def _labels(metric: Any) -> tuple[str, ...]:
    # prometheus_client keeps a family's label names only privately; describe() gives the families as built.
    return tuple(getattr(metric, "_labelnames", ()))


def _parse(text: str, described: dict[str, tuple[str, ...]], source: str) -> list[Family]:
    out = []
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out.append(Family(name, fam.type, fam.documentation, described.get(fam.name, ()), source))
    return out


def agent_families() -> list[Family]:
    from megawatch.agent.config import ExpositionSettings
    from megawatch.agent.exposition import MINER_FAMILIES, FleetCollector, render_miners
    from megawatch.agent.state import FleetState

    state = FleetState("site-a", 0)
    registry = CollectorRegistry()
    collector = FleetCollector(state)
    registry.register(collector)
    text = render_miners(state.snapshot, ExpositionSettings()) + generate_latest(registry).decode()
    described = {f.name: ("site", "miner", *f.labels) for f in MINER_FAMILIES}
    described.update({m.name: _labels(m) for m in collector.describe()})
    return _parse(text, described, "agent")


def collector_families() -> list[Family]:
    from megawatch.collector.config import load_collector_config
    from megawatch.collector.curtailapi import CurtailmentCollector
    from megawatch.collector.exposition import SiteCollector
    from megawatch.collector.service import CollectorService

    service = CollectorService(load_collector_config(SITES), None, "http://127.0.0.1:0")  # type: ignore[arg-type]
    registry = CollectorRegistry()
    collector = SiteCollector(service)
    registry.register(collector)
    curtailment = CurtailmentCollector(service.curtailer)  # served beside it (collector/web.py)
    registry.register(curtailment)
    described = {m.name: _labels(m) for m in (*collector.describe(), *curtailment.describe())}
    return _parse(generate_latest(registry).decode(), described, "collector")


def recording_rules() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def known_series() -> set[str]:
    return ({f.name for f in agent_families()} | {f.name for f in collector_families()} | recording_rules()
            | PROMETHEUS_SERIES)


# --- Dashboards ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str  # panel title, or "variable <name>"
    ref: str
    expr: str
    instant: bool

    def where(self) -> str:
        return f"{self.dashboard}: {self.panel!r} {self.ref}"


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def panel_queries(name: str, dashboard: dict[str, Any]) -> list[Query]:
    return [Query(name, p["title"], t["refId"], t["expr"], bool(t.get("instant")))
            for p in panels(dashboard) for t in p.get("targets", [])]


def variable_queries(name: str, dashboard: dict[str, Any]) -> list[Query]:
    out = []
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append(Query(name, f"variable {v['name']}", v["name"], q, True))
    return out


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def parse_label_values(query: str) -> tuple[str | None, str]:
    """label_values(selector, label) -> (selector, label); Grafana's own syntax, not PromQL."""
    m = _LABEL_VALUES.match(query.strip())
    if m is None:
        raise ValueError(f"not a label_values() query: {query}")
    return m.group("selector"), m.group("label")


_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"')
_BRACES = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"bool", "and", "or", "unless", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "sum", "min", "max", "avg", "count", "quantile", "topk", "bottomk", "stddev",
             "stdvar", "count_values", "group", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (function names, keywords and labels left out)."""
    text = _LABEL_LISTS.sub(" ", _RANGES.sub(" ", _BRACES.sub(" ", _STRINGS.sub('""', expr))))
    names = set()
    for m in _IDENT.finditer(text):
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in _KEYWORDS:
            continue
        if m.start() > 0 and (text[m.start() - 1].isdigit() or text[m.start() - 1] in ".$"):
            continue  # 1e6, 0.8, $site
        names.add(m.group(0))
    return names


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation for the variables the dashboards use; unknown ones raise KeyError."""
    return _VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], expr)


# --- The metric reference in docs/metrics.md ---------------------------------------------------------------

METRICS_DOC = ROOT / "docs" / "metrics.md"
BEGIN = "<!-- metric-reference:begin (generated by tests/grafana/test_docs_reference.py; do not edit by hand) -->"
END = "<!-- metric-reference:end -->"
_UNITS = (("_timestamp_seconds", "s (Unix time)"), ("_hashes_per_second", "H/s"), ("_watts", "W"),
          ("_seconds", "s"), ("_celsius", "°C"), ("_rpm", "RPM"), ("_ratio", "ratio"),
          ("_joules_total", "J"), ("_seconds_total", "s"), ("_btc_total", "BTC"), ("_btc", "BTC"), ("_total", "count"),
          ("_info", "(labels; value 1)"))


def unit_of(family: Family) -> str:
    for suffix, unit in _UNITS:
        if family.name.endswith(suffix):
            return unit
    return "flag (0/1)" if family.help.startswith("1 ") else "count"


def metric_reference() -> str:
    """docs/metrics.md's metric tables, from the rendered exposition (see the module docstring)."""
    out = [BEGIN]
    for title, families in (("Agent (one per site, or per shard of a big site)", agent_families()),
                            ("Collector (one per fleet)", collector_families())):
        out += ["", f"**{title}**", "", "| name | type | unit | labels | meaning |", "|---|---|---|---|---|"]
        for f in families:
            labels = ", ".join(f.labels) or "-"
            out.append(f"| `{f.name}` | {f.kind} | {unit_of(f)} | {labels} | {f.help} |")
    rules_title = ("**Prometheus recording rules** (configs/prometheus/rules/megawatch.rules.yml: the same site "
                   "totals computed from the agents' series)")
    out += ["", rules_title, "", "| name | expression |", "|---|---|"]
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"] if "record" in r):
        expr = " ".join(rule["expr"].split()).replace("|", "\\|")
        out.append(f"| `{rule['record']}` | `{expr}` |")
    out.append(END)
    return "\n".join(out)


def documented_metric_reference() -> str | None:
    """The generated block as docs/metrics.md holds it now, markers included; None without one."""
    text = METRICS_DOC.read_text() if METRICS_DOC.exists() else ""
    start, end = text.find(BEGIN), text.find(END)
    return None if start < 0 or end < 0 else text[start:end + len(END)]
