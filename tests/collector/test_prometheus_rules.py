"""configs/prometheus: the rules, their promtool unit tests, prometheus.yml and alertmanager.yml all check out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from megawatch.collector.catalogue import ALERTS, AlertPath

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


@pytest.mark.parametrize(("rules", "tests", "path"), [
    ("rules/megawatch.rules.yml", "rules/megawatch.rules.test.yml", AlertPath.PROMETHEUS),
    ("central-rules.yml", "central-rules.test.yml", AlertPath.CENTRAL)])
def test_every_alert_rule_has_unit_tests_for_firing_and_not_firing(rules: str, tests: str, path: AlertPath) -> None:
    import yaml

    groups = yaml.safe_load((PROM / rules).read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    cases = yaml.safe_load((PROM / tests).read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for t in case.get("alert_rule_test", []):
            (fires if t["exp_alerts"] else quiet).add(t["alertname"])
    assert alerts == {name for name, spec in ALERTS.items() if path in spec.paths}
    assert alerts <= fires and alerts <= quiet, (alerts - fires, alerts - quiet)


@pytest.mark.parametrize(("shipped", "sites", "central"), [
    ("rules/megawatch.rules.yml", "configs/sites.yaml", False),
    ("central-rules.yml", "configs/national/sites.yaml", True)])
def test_shipped_rules_are_what_megawatch_rules_writes(shipped: str, sites: str, central: bool) -> None:
    from megawatch.collector.config import load_collector_config
    from megawatch.collector.promrules import render

    expected = render(load_collector_config(PROM.parents[1] / sites), sites, central=central)
    assert (PROM / shipped).read_text() == expected, (
        f"configs/prometheus/{shipped} drifted from the catalogue or {sites}: regenerate it with "
        f"`megawatch rules --config {sites}{' --central' if central else ''} --out configs/prometheus/{shipped}`")


def test_prometheus_config_checks() -> None:
    proc = run(tool("promtool"), "check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alertmanager_config_checks() -> None:
    proc = run(tool("amtool"), "check-config", "alertmanager.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_megawatch_rules_writes_the_shipped_file_and_names_a_bad_key(tmp_path: Path) -> None:
    def rules(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "megawatch.cli", "rules", *argv], capture_output=True,
                              text=True, timeout=60, cwd=PROM.parents[1], check=False)

    out = tmp_path / "megawatch.rules.yml"
    done = rules("--config", "configs/sites.yaml", "--out", str(out))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert out.read_text() == (PROM / "rules" / "megawatch.rules.yml").read_text()
    assert rules("--config", "configs/sites.yaml").stdout == out.read_text()  # no --out: standard output

    bad = tmp_path / "sites.yaml"
    bad.write_text((PROM.parent / "sites.yaml").read_text().replace("near_ratio: 0.95", "near_ratio: 1.5"))
    failed = rules("--config", str(bad), "--out", str(tmp_path / "never.yml"))
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert lines[0].startswith(f"{bad}:") and "thresholds.near_ratio" in lines[0], lines[0]
    assert not (tmp_path / "never.yml").exists()
    unwritable = rules("--config", "configs/sites.yaml", "--out", str(tmp_path / "no" / "such" / "dir.yml"))
    assert unwritable.returncode == 2 and "cannot write" in unwritable.stderr, unwritable.stderr
