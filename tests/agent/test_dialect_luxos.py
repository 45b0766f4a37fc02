"""LuxOS parser: real replies (tests/golden/replies/luxos, provenance in SOURCES.md) -> whole readings."""

from __future__ import annotations

from typing import Any

import pytest
from dialect_cases import golden_cases, load_case, replies_like
from hypothesis import given, settings

from megawatch.agent.dialects import luxos
from megawatch.agent.model import Board, Fan, MinerReading, Pool, PowerSource

GH = 1e9  # LuxOS reports GH/s (summary "GHS 5s", stats rate_unit "GH")

EXPECTED = {
    # S19k Pro: chain 4 is an empty slot (0 chips, "0-0-0-0"), two pool groups each with an active pool.
    "2025.4.8.220305-57b389c7": MinerReading(
        dialect="luxos",
        model="Antminer S19k Pro",
        firmware="LUXminer",
        firmware_version="2025.4.8.220305-57b389c7",
        hashrate_hs=59756.06 * GH,
        hashrate_avg_hs=56917.91 * GH,
        shares_accepted=1483,
        shares_rejected=1,
        shares_stale=0,
        hardware_errors=0,
        uptime_s=3453.0,
        boards=(
            Board(1, chip_temp_c=47.0, board_temp_c=47.0, hashrate_hs=18910.28 * GH, chips=77),
            Board(2, chip_temp_c=47.0, board_temp_c=47.0, hashrate_hs=18939.95 * GH, chips=77),
            Board(3, chip_temp_c=47.0, board_temp_c=47.0, hashrate_hs=19067.67 * GH, chips=77),
        ),
        fans=(Fan(1, 1920.0), Fan(2, 1920.0), Fan(3, 2340.0), Fan(4, 2340.0)),
        pools=(
            Pool(0, "stratum+tcp://ca.stratum.braiins.com:3333", "asic-rs.user1", "alive", True, 0),
            Pool(1, "stratum+tcp://stratum.braiins.com:3333", "asic-rs.user1", "dead", False, 1),
            Pool(2, "stratum+tcp://ca.stratum.braiins.com:3333", "asic-rs.user2", "alive", True, 2),
            Pool(3, "stratum+tcp://stratum.braiins.com:3333", "asic-rs.user2", "dead", False, 3),
        ),
        power_w=1051.0,
        power_source=PowerSource.FIRMWARE,
    ),
}


@pytest.mark.parametrize("case", golden_cases("luxos"), ids=lambda path: path.name)
def test_golden_replies_give_the_whole_reading(case: Any) -> None:
    assert luxos.parse(load_case(case)) == EXPECTED[case.name]


def test_every_expected_reading_has_its_golden_directory() -> None:
    assert sorted(EXPECTED) == [case.name for case in golden_cases("luxos")]


def _golden() -> dict[str, Any]:
    return load_case(golden_cases("luxos")[0])


def test_without_power_reply_power_is_unknown() -> None:
    replies = _golden()
    del replies["power"]
    reading = luxos.parse(replies)
    assert (reading.power_w, reading.power_source) == (None, None)
    assert reading.problems == ()


@pytest.mark.parametrize("watts", [0, -1, None])
def test_a_sentinel_wattage_is_unknown_not_0(watts: Any) -> None:
    reading = luxos.parse({"power": {"POWER": [{"PSU": False, "Watts": watts}]}})
    assert (reading.power_w, reading.power_source, reading.problems) == (None, None, ())


def test_a_malformed_wattage_is_noted() -> None:
    reading = luxos.parse({"power": {"POWER": [{"Watts": "lots"}]}})
    assert reading.power_w is None
    assert reading.problems == ("power.Watts: not a number: 'lots'",)


def test_without_version_the_model_and_firmware_come_from_stats() -> None:
    replies = _golden()
    del replies["version"]
    reading = luxos.parse(replies)
    assert (reading.model, reading.firmware, reading.firmware_version) == (
        "Antminer S19k Pro", "LUXminer", "2025.4.8.220305-57b389c7"
    )


def test_chain_temperatures_fall_back_to_the_dash_lists() -> None:
    stats = {"STATS": [{"Type": "Antminer S21"}, {"ID": "BTM_SOC0", "chain_acn1": 108, "chain_rate1": "",
                                                     "temp_chip1": "61-58-60-64", "temp_pcb1": "45-41-42-46"}]}
    reading = luxos.parse({"stats": stats})
    assert reading.boards == (Board(1, chip_temp_c=64.0, board_temp_c=46.0, chips=108),)


@settings(max_examples=50, deadline=None)
@given(replies_like(luxos.COMMANDS, [
    "STATUS", "Description", "VERSION", "LUXminer", "Type", "SUMMARY", "GHS 5s", "GHS av", "Accepted", "Elapsed",
    "POOLS", "URL", "Status", "Stratum Active", "Priority", "POOL", "STATS", "ID", "fan1", "fan_num", "chain_rate1",
    "chain_acn1", "temp1", "temp2_1", "temp_chip1", "temp_pcb1", "rate_unit", "POWER", "Watts",
]))
def test_any_json_like_reply_gives_a_reading_never_an_exception(replies: dict[str, Any]) -> None:
    reading = luxos.parse(replies)
    assert isinstance(reading, MinerReading)
    assert reading.power_w is None or reading.power_w > 0
