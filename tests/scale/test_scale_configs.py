"""The scale-out configs check out: shard configs split one site exactly, the central tier's Prometheus config
and rules are valid and unit-tested, and federation asks for site-level series only."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from megawatch.agent.config import load_agent_config
from megawatch.simulator.config import load_fleet_config
from megawatch.simulator.fleet import plan_fleet
from tests.collector.test_prometheus_rules import PROM, run, tool

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHARDS = (CONFIGS / "agent-shard1.yaml", CONFIGS / "agent-shard2.yaml")


def test_shard_configs_split_one_simulated_site_into_disjoint_halves() -> None:
    shards = [load_agent_config(path) for path in SHARDS]
    assert {s.site for s in shards} == {"bench-1"}
    # Each shard is named and served on its own: the default agent_id would be the same for both on one host.
    assert len({s.agent_id for s in shards}) == 2 and len({s.http.port for s in shards}) == 2
    halves = [{(m.address, m.port) for m in s.miners} for s in shards]
    assert not halves[0] & halves[1], "a miner in two shards is counted twice against the allocation"
    plan = plan_fleet(load_fleet_config(CONFIGS / "sim" / "fleet-10k.yaml"))
    site = {(p.host, p.port) for p in plan if p.site == "bench-1"}
    assert halves[0] | halves[1] == site and len(site) == 10_000
    assert abs(len(halves[0]) - len(halves[1])) <= 1


def test_federation_config_and_central_rules_check_out() -> None:
    proc = run(tool("promtool"), "check", "config", "federation.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run(tool("promtool"), "test", "rules", "central-rules.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _matches() -> list[str]:
    config = yaml.safe_load((PROM / "federation.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j.get("metrics_path") == "/federate"]
    assert job["honor_labels"] is True
    return list(job["params"]["match[]"])


def test_federation_asks_for_every_site_recording_rule_and_never_a_miner_series() -> None:
    rules = yaml.safe_load((PROM / "rules" / "megawatch.rules.yml").read_text())
    site_records = {r["record"] for g in rules["groups"] for r in g["rules"]
                    if r.get("record", "").startswith("site:")}
    exact = {m.group(1) for s in _matches() if (m := re.fullmatch(r'\{__name__="([^"]+)"\}', s))}
    # A renamed or added site rule must be federated too, or the central tier silently loses it.
    assert exact == site_records
    # Whatever regex selectors there are, none reaches a per-miner, raw agent or partial fleet series.
    patterns = [m.group(1) for s in _matches() if (m := re.search(r'__name__=~"([^"]+)"', s))]
    assert patterns, "the collector's allocation series are federated by a regex selector"
    for name in ("megawatch_miner_power_watts", "megawatch_miner_up", "megawatch_site_power_watts",
                 "fleet:megawatch_facility_power_watts:sum", "megawatch_site_allocation_watts"):
        hit = any(re.fullmatch(p, name) for p in patterns)
        assert hit == (name == "megawatch_site_allocation_watts"), (name, patterns)
