"""Stock cgminer: golden replies through framing and the parser, compared field by field.

Golden files: tests/golden/replies/cgminer/<version>/ - composed from cg:api.c (no public raw capture of a
stock cgminer with a device exists; see SOURCES.md for how each was built).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dialect_cases import golden_cases, load_case

from megawatch.agent.config import ExpositionSettings, MinerTarget
from megawatch.agent.dialects import DIALECTS, cgminer
from megawatch.agent.exposition import render_miners
from megawatch.agent.model import Board, MinerReading, Pool
from megawatch.agent.protocol.client import query
from megawatch.agent.protocol.framing import decode_reply, split_joined
from megawatch.agent.state import AgentCounters, FleetSnapshot, MinerState, MinerStatus, summarise

MH = 1e6  # rates written as `x * MH` are computed exactly as the parser does

EXPECTED: dict[str, MinerReading] = {
    "cgminer-4.11.1": MinerReading(
        dialect="cgminer",
        model="GekkoScience CompacF",
        firmware="cgminer",
        firmware_version="4.11.1",
        hashrate_hs=298765.43 * MH,
        hashrate_avg_hs=301234.56 * MH,
        shares_accepted=412,
        shares_rejected=3,
        shares_stale=1,
        hardware_errors=17,
        uptime_s=3600.0,
        boards=(Board(index=0, chip_temp_c=41.5, hashrate_hs=298765.43 * MH),),
        pools=(
            Pool(
                index=0,
                url="stratum+tcp://solo.ckpool.org:3333",
                user="bc1qexampleaddress.rig1",
                status="alive",
                active=True,
                priority=0,
            ),
            Pool(
                index=1,
                url="stratum+tcp://backup.example.org:3333",
                user="bc1qexampleaddress.rig1",
                status="dead",
                active=False,
                priority=1,
            ),
        ),
    ),
}


@pytest.mark.parametrize("case", golden_cases("cgminer"), ids=lambda path: path.name)
def test_golden_reply_parses_to_the_expected_reading(case: Path) -> None:
    assert case.name in EXPECTED, f"new golden directory {case.name}: add its expected reading here"
    assert cgminer.parse(load_case(case)) == EXPECTED[case.name]


def test_joined_reply_parses_like_single_ones() -> None:
    case = golden_cases("cgminer")[0]
    single = load_case(case)
    # The wire shape of `version+summary+pools+devs+devdetails` (cg:api.c head_join/tail_join): one-element lists.
    joined = {command: [reply] for command, reply in single.items()} | {"id": 1}
    replies, rejected = split_joined(joined, cgminer.COMMANDS)
    assert rejected == {}
    assert cgminer.parse(replies) == cgminer.parse(single)


def test_firmware_falls_back_to_the_status_description_when_version_failed() -> None:
    summary = {
        "STATUS": [{"STATUS": "S", "Code": 11, "Msg": "Summary", "Description": "cgminer 4.11.1"}],
        "SUMMARY": [{"Elapsed": 5}],
    }
    reading = cgminer.parse({"summary": summary})
    assert (reading.firmware, reading.firmware_version) == ("cgminer", "4.11.1")


def test_padded_string_counts_are_counts() -> None:
    # Blissz D3 sends "Accepted":"  5.0000" (a raw reply quoted in getminera/minera's tracker).
    summary = {"SUMMARY": [{"Accepted": "  5.0000", "Rejected": "0", "Hardware Errors": 2}]}
    reading = cgminer.parse({"summary": summary})
    assert (reading.shares_accepted, reading.shares_rejected, reading.hardware_errors) == (5, 0, 2)


def test_getwork_spelling_does_not_matter() -> None:
    summary = {"SUMMARY": [{"Elapsed": 59129, "GHS 5s": 203007.01, "Getwork": 6033, "Accepted": 11187}]}
    reading = cgminer.parse({"summary": summary})
    assert (reading.hashrate_hs, reading.shares_accepted, reading.problems) == (203007.01 * 1e9, 11187, ())


@pytest.mark.parametrize("temperature", [-273, -273.0, 0, 0.0])
def test_device_without_sensor_has_unknown_temperature(temperature: float) -> None:
    devs = {"DEVS": [{"ASC": 0, "Temperature": temperature, "MHS 5s": 1.0}]}
    assert cgminer.parse({"devs": devs}).boards == (Board(index=0, hashrate_hs=1.0 * MH),)


def test_tenperature_typo_is_read() -> None:
    # S19 Pro bmminer devs (asic-rs antminer/src/test/json/v2020/devs.json).
    devs = {"DEVS": [{"ASC": 0, "Name": "BTM_SOC", "Tenperature": 65.0, "MHS 5s": 2.0}]}
    assert cgminer.parse({"devs": devs}).boards == (Board(index=0, chip_temp_c=65.0, hashrate_hs=2.0 * MH),)


def exported_temperatures(reading: MinerReading) -> list[str]:
    """The temperature lines the agent exports for this one reading with the shipped exposition settings."""
    miner = MinerState(MinerTarget("127.0.0.1"), MinerStatus.UP, reading, last_success_s=1.0, last_poll_s=1.0)
    snapshot = FleetSnapshot("s", 1, 0.0, 1.0, 1.0, (miner,), summarise((miner,), 1), AgentCounters())
    text = render_miners(snapshot, ExpositionSettings())
    return [line for line in text.splitlines() if line.startswith("megawatch_miner_temperature_celsius{")]


async def simulated_chip_temperatures(make_sim_fleet, dialect: str, model: str) -> tuple[list[float], list[str]]:
    """(the simulator's true chip temperatures, the temperature lines the agent exports) for one stock miner."""
    fleet = await make_sim_fleet(groups=((dialect, model),), sites=1)
    m = fleet.miners[0]
    truth = list(fleet.miner(m.index).snapshot().chip_temp_c)
    module = DIALECTS[dialect]
    result = await query(m.host, module.COMMANDS, port=m.port)
    return truth, exported_temperatures(module.parse(result.replies))


async def test_a_simulated_stock_cgminer_exports_every_board_chip_temperature(make_sim_fleet) -> None:
    truth, lines = await simulated_chip_temperatures(make_sim_fleet, "cgminer", "Antminer S19")
    assert [line.split('sensor="')[1].split('"')[0] for line in lines] == ["chip"] * len(truth)
    # cgminer prints temperatures with %.2f.
    assert [float(line.rsplit(" ", 1)[1]) for line in lines] == pytest.approx(truth, abs=0.005)


@pytest.mark.parametrize("case", golden_cases("cgminer"), ids=lambda path: path.name)
def test_stock_device_temperature_is_exported_by_default(case: Path) -> None:
    # Stock cgminer has one temperature per device and nothing else: it must show without any opt-in.
    assert exported_temperatures(cgminer.parse(load_case(case))) == [
        'megawatch_miner_temperature_celsius{site="s",miner="127.0.0.1:4028",board="0",sensor="chip"} 41.5'
    ]


def test_nan_rate_from_the_wire_is_unknown() -> None:
    # cgminer prints `"MHS av":nan` right after start (no zero guard); framing turns bare nan into None.
    raw = b'{"STATUS":[{"STATUS":"S","Code":11}],"SUMMARY":[{"Elapsed":0,"MHS av":nan,"MHS 5s":0.00}],"id":1}\x00'
    reading = cgminer.parse({"summary": decode_reply(raw)})
    assert (reading.hashrate_avg_hs, reading.hashrate_hs, reading.problems) == (None, 0.0, ())


def test_pool_without_stratum_active_key_takes_the_lowest_priority_alive_pool() -> None:
    pools = {
        "POOLS": [
            {"POOL": 0, "URL": "http://a:8332", "Status": "Dead", "Priority": 0},
            {"POOL": 1, "URL": "http://b:8332", "Status": "Alive", "Priority": 2},
            {"POOL": 2, "URL": "http://c:8332", "Status": "Alive", "Priority": 1},
        ]
    }
    assert [pool.active for pool in cgminer.parse({"pools": pools}).pools] == [False, False, True]


def test_malformed_counter_is_noted_and_unknown() -> None:
    reading = cgminer.parse({"summary": {"SUMMARY": [{"Accepted": "many", "MHS 5s": [1]}]}})
    assert (reading.shares_accepted, reading.hashrate_hs) == (None, None)
    assert set(reading.problems) == {"summary.Accepted: not a number: 'many'", "summary.MHS 5s: not a number: [1]"}


def test_nothing_answered_gives_an_empty_reading() -> None:
    assert cgminer.parse({}) == MinerReading(dialect="cgminer")
