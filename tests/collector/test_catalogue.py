"""The alert catalogue: every alert exists in each path it names, and both paths take its line from one place.

Each alert has a scenario here: the same situation given to the collector's RuleEngine (as agent summaries)
and to Prometheus (as the agents' and the collector's series, through promtool with the rules `megawatch
rules` writes), once where it must fire and once where it must not. For an alert with a line, the two cases
hold the data still and move only the sites-file key the catalogue names (a threshold or an allocation), so
a path that ignored that key, or read a copy of it, would fire in both or neither. Adding an alert is one
catalogue entry and one scenario below (a test fails until the scenario exists).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from megawatch.collector.aggregate import aggregate_fleet
from megawatch.collector.catalogue import ALERTS, COLLECTOR_ALERT_NAMES, AlertPath
from megawatch.collector.config import ALERT_NAMES, CollectorConfig, load_collector_config
from megawatch.collector.meterconfig import MeterConfig
from megawatch.collector.meters import MeterReading
from megawatch.collector.model import AgentObservation, AlertPhase, FleetTotals
from megawatch.collector.promrules import render
from megawatch.collector.rules import RuleEngine
from megawatch.collector.sitemeter import MeterObservation, apply_meters
from tests.collector.helpers import MW, make_config, make_site, make_summary, observed
from tests.collector.test_prometheus_rules import tool

NOW = 1_800_000_000.0
EVAL = "2m"  # promtool: series sampled every 15 s from 0; the alerts are judged at 2m


@dataclass(frozen=True)
class Case:
    """One situation: the sites config, what the collector's agents report, what Prometheus scrapes."""

    config: CollectorConfig
    fleet: Callable[[CollectorConfig], FleetTotals] | None  # None: the collector has no part in it
    series: dict[str, float]  # promtool input series -> a value held for the whole test


def config(allocation_mw: float = 10.0, fleet_mw: float = 100.0, agents: int = 1,
           **thresholds: float) -> CollectorConfig:
    # Hold 0: both paths fire at their first evaluation over the line, so only the line decides.
    return make_config(make_site("a", allocation_mw=allocation_mw, agents=agents), fleet_mw=fleet_mw,
                       **{"hold_s": 0.0, **thresholds})


def reporting(power_mw: float = 5.0, down: int = 0, age_s: float = 0.0, up: bool = True,
              ids: tuple[str, ...] = ("agent",), allowance_mw: float = 0.0) -> Callable[[CollectorConfig], FleetTotals]:
    """The collector's view: each of site a's agents (one per id) reports an equal share of `power_mw`."""
    def fleet(cfg: CollectorConfig) -> FleetTotals:
        urls = cfg.sites[0].agents
        obs: dict[str, AgentObservation] = {}
        for url, agent_id in zip(urls, ids, strict=True):
            summary = replace(make_summary(power_w=power_mw * MW / len(urls), up=100 - down, down=down, age_s=age_s,
                                           allowance_w=allowance_mw * MW / len(urls)), agent_id=agent_id)
            obs[url] = observed(url, summary, NOW, up=up)
        return aggregate_fleet(cfg, obs, NOW)

    return fleet


