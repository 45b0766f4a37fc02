"""BFGMiner: golden replies through framing and the parser, compared field by field.

Golden files: tests/golden/replies/bfgminer/<version>/ - composed from luke-jr/bfgminer api.c and the
BFGMiner 5.5.0 behaviour seen on loopback (see SOURCES.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dialect_cases import golden_cases, load_case
from test_dialect_cgminer import exported_temperatures, simulated_chip_temperatures

from megawatch.agent.dialects import bfgminer
from megawatch.agent.model import Board, MinerReading, Pool

MH = 1e6  # rates written as `x * MH` are computed exactly as the parser does

EXPECTED: dict[str, MinerReading] = {
    # One CPU device listed as PGA 0 without a temperature, a getwork pool (Stratum Active false while in use),
    # and a devdetails without Model (the CPU driver names none).
    "bfgminer-5.5.0": MinerReading(
        dialect="bfgminer",
        firmware="bfgminer",
        firmware_version="5.5.0",
        hashrate_hs=12.101 * MH,
        hashrate_avg_hs=12.345 * MH,
        shares_accepted=2,
        shares_rejected=0,
        shares_stale=0,
        hardware_errors=0,
        uptime_s=900.0,
        boards=(Board(index=0, hashrate_hs=12.101 * MH),),
        pools=(Pool(index=0, url="http://127.0.0.1:18332", user="rpcuser", status="alive", active=True, priority=0),),
    ),
}


@pytest.mark.parametrize("case", golden_cases("bfgminer"), ids=lambda path: path.name)
def test_golden_reply_parses_to_the_expected_reading(case: Path) -> None:
    assert case.name in EXPECTED, f"new golden directory {case.name}: add its expected reading here"
    assert bfgminer.parse(load_case(case)) == EXPECTED[case.name]


def test_device_temperature_is_the_chip_temperature_and_exported_by_default() -> None:
    # An ASIC device as devstatus_an writes it: `Temperature` (the hottest of its processors) right after Status.
    devs = {"DEVS": [
        {"PGA": 0, "Name": "BSC", "ID": 0, "Enabled": "Y", "Status": "Alive", "Temperature": 71.25,
         "Device Elapsed": 600, "MHS av": 13500000.0, "MHS 20s": 13620000.0, "MHS rolling": 13620000.0},
        {"PGA": 1, "Name": "BSC", "ID": 1, "Enabled": "Y", "Status": "Alive", "Temperature": 69.0,
         "Device Elapsed": 600, "MHS av": 13400000.0, "MHS 20s": 13380000.0, "MHS rolling": 13380000.0},
    ]}
    reading = bfgminer.parse({"devs": devs})
    assert reading.boards == (
        Board(index=0, chip_temp_c=71.25, hashrate_hs=13620000.0 * MH),
        Board(index=1, chip_temp_c=69.0, hashrate_hs=13380000.0 * MH),
    )
    assert [line.rsplit(" ", 1)[1] for line in exported_temperatures(reading)] == ["71.25", "69.0"]


def test_a_device_without_a_sensor_exports_no_temperature() -> None:
    # BFGMiner leaves `Temperature` out when it has none (the golden CPU device): unknown, not 0 degrees.
    assert exported_temperatures(bfgminer.parse(load_case(golden_cases("bfgminer")[0]))) == []


async def test_a_simulated_bfgminer_exports_every_board_chip_temperature(make_sim_fleet) -> None:
    truth, lines = await simulated_chip_temperatures(make_sim_fleet, "bfgminer", "Antminer S9k")
    assert [line.split('sensor="')[1].split('"')[0] for line in lines] == ["chip"] * len(truth)
    assert [float(line.rsplit(" ", 1)[1]) for line in lines] == pytest.approx(truth, abs=0.005)


def test_mhs_20s_is_the_short_window() -> None:
    summary = {"SUMMARY": [{"Elapsed": 60, "MHS av": 10.0, "MHS 20s": 11.5}]}
    assert bfgminer.parse({"summary": summary}).hashrate_hs == 11.5 * MH


def test_version_miner_key_names_bfgminer_not_cgminer() -> None:
    version = {"VERSION": [{"Miner": "bfgminer 5.5.0", "CGMiner": "5.5.0", "API": "3.1"}]}
    reading = bfgminer.parse({"version": version})
    assert (reading.firmware, reading.firmware_version) == ("bfgminer", "5.5.0")


def test_firmware_falls_back_to_the_status_description() -> None:
    summary = {"STATUS": [{"STATUS": "S", "Description": "bfgminer 5.5.0"}], "SUMMARY": [{}]}
    reading = bfgminer.parse({"summary": summary})
    assert (reading.firmware, reading.firmware_version) == ("bfgminer", "5.5.0")


def test_model_is_read_from_devdetails_under_devs() -> None:
    devdetails = {"DEVS": [{"DEVDETAILS": 0, "Name": "BSC", "ID": 0, "Driver": "bitmain", "Model": "BM1387"}]}
    assert bfgminer.parse({"devdetails": devdetails}).model == "BM1387"


def test_nothing_answered_gives_an_empty_reading() -> None:
    assert bfgminer.parse({}) == MinerReading(dialect="bfgminer")
