"""The configs one demo run writes into its work dir, and the loopback ports they use.

From the shipped simulator fleet, sites file and agent template: the fleet scaled by --scale (each site's
allocation scaled with its simulated power, so utilisation stays the same), one agent config per site, the
collector's sites file and Prometheus's config, all on 127.0.0.1. No processes here: megawatch/demo.py runs them.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
# --scale: every simulated group's miner count is divided by this (at least one miner per group).
SCALES = {"full": 1, "small": 40}
PORTS = {"simulator": 9400, "collector": 9300, "prometheus": 9090, "alertmanager": 9093, "agent": 9541}
CONTROL_USER = "megawatch"  # the drift site's agent takes commands from the collector as this user
# The drifting site is curtailed in mode auto (docs/curtailment.md); every other site stays in plan.
DRIFT_CURTAILMENT = {"mode": "auto", "hold_s": 120, "min_off_s": 300, "max_step_ratio": 0.25}


class DemoError(Exception):
    """Something the demo needs failed: said in one line, after every started process is stopped."""


def pick_port(preferred: int) -> int:
    """`preferred` when it is free on loopback, else any free port: two demos, or a demo and tests, coexist."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As the servers bind (aiohttp, Prometheus): a port left in TIME_WAIT by the last run is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise DemoError("no free TCP port on 127.0.0.1")


@dataclass
class Plan:
    """The configs written for this run and the ports they use."""

    workdir: Path
    sites: list[dict[str, Any]]  # the simulator's sites (id, address, count)
    sim: Path
    sites_config: Path
    agents: dict[str, tuple[Path, int]] = field(default_factory=dict)
    collector_port: int = 0
    control_port: int = 0
    password_file: Path | None = None  # the drift site's agent password (its agent is behind basic auth)
    control_site: str | None = None


