"""Every dialect's parser reads the simulator's replies back to the simulator's own values.

This is what keeps the simulator's templates (simulator/replies) and the parsers
(agent/dialects) from drifting apart: both claim to follow the real captures, and here they must agree
on every miner: model, hashrate, power where the firmware measures it, temperatures, fans, counters.
"""

from __future__ import annotations

import pytest

from megawatch.agent.dialects import DETECT_COMMANDS, DIALECTS, detect
from megawatch.agent.model import PowerSource
from megawatch.agent.modeltable import load_model_table
from megawatch.agent.protocol.client import query
from megawatch.agent.protocol.errors import CommandRejected
from tests.conftest import DEFAULT_GROUPS

PROFILES = [pytest.param(dialect, model, id=f"{dialect}-{model.split()[-1]}") for dialect, model in DEFAULT_GROUPS]


@pytest.fixture(scope="module")
def table():
    return load_model_table()


@pytest.mark.parametrize(("dialect", "model"), PROFILES)
async def test_parser_reads_back_what_the_simulator_reports(make_sim_fleet, table, dialect, model):
    fleet = await make_sim_fleet(groups=((dialect, model),), sites=1, per_group=2)
    fleet.fleet.clock.advance(7)
    module = DIALECTS[dialect]
    for m in fleet.miners:
        miner = fleet.miner(m.index)
        snap = miner.snapshot()
        result = await query(m.host, module.COMMANDS, port=m.port)
        assert not result.rejected, result.rejected
        reading = module.parse(result.replies)
        assert reading.problems == (), reading.problems

        assert reading.hashrate_hs == pytest.approx(snap.hashrate_hs, rel=1e-4)
        assert reading.hashrate_avg_hs == pytest.approx(snap.hashrate_avg_hs, rel=1e-4)
        assert reading.uptime_s == snap.uptime_s
        assert reading.shares_accepted == snap.accepted
        assert reading.shares_rejected == snap.rejected
        if miner.firmware.reports_power:
            assert (reading.power_w, reading.power_source) == (snap.power_w, PowerSource.FIRMWARE)
        else:
            assert reading.power_w is None  # never a guess at parse time: estimates come later
        if reading.fans:
            assert [fan.rpm for fan in reading.fans] == list(snap.fan_rpm)
        else:
            assert dialect in ("cgminer", "bfgminer"), "only stock cgminer/BFGMiner have no fan readings"
        assert len(reading.boards) == len(snap.chip_temp_c)
        for board, chip, pcb in zip(reading.boards, snap.chip_temp_c, snap.board_temp_c, strict=True):
            temps = [t for t in (board.chip_temp_c, board.board_temp_c) if t is not None]
            assert temps, board
            # Firmware rounds to whole degrees in places; cgminer's one devs Temperature may be either.
            assert all(abs(t - chip) <= 0.6 or abs(t - pcb) <= 0.6 for t in temps), (board, chip, pcb)
            if board.chip_temp_c is not None and dialect not in ("cgminer", "bfgminer"):
                assert board.chip_temp_c == pytest.approx(chip, abs=0.6)


@pytest.mark.parametrize(("dialect", "model"), PROFILES)
async def test_detection_names_the_dialect_and_the_model_is_in_the_table(make_sim_fleet, table, dialect, model):
    fleet = await make_sim_fleet(groups=((dialect, model),), sites=1)
    m = fleet.miners[0]
    replies = {}
    for command in DETECT_COMMANDS:
        try:
            replies.update((await query(m.host, [command], port=m.port)).replies)
        except CommandRejected as exc:
            assert (dialect, command, exc.code) == ("bmminer", "devdetails", 45)
    assert detect(replies) == dialect
    module = DIALECTS[dialect]
    reading = module.parse((await query(m.host, module.COMMANDS, port=m.port)).replies)
    spec = table.lookup(reading.model)
    assert spec is not None and spec.name == model, reading.model