def scraped(cfg: CollectorConfig, power_mw: float = 5.0, down: int = 0, age_s: float = 0.0, up: bool = True,
            duplicates: int = 0, allowance_mw: float = 0.0) -> dict[str, float]:
    """Prometheus's view of the same: the agent's series and the collector's config series for cfg."""
    site, collector = cfg.sites[0], 'job="megawatch-collector"'
    agent = 'job="megawatch-agent",instance="127.0.0.1:9100"'
    return {
        f'megawatch_site_power_watts{{{agent},site="a",source="firmware"}}': power_mw * MW,
        f'megawatch_site_power_upper_bound_watts{{{agent},site="a"}}': (power_mw + allowance_mw) * MW,
        f'megawatch_site_miners{{{agent},site="a",state="up"}}': 100 - down,
        f'megawatch_site_miners{{{agent},site="a",state="down"}}': down,
        f'megawatch_agent_last_cycle_timestamp_seconds{{{agent},site="a"}}': 120 - age_s,  # judged at 2m
        f'up{{{agent},site="a"}}': 1.0 if up else 0.0,
        f'megawatch_site_allocation_watts{{{collector},site="a"}}': site.allocation_w,
        f'megawatch_site_pue_ratio{{{collector},site="a"}}': site.pue,
        f'megawatch_site_aux_power_watts{{{collector},site="a"}}': site.aux_w,
        f'megawatch_site_duplicate_agent_ids{{{collector},site="a"}}': duplicates,
        f'megawatch_fleet_allocation_watts{{{collector},fleet="f"}}': cfg.fleet_allocation_w,
        f'up{{{collector},instance="127.0.0.1:9300"}}': 1.0,
        f'megawatch_collector_last_cycle_timestamp_seconds{{{collector},instance="127.0.0.1:9300"}}': 120.0,
    }


def line_moves(make: Callable[[float], CollectorConfig], fires_at: float, quiet_at: float,
               **data: float) -> tuple[Case, Case]:
    """The same data, the line moved by one sites-file key: (a case that fires, one that does not)."""
    out = []
    for x in (fires_at, quiet_at):
        cfg = make(x)
        out.append(Case(cfg, reporting(**data), scraped(cfg, **data)))  # type: ignore[arg-type]
    return out[0], out[1]


def metered(ratio: float, miners_mw: float = 5.0, meter_mw: float = 5.5) -> Case:
    """Site a with a fresh meter reading `meter_mw` beside miners reporting `miners_mw` (PUE 1, no aux)."""
    plain = config(meter_mismatch_ratio=ratio)
    cfg = replace(plain, sites=(replace(plain.sites[0], meter=MeterConfig("127.0.0.1")),))
    miners = reporting(power_mw=miners_mw)

    def fleet(c: CollectorConfig) -> FleetTotals:
        obs = MeterObservation(reading=MeterReading(meter_mw * MW), changed_at=NOW, read_at=NOW, up=True,
                               answered=True)
        return apply_meters(miners(c), c, {"a": obs}, NOW)

    ratio_series = 'megawatch_site_reconciliation_ratio{job="megawatch-collector",site="a"}'
    return Case(cfg, fleet, {**scraped(cfg, power_mw=miners_mw), ratio_series: (meter_mw - miners_mw) / miners_mw})


# alert -> (fires, quiet)
SCENARIOS: dict[str, tuple[Case, Case]] = {
    "SiteOverAllocation": line_moves(lambda mw: config(allocation_mw=mw), 10.0, 11.0, power_mw=10.5),
    "SiteNearAllocation": line_moves(lambda r: config(near_ratio=r), 0.9, 0.95, power_mw=9.3),
    "SiteDataStale": line_moves(lambda s: config(stale_after_s=s), 30.0, 60.0, age_s=40.0),
    "FleetOverAllocation": line_moves(lambda mw: config(allocation_mw=20, fleet_mw=mw), 20.0, 22.0, power_mw=21.0),
    "SiteMinersDown": line_moves(lambda r: config(miners_down_ratio=r), 0.2, 0.3, down=25),
    "SiteUnknownShareHigh": line_moves(lambda r: config(unknown_share_ratio=r), 0.1, 0.3, power_mw=8.0,
                                       allowance_mw=2.0),
    "AgentDown": (Case(config(), reporting(up=False), scraped(config(), up=False)),
                  Case(config(), reporting(), scraped(config()))),
    "SiteDuplicateAgentId": (Case(config(agents=2), reporting(ids=("x", "x")), scraped(config(), duplicates=1)),
                             Case(config(agents=2), reporting(ids=("x", "y")), scraped(config()))),
    "CollectorDown": (
        Case(config(), None, {**scraped(config()), 'up{job="megawatch-collector",instance="127.0.0.1:9300"}': 0.0}),
        Case(config(), None, scraped(config()))),
    "SiteServerDown": (Case(config(), None, {'up{job="megawatch-federate",instance="b-prom:9090"}': 0.0}),
                       Case(config(), None, {'up{job="megawatch-federate",instance="b-prom:9090"}': 1.0})),
    "SiteMeterMismatch": (metered(0.05), metered(0.15)),
}


