"""Shared fixtures: the real simulator on loopback, small and fast.

`sim_fleet` is an in-process fleet (one miner per dialect profile, two sites) on 127.0.x.y with
ephemeral ports, its tick clock frozen, and its control endpoint on 127.0.0.1:<free port>.
`make_sim_fleet(...)` builds other shapes. `raw_request(host, port, bytes)` is a bare socket exchange for
tests that must see exactly what went over the wire.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from megawatch.agent.modeltable import load_model_table
from megawatch.simulator.config import ControlConfig, FaultConfig, FleetConfig, GroupConfig, SiteConfig
from megawatch.simulator.control import LocalBackend, start_control
from megawatch.simulator.faults import make_fault
from megawatch.simulator.fleet import Fleet, initial_faults, plan_fleet
from megawatch.simulator.miner import Miner

# One miner per reply profile: bmminer has two (S9-class compact, S19-class spaced).
DEFAULT_GROUPS: tuple[tuple[str, str], ...] = (
    ("cgminer", "Antminer S19"),
    ("bfgminer", "Antminer S9k"),
    ("bmminer", "Antminer S19 Pro"),
    ("bmminer", "Antminer S9"),
    ("btminer", "Whatsminer M30S++"),
    ("bosminer", "Antminer S19j Pro"),
    ("luxos", "Antminer S21"),
    ("avalon", "Avalon A1246"),
)


@dataclass
class SimMiner:
    host: str
    port: int
    site: str
    dialect: str
    model: str
    index: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class SimFleet:
    """A running in-process fleet: where its miners listen and how to steer it."""

    fleet: Fleet
    backend: LocalBackend
    control_url: str
    miners: list[SimMiner] = field(default_factory=list)

    def miner(self, index: int) -> Miner:
        return self.fleet.by_index[index]

    def of_dialect(self, dialect: str) -> list[SimMiner]:
        return [m for m in self.miners if m.dialect == dialect]

    def set_fault(self, miners: Sequence[SimMiner], kind: str, **params: float) -> None:
        fault = make_fault(kind, params)
        for m in miners:
            self.fleet.set_fault(self.fleet.by_index[m.index], fault)

    async def truth(self) -> dict[str, Any]:
        return await self.backend.truth()


def _block() -> int:
    # A third octet per test process, so parallel runs do not share addresses (ports are ephemeral anyway).
    return 20 + os.getpid() % 200


def make_config(groups: Sequence[tuple[str, str]] = DEFAULT_GROUPS, *, sites: int = 2, seed: int = 7,
                tick_s: float = 5.0, per_group: int = 1, port_base: int | None = None,
                faults: Sequence[FaultConfig] = (), allow_control: bool = False, third_octet: int | None = None,
                joins: bool = True,
                ) -> FleetConfig:
    """A fleet config built in code: every site gets `per_group` miners of each (dialect, model)."""
    table = load_model_table()
    octet = _block() if third_octet is None else third_octet
    site_configs = []
    for s in range(sites):
        group_configs = []
        for dialect, model in groups:
            spec = table.lookup(model)
            assert spec is not None, model
            group_configs.append(GroupConfig(per_group, spec, dialect, allow_control, joins))
        site_configs.append(SiteConfig(
            id=f"site-{chr(ord('a') + s)}", address=f"127.0.{octet}.{1 + s * 100}",
            port=0 if port_base is None else 4028, port_base=port_base, ambient_c=20.0 + 10 * s,
            groups=tuple(group_configs), faults=tuple(faults) if s == 0 else (),
        ))
    return FleetConfig(seed=seed, tick_s=tick_s, control=ControlConfig("127.0.0.1", 0), sites=tuple(site_configs))


MakeSimFleet = Callable[..., Awaitable[SimFleet]]


@pytest.fixture
async def make_sim_fleet() -> AsyncIterator[MakeSimFleet]:
    """Factory: `await make_sim_fleet(config=None, frozen=True, **make_config_kwargs)`."""
    started: list[tuple[Fleet, Any]] = []

    async def make(config: FleetConfig | None = None, *, frozen: bool = True, **kwargs: Any) -> SimFleet:
        config = config if config is not None else make_config(**kwargs)
        plan = plan_fleet(config)
        fleet = Fleet(config, plan, faults=initial_faults(config, plan))
        if frozen:
            fleet.clock.freeze(at=0)
        await fleet.start()
        backend = LocalBackend(fleet, plan)
        runner, port = await start_control(backend, "127.0.0.1", 0)
        started.append((fleet, runner))
        miners = [SimMiner(m.identity.host, m.identity.port, m.identity.site, m.identity.dialect,
                           m.identity.model.name, m.identity.index) for m in fleet.miners]
        return SimFleet(fleet, backend, f"http://127.0.0.1:{port}", miners)

    yield make
    for fleet, runner in started:
        await runner.cleanup()
        await fleet.stop()


@pytest.fixture
async def sim_fleet(make_sim_fleet: MakeSimFleet) -> SimFleet:
    return await make_sim_fleet()


async def _raw_request(host: str, port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send `payload` in one write, read until the server closes; the bytes exactly as sent."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(payload)
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()


@pytest.fixture
def raw_request() -> Callable[..., Awaitable[bytes]]:
    return _raw_request
