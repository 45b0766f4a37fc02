"""framing: real captured replies (tests/golden/captures, see its SOURCES.md) through decode, repair and split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatch.agent.protocol import framing
from megawatch.agent.protocol.errors import BadReply, CommandRejected, EmptyReply
from megawatch.agent.protocol.framing import (
    DUPLICATE_KEY,
    NON_NUMBER,
    NOTES,
    check_status,
    decode_reply,
    reply_notes,
    split_joined,
)

# Real captures kept in the repo (provenance in tests/golden/captures/SOURCES.md).
CAPTURES = Path(__file__).resolve().parents[1] / "golden" / "captures"

D3_BLISSZ = "antminer-d3-blissz-cgminer4.10_stats.txt"  # `}{` between STATS[0] and STATS[1]
S9K = "antminer-s9k-bmminer4.9_stats.txt"  # chain_xtimeN strings hold braces: "{X6=1}"
M20S = "whatsminer-m20s_summary.txt"  # `\'` in "Firmware Version"
M30S = "whatsminer-m30s_summary.txt"
AVALON_JOINED = "avalon10xx-cgminer4.11.1_pools+summary+stats.txt"
VALID_CAPTURES = (
    S9K,
    M30S,
    AVALON_JOINED,
    "antminer-s19-bmminer1.0-sleeping_stats.txt",
    "antminer-s19-bmminer1.0_pools.txt",
    "braiins-osplus-s9_summary.txt",
    "whatsminer-m31s_status.txt",
    "whatsminer-m3_stats.txt",
)


def capture(name: str) -> bytes:
    return (CAPTURES / name).read_bytes()


def repaired(repair, text: str) -> str:  # type: ignore[no-untyped-def]
    masked = framing.Masked.of(text)
    assert masked is not None
    return repair(masked).text()


# --- fast path -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALID_CAPTURES)
def test_valid_capture_with_nul_decodes_like_json(name: str) -> None:
    raw = capture(name)
    assert decode_reply(raw + b"\x00") == json.loads(raw, strict=False)


def test_trailing_newline_after_nul_and_leading_whitespace_are_ignored() -> None:
    assert decode_reply(b' \r\n{"id":1}\x00\n') == {"id": 1}


def test_trailing_garbage_after_the_first_value_is_ignored() -> None:
    # Shape of the S9k `version` fixture: a complete object, then a stray `"}`.
    assert decode_reply(b'{"VERSION":[{"API":"3.1"}],"id":1}"}\x00') == {"VERSION": [{"API": "3.1"}], "id": 1}


def test_control_characters_inside_strings_pass() -> None:
    # cgminer never escapes control characters; Whatsminer puts raw newlines in `version`.
    obj = decode_reply(b'{"Msg":"line1\nline2\ttab\x01","POOLS":[{"POOL":0},\n{"POOL":1}]}\x00')
    assert obj["Msg"] == "line1\nline2\ttab\x01"
    assert [p["POOL"] for p in obj["POOLS"]] == [0, 1]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    obj = decode_reply(b'{"Type":"Antminer \xff\xfe S9","id":1}\x00')
    assert obj["Type"] == "Antminer \ufffd\ufffd S9"


def test_python_style_nan_and_infinity_become_none_not_floats() -> None:
    obj = decode_reply(b'{"a":NaN,"b":Infinity,"c":-Infinity,"d":1.5}')
    notes = obj.pop(NOTES)
    assert obj == {"a": None, "b": None, "c": None, "d": 1.5}
    # Read as unknown, and said so: the poller names it on the miner.
    assert notes == tuple(
        (NON_NUMBER, f"reply: bare {name} read as unknown") for name in ("NaN", "Infinity", "-Infinity")
    )


# --- empty and hopeless --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\x00\x00", b" \r\n\x00"])
def test_nothing_but_nul_or_whitespace_is_an_empty_reply(raw: bytes) -> None:
    with pytest.raises(EmptyReply):
        decode_reply(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"Socket connect failed: Connection refused\n",  # port proxy with the daemon down
        b"STATUS=S,When=1700000000,Code=11,Msg=Summary,Description=cgminer 4.11.1|SUMMARY,Elapsed=3600|\x00",
        b"STATUS=E,When=1700000000,Code=14,Msg=Invalid command|\x00",  # bfgminer #333 text reply
        b'["STATUS"]\x00',
        b"42\x00",
        b"[" * 100_000,
    ],
)
def test_text_and_non_object_replies_are_bad_replies_carrying_the_raw_bytes(raw: bytes) -> None:
    with pytest.raises(BadReply) as info:
        decode_reply(raw)
    assert info.value.raw == raw[:4096]


def test_truncated_capture_is_a_bad_reply() -> None:
    raw = capture(AVALON_JOINED)
    with pytest.raises(BadReply, match="not JSON"):
        decode_reply(raw[: len(raw) // 2])


# --- each repair on its own, then through decode_reply with the capture that shows it ------------------


def test_repair_objects_without_comma_only_outside_strings() -> None:
    text = '{"STATS":[{"Type":"D3"}{"ID":"D10","x":"}{"}]}'
    assert repaired(framing.repair_objects_without_comma, text) == (
        '{"STATS":[{"Type":"D3"},{"ID":"D10","x":"}{"}]}'
    )


def test_d3_blissz_capture_with_missing_comma_decodes_both_stats_entries() -> None:
    obj = decode_reply(capture(D3_BLISSZ) + b"\x00")
    assert [entry.get("ID") for entry in obj["STATS"]] == [None, "D10"]
    assert obj["STATS"][0]["Type"] == "Antminer D3 Blissz v2.06 beta"
    assert obj["STATS"][1]["GHS 5s"] == "16346.64"


def test_repairs_leave_braces_inside_s9k_strings_alone() -> None:
    # Force the slow path on the S9k capture by breaking it the bmminer way; its chain_xtimeN values
    # ("{}", "{X6=1}") must come out byte-identical.
    raw = capture(S9K)
    expected = json.loads(raw)
    broken = raw.replace(b'"Type":"Antminer S9k"},{"STATS":0', b'"Type":"Antminer S9k"}{"STATS":0')
    assert broken != raw
    assert decode_reply(broken) == expected
    assert expected["STATS"][1]["chain_xtime3"] == "{X6=1}"


def test_repair_array_leading_comma() -> None:
    text = '{"STATS":[ ,{"ID":"BTM0"}],"s":"[,{"}'
    assert repaired(framing.repair_array_leading_comma, text) == '{"STATS":[{"ID":"BTM0"}],"s":"[,{"}'
    assert decode_reply(text.encode()) == {"STATS": [{"ID": "BTM0"}], "s": "[,{"}


def test_repair_trailing_comma() -> None:
    text = '{"a":[1,2, ],"b":"x,}",}'
    assert repaired(framing.repair_trailing_comma, text) == '{"a":[1,2 ],"b":"x,}"}'
    assert decode_reply(text.encode()) == {"a": [1, 2], "b": "x,}"}


def test_repair_invalid_escapes_inside_strings_only() -> None:
    text = r'{"v":"\'2020\'","keep":"a\\\'b","n":"\n\u0041"}'
    expected = r'{"v":"' + "'2020'" + r'","keep":"a\\' + "'b" + r'","n":"\n\u0041"}'
    assert repaired(framing.repair_invalid_escapes, text) == expected
    assert decode_reply(text.encode()) == {"v": "'2020'", "keep": "a\\'b", "n": "\nA"}


def test_escaped_backslash_before_quote_is_not_an_invalid_escape() -> None:
    # JSON `"a\\'b"` is a valid escaped backslash, then a quote; the trailing comma forces the slow path.
    raw = b'{"keep":"a' + b"\\\\'b" + b'",}'
    assert decode_reply(raw) == {"keep": "a\\'b"}


def test_m20s_capture_with_backslash_quote_decodes() -> None:
    obj = decode_reply(capture(M20S) + b"\x00")
    assert obj["SUMMARY"][0]["Firmware Version"] == "'20200917.22.REL'"
    assert obj["SUMMARY"][0]["Power"] == json.loads(capture(M20S).replace(b"\\'", b"'"))["SUMMARY"][0]["Power"]


def test_repair_adjacent_strings() -> None:
    text = '{"Power Mode":"Normal""temp0":25,"a":"b" "c":1,"k": "v"}'
    assert repaired(framing.repair_adjacent_strings, text) == (
        '{"Power Mode":"Normal","temp0":25,"a":"b", "c":1,"k": "v"}'
    )


def test_whatsminer_summary_missing_comma_before_a_key_decodes() -> None:
    # No capture of the 2023-01-06 btminer `""temp0` defect exists; rebuild it on the real M30S summary.
    raw = capture(M30S)
    broken = raw.replace(b'"Voltage":1238,"Power":3230', b'"Voltage":"1238""Power":3230')
    assert broken != raw
    summary = decode_reply(broken)["SUMMARY"][0]
    assert (summary["Voltage"], summary["Power"]) == ("1238", 3230)


def test_repair_bare_non_numbers_keeps_words_and_strings() -> None:
    text = '{"a":nan,"b":-nan,"c":inf,"d":-inf,"e":"nan","f":"binance","g":[nan, inf]}'
    assert repaired(framing.repair_bare_non_numbers, text) == (
        '{"a":null,"b":null,"c":null,"d":null,"e":"nan","f":"binance","g":[null, null]}'
    )


def test_avalon_capture_with_bare_nan_gives_none() -> None:
    # AvalonStatsITest.java L1594 holds this very reply with `"MHS av":nan`.
    raw = capture(AVALON_JOINED)
    broken = raw.replace(b'"MHS av":25536751.74', b'"MHS av":nan')
    assert broken != raw
    summary = decode_reply(broken)["summary"][0]["SUMMARY"][0]
    assert summary["MHS av"] is None
    assert summary["MHS 30s"] == 32247416.81


def test_repair_leading_comma() -> None:
    assert repaired(framing.repair_leading_comma, ',"id":1}') == '{"id":1}'
    assert repaired(framing.repair_leading_comma, '{"a":",x"}') == '{"a":",x"}'
    assert decode_reply(b',"id":1}\x00') == {"id": 1}


def test_all_repairs_together_in_one_reply() -> None:
    raw = b'{"STATS":[,{"a":nan}{"b":"x}{y",}],"Fw":"\\\'1\\\'""c":-inf}\x00'
    assert decode_reply(raw) == {"STATS": [{"a": None}, {"b": "x}{y"}], "Fw": "'1'", "c": None,
                                 NOTES: ((NON_NUMBER, "reply: bare nan/inf read as unknown"),)}


# --- STATUS --------------------------------------------------------------------------------------------


def test_check_status_raises_on_e_with_code_message_and_letter() -> None:
    obj = decode_reply(b'{"STATUS":[{"STATUS":"E","When":1700000000,"Code":14,"Msg":"Invalid command"}],"id":1}\x00')
    with pytest.raises(CommandRejected) as info:
        check_status(obj)
    assert (info.value.code, info.value.message, info.value.status) == (14, "Invalid command", "E")


def test_check_status_raises_on_fatal() -> None:
    with pytest.raises(CommandRejected) as info:
        check_status({"STATUS": [{"STATUS": "F", "Code": -1, "Msg": "123"}]})
    assert (info.value.code, info.value.status) == (-1, "F")


@pytest.mark.parametrize("letter", ["S", "I", "W"])
def test_success_info_and_warning_do_not_raise(letter: str) -> None:
    # W is deliberately not a failure (framing.check_status docstring); the letter stays readable.
    obj = {"STATUS": [{"STATUS": letter, "Code": 8, "Msg": "No pools"}], "id": 1}
    check_status(obj)
    assert obj["STATUS"][0]["STATUS"] == letter


@pytest.mark.parametrize("obj", [{"STATUS": "BYE", "id": 1}, {"STATUS": "RESTART", "id": 1}, {"id": 1}, {"STATUS": []}])
def test_string_or_absent_status_without_failure_passes(obj: dict) -> None:
    check_status(obj)


def test_whatsminer_native_reply_status_string() -> None:
    check_status(decode_reply(capture("whatsminer-m31s_status.txt")))
    with pytest.raises(CommandRejected) as info:
        check_status({"STATUS": "E", "When": 1, "Code": 132, "Msg": {"error": "command error"}})
    assert info.value.code == 132
    assert "command error" in info.value.message


# --- multicommand splitting ----------------------------------------------------------------------------


def test_split_joined_avalon_capture() -> None:
    obj = decode_reply(capture(AVALON_JOINED) + b"\x00")
    replies, rejected = split_joined(obj, ["pools", "summary", "stats"])
    assert rejected == {}
    assert set(replies) == {"pools", "summary", "stats"}
    assert replies["summary"]["SUMMARY"][0]["MHS 30s"] == 32247416.81
    assert replies["summary"]["STATUS"][0]["Msg"] == "Summary"
    assert len(replies["pools"]["POOLS"]) == 3
    assert "MM ID0" in replies["stats"]["STATS"][0]


def test_split_joined_separates_rejected_and_missing_sections() -> None:
    # cgminer's answer to `summary+foo` plus a Code 45 section and one the firmware left out.
    raw = (
        b'{"summary":[{"STATUS":[{"STATUS":"S","Code":11,"Msg":"Summary"}],"SUMMARY":[{"Elapsed":5}],"id":1}],'
        b'"foo":[{"STATUS":[{"STATUS":"E","When":1,"Code":14,"Msg":"Invalid command"}],"id":1}],'
        b'"estats":[{"STATUS":[{"STATUS":"E","Code":45,"Msg":"Access denied to \'estats\' command"}],"id":1}],'
        b'"id":1}\x00'
    )
    replies, rejected = split_joined(decode_reply(raw), ["summary", "foo", "estats", "devs", "summary"])
    assert list(replies) == ["summary"]
    assert replies["summary"]["SUMMARY"] == [{"Elapsed": 5}]
    assert {name: exc.code for name, exc in rejected.items()} == {"foo": 14, "estats": 45, "devs": None}
    assert "missing" in rejected["devs"].message


def test_split_joined_top_level_error_raises() -> None:
    obj = decode_reply(b'{"STATUS":[{"STATUS":"E","When":1,"Code":23,"Msg":"Invalid JSON"}],"id":1}\x00')
    with pytest.raises(CommandRejected) as info:
        split_joined(obj, ["summary", "pools"])
    assert info.value.code == 23


# --- properties ----------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_give_an_object_or_a_framing_error(raw: bytes) -> None:
    try:
        assert type(decode_reply(raw)) is dict
    except (BadReply, EmptyReply):
        pass


_JSONISH = st.text(alphabet='{}[],:"\\\'nafi0123 \n\x00-.etrulsN', max_size=200)


@settings(max_examples=400, deadline=None)
@given(_JSONISH)
def test_json_like_text_exercising_repairs_gives_an_object_or_a_framing_error(text: str) -> None:
    try:
        assert type(decode_reply(text.encode())) is dict
    except (BadReply, EmptyReply):
        pass


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
_VALUES = st.recursive(
    _SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4), max_leaves=20
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(), _VALUES, max_size=6))
def test_valid_json_objects_round_trip_unchanged(obj: dict) -> None:
    assert decode_reply(json.dumps(obj).encode() + b"\x00") == obj


def test_no_float_nan_ever_leaks_from_a_repaired_reply() -> None:
    obj = decode_reply(b'{"a":[nan,-nan,inf,-inf,NaN,-Infinity]}')
    assert all(v is None for v in obj["a"])
    assert not any(isinstance(v, float) and math.isnan(v) for v in obj["a"])


_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_STRICT_SCALARS = st.none() | st.booleans() | _INT64 | st.floats(allow_nan=False, allow_infinity=False) | st.text()
_STRICT_VALUES = st.recursive(
    _STRICT_SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.text(), _STRICT_VALUES, max_size=6), st.booleans())
def test_strict_json_decodes_exactly_as_the_stdlib_does(obj: dict, ascii_only: bool) -> None:
    raw = json.dumps(obj, ensure_ascii=ascii_only).encode()
    assert decode_reply(raw) == json.loads(raw)


def test_strict_json_skips_the_tolerant_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fast path is what keeps decoding off the poll's critical CPU (bench/): a clean reply must not
    # pay for the stdlib decoder, and a broken one must still reach it.
    calls: list[str] = []
    tolerant = framing._decode_first
    monkeypatch.setattr(framing, "_decode_first", lambda text: calls.append(text) or tolerant(text))
    assert decode_reply(b'{"STATUS":[{"STATUS":"S"}],"SUMMARY":[{"MHS 5s":1.5}],"id":1}')["id"] == 1
    assert calls == []
    assert decode_reply(b'{"a":1,}')["a"] == 1  # trailing comma: orjson refuses, the repairs mend it
    assert calls


def test_integers_past_64_bits_still_decode() -> None:
    # orjson turns them into floats, the stdlib keeps them exact: either way every reader converts through
    # float, and the reply is not lost.
    obj = decode_reply(b'{"Accepted":18446744073709551616,"Rejected":-36893488147419103232}')
    assert obj["Accepted"] == 2**64 and obj["Rejected"] == -(2**65)


# ---- Duplicate keys: a lying reply must not pick the figure ----

def test_a_key_given_twice_with_different_values_is_unknown_and_noted() -> None:
    # orjson and the stdlib both keep the last value silently: 9,000 MW from one miner.
    obj = decode_reply(b'{"SUMMARY":[{"Power":3300,"Power":9000000000,"MHS 5s":1.5}],"id":1}')
    assert obj["SUMMARY"] == [{"Power": None, "MHS 5s": 1.5}]
    ((kind, text),) = obj[NOTES]
    assert kind == DUPLICATE_KEY and "'Power' given 2 times" in text and "3300, 9000000000" in text


def test_a_key_repeated_with_one_value_is_kept_without_a_note() -> None:
    # What real firmware does (Whatsminer M3 stats repeats chip_ok_cores_N with the same number).
    obj = decode_reply(b'{"STATS":[{"chip_ok_cores_4":78,"chip_ok_cores_4":78}]}')
    assert obj == {"STATS": [{"chip_ok_cores_4": 78}]}


@pytest.mark.parametrize("raw", [
    # the tolerant path: a trailing comma and a NUL, as bmminer sends them
    b'{"STATS":[{"total_power":3300,"total_power":1,}]}\x00',
    # a repair on the way: `}{` between records
    b'{"STATS":[{"a":1}{"total_power":3300,"total_power":1}]}',
    # a 1 instead of 1.0 is a different value, not the same one spelt differently
    b'{"STATS":[{"total_power":1,"total_power":1.0}]}',
    # nested and with a quote escaped as \\u0022 (which the quote count cannot see)
    b'{"STATS":[{"x":"a\\u0022b","p":{"total_power":3300,"total_power":1}}]}',
    # the same key in an object further down, not the top level
    b'{"STATUS":[{"STATUS":"S"}],"STATS":[{"ID":"a"},{"ID":"b","total_power":5,"total_power":6}]}',
])
def test_disagreeing_duplicates_are_found_on_every_path(raw: bytes) -> None:
    obj = decode_reply(raw)
    assert [kind for kind, _ in obj[NOTES]] == [DUPLICATE_KEY]
    assert json.dumps(obj["STATS"]).count('"total_power": null') == 1
    assert json.dumps(obj["STATS"]).count('"total_power"') == 1


def test_split_joined_gives_every_section_the_notes_and_reply_notes_lists_each_once() -> None:
    raw = b'{"summary":[{"SUMMARY":[{"Power":1,"Power":2}]}],"pools":[{"POOLS":[]}],"id":1}'
    replies, rejected = split_joined(decode_reply(raw), ["summary", "pools"])
    assert not rejected and replies["summary"]["SUMMARY"] == [{"Power": None}]
    assert replies["summary"][NOTES] == replies["pools"][NOTES]
    assert [kind for kind, _ in reply_notes(replies.values())] == [DUPLICATE_KEY]
    assert reply_notes([{"SUMMARY": []}]) == ()


_KEYS = st.sampled_from(["Power", "MHS 5s", "Temperature", "a"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_KEYS, st.integers(-5, 5) | st.text(max_size=3)), min_size=1, max_size=8))
def test_duplicates_resolve_as_documented_whatever_the_mix(pairs: list[tuple[str, object]]) -> None:
    # Written out by hand, so keys can repeat: each key is its one value, or None when its values disagree.
    raw = ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()
    obj = decode_reply(raw)
    noted = {text.split("'")[1] for _, text in obj.pop(NOTES, ())}
    for key in {k for k, _ in pairs}:
        values = [v for k, v in pairs if k == key]
        agree = all(type(v) is type(values[0]) and v == values[0] for v in values)
        assert obj[key] == (values[0] if agree else None)
        assert (key in noted) is not agree
