"""Run the fleet in this process, or spread it over worker processes when it is too big for one.

One process holds at most ~19,900 listeners (open-file limit 20,000, PERF-NOTES) and needs descriptors
for accepted connections too, so each process serves at most `miners_per_worker` miners (10,000 by
default). Each worker serves its slice plus a private control endpoint on loopback; the parent's
endpoint fans out to them. Fault fractions are resolved in the parent over the whole site, so the
choice does not depend on how the fleet was split.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.simulator.config import FleetConfig
from agent.simulator.control import LocalBackend
from agent.simulator.fleet import Fleet, plan_fleet, initial_faults


class InProcess(LocalBackend):
    workers = 1

    def __init__(self, fleet: Fleet, plan: list[Any]) -> None:
        super().__init__(fleet, plan)
        self.startup_s = fleet.startup_s or 0.0

    def describe(self) -> list[str]:
        return describe_sites(self.fleet.config, self.plan, self.startup_s)

    async def close(self) -> None:
        await self.fleet.stop()


def describe_sites(config: FleetConfig, plan: list[Any], startup_s: float) -> list[str]:
    lines = []
    for site in config.sites:
        members = [p for p in plan if p.site == site.id]
        if not members:
            continue
        first, last = members[0], members[-1]
        if site.port_base is not None:
            where = f"{first.host} ports {first.port}-{last.port}"
        else:
            where = f"{first.host} - {last.host} port {first.port if first.port else '(any free)'}"
        lines.append(f"site {site.id}: {len(members)} miners on {where}")
    lines.append(f"{len(plan)} miners listening (started in {startup_s:.2f} s)")
    return lines


async def start_backend(config: FleetConfig) -> InProcess:
    plan = plan_fleet(config)
    started = time.perf_counter()
    fleet = Fleet(config, plan, faults=initial_faults(config, plan))
    await fleet.start()
    backend = InProcess(fleet, plan)
    backend.startup_s = time.perf_counter() - started
    return backend


__all__ = ["start_backend", "asyncio"]