def test_every_alert_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(ALERTS)


def test_each_alert_is_in_the_collector_or_says_why_not() -> None:
    for name, spec in ALERTS.items():
        in_collector = AlertPath.COLLECTOR in spec.paths
        assert in_collector == (spec.measure is not None), name
        assert in_collector == (not spec.only_prometheus), name
        assert spec.paths & {AlertPath.PROMETHEUS, AlertPath.CENTRAL}, f"{name}: Prometheus must raise it too"
    assert ALERT_NAMES == COLLECTOR_ALERT_NAMES
    assert {"SiteDuplicateAgentId", "SiteOverAllocation"} <= set(COLLECTOR_ALERT_NAMES)


def _collector_fires(name: str, case: Case) -> bool:
    assert case.fleet is not None
    active = RuleEngine(case.config.thresholds).evaluate(case.fleet(case.config), NOW).active
    return any(a.name == name and a.phase is AlertPhase.FIRING for a in active)


@pytest.mark.parametrize("name", COLLECTOR_ALERT_NAMES)
def test_the_collector_raises_it_on_the_line_the_sites_file_sets(name: str) -> None:
    fires, quiet = SCENARIOS[name]
    assert _collector_fires(name, fires)
    assert not _collector_fires(name, quiet)


def test_the_collector_never_raises_a_prometheus_only_alert() -> None:
    for name in set(ALERTS) - set(COLLECTOR_ALERT_NAMES):
        for case in SCENARIOS["SiteOverAllocation"]:
            assert case.fleet is not None
            active = RuleEngine(case.config.thresholds).evaluate(case.fleet(case.config), NOW).active
            assert all(a.name != name for a in active)


def _promtool_case(home: Path, name: str, case: Case, central: bool) -> Path:
    """A promtool test of the rules `megawatch rules` writes for case.config: is `name` firing at 2m?"""
    home.mkdir(parents=True)
    (home / "rules.yml").write_text(render(case.config, "test.yaml", central=central))
    firing = f'count(ALERTS{{alertname="{name}",alertstate="firing"}})'
    expected = [{"labels": "{}", "value": 1}] if case is SCENARIOS[name][0] else []
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s",
                   "input_series": [{"series": s, "values": f"{v:g}x12"} for s, v in case.series.items()],
                   "promql_expr_test": [{"expr": firing, "eval_time": EVAL, "exp_samples": expected}]}],
    }
    (home / "test.yml").write_text(yaml.safe_dump(test))
    return home / "test.yml"