def _load_yaml(path: str | Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DemoError(f"{path}: {exc}") from exc


def _scaled_sim(raw: dict[str, Any], divisor: int) -> tuple[dict[str, Any], dict[str, float]]:
    """The fleet with every group divided by `divisor`, and each site's power kept (a ratio, by model)."""
    from megawatch.agent.modeltable import load_model_table

    table = load_model_table()
    ratios: dict[str, float] = {}
    for site in raw["sites"]:
        before = after = 0.0
        for group in site["groups"]:
            spec = table.lookup(group["model"])
            watts = spec.nominal_power_w if spec is not None else 1.0
            count = max(1, round(group["count"] / divisor))
            before, after = before + group["count"] * watts, after + count * watts
            group["count"] = count
        ratios[site["id"]] = after / before
        if divisor != 1:  # other addresses than the full fleet's, so a test can run beside `make demo`
            site["address"] = str(ipaddress.ip_address(site["address"]) + (10 << 16))
    return raw, ratios


def _scaled_sites(raw: dict[str, Any], ratios: dict[str, float]) -> dict[str, Any]:
    """Allocations and auxiliary loads scaled with each site's simulated power, so utilisation stays the same."""
    total_before = sum(s["allocation_mw"] for s in raw["sites"])
    for site in raw["sites"]:
        r = ratios.get(site["id"], 1.0)
        site["allocation_mw"] = round(site["allocation_mw"] * r, 6)
        if "aux_mw" in site:
            site["aux_mw"] = round(site["aux_mw"] * r, 6)
        for window in site.get("schedule", []):
            window["allocation_mw"] = round(window["allocation_mw"] * r, 6)
    total_after = sum(s["allocation_mw"] for s in raw["sites"])
    raw["fleet"]["allocation_mw"] = round(raw["fleet"]["allocation_mw"] * total_after / total_before, 6)
    return raw


def make_plan(args: argparse.Namespace, workdir: Path, alertmanager_url: str | None) -> Plan:
    sim, ratios = _scaled_sim(_load_yaml(args.sim_config), SCALES[args.scale])
    control_port = pick_port(PORTS["simulator"])
    sim["control"] = {"host": "127.0.0.1", "port": control_port}
    for site in sim["sites"]:
        if site["id"] == args.drift_site:  # its miners grant write access (cgminer's api-allow W)
            site["allow_control"] = True
    sim_path = workdir / "simulator.yaml"
    sim_path.write_text(yaml.safe_dump(sim, sort_keys=False))
    counts = {s["id"]: sum(g["count"] for g in s["groups"]) for s in sim["sites"]}

    template = _load_yaml(args.agent_config)
    sites_raw = _load_yaml(args.sites_config)
    configured = {s["id"] for s in sites_raw["sites"]}
    missing = sorted(set(counts) - configured)
    if missing:
        raise DemoError(f"{args.sites_config}: no site {', '.join(missing)} of {args.sim_config}")
    password_file = workdir / "agent-password"
    plan = Plan(workdir, sim["sites"], sim_path, workdir / "sites.yaml", control_port=control_port,
                password_file=password_file, control_site=args.drift_site)
    control_web = _control_web(workdir, password_file)
    next_port = PORTS["agent"]
    for site in sim["sites"]:
        first = ipaddress.ip_address(site["address"])
        port = pick_port(next_port)
        next_port += 1
        agent = {**template, "site": site["id"],
                 "miners": [{"range": f"{first}-{first + counts[site['id']] - 1}"}],
                 "http": {**template.get("http", {}), "listen": "127.0.0.1", "port": port},
                 "log": {"format": "json", "level": "info"}}
        if args.scale != "full":  # a small fleet polls in no time: show changes sooner
            agent["poll"] = {**template.get("poll", {}), "interval_s": 5, "request_timeout_s": 3}
        if site["id"] == args.drift_site:  # control needs basic auth, which then guards every endpoint
            agent.update(control_enabled=True, web_config_file=str(control_web))
        path = workdir / f"agent-{site['id']}.yaml"
        path.write_text(yaml.safe_dump(agent, sort_keys=False))
        plan.agents[site["id"]] = (path, port)

    sites_raw = _scaled_sites(sites_raw, ratios)
    sites_raw["sites"] = [s for s in sites_raw["sites"] if s["id"] in plan.agents]
    for s in sites_raw["sites"]:
        s["agents"] = [f"http://127.0.0.1:{plan.agents[s['id']][1]}"]
        if s["id"] == args.drift_site:
            s["curtailment"] = {**DRIFT_CURTAILMENT, "mode": getattr(args, "curtail_mode", "auto")}
    sites_raw["agent_client"] = {"username": CONTROL_USER, "password_file": str(plan.password_file)}
    sites_raw["curtailment_audit_file"] = str(workdir / "curtailment-audit.jsonl")
    sites_raw.setdefault("alerting", {})["alertmanager_urls"] = [alertmanager_url] if alertmanager_url else []
    plan.collector_port = pick_port(PORTS["collector"])
    sites_raw["listen"] = {"address": "127.0.0.1", "port": plan.collector_port}
    plan.sites_config.write_text(yaml.safe_dump(sites_raw, sort_keys=False))
    return plan


def _control_web(workdir: Path, password_file: Path) -> Path:
    """A fresh password for this run: its bcrypt hash in the drift agent's web config, itself in a 0600 file."""
    password = secrets.token_urlsafe(16)
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n")
    web = workdir / "agent-web.yaml"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    web.write_text(f"basic_auth_users:\n  {CONTROL_USER}: '{hashed}'\n")
    return web


def prometheus_config(plan: Plan, alertmanager: str | None, scrape_s: int) -> str:
    config: dict[str, Any] = {
        "global": {"scrape_interval": f"{scrape_s}s", "scrape_timeout": f"{min(10, scrape_s)}s",
                   "evaluation_interval": "15s"},
        "rule_files": [str(CONFIGS / "prometheus" / "rules" / "megawatch.rules.yml")],
        "scrape_configs": [
            {"job_name": "megawatch-agent",
             # Sent to every agent; only the drift site's (control enabled, so behind basic auth) asks for it.
             "basic_auth": {"username": CONTROL_USER, "password_file": str(plan.password_file)},
             "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"site": site}}
                                for site, (_, port) in plan.agents.items()]},
            {"job_name": "megawatch-collector", "static_configs": [{"targets": [f"127.0.0.1:{plan.collector_port}"]}]},
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return yaml.safe_dump(config, sort_keys=False)
