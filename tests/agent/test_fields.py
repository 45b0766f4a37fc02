"""agent/dialects/_fields.py: the one place miner values become base units (or None, never a made-up 0)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from dialect_cases import golden_cases, load_case, replies_like
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatch.agent.dialects import DIALECTS
from megawatch.agent.dialects import _fields as f
from megawatch.agent.model import MinerReading, Pool


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3230, 3230.0),
        (76.95, 76.95),
        ("  5.0000", 5.0),  # Blissz pads numbers inside strings
        ("14359.19", 14359.19),  # S9 "GHS 5s"
        ("32.8K", 32800.0),  # S19 pool "Diff"
        ("1.2009939119E+13", 1.2009939119e13),
        ("", None),
        ("-", None),
        ("nan", None),
        ("inf", None),
        (float("inf"), None),
        (True, None),
        (None, None),
        ([1], None),
        (10**400, None),  # a huge JSON integer must not raise OverflowError
    ],
)
def test_number(value: Any, expected: float | None) -> None:
    assert f.number(value) == expected


@pytest.mark.parametrize(("value", "expected"), [("  5.0000", 5), (0, 0), (5.5, None), (-1, None), ("x", None)])
def test_integer_is_a_non_negative_whole_count(value: Any, expected: int | None) -> None:
    assert f.integer(value) == expected


@pytest.mark.parametrize(("value", "expected"), [(-1, None), (0, None), (3230, 3230.0), ("3600", 3600.0)])
def test_positive_treats_minus_one_and_zero_as_unknown(value: Any, expected: float | None) -> None:
    assert f.positive(value) == expected


@pytest.mark.parametrize(("value", "expected"), [(-273, None), (-273.0, None), (0, None), (41.5, 41.5), (999, None)])
def test_temperature_sentinels_are_unknown(value: Any, expected: float | None) -> None:
    assert f.temperature_c(value) == expected


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("14359.19", "GHS", 14359.19 * 1e9),
        (85038430.01, "MHS", 85038430.01 * 1e6),
        (1, "GH", 1e9),
        (2, "MH/s", 2e6),
        (1, "XH", None),
        (-5, "GHS", None),
        ("", "GHS", None),
    ],
)
def test_to_hs(value: Any, unit: str, expected: float | None) -> None:
    assert f.to_hs(value, unit) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("39-37-40-39", [39.0, 37.0, 40.0, 39.0]),
        ("25-61", [25.0, 61.0]),
        ("0-0-0-0", [None] * 4),
        ("-", []),
        ("", []),
        (None, []),
        (48, [48.0]),
    ],
)
def test_dash_list(value: Any, expected: list[float | None]) -> None:
    assert f.dash_list(value) == expected


def test_numbered_takes_only_digits_after_the_prefix_in_slot_order() -> None:
    item = {"temp_num": 3, "temp_max": 61, "temp2_1": 51, "temp10": 0, "temp2": 60, "temp1": 61}
    assert f.numbered(item, "temp") == {1: 61, 2: 60, 10: 0}
    assert f.numbered(item, "temp2_") == {1: 51}


def test_read_notes_only_present_non_numeric_values() -> None:
    problems: list[str] = []
    item = {"a": "abc", "b": "", "c": "-", "d": "12"}
    values = [f.read(item, key, f.number, problems, "summary") for key in ("a", "b", "c", "d", "absent")]
    assert values == [None, None, None, 12.0, None]
    assert problems == ["summary.a: not a number: 'abc'"]


def test_summary_fields() -> None:
    problems: list[str] = []
    reply = {
        "SUMMARY": [
            {
                "Elapsed": 66295,
                "MHS av": 68710597.19,
                "MHS 5s": 64143777.95,
                "Accepted": "  5.0000",
                "Rejected": 29,
                "Stale": 0,
                "Hardware Errors": 912,
                "Getwork": 3,
            }
        ]
    }
    assert f.summary_fields(reply, problems) == {
        "hashrate_hs": 64143777.95 * 1e6,
        "hashrate_avg_hs": 68710597.19 * 1e6,
        "shares_accepted": 5,
        "shares_rejected": 29,
        "shares_stale": 0,
        "hardware_errors": 912,
        "uptime_s": 66295.0,
    }
    assert problems == []


def test_summary_fields_without_a_reply_or_section() -> None:
    problems: list[str] = []
    assert f.summary_fields(None, problems) == {}
    assert problems == []
    assert f.summary_fields({"STATUS": []}, problems) == {}
    assert problems == ["summary: reply has no SUMMARY object"]


@pytest.mark.parametrize(
    ("item", "rate"),
    [
        ({"MHS 5s": 1.0, "MHS 20s": 2.0}, 1.0e6),
        ({"MHS 20s": 2.0, "MHS av": 9.0}, 2.0e6),
        ({"MHS 30s": 3.0}, 3.0e6),
        ({"GHS 5s": "4.5"}, 4.5e9),
        ({"MHS av": 9.0}, None),
    ],
)
def test_short_rate_picks_the_shortest_window_whatever_the_unit(item: dict[str, Any], rate: float | None) -> None:
    assert f.short_rate(item, [], "x") == rate


def test_average_rate() -> None:
    problems: list[str] = []
    assert f.average_rate({"GHS av": 14252.76}, problems, "stats") == 14252.76 * 1e9
    assert f.average_rate({"MHS av": "?"}, problems, "devs[0]") is None
    assert problems == ["devs[0].MHS av: not a number: '?'"]


def test_pools_normalise_status_and_skip_unconfigured_slots() -> None:
    problems: list[str] = []
    reply = {
        "POOLS": [
            {
                "POOL": 0,
                "URL": "stratum+tcp://a:700",
                "Status": "Alive",
                "Priority": 0,
                "User": "u",
                "Stratum Active": True,
            },
            {"POOL": 1, "URL": "", "Status": "Deed", "Priority": 1, "User": "", "Stratum Active": False},
            {"POOL": 2, "URL": "stratum+tcp://c:443", "Status": "Deed", "Priority": 2, "Pool Stale%%": 0.0},
        ]
    }
    assert f.pools(reply, problems) == (
        Pool(index=0, url="stratum+tcp://a:700", user="u", status="alive", active=True, priority=0),
        Pool(index=2, url="stratum+tcp://c:443", status="dead", priority=2),
    )
    assert problems == []


def test_pools_reply_without_pools_is_noted() -> None:
    problems: list[str] = []
    assert f.pools({"STATUS": [{"STATUS": "S"}]}, problems) == ()
    assert problems == ["pools: reply has no POOLS list"]


def _pool(index: int, status: str, priority: int | None, active: bool | None = None) -> Pool:
    return Pool(index=index, url=f"http://p{index}", status=status, priority=priority, active=active)


def test_mark_active_pool_keeps_what_the_firmware_says() -> None:
    pools = (_pool(0, "alive", 0, False), _pool(1, "alive", 1, True))
    assert f.mark_active_pool(pools) == pools


def test_mark_active_pool_picks_the_lowest_priority_alive_pool_when_none_is_active() -> None:
    pools = (_pool(0, "dead", 0, False), _pool(1, "alive", 5, False), _pool(2, "alive", 3))
    assert [pool.active for pool in f.mark_active_pool(pools)] == [False, False, True]


def test_mark_active_pool_leaves_unknown_when_nothing_is_alive() -> None:
    pools = (_pool(0, "dead", 0), _pool(1, "disabled", 1))
    assert f.mark_active_pool(pools) == pools


@pytest.mark.parametrize(
    ("desc", "expected"),
    [("cgminer 4.11.1", ("cgminer", "4.11.1")), ("btminer", ("btminer", None)), (None, (None, None))],
)
def test_split_description(desc: str | None, expected: tuple[str | None, str | None]) -> None:
    assert f.split_description(desc) == expected


def test_text_strips_btminer_quotes() -> None:
    assert (f.text("'20200512.13.REL'"), f.text("  "), f.text(5)) == ("20200512.13.REL", None, None)


# Cheap junk: what a lying firmware could put in one field (deep structures add time, not coverage here).
_JUNK = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**400)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["", "-", "nan", "-273", "-1", "0-0-0-0", "3250 W", "  5.0000", "12.5K", "'x'"])
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
_GOLDEN = {
    name: [load_case(case) for case in golden_cases(name)] for name in ("cgminer", "bfgminer", "bmminer", "btminer")
}


@pytest.mark.slow  # hypothesis over 4 dialects: 2-10 s depending on machine load
@pytest.mark.parametrize("dialect", sorted(_GOLDEN))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_real_replies_with_any_field_swapped_for_junk_still_parse(dialect: str, data: st.DataObject) -> None:
    """Arbitrary JSON rarely reaches deep parser paths; real replies with random fields replaced do."""
    replies = copy.deepcopy(data.draw(st.sampled_from(_GOLDEN[dialect])))
    for reply in replies.values():
        items = [
            item for value in reply.values() if isinstance(value, list) for item in value if isinstance(item, dict)
        ]
        for item in items:
            for key in data.draw(st.lists(st.sampled_from(sorted(item)), max_size=4)) if item else []:
                item[key] = data.draw(_JUNK)
    assert isinstance(DIALECTS[dialect].parse(replies), MinerReading)


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(_keys(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(item) for item in value))
    return set()


@pytest.mark.slow  # dialect_cases.json_like builds deep values: ~5-10 s per dialect on a loaded 2-core machine
@pytest.mark.parametrize("dialect", sorted(_GOLDEN))
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_any_json_like_replies_give_a_reading_never_an_exception(dialect: str, data: st.DataObject) -> None:
    """Keys are drawn from the dialect's real replies, so arbitrary values land where the parser looks."""
    module = DIALECTS[dialect]
    keys = sorted(set().union(*(_keys(replies) for replies in _GOLDEN[dialect])))
    replies = data.draw(replies_like(module.COMMANDS, keys))
    assert isinstance(module.parse(replies), MinerReading)