@pytest.fixture(scope="module")
def prometheus_verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every scenario through promtool in one run: test file -> its output ('' when it passed)."""
    root = tmp_path_factory.mktemp("catalogue")
    files = []
    for name, spec in ALERTS.items():
        central = AlertPath.PROMETHEUS not in spec.paths
        for label, case in zip(("fires", "quiet"), SCENARIOS[name], strict=True):
            files.append(_promtool_case(root / f"{name}-{label}", name, case, central))
    proc = subprocess.run([tool("promtool"), "test", "rules", *map(str, files)], capture_output=True, text=True,
                          timeout=120, check=False)
    verdicts: dict[str, str] = {}
    for block in re.split(r"(?m)^Unit Testing: +", proc.stdout + proc.stderr)[1:]:
        path, _, rest = block.partition("\n")
        verdicts[Path(path.strip()).parent.name] = "" if rest.strip().startswith("SUCCESS") else rest
    assert len(verdicts) == len(files), proc.stdout + proc.stderr
    return verdicts


@pytest.mark.parametrize("name", list(ALERTS))
def test_prometheus_raises_it_on_the_line_the_sites_file_sets(name: str, prometheus_verdicts: dict[str, str]) -> None:
    for label in ("fires", "quiet"):
        verdict = prometheus_verdicts[f"{name}-{label}"]
        assert verdict == "", f"{name} ({label}):\n{verdict}"


@pytest.mark.parametrize("sites", ["configs/sites.yaml", "configs/national/sites.yaml",
                                   "configs/national/sites-demo.yaml"])
def test_prometheus_holds_each_alert_as_long_as_the_sites_file_says(sites: str) -> None:
    cfg = load_collector_config(Path(__file__).resolve().parents[2] / sites)
    for central in (False, True):
        rules = yaml.safe_load(render(cfg, sites, central=central))["groups"][0]["rules"]
        for rule in (r for r in rules if "alert" in r):
            hold = cfg.thresholds.hold_for(rule["alert"])
            assert rule["for"] == (f"{hold / 60:g}m" if hold % 60 == 0 and hold else f"{hold:g}s"), rule["alert"]


# ---- docs/alerts.md: its alert table is the catalogue's -------------------------------------------------------

ALERTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"
BEGIN = "<!-- alerts:begin (generated by tests/collector/test_catalogue.py; do not edit by hand) -->"
END = "<!-- alerts:end -->"
_PATHS = {AlertPath.COLLECTOR: "collector", AlertPath.PROMETHEUS: "Prometheus", AlertPath.CENTRAL: "central tier"}
# How the docs name the text fields the two paths fill with figures.
_WORDS = {"who": "the site", "value": "the figure", "line": "the line", "excess": "the excess", "ratio": "the ratio",
          "clear": "line x (1 - `hysteresis_ratio`)"}


def alerts_table() -> str:
    """The catalogue as docs/alerts.md shows it; hold times as configs/sites.yaml sets them."""
    from megawatch.collector.catalogue import fill

    t = load_collector_config(ALERTS_DOC.parents[1] / "configs" / "sites.yaml").thresholds
    out = [BEGIN, "", "| alert | severity | raised by | line from | hold in configs/sites.yaml | log event | "
           "what it means | what to do |", "|---|---|---|---|---|---|---|---|"]
    for name, spec in ALERTS.items():
        by = ", ".join(label for path, label in _PATHS.items() if path in spec.paths)
        line = f"`{spec.source}`" + (" (with hysteresis)" if spec.hysteresis else "") if spec.source else "-"
        hold = f"{t.hold_for(name):g} s" + (" (`hold_overrides_s`)" if name in dict(t.hold_overrides_s) else "")
        event = f"`{spec.log_event}`" if AlertPath.COLLECTOR in spec.paths else "- (" + spec.only_prometheus + ")"
        action = fill(spec.action, _WORDS)
        out.append(f"| `{name}` | {spec.severity.value} | {by} | {line} | {hold} | {event} | {spec.means} | "
                   f"{action} |")
    out.append(END)
    return "\n".join(out)


def test_docs_alert_table_is_the_catalogue() -> None:
    text = ALERTS_DOC.read_text()
    start, end = text.find(BEGIN), text.find(END)
    assert start >= 0 and end > start, "docs/alerts.md has no generated alert table"
    current, expected = text[start:end + len(END)], alerts_table()
    if os.environ.get("MEGAWATCH_UPDATE_DOCS") == "1" and current != expected:
        ALERTS_DOC.write_text(text.replace(current, expected))
        current = expected
    assert current == expected, ("docs/alerts.md's alert table differs from the catalogue: rerun with "
                                 "MEGAWATCH_UPDATE_DOCS=1 and review the diff")
