"""Avalon parser: real replies (tests/golden/replies/avalon, provenance in SOURCES.md) -> whole readings."""

from __future__ import annotations

from typing import Any

import pytest
from dialect_cases import golden_cases, load_case, replies_like
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatch.agent.dialects import avalon
from megawatch.agent.model import Board, Fan, MinerReading, Pool, PowerSource

MH = 1e6  # summary "MHS 30s"
GH = 1e9  # MM ID0 MGHS / GHSspd / GHSavg


def _pools(host: str, ports: list[str], user: str) -> tuple[Pool, ...]:
    return tuple(Pool(i, f"stratum+tcp://{host}{port}", user, "alive", i == 0, i) for i, port in enumerate(ports))


EXPECTED = {
    # 10xx, one `pools+summary+stats` reply: no power meter (PS[0 0 0 0 0 0], no WALLPOWER) -> power unknown,
    # but MPO gives the limit; no `version` answered, so model and build come from the Ver[...] token.
    "20051101_85dc6f0_0332654": MinerReading(
        dialect="avalon",
        model="1047",
        firmware="cgminer",
        firmware_version="20051101_85dc6f0_0332654",
        hashrate_hs=32247416.81 * MH,
        hashrate_avg_hs=25536751.74 * MH,
        shares_accepted=6,
        shares_rejected=0,
        shares_stale=0,
        hardware_errors=0,
        uptime_s=155.0,
        boards=(
            Board(0, chip_temp_c=61.0, hashrate_hs=12362.61 * GH),
            Board(1, chip_temp_c=64.0, hashrate_hs=12812.16 * GH),
        ),
        fans=(Fan(1, 2896.0), Fan(2, 2927.0)),
        pools=(
            Pool(0, "stratum+tcp://sha256.mining-dutch.nl:9996", "xxx", "alive", True, 0),
            Pool(1, "stratum+tcp://sha256.antpool.com:3333", "xxx", "alive", False, 1),
            Pool(2, "stratum+tcp://sha256.mining-dutch.nl:9996", "xxx", "alive", False, 2),
        ),
        power_limit_w=2220.0,
    ),
    # A1566 ("15-194"): no summary among the captured replies, so rates and uptime come from the module's
    # GHSspd/GHSavg/Elapsed tokens and share counts stay unknown; WALLPOWER 3731 W, MPO 3515 W.
    "24102401_25462b2_9ddf522": MinerReading(
        dialect="avalon",
        model="AvalonMiner 15-194",
        firmware="cgminer",
        firmware_version="24102401_25462b2_9ddf522",
        hashrate_hs=199241.07 * GH,
        hashrate_avg_hs=184007.00 * GH,
        uptime_s=975.0,
        boards=(
            Board(0, chip_temp_c=77.0, hashrate_hs=59459.52 * GH),
            Board(1, chip_temp_c=78.0, hashrate_hs=61407.83 * GH),
            Board(2, chip_temp_c=77.0, hashrate_hs=63139.66 * GH),
        ),
        fans=(Fan(1, 4275.0), Fan(2, 4282.0)),
        pools=_pools("stratum.pool.io:", ["3333", "3334", "3335"], "pool_username.real_worker"),
        power_w=3731.0,
        power_source=PowerSource.FIRMWARE,
        power_limit_w=3515.0,
    ),
}


@pytest.mark.parametrize("case", golden_cases("avalon"), ids=lambda path: path.name)
def test_golden_replies_give_the_whole_reading(case: Any) -> None:
    assert avalon.parse(load_case(case)) == EXPECTED[case.name]


def test_every_expected_reading_has_its_golden_directory() -> None:
    assert sorted(EXPECTED) == [case.name for case in golden_cases("avalon")]


def test_tokens_keep_values_with_spaces_commas_percent_colons_and_options() -> None:
    packed = (
        "Ver[1047-20051101_85dc6f0_0332654] SYSTEMSTATU[Work: In Work, Hash Board: 2 ] DH[6.118%] FACOPTS0[] "
        "ATAOPTS0[--avalon10-freq 562:587:612:637 --avalon10-voltage-level 36 ] PVT_T0[ 56  56  54] MPO[2220]"
    )
    assert avalon.parse_tokens(packed) == {
        "Ver": "1047-20051101_85dc6f0_0332654",
        "SYSTEMSTATU": "Work: In Work, Hash Board: 2",
        "DH": "6.118%",
        "FACOPTS0": "",
        "ATAOPTS0": "--avalon10-freq 562:587:612:637 --avalon10-voltage-level 36",
        "PVT_T0": "56  56  54",
        "MPO": "2220",
    }


