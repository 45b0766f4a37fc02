"""Braiins OS parser: real replies (tests/golden/replies/bosminer, provenance in SOURCES.md) -> whole readings."""

from __future__ import annotations

from typing import Any

import pytest
from dialect_cases import golden_cases, load_case, replies_like
from hypothesis import given, settings

from megawatch.agent.dialects import bosminer
from megawatch.agent.model import Board, Fan, MinerReading, Pool, PowerSource

MH = 1e6  # BOSminer reports MH/s


def _antpool(index: int, port: int, status: str, active: bool) -> Pool:
    return Pool(index, f"stratum+tcp://stratum.antpool.com:{port}", "antminer_1", status, active, index)


EXPECTED = {
    # bOS+ S9: chip sensors not read (Chip 0.0), two of four fan headers empty (0 RPM).
    "0.2.0-36c56a9363": MinerReading(
        dialect="bosminer",
        firmware="BOSminer+",
        firmware_version="0.2.0-36c56a9363",
        hashrate_hs=15740915.842676325 * MH,
        hashrate_avg_hs=11988299.650652435 * MH,
        shares_accepted=153,
        shares_rejected=0,
        shares_stale=0,
        hardware_errors=186,
        uptime_s=3680.0,
        boards=(Board(6, board_temp_c=75.0), Board(7, board_temp_c=63.0), Board(8, board_temp_c=70.0)),
        fans=(Fan(0, 2820.0), Fan(1, 3780.0), Fan(2, None), Fan(3, None)),
        pools=(_antpool(0, 3333, "alive", True), _antpool(1, 443, "alive", False), _antpool(2, 25, "alive", False)),
    ),
    "0.2.0-d360818": MinerReading(
        dialect="bosminer",
        firmware="BOSminer",
        firmware_version="0.2.0-d360818",
        hashrate_hs=14274425.317759488 * MH,
        hashrate_avg_hs=16698158.653278796 * MH,
        shares_accepted=68,
        shares_rejected=2,
        shares_stale=0,
        hardware_errors=0,
        uptime_s=92.0,
        boards=(Board(6, board_temp_c=53.0), Board(7, board_temp_c=46.0), Board(8, board_temp_c=52.0)),
        fans=(Fan(0, 1560.0), Fan(1, 1560.0), Fan(2, None), Fan(3, None)),
        pools=(
            _antpool(0, 3333, "alive", True),
            Pool(1, "stratum+tcp://stratum.slushpool.com:3333", "!non-existent-user!", "dead", False, 1),
        ),
    ),
    # Braiins' documented examples: no version/summary/pools answered, so the firmware comes from the
    # STATUS Description and hashrate stays unknown; power and limit from tunerstatus.
    "0.2.0-ea64aec8e": MinerReading(
        dialect="bosminer",
        model="Bitmain Antminer S9",
        firmware="BOSminer+",
        firmware_version="0.2.0-ea64aec8e",
        boards=(
            Board(6, chip_temp_c=104.625, board_temp_c=81.875, chips=63),
            Board(7, chip_temp_c=108.9375, board_temp_c=85.875, chips=63),
            Board(8, chip_temp_c=105.4375, board_temp_c=84.4375, chips=63),
        ),
        fans=(Fan(0, 5340.0), Fan(1, 4620.0), Fan(2, None), Fan(3, None)),
        power_w=1419.0,
        power_source=PowerSource.FIRMWARE,
        power_limit_w=1420.0,
    ),
    "boser-buildroot-0.1.0-45f356ea": MinerReading(
        dialect="bosminer", firmware="BOSer", firmware_version="boser-buildroot 0.1.0-45f356ea"
    ),
}


@pytest.mark.parametrize("case", golden_cases("bosminer"), ids=lambda path: path.name)
def test_golden_replies_give_the_whole_reading(case: Any) -> None:
    assert bosminer.parse(load_case(case)) == EXPECTED[case.name]


def test_every_expected_reading_has_its_golden_directory() -> None:
    assert sorted(EXPECTED) == [case.name for case in golden_cases("bosminer")]


def _tuner(**fields: Any) -> dict[str, Any]:
    return {"STATUS": [{"STATUS": "S", "Code": 203, "Msg": "Tuner Status"}], "TUNERSTATUS": [fields], "id": 1}


def test_a_paused_miner_reporting_0_w_has_unknown_power_not_0() -> None:
    reading = bosminer.parse({"tunerstatus": _tuner(ApproximateMinerPowerConsumption=0, PowerLimit=1420)})
    assert (reading.power_w, reading.power_source, reading.power_limit_w) == (None, None, 1420.0)
    assert reading.problems == ()


def test_a_malformed_power_figure_is_unknown_and_noted() -> None:
    reading = bosminer.parse({"tunerstatus": _tuner(ApproximateMinerPowerConsumption="n/a", PowerLimit=[1])})
    assert (reading.power_w, reading.power_limit_w) == (None, None)
    assert reading.problems == (
        "tunerstatus.ApproximateMinerPowerConsumption: not a number: 'n/a'",
        "tunerstatus.PowerLimit: not a number: [1]",
    )


def test_a_tunerstatus_reply_without_its_section_is_noted() -> None:
    reading = bosminer.parse({"tunerstatus": {"STATUS": [{"STATUS": "S"}], "id": 1}})
    assert reading.power_w is None
    assert reading.problems == ("tunerstatus: reply has no TUNERSTATUS object",)


def test_chain_data_from_temps_and_devdetails_is_joined_by_chain_index() -> None:
    temps = {"TEMPS": [{"Board": 60.0, "Chip": 80.5, "ID": 7, "TEMP": 0}]}
    devdetails = {"DEVDETAILS": [{"Chips": 63, "ID": 6, "Model": ""}, {"Chips": 62, "ID": 7}]}
    reading = bosminer.parse({"temps": temps, "devdetails": devdetails})
    assert reading.boards == (Board(6, chips=63), Board(7, chip_temp_c=80.5, board_temp_c=60.0, chips=62))
    assert reading.model is None  # an empty Model string is no model


def test_an_entry_without_a_chain_index_is_skipped_and_noted() -> None:
    reading = bosminer.parse({"temps": {"TEMPS": [{"Board": 60.0, "ID": "x"}]}})
    assert reading.boards == ()
    assert reading.problems == ("temps[0].ID: not a chain index: 'x'",)


@settings(max_examples=50, deadline=None)
@given(replies_like(bosminer.COMMANDS, [
    "STATUS", "Description", "VERSION", "BOSminer+", "BOSer", "SUMMARY", "MHS 5s", "MHS av", "Accepted", "Elapsed",
    "POOLS", "URL", "Status", "Stratum Active", "Priority", "POOL", "FANS", "FAN", "RPM", "TEMPS", "ID", "Board",
    "Chip", "TUNERSTATUS", "ApproximateMinerPowerConsumption", "PowerLimit", "DEVDETAILS", "Chips", "Model",
]))
def test_any_json_like_reply_gives_a_reading_never_an_exception(replies: dict[str, Any]) -> None:
    reading = bosminer.parse(replies)
    assert isinstance(reading, MinerReading)
    assert reading.power_w is None or reading.power_w > 0
