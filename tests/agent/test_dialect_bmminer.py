"""bmminer (stock Antminer): real replies through framing and the parser, compared field by field.

Golden files: tests/golden/replies/bmminer/<firmware>/ (provenance in SOURCES.md there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dialect_cases import golden_cases, load_case

from megawatch.agent.dialects import bmminer
from megawatch.agent.model import Board, Fan, MinerReading, Pool, PowerSource

GH = 1e9  # the parser multiplies GH/s by this; writing rates as `x * GH` keeps the comparison exact

EXPECTED: dict[str, MinerReading] = {
    # D3 on Blissz: `}{` between STATS[0] and STATS[1], "GHS 5s" and chain_rateN as strings, chain 4 empty.
    # The D3 is an X11 miner whose firmware labels MH/s as "GHS" (Foreman scales it by 0.001): the parser
    # takes the label at its word; SHA-256 Antminers, which megawatch is for, label GH/s correctly.
    "antminer-d3-blissz-2.06-cgminer-4.10.0": MinerReading(
        dialect="bmminer",
        model="Antminer D3 Blissz v2.06 beta",
        firmware="cgminer",
        firmware_version="4.10.0",
        hashrate_hs=16346.64 * GH,
        hashrate_avg_hs=16868.38 * GH,
        uptime_s=54422.0,
        boards=(
            Board(index=1, chip_temp_c=69.0, board_temp_c=46.0, hashrate_hs=5287.83 * GH, chips=60),
            Board(index=2, chip_temp_c=67.0, board_temp_c=46.0, hashrate_hs=5631.41 * GH, chips=60),
            Board(index=3, chip_temp_c=62.0, board_temp_c=48.0, hashrate_hs=5427.41 * GH, chips=60),
        ),
        fans=(Fan(index=1, rpm=6030.0), Fan(index=2, rpm=5790.0)),
        # Pools 1 and 2 are unconfigured slots (URL ""); 3 and 4 are Blissz's dev-fee pools.
        pools=(
            Pool(
                index=0,
                url="stratum+tcp://dash-eu.coinmine.pl:6099",
                user="Dash.default",
                status="alive",
                active=True,
                priority=0,
            ),
            Pool(
                index=3,
                url="stratum+tcp://dash.suprnova.cc:9991",
                user="devFeeMiner.9",
                status="alive",
                active=False,
                priority=9998,
            ),
            Pool(
                index=4,
                url="stratum+tcp://dash-eu.coinmine.pl:6099",
                user="devFeeMiner.1",
                status="alive",
                active=False,
                priority=9999,
            ),
        ),
    ),
    # S19 asleep: rates are a real 0.0; chains 1 and 4 empty ("" rate, 0 chips, "0-0-0-0" temps); "Deed".
    "antminer-s19-bmminer-1.0.0": MinerReading(
        dialect="bmminer",
        model="Antminer S19",
        firmware="bmminer",
        firmware_version="1.0.0",
        hashrate_hs=0.0,
        hashrate_avg_hs=0.0,
        uptime_s=735.0,
        boards=(
            Board(index=2, chip_temp_c=40.0, board_temp_c=40.0, hashrate_hs=0.0, chips=76),
            Board(index=3, chip_temp_c=40.0, board_temp_c=40.0, hashrate_hs=0.0, chips=76),
        ),
        fans=(Fan(index=1, rpm=1560.0), Fan(index=2, rpm=1560.0), Fan(index=3, rpm=600.0), Fan(index=4, rpm=720.0)),
        pools=(
            Pool(index=0, url="stratum+tcp://aaa:700", user="aaa.226x94", status="alive", active=True, priority=0),
            Pool(index=1, url="stratum+tcp://bbb:6000", user="bbb.226x94", status="alive", active=False, priority=1),
            Pool(index=2, url="stratum+tcp://ccc:443", user="ccc.226x94", status="dead", active=False, priority=2),
        ),
    ),
    # S21: no stats recorded (so no boards or fans), summary with "Getwork" and "Total MH" in exponent form.
    "antminer-s21-bmminer-1.0.0": MinerReading(
        dialect="bmminer",
        model="Antminer S21",
        firmware="bmminer",
        firmware_version="1.0.0",
        hashrate_hs=203007.01 * GH,
        hashrate_avg_hs=203675.66 * GH,
        shares_accepted=11187,
        shares_rejected=9,
        shares_stale=0,
        hardware_errors=61,
        uptime_s=59129.0,
        pools=(
            Pool(
                index=0,
                url="stratum+tcp://stratum.braiins.com:3333",
                user="proto_mining_sw_test_s21-0a5",
                status="alive",
                active=True,
                priority=0,
            ),
        ),
    ),
    # S9k: `version` says "CGMiner" but `stats` says "BMMiner"; 16 padded slots, 3 boards; "lo-hi" sensor pairs.
    "antminer-s9k-bmminer-4.9.0": MinerReading(
        dialect="bmminer",
        model="Antminer S9k",
        firmware="bmminer",
        firmware_version="4.9.0",
        hashrate_hs=14359.19 * GH,
        hashrate_avg_hs=14252.76 * GH,
        uptime_s=367506.0,
        boards=(
            Board(index=1, chip_temp_c=85.0, board_temp_c=61.0, hashrate_hs=4661.79 * GH, chips=60),
            Board(index=2, chip_temp_c=84.0, board_temp_c=60.0, hashrate_hs=4815.72 * GH, chips=60),
            Board(index=3, chip_temp_c=78.0, board_temp_c=58.0, hashrate_hs=4881.69 * GH, chips=60),
        ),
        fans=(Fan(index=1, rpm=2280.0), Fan(index=2, rpm=3720.0)),
    ),
}


@pytest.mark.parametrize("case", golden_cases("bmminer"), ids=lambda path: path.name)
def test_golden_reply_parses_to_the_expected_reading(case: Path) -> None:
    assert case.name in EXPECTED, f"new golden directory {case.name}: add its expected reading here"
    assert bmminer.parse(load_case(case)) == EXPECTED[case.name]


def _stats(**device: Any) -> dict[str, Any]:
    return {"STATS": [{"BMMiner": "1.0.0", "Type": "Antminer S19"}, {"STATS": 0, "ID": "BTM_SOC0", **device}]}


def test_ghs_5s_sent_as_a_string_is_a_rate() -> None:
    reading = bmminer.parse({"stats": _stats(**{"GHS 5s": "14359.19", "GHS av": 14252.76})})
    assert (reading.hashrate_hs, reading.hashrate_avg_hs) == (14359.19 * GH, 14252.76 * GH)


@pytest.mark.parametrize("key", ["total rate", "total_rate"])
def test_total_rate_with_or_without_underscore_stands_in_for_a_missing_5s_rate(key: str) -> None:
    reading = bmminer.parse({"stats": _stats(**{key: 111730.11, "rate_unit": "GH"})})
    assert reading.hashrate_hs == 111730.11 * GH


def test_summary_rate_wins_over_stats() -> None:
    summary = {"SUMMARY": [{"GHS 5s": 100.0, "GHS av": 90.0, "Elapsed": 10}]}
    reading = bmminer.parse({"summary": summary, "stats": _stats(**{"GHS 5s": 5.0, "Elapsed": 99})})
    assert (reading.hashrate_hs, reading.hashrate_avg_hs, reading.uptime_s) == (100.0 * GH, 90.0 * GH, 10.0)


def test_empty_chain_slot_is_no_board_but_a_zero_rate_chain_is() -> None:
    device = {
        "chain_rate1": "",
        "chain_acn1": 0,
        "chain_rate2": "0.00",
        "chain_acn2": 76,
        "temp_pcb2": "0-0-0-0",
        "temp_chip2": "0-0-0-0",
    }
    assert bmminer.parse({"stats": _stats(**device)}).boards == (Board(index=2, hashrate_hs=0.0, chips=76),)


def test_rate_unit_th_is_honoured() -> None:
    reading = bmminer.parse({"stats": _stats(rate_unit="TH", chain_rate1="110.5", chain_acn1=76)})
    assert reading.boards == (Board(index=1, hashrate_hs=110.5e12, chips=76),)


def test_absent_fan_headers_are_skipped() -> None:
    reading = bmminer.parse({"stats": _stats(fan_num=2, fan1=2280, fan2=0, fan3=3720)})
    assert reading.fans == (Fan(index=1, rpm=2280.0), Fan(index=3, rpm=3720.0))


def test_deed_pool_is_dead_and_double_percent_key_is_harmless() -> None:
    pools = {
        "POOLS": [
            {
                "POOL": 0,
                "URL": "stratum+tcp://a:3333",
                "Status": "Deed",
                "Priority": 0,
                "Stratum Active": False,
                "Pool Stale%%": 0.0,
            }
        ]
    }
    reading = bmminer.parse({"pools": pools})
    assert reading.pools == (Pool(index=0, url="stratum+tcp://a:3333", status="dead", active=False, priority=0),)
    assert reading.problems == ()


@pytest.mark.parametrize(
    ("device", "power"),
    [({"chain_power": "3250 W"}, 3250.0), ({"total_power": 1345, "chain_power": "1300 W"}, 1345.0)],
)
def test_power_is_firmware_power_only_when_stats_report_it(device: dict[str, Any], power: float) -> None:
    reading = bmminer.parse({"stats": _stats(**device)})
    assert (reading.power_w, reading.power_source) == (power, PowerSource.FIRMWARE)


def test_no_power_key_means_unknown_power() -> None:
    reading = bmminer.parse({"stats": _stats(**{"GHS 5s": 1.0})})
    assert (reading.power_w, reading.power_source) == (None, None)


def test_malformed_values_become_none_with_a_problem_note() -> None:
    reading = bmminer.parse(
        {"stats": _stats(**{"GHS 5s": "fast", "chain_rate1": "n/a", "chain_acn1": 60, "chain_power": "lots W"})}
    )
    assert (reading.hashrate_hs, reading.power_w) == (None, None)
    assert reading.boards == (Board(index=1, chips=60),)
    assert reading.problems == (
        "stats.chain_power: not a number: 'lots '",
        "stats.GHS 5s: not a number: 'fast'",
        "stats.chain_rate1: not a number: 'n/a'",
    )


def test_nothing_answered_gives_an_empty_reading() -> None:
    assert bmminer.parse({}) == MinerReading(dialect="bmminer")