def _estats(*modules: str) -> dict[str, Any]:
    item = {f"MM ID{i}": packed for i, packed in enumerate(modules)}
    return {"STATS": [{"STATS": 0, "ID": "AVA100", **item, "MM Count": len(modules)}, {"STATS": 1, "ID": "POOL0"}]}


def test_nano3_power_is_ps_element_6_when_there_is_no_wallpower() -> None:
    reading = avalon.parse({"estats": _estats("Ver[Nano3-22102501_abc1234_def5678] PS[0 1209 1187 297 3526 1188 141]")})
    assert (reading.power_w, reading.power_source) == (141.0, PowerSource.FIRMWARE)


def test_a_ten_xx_power_supply_of_zeros_is_unknown_power_not_0() -> None:
    reading = avalon.parse({"estats": _estats("PS[0 0 0 0 0 0] POW_I2C[FAILED] MPO[2220]")})
    assert (reading.power_w, reading.power_source, reading.power_limit_w) == (None, None, 2220.0)


def test_modules_are_added_up_and_numbered_on() -> None:
    reading = avalon.parse({"estats": _estats(
        "MGHS[100 200] MTmax[70 -273] Fan1[3000] WALLPOWER[1500] MPO[1600]",
        "MGHS[300] MTmax[75] Fan1[0] WALLPOWER[1400] MPO[1600]",
    )})
    assert reading.boards == (
        Board(0, chip_temp_c=70.0, hashrate_hs=100 * GH),
        Board(1, chip_temp_c=None, hashrate_hs=200 * GH),
        Board(2, chip_temp_c=75.0, hashrate_hs=300 * GH),
    )
    assert reading.fans == (Fan(1, 3000.0), Fan(2, None))
    assert (reading.power_w, reading.power_limit_w) == (2900.0, 3200.0)


def test_power_is_unknown_when_one_module_does_not_say() -> None:
    reading = avalon.parse({"estats": _estats("WALLPOWER[1500]", "PS[0 0 0 0 0 0]")})
    assert reading.power_w is None


def test_a_module_without_per_board_figures_is_one_board() -> None:
    reading = avalon.parse({"estats": _estats("GHSspd[12000.5] TMax[80] Temp[25]")})
    assert reading.boards == (Board(0, chip_temp_c=80.0, hashrate_hs=12000.5 * GH),)


