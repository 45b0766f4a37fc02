"""`megawatch scan`: a sparse simulated /22 is found exactly, each miner with its dialect, model and identity;
the config it writes passes --check-config and polls the same fleet; absurd ranges are refused; reads only."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import MakeSimFleet, SimFleet

from megawatch.agent import dialects
from megawatch.agent.config import load_agent_config
from megawatch.agent.discovery import Outcome
from megawatch.agent.inventory import IDENTITY_COMMANDS
from megawatch.agent.modeltable import load_model_table
from megawatch.agent.poller import Poller
from megawatch.agent.protocol.client import READ_COMMANDS
from megawatch.agent.scan import UsageError, plan, scan
from megawatch.agent.state import FleetState
from megawatch.simulator.config import ControlConfig, FleetConfig, GroupConfig, SiteConfig

# Some hundreds of miners, every dialect, 60% of the addresses taken: the rest are holes.
GROUPS = (("bmminer", "Antminer S19 Pro", 120), ("bmminer", "Antminer S9", 40), ("btminer", "Whatsminer M30S++", 80),
          ("bosminer", "Antminer S19j Pro", 60), ("luxos", "Antminer S21", 80), ("avalon", "Avalon A1246", 60),
          ("cgminer", "Antminer S19", 60), ("bfgminer", "Antminer S9k", 60))


def sparse_block() -> ipaddress.IPv4Network:
    """A /22 of our own per test process (parallel runs must not share addresses on port 4028)."""
    return ipaddress.IPv4Network(f"127.{60 + os.getpid() % 60}.{4 * (os.getpid() // 60 % 60)}.0/22")


def sparse_config(block: ipaddress.IPv4Network, density: float = 0.6) -> FleetConfig:
    table = load_model_table()
    groups = []
    for dialect, model, count in GROUPS:
        spec = table.lookup(model)
        assert spec is not None
        groups.append(GroupConfig(count, spec, dialect))
    site = SiteConfig("sparse", str(block.network_address + 1), 4028, None, 25.0, tuple(groups), density=density)
    assert site.offsets()[-1] < block.num_addresses - 2, "the fleet must fit in the block"
    return FleetConfig(seed=11, tick_s=5.0, control=ControlConfig("127.0.0.1", 0), sites=(site,))


@pytest.fixture
async def sparse_fleet(make_sim_fleet: MakeSimFleet) -> tuple[SimFleet, ipaddress.IPv4Network]:
    block = sparse_block()
    return await make_sim_fleet(sparse_config(block)), block


async def test_sparse_block_is_found_exactly(sparse_fleet: tuple[SimFleet, ipaddress.IPv4Network]) -> None:
    sim, block = sparse_fleet
    assert len(sim.miners) == 560
    assert len(sim.miners) < block.num_addresses - 2 - 300  # hundreds of holes, not a full block
    probes = await asyncio.wait_for(scan(plan([str(block)], [], 4028, False), connect_s=0.5, request_s=15), 50)
    found = {p.target.address: p for p in probes if p.outcome is Outcome.FOUND}
    truth = {m.host: m for m in sim.miners}
    assert set(found) == set(truth)
    assert sum(p.outcome is Outcome.EMPTY for p in probes) == block.num_addresses - 2 - len(truth)
    table = load_model_table()
    rows = {r["host"]: r for r in sim.fleet.miner_rows()}
    for host, p in found.items():
        m = truth[host]
        assert p.dialect == m.dialect, host
        assert p.identity is not None and p.identity.model == table.lookup(m.model).name, (host, p.identity)  # type: ignore[union-attr]
        assert p.identity.hashboards == 3 and p.identity.nameplate_hs is not None
        # Each firmware's own identity fields, in its own format.
        if m.dialect == "btminer":
            assert p.identity.mac == rows[host]["mac"] and p.identity.hostname == rows[host]["hostname"]
            assert p.identity.serial and p.identity.serial.startswith("HEM")
        elif m.dialect == "luxos":
            assert p.identity.mac == rows[host]["mac"] and p.identity.serial and p.identity.hostname
        elif m.dialect == "avalon":
            assert p.identity.mac == rows[host]["mac"] and p.identity.hardware_id
        elif m.dialect == "bmminer":
            assert p.identity.hardware_id == rows[host]["serial"]
    truth_sums = await sim.truth()
    assert truth_sums["fleet"]["privileged_commands"] == 0


async def test_written_config_checks_and_polls_the_same_fleet(
        sparse_fleet: tuple[SimFleet, ipaddress.IPv4Network], tmp_path: Path) -> None:
    sim, block = sparse_fleet
    out = tmp_path / "agent.yaml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "megawatch.cli", "scan", str(block), "--exclude", str(block.network_address + 2),
        "--format", "csv", "--write-config", str(out), "--site", "north", "--connect-timeout", "0.5",
        "--timeout", "15",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 50)
    assert proc.returncode == 0, stderr.decode()
    expected = {m.host for m in sim.miners} - {str(block.network_address + 2)}
    lines = stdout.decode().splitlines()
    assert lines[0].startswith("address,port,dialect,make,model")
    assert {line.split(",")[0] for line in lines[1:]} == expected
    check = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "megawatch.cli", "agent", "--check-config", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    checked, errors = await asyncio.wait_for(check.communicate(), 30)
    assert check.returncode == 0, errors.decode()
    assert checked.decode().startswith(f"ok: site north, {len(expected)} miners")
    config = load_agent_config(out)
    assert {t.address for t in config.miners} == expected and all(t.expected for t in config.miners)
    poller = Poller(config, FleetState(config.site, len(config.miners)))
    snap = await asyncio.wait_for(poller.poll_once(), 30)
    assert (snap.totals.up, snap.totals.down, snap.totals.configured) == (len(expected), 0, len(expected))


def test_absurd_ranges_are_refused_without_the_flag() -> None:
    with pytest.raises(UsageError, match="65,536"):
        plan(["10.0.0.0/15"], [], 4028, False)
    assert len(plan(["10.0.0.0/16"], [], 4028, False)) == 65_534
    assert len(plan(["10.0.0.0/15"], [], 4028, True)) == 131_070
    with pytest.raises(UsageError, match="not a CIDR"):
        plan(["10.0.0.1/24"], [], 4028, False)
    # Exclusions and overlaps: each address once, excluded ones never.
    targets = plan(["127.5.0.0/29", "127.5.0.4-127.5.0.9"], ["127.5.0.2", "127.5.0.8/31"], 4028, False)
    assert [t.address for t in targets] == ["127.5.0.1", "127.5.0.3", "127.5.0.4", "127.5.0.5", "127.5.0.6",
                                            "127.5.0.7"]


async def test_cli_refuses_a_slash_eight_and_names_the_flag() -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "megawatch.cli", "scan", "10.0.0.0/8",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"--allow-large" in stderr and b"Traceback" not in stderr


def test_a_scan_sends_read_commands_only() -> None:
    sent = set(dialects.DETECT_COMMANDS)
    for module in dialects.DIALECTS.values():
        sent.update(module.COMMANDS)
    for extra in IDENTITY_COMMANDS.values():
        sent.update(extra)
    assert sent <= READ_COMMANDS


async def test_empty_and_silent_addresses_are_fast(sim_fleet: SimFleet) -> None:
    # Refused (loopback, nothing listening) and a port that accepts but never answers a miner API request.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        probes = await asyncio.wait_for(scan(plan(["127.0.0.1"], [], port, False) + plan(["127.9.9.1-127.9.9.50"],
                                                                                           [], 4028, False),
                                             connect_s=0.5, request_s=1.0), 10)
    finally:
        server.close()
    outcomes = {p.target.address + ":" + str(p.target.port): p.outcome for p in probes}
    assert outcomes.pop(f"127.0.0.1:{port}") is Outcome.NOT_MINER
    assert set(outcomes.values()) == {Outcome.EMPTY}
    assert json.dumps([p.outcome.value for p in probes])  # every outcome has a printable name
