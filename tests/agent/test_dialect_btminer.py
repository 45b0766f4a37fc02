"""btminer (Whatsminer): real replies through framing and the parser, compared field by field.

Golden files: tests/golden/replies/btminer/<firmware>/ (provenance in SOURCES.md there). The recordings hold
`edevs` where the poll sends `devs`; btminer answers both with the same DEVS entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dialect_cases import golden_cases, load_case

from megawatch.agent.dialects import btminer
from megawatch.agent.model import Board, Fan, MinerReading, Pool, PowerSource

MH = 1e6  # rates written as `x * MH` are computed exactly as the parser does

EXPECTED: dict[str, MinerReading] = {
    # M20S: summary only; its "Firmware Version" carries `\'` escapes that framing repairs.
    "whatsminer-m20s-20200917.22": MinerReading(
        dialect="btminer",
        firmware="btminer",
        firmware_version="20200917.22.REL",
        hashrate_hs=64143777.95 * MH,
        hashrate_avg_hs=68710597.19 * MH,
        shares_accepted=5018,
        shares_rejected=29,
        shares_stale=0,
        hardware_errors=912,
        uptime_s=66295.0,
        fans=(Fan(index=0, rpm=4950.0), Fan(index=1, rpm=4920.0)),
        power_w=3491.0,
        power_source=PowerSource.FIRMWARE,
        power_limit_w=3500.0,
    ),
    "whatsminer-m30s-20200512.13": MinerReading(
        dialect="btminer",
        firmware="btminer",
        firmware_version="20200512.13.REL",
        hashrate_hs=85038430.01 * MH,
        hashrate_avg_hs=85106399.37 * MH,
        shares_accepted=1739,
        shares_rejected=1,
        shares_stale=0,
        hardware_errors=800,
        uptime_s=29600.0,
        boards=(
            Board(index=0, chip_temp_c=99.79, board_temp_c=80.0, hashrate_hs=29637403.56 * MH, chips=156),
            Board(index=1, chip_temp_c=89.14, board_temp_c=72.0, hashrate_hs=27335216.82 * MH, chips=156),
            Board(index=2, chip_temp_c=90.64, board_temp_c=72.5, hashrate_hs=26400703.96 * MH, chips=156),
        ),
        fans=(Fan(index=0, rpm=2370.0), Fan(index=1, rpm=2430.0)),
        pools=(
            Pool(
                index=0,
                url="stratum+tcp://sha256asicboost.eu.nicehash.com:3368",
                user="xxx",
                status="alive",
                active=True,
                priority=0,
            ),
            Pool(
                index=1,
                url="stratum+tcp://sha256asicboost.hk.nicehash.com:3368",
                user="xxx",
                status="alive",
                active=False,
                priority=1,
            ),
            Pool(
                index=2,
                url="stratum+tcp://eu.stratum.slushpool.com:3333",
                user="xxx",
                status="alive",
                active=False,
                priority=2,
            ),
        ),
        power_w=3230.0,
        power_source=PowerSource.FIRMWARE,
        power_limit_w=3600.0,
    ),
    # M31S: Description "btminer", one fan ("Fan Speed Out":0), pools numbered from 1.
    "whatsminer-m31s-20201202.22": MinerReading(
        dialect="btminer",
        firmware="btminer",
        firmware_version="20201202.22.REL",
        hashrate_hs=92768288.94 * MH,
        hashrate_avg_hs=76718604.38 * MH,
        shares_accepted=2296,
        shares_rejected=1,
        shares_stale=0,
        hardware_errors=0,
        uptime_s=33102.0,
        boards=(
            Board(index=0, chip_temp_c=77.44, board_temp_c=57.5, hashrate_hs=25012892.74 * MH, chips=105),
            Board(index=1, chip_temp_c=93.0, board_temp_c=72.0, hashrate_hs=26032487.18 * MH, chips=105),
            Board(index=2, chip_temp_c=89.17, board_temp_c=68.0, hashrate_hs=25944861.70 * MH, chips=105),
        ),
        fans=(Fan(index=0, rpm=5700.0),),
        pools=(
            Pool(
                index=1,
                url="stratum+tcp://btc.ss.poolin.com:443",
                user="x.12x22",
                status="alive",
                active=True,
                priority=0,
            ),
            Pool(
                index=2,
                url="stratum+tcp://btc.ss.poolin.com:1883",
                user="x.12x22",
                status="alive",
                active=False,
                priority=1,
            ),
            Pool(
                index=3,
                url="stratum+tcp://btc.ss.poolin.com:25",
                user="x.12x22",
                status="alive",
                active=False,
                priority=2,
            ),
        ),
        power_w=3553.0,
        power_source=PowerSource.FIRMWARE,
        power_limit_w=3600.0,
    ),
}


@pytest.mark.parametrize("case", golden_cases("btminer"), ids=lambda path: path.name)
def test_golden_reply_parses_to_the_expected_reading(case: Path) -> None:
    assert case.name in EXPECTED, f"new golden directory {case.name}: add its expected reading here"
    assert btminer.parse(load_case(case)) == EXPECTED[case.name]


def _summary(**fields: Any) -> dict[str, Any]:
    return {"summary": {"STATUS": [{"STATUS": "S", "Description": "btminer"}], "SUMMARY": [fields]}}


def test_power_minus_one_is_unknown_not_a_reading() -> None:
    reading = btminer.parse(_summary(Power=-1, **{"Power Limit": 3600}))
    assert (reading.power_w, reading.power_source, reading.power_limit_w) == (None, None, 3600.0)
    assert reading.problems == ()


def test_model_comes_from_devdetails_as_the_miner_says_it() -> None:
    # Shape from asic-rs (asic-rs-core identification tests, a Whatsminer 2024-09-30 devdetails reply).
    devdetails = {
        "STATUS": [{"STATUS": "S", "Msg": "Device Details"}],
        "DEVDETAILS": [
            {"DEVDETAILS": 0, "Name": "SM", "ID": 0, "Driver": "bitmicro", "Kernel": "", "Model": "M30S+_VE40"}
        ],
        "id": 1,
    }
    assert btminer.parse({"devdetails": devdetails}).model == "M30S+_VE40"


def test_devs_and_edevs_give_the_same_boards() -> None:
    board = {"ASC": 0, "Slot": 0, "Temperature": 80.0, "MHS 5s": 1.0, "Chip Temp Avg": 70.0, "Effective Chips": 3}
    expected = (Board(index=0, chip_temp_c=70.0, board_temp_c=80.0, hashrate_hs=1.0 * MH, chips=3),)
    assert btminer.parse({"devs": {"DEVS": [board]}}).boards == expected
    assert btminer.parse({"edevs": {"DEVS": [board]}}).boards == expected


def test_sensorless_temperature_is_none() -> None:
    board = {"Slot": 1, "Temperature": -273, "Chip Temp Max": 0}
    assert btminer.parse({"devs": {"DEVS": [board]}}).boards == (Board(index=1),)


def test_fans_fall_back_to_devs_when_summary_is_missing() -> None:
    board = {"Slot": 0, "Fan Speed In": 3330, "Fan Speed Out": 2760}
    assert btminer.parse({"devs": {"DEVS": [board]}}).fans == (Fan(index=0, rpm=3330.0), Fan(index=1, rpm=2760.0))


def test_malformed_power_is_noted() -> None:
    reading = btminer.parse(_summary(Power="3230W?"))
    assert (reading.power_w, reading.problems) == (None, ("summary.Power: not a number: '3230W?'",))


def test_nothing_answered_gives_an_empty_reading() -> None:
    assert btminer.parse({}) == MinerReading(dialect="btminer")