# Avalon 841 behind an AUC: three modules, one `Fan[...]` each, no per-board rates, no power meter.
# Real reply quoted from delawr0190/foreman-apps, foreman-prospector Avalon8XXITest.java (code-index id 8175003914).
AVALON_841_MODULES = (
    "Ver[8411803-14b0f10] DNA[0137dace492a2ec1] Elapsed[66] MW[18528 18830 19159 17631] LW[74148] MH[0 1 0 0] HW[1] "
    "Temp[36] TMax[84] Fan[5730] FanR[100%] Vi[1197 1197 1209 1209] Vo[3893 3889 3932 3890] GHSmm[13646.20] "
    "WU[183226.76] Freq[762.87] PG[15] Led[0] MW0[3 4 0 2 3 4 3 1 4 5 2 4 3 5 4 4 5 7 3 3 4 2 2 2 2 5] "
    "MW1[2 8 3 5 6 4 5 5 7 5 5 7 3 6 0 3 4 5 4 4 7 3 6 6 0 2] MW2[3 2 5 5 2 3 1 4 3 6 5 2 7 7 5 3 3 6 3 2 5 4 3 6 4 4] "
    "MW3[5 1 6 2 4 3 4 3 1 2 5 2 6 6 1 5 5 4 6 5 6 5 3 1 2 6] TA[104] ECHU[0 0 0 0] ECMM[0] FM[1] CRC[0 0 0 0]",
    "Ver[8211803-14b0f10] DNA[013a7366855f4c56] Elapsed[66] MW[18509 18976 17286 17815] LW[72586] MH[0 0 0 0] HW[0] "
    "Temp[36] TMax[85] Fan[5850] FanR[100%] Vi[1199 1199 1198 1198] Vo[3930 3955 3997 3961] GHSmm[11609.65] "
    "WU[156933.29] Freq[649.02] PG[15] Led[0] MW0[3 2 4 4 1 4 2 4 2 4 1 1 4 3 5 3 2 1 3 5 4 3 2 3 4 4] "
    "MW1[1 3 5 1 5 5 3 3 1 4 4 3 4 2 3 1 5 5 5 4 4 5 2 3 3 2] MW2[4 3 6 4 6 4 5 4 2 4 1 3 3 3 2 4 2 4 3 5 8 2 3 4 5 3] "
    "MW3[2 1 2 2 6 6 5 5 3 4 2 4 3 5 4 7 3 1 5 2 1 3 0 2 3 1] TA[104] ECHU[0 0 0 0] ECMM[0] FM[1] CRC[0 0 0 0]",
    "Ver[8211803-14b0f10] DNA[013b8d95d80b8043] Elapsed[65] MW[18708 19175 17876 18406] LW[74165] MH[0 0 0 0] HW[0] "
    "Temp[37] TMax[83] Fan[5610] FanR[100%] Vi[1198 1198 1198 1198] Vo[3939 3913 3898 3909] GHSmm[11513.45] "
    "WU[153327.38] Freq[643.64] PG[15] Led[0] MW0[3 5 1 3 2 2 5 4 5 0 4 2 3 3 2 3 7 4 4 4 4 4 4 2 1 4] "
    "MW1[1 0 4 2 3 6 3 7 4 3 3 4 2 4 2 3 4 7 1 8 2 5 2 3 6 5] MW2[3 2 1 3 2 3 4 4 1 2 2 4 1 4 2 6 6 2 3 3 4 3 2 6 1 1] "
    "MW3[2 1 3 2 4 3 5 6 2 3 5 2 2 6 2 2 2 5 1 4 4 2 4 2 2 3] TA[104] ECHU[0 0 0 0] ECMM[0] FM[1] CRC[0 0 0 0]",
)


def test_an_avalon_841_with_three_single_fan_modules() -> None:
    reading = avalon.parse({"stats": _estats(*AVALON_841_MODULES)})
    assert reading == MinerReading(
        dialect="avalon",
        uptime_s=66.0,
        boards=(Board(0, chip_temp_c=84.0), Board(1, chip_temp_c=85.0), Board(2, chip_temp_c=83.0)),
        fans=(Fan(1, 5730.0), Fan(2, 5850.0), Fan(3, 5610.0)),
    )


def test_malformed_tokens_are_noted() -> None:
    reading = avalon.parse({"estats": _estats("WALLPOWER[lots] Fan1[fast]")})
    assert (reading.power_w, reading.fans) == (None, (Fan(1, None),))
    assert reading.problems == ("MM ID0.Fan1: not a number: 'fast'", "MM ID0.WALLPOWER: not a number: 'lots'")


def test_stats_without_a_module_string_is_noted() -> None:
    reading = avalon.parse({"estats": {"STATS": [{"STATS": 0, "ID": "POOL0"}]}})
    assert reading.problems == ('estats: no "MM ID<n>" module string in STATS',)


_TOKEN_VALUES = st.text(st.characters(codec="ascii", exclude_characters="]"), max_size=12)
_PACKED = st.lists(
    st.tuples(st.sampled_from(["Ver", "MGHS", "MTmax", "Fan1", "Fan2", "PS", "WALLPOWER", "MPO", "GHSspd", "TMax",
                               "Elapsed", "GHSavg"]), _TOKEN_VALUES),
    max_size=10,
).map(lambda pairs: " ".join(f"{key}[{value}]" for key, value in pairs))


@settings(max_examples=50, deadline=None)
@given(replies_like(avalon.COMMANDS, [
    "STATUS", "Description", "VERSION", "PROD", "MODEL", "SUMMARY", "MHS 30s", "MHS av", "Accepted", "Elapsed",
    "POOLS", "URL", "Status", "Stratum Active", "Priority", "POOL", "STATS", "MM ID0", "MM ID1",
]), _PACKED)
def test_any_json_like_reply_gives_a_reading_never_an_exception(replies: dict[str, Any], packed: str) -> None:
    for reading in (avalon.parse(replies), avalon.parse({**replies, "estats": _estats(packed)})):
        assert isinstance(reading, MinerReading)
        assert reading.power_w is None or reading.power_w > 0
