"""A site read by two agent shards adds up to what one agent reading all of it says.

On the bench's own fleet, with the simulator's clock frozen (every miner answers the same figures on every
poll, so agents polling at different moments must agree to the last digit): one agent over every miner and
two shard agents over the two halves run at once on the client core; once each has finished two cycles,
their /api/v1/summary totals are compared - counts exactly, W and H/s to 1e-9 relative - and with the
simulator's ground truth.
"""

from __future__ import annotations

import json
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from bench import fleets
from bench.fleets import AgentSpec, FleetSpec
from bench.procs import (
    BenchError,
    Cores,
    Proc,
    free_port,
    http_get,
    http_json,
    megawatch_command,
    wait_for,
)

TOLERANCE = 1e-9  # relative: float sums in another order differ by rounding only
COUNTS = ("up", "down", "stale", "configured")


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:  # the simulator's loopback control endpoint
        return json.loads(resp.read())


def _totals(summary: dict[str, Any]) -> dict[str, float]:
    t, m = summary["totals"], summary["miners"]
    power = t["power_w"] or {}
    return {"hashrate_hs": t["hashrate_hs"], "power_firmware_w": power.get("firmware"),
            "power_estimate_w": power.get("estimate"), **{k: m[k] for k in COUNTS}}


def _add(parts: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(p[k] for p in parts) for k in parts[0]}


def compare(one: dict[str, float], shards: dict[str, float]) -> tuple[float, list[str]]:
    """(largest relative difference of the float totals, the counts that differ)."""
    worst = 0.0
    for key in ("hashrate_hs", "power_firmware_w", "power_estimate_w"):
        a, b = one[key], shards[key]
        worst = max(worst, abs(a - b) / max(abs(a), abs(b), 1e-300))
    return worst, [f"{k}: one agent {one[k]}, shards {shards[k]}" for k in COUNTS if one[k] != shards[k]]


def shard_phase(fleet: FleetSpec, agent: AgentSpec, control_url: str, cores: Cores, logs: Path, budget: Any,
                started: list[Proc], say: Any) -> dict[str, Any]:
    half = fleet.miners // 2
    layout = {"one": (0, fleet.miners), "shard1": (0, half), "shard2": (half, fleet.miners)}
    say(f"  shards: one agent over {fleet.miners:,} miners beside two shards of {half:,} and "
        f"{fleet.miners - half:,}, simulator clock frozen")
    _post(control_url + "/api/v1/clock", {"freeze": True})
    agents: dict[str, str] = {}
    try:
        for name, miners in layout.items():
            config = fleets.write_agent_config(fleet, agent, logs / f"agent-{name}.yaml", miners=miners,
                                               agent_id=f"bench-{name}")
            port = free_port()
            proc = Proc(f"agent-{name}",
                        [*megawatch_command(), "agent", "--config", str(config), "--listen", f":{port}"],
                        logs / f"agent-{name}.log", cores.client)
            started.append(proc)
            agents[name] = f"http://127.0.0.1:{port}"
            wait_for(f"agent-{name} /healthz", partial(_healthy, agents[name]), budget.cap(60), proc)
        summaries: dict[str, dict[str, Any]] = {}
        for name, base in agents.items():
            summaries[name] = wait_for(f"agent-{name} cycle 2", partial(_after_cycle, base, 2),
                                       budget.cap(agent.interval_s * 3 + 60), None, every_s=0.5)
        truth = http_json(control_url + "/api/v1/truth", 10)
    finally:
        _post(control_url + "/api/v1/clock", {"freeze": False})
        for proc in [p for p in started if p.name.startswith("agent-")]:
            proc.stop()
    one = _totals(summaries["one"])
    shards = _add([_totals(summaries["shard1"]), _totals(summaries["shard2"])])
    worst, counts = compare(one, shards)
    if truth is None or "bench" not in truth.get("sites", {}):
        raise BenchError(f"the simulator's /api/v1/truth did not answer for site bench: {truth!r:.200}")
    site = truth["sites"]["bench"]
    vs_truth = {"hashrate_hs": _relative(one["hashrate_hs"], site["hashrate_hs"]),
                "power_firmware_w": _relative(one["power_firmware_w"], site["power_w_reported"]),
                "power_estimate_w": _relative(one["power_estimate_w"], site["power_w_estimable"])}
    return {"one": one, "shards": shards, "max_relative_difference": worst, "counts_differ": counts,
            "vs_truth_relative": vs_truth, "miners": fleet.miners}


def _relative(ours: float | None, truth: float) -> float | None:
    return None if ours is None else abs(ours - truth) / max(abs(truth), 1e-300)


def _healthy(base: str) -> bool | None:
    return True if http_get(base + "/healthz", 2)[0] == 200 else None


def _after_cycle(base: str, cycle: int) -> dict[str, Any] | None:
    summary = http_json(base + "/api/v1/summary", 5)
    return summary if summary is not None and (summary["cycle"]["number"] or 0) >= cycle else None
