"""The fleet under test: a simulator config and the agent config that polls it, written for one run.

The dialect mix is the one of configs/sim/fleet-10k.yaml (the simulator's benchmark fleet), scaled to the
size asked for, so a 50-miner smoke run and a 10,000-miner run poll the same kinds of miners.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml

from megawatch.simulator.config import load_fleet_config

REPO = Path(__file__).resolve().parent.parent
MIX_FILE = REPO / "configs" / "sim" / "fleet-10k.yaml"


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """What to simulate. `latency_s`: reply delays (the simulator's `slow` fault), each for an equal share of
    the miners; () for instant replies."""

    miners: int
    base_address: str = "127.60.0.1"
    seed: int = 3
    latency_s: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """How the agent under test is configured; None keeps the agent's own default."""

    interval_s: float = 15.0
    connect_timeout_s: float | None = None
    request_timeout_s: float | None = None
    concurrency: int | None = None
    http_port: int = 0


def mix(miners: int) -> list[tuple[int, str, str]]:
    """(count, model, dialect) groups in the proportions of MIX_FILE, summing to `miners`."""
    groups = [g for site in load_fleet_config(MIX_FILE).sites for g in site.groups]
    total = sum(g.count for g in groups)
    exact = [miners * g.count / total for g in groups]
    counts = [int(x) for x in exact]
    # Largest remainder, so the groups add up to exactly `miners`.
    for i in sorted(range(len(groups)), key=lambda i: exact[i] - counts[i], reverse=True)[: miners - sum(counts)]:
        counts[i] += 1
    return [(c, g.model.name, g.dialect) for c, g in zip(counts, groups, strict=True) if c > 0]


def write_sim_config(spec: FleetSpec, path: Path) -> Path:
    site: dict[str, object] = {
        "id": "bench",
        "address": spec.base_address,
        "groups": [{"count": c, "model": m, "dialect": d} for c, m, d in mix(spec.miners)],
    }
    if spec.latency_s:
        # The simulator picks a fraction's miners by a seeded rank, the same rank for every `slow` entry, and
        # a later entry wins a miner: fractions 1, 4/5, ..., 1/5 leave each delay on its own fifth.
        shares = len(spec.latency_s)
        site["faults"] = [{"fault": "slow", "fraction": (shares - i) / shares, "delay_s": delay}
                          for i, delay in enumerate(spec.latency_s)]
    config = {
        "seed": spec.seed,
        "tick_s": 5,
        "control": {"host": "127.0.0.1", "port": 0},  # the harness reads the port the simulator prints
        "miners_per_worker": 10_000,
        "sites": [site],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_agent_config(fleet: FleetSpec, agent: AgentSpec, path: Path, *, miners: tuple[int, int] | None = None,
                       agent_id: str = "bench-agent") -> Path:
    """The agent config polling the fleet, or only its miners [first, last) when `miners` is given (a shard)."""
    first, last = miners if miners is not None else (0, fleet.miners)
    base = ipaddress.IPv4Address(fleet.base_address)
    poll: dict[str, float | int] = {"interval_s": agent.interval_s}
    for key in ("connect_timeout_s", "request_timeout_s", "concurrency"):
        value = getattr(agent, key)
        if value is not None:
            poll[key] = value
    config = {
        "site": "bench",
        "agent_id": agent_id,
        "miners": [{"range": f"{base + first}-{base + last - 1}"}],
        "poll": poll,
        "http": {"listen": "127.0.0.1", "port": agent.http_port},
        "log": {"format": "json", "level": "info"},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