def _pools_reply(priority: object) -> dict:
    return {"STATUS": [{"STATUS": "S"}], "POOLS": [
        {"POOL": 0, "URL": "stratum+tcp://pool.example:3333", "User": "site.w1", "Status": "Alive",
         "Stratum Active": True, "Priority": priority},
    ]}


def test_a_malformed_pool_field_is_noted_on_every_poll_not_only_the_first() -> None:
    for _ in range(3):
        problems: list[str] = []
        (pool,) = f.pools(_pools_reply("high"), problems)
        assert pool.priority is None
        assert problems == ["pools[0].Priority: not a number: 'high'"]


def test_miners_on_the_same_pool_share_one_copy_of_its_url_and_status() -> None:
    # Thousands of miners on a few pools: one string each, not one per miner per poll (memory, bench/).
    first, second = f.pools(_pools_reply(0), []), f.pools(_pools_reply(0), [])
    assert first == second
    assert first[0].url is second[0].url and first[0].status is second[0].status == "alive"
    assert f.pools(_pools_reply(1), [])[0].priority == 1
    assert f.pools(_pools_reply(True), [])[0].priority is None  # a bool is not a priority


def test_readings_share_model_and_firmware_strings() -> None:
    from megawatch.agent.dialects import bmminer

    case = golden_cases("bmminer")[-1]
    one, two = bmminer.parse(load_case(case)), bmminer.parse(load_case(case))  # two decodes: fresh strings
    assert one.model is not None and one.model is two.model
    assert one.firmware_version is two.firmware_version
