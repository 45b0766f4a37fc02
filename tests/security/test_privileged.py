"""Read-only by construction: the agent never sends a privileged command unless control is enabled.

Proved from the simulator's side (its truth counts every privileged request it receives, refused or not),
over several real poll cycles that go through detection, join refusal and the per-command fallback,
failures and re-detection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from megawatch.agent.config import load_agent_config
from megawatch.agent.poller import Poller
from megawatch.agent.protocol.client import query
from megawatch.agent.protocol.errors import PrivilegedCommandRefused
from megawatch.agent.state import FleetState

REDETECT_AFTER = 2


def _agent_config(tmp_path: Path, miners: list[Any]) -> Any:
    entries = "".join(f"  - {{address: {m.host}, port: {m.port}}}\n" for m in miners)
    path = tmp_path / "agent.yaml"
    path.write_text(f"site: site-a\nminers:\n{entries}"
                    f"poll: {{interval_s: 5, request_timeout_s: 1, connect_timeout_s: 0.5, jitter_s: 0, "
                    f"redetect_after_failures: {REDETECT_AFTER}}}\n")
    config = load_agent_config(path)
    assert config.control_enabled is False  # the default
    return config


async def _privileged(*fleets: Any) -> int:
    total = 0
    for fleet in fleets:
        total += (await fleet.truth())["fleet"]["privileged_commands"]
    return total


async def test_agent_sends_no_privileged_command_through_detection_fallback_and_redetection(
        tmp_path: Path, make_sim_fleet: Any) -> None:
    joining = await make_sim_fleet(sites=1)
    refusing = await make_sim_fleet(sites=1, joins=False)  # every miner answers a join with E/14
    miners = [*joining.miners, *refusing.miners]
    config = _agent_config(tmp_path, miners)
    state = FleetState(config.site, len(config.miners))
    poller = Poller(config, state)  # the real client and dialects, no hints: every miner is detected

    first = await poller.poll_once()
    assert first.totals.up == len(miners), [(m.name, m.last_error) for m in first.miners if m.last_error]
    flaky = joining.miners[:3]
    joining.set_fault(flaky, "garbage")  # fails REDETECT_AFTER times, then comes back and is re-detected
    for _ in range(REDETECT_AFTER):
        await poller.poll_once()
    joining.fleet.clear_faults()
    last = await poller.poll_once()
    assert last.totals.up == len(miners)
    assert last.counters.polls["malformed"] == REDETECT_AFTER * len(flaky)
    assert await _privileged(joining, refusing) == 0

    # The count is real: one privileged request sent by hand shows up at once.
    one = joining.miners[0]
    reply = await _raw(one.host, one.port, b'{"command":"switchpool","parameter":"1"}')
    assert b"Access denied" in reply
    assert await _privileged(joining, refusing) == 1


async def _raw(host: str, port: int, payload: bytes) -> bytes:
    from conftest import _raw_request

    return await _raw_request(host, port, payload)


@pytest.mark.parametrize("command", ["restart", "switchpool", "addpool", "quit", "ascset", "set_led",
                                     "curtail", "restart+summary", "no-such-command"])
async def test_client_refuses_write_commands_before_connecting(sim_fleet: Any, command: str) -> None:
    m = sim_fleet.miners[0]
    with pytest.raises(PrivilegedCommandRefused):
        await query(m.host, tuple(command.split("+")), port=m.port)
    assert (await sim_fleet.truth())["fleet"]["privileged_commands"] == 0


async def test_agent_with_control_enabled_still_sends_no_write_on_its_own(tmp_path: Path, make_sim_fleet: Any) -> None:
    # Every curtailable firmware, write access granted: only the control API (never the poller) may write.
    fleet = await make_sim_fleet(sites=1, allow_control=True, groups=(
        ("cgminer", "Antminer S9"), ("bfgminer", "Antminer S9"), ("bosminer", "Antminer S19j Pro"),
        ("luxos", "Antminer S19 XP"), ("avalon", "Avalon A1366")))
    config = _agent_config(tmp_path, fleet.miners)
    path = tmp_path / "agent.yaml"
    path.write_text(path.read_text() + "control_enabled: true\n")
    config = load_agent_config(path)
    assert config.control_enabled is True
    poller = Poller(config, FleetState(config.site, len(config.miners)))
    for _ in range(3):
        snap = await poller.poll_once()
    assert snap.totals.up == len(fleet.miners)
    assert await _privileged(fleet) == 0
