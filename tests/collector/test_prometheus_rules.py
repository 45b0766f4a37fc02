"""configs/prometheus: the rules, their promtool unit tests, prometheus.yml and alertmanager.yml all check out."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROM = Path(__file__).resolve().parents[2] / "configs" / "prometheus"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed: .ci/run installs prometheus and prometheus-alertmanager")
        pytest.skip(f"{name} not installed")
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=PROM, check=False)


def test_rules_check() -> None:
    proc = run(tool("promtool"), "check", "rules", "rules/megawatch.rules.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_unit_tests_pass() -> None:
    proc = run(tool("promtool"), "test", "rules", "rules/megawatch.rules.test.yml")
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_every_alert_rule_has_unit_tests_for_firing_and_not_firing() -> None:
    import yaml

    rules = yaml.safe_load((PROM / "rules" / "megawatch.rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROM / "rules" / "megawatch.rules.test.yml").read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for t in case.get("alert_rule_test", []):
            (fires if t["exp_alerts"] else quiet).add(t["alertname"])
    assert alerts == {"SiteOverAllocation", "SiteNearAllocation", "AgentDown", "SiteDataStale",
                      "FleetOverAllocation", "SiteMinersDown", "SiteDuplicateAgentId"}
    assert alerts <= fires and alerts <= quiet


def test_prometheus_config_checks() -> None:
    proc = run(tool("promtool"), "check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alertmanager_config_checks() -> None:
    proc = run(tool("amtool"), "check-config", "alertmanager.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]


def test_rules_and_the_shipped_sites_yaml_use_the_same_thresholds() -> None:
    import yaml

    from megawatch.collector.config import load_collector_config

    t = load_collector_config(PROM.parent / "sites.yaml").thresholds
    rules = {r["alert"]: r for g in yaml.safe_load((PROM / "rules" / "megawatch.rules.yml").read_text())["groups"]
             for r in g["rules"] if "alert" in r}
    for name, rule in rules.items():
        assert _seconds(rule["for"]) == t.hold_for(name), name
    band = f"{1 - t.hysteresis_ratio:g}"
    assert f">= {t.near_ratio:g}" in rules["SiteNearAllocation"]["expr"]
    assert f">= {t.miners_down_ratio:g}" in rules["SiteMinersDown"]["expr"]
    assert f"> {t.stale_after_s:g}" in rules["SiteDataStale"]["expr"]
    for name in ("SiteOverAllocation", "SiteNearAllocation", "FleetOverAllocation", "SiteMinersDown"):
        assert band in rules[name]["expr"], name
