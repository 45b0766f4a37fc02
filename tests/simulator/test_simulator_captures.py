"""The simulator's replies have the keys, order, spacing and value types of REAL firmware replies.

Each case names a real capture in tests/golden/captures (provenance in its SOURCES.md) and the simulated
miner that should look like it. Values differ (they are simulated); the shape must not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

CAPTURES = Path(__file__).resolve().parents[1] / "golden" / "captures"


def kind(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def in_order(ours: list[str], theirs: list[str]) -> list[str]:
    """The keys both have, in our order; equal to theirs filtered means the order matches."""
    common = set(ours) & set(theirs)
    return [k for k in ours if k in common]


# (capture file, path to the record in it, dialect, model, command, path to our record, keys we may lack)
CASES = [
    ("antminer-s9k-bmminer4.9_stats.txt", ("STATS", 1), "bmminer", "Antminer S9k", "stats", ("STATS", 1),
     {"chain_xtime1", "chain_xtime2", "chain_xtime3", "chain_offside_1", "chain_offside_2", "chain_offside_3",
      "chain_opencore_1", "chain_opencore_2", "chain_opencore_3"}),
    ("antminer-s19-bmminer1.0-sleeping_stats.txt", ("STATS", 1), "bmminer", "Antminer S19", "stats", ("STATS", 1),
     {"temp1", "temp2_1"}),
    ("antminer-s19-bmminer1.0_pools.txt", ("POOLS", 0), "bmminer", "Antminer S19", "pools", ("POOLS", 0), set()),
    ("whatsminer-m30s_summary.txt", ("SUMMARY", 0), "btminer", "Whatsminer M30S", "summary", ("SUMMARY", 0),
     {"Factory Error Code 0", "Error Code 0", "Factory Error Code 1"}),
    ("braiins-osplus-s9_summary.txt", ("SUMMARY", 0), "bosminer", "Antminer S9", "summary", ("SUMMARY", 0), set()),
    ("avalon10xx-cgminer4.11.1_pools+summary+stats.txt", ("summary", 0, "SUMMARY", 0), "avalon", "Avalon A1246",
     "summary", ("SUMMARY", 0), set()),
    ("avalon10xx-cgminer4.11.1_pools+summary+stats.txt", ("pools", 0, "POOLS", 0), "avalon", "Avalon A1246",
     "pools", ("POOLS", 0), set()),
]


def dig(obj, path):
    for step in path:
        obj = obj[step]
    return obj


@pytest.mark.parametrize("case", CASES, ids=[f"{c[2]}-{c[4]}-{c[0].split('_')[0]}" for c in CASES])
async def test_simulated_record_has_the_captured_shape(make_sim_fleet, raw_request, case):
    capture, their_path, dialect, model, command, our_path, may_lack = case
    theirs = dig(json.loads((CAPTURES / capture).read_text()), their_path)
    fleet = await make_sim_fleet(groups=((dialect, model),), sites=1)
    m = fleet.miners[0]
    raw = await raw_request(m.host, m.port, json.dumps({"command": command}).encode())
    ours = dig(json.loads(raw[:-1]), our_path)
    missing = set(theirs) - set(ours) - may_lack
    assert not missing, f"keys the real firmware sends and the simulator does not: {sorted(missing)}"
    common = in_order(list(ours), list(theirs))
    assert common == [k for k in theirs if k in common], "key order differs from the capture"
    wrong = {k: (kind(theirs[k]), kind(ours[k])) for k in common if kind(theirs[k]) != kind(ours[k])}
    assert not wrong, f"value types differ (capture, ours): {wrong}"


async def test_spacing_and_number_format_follow_the_firmware(make_sim_fleet, raw_request):
    fleet = await make_sim_fleet(groups=(("bmminer", "Antminer S19"), ("cgminer", "Antminer S19"),
                                         ("bosminer", "Antminer S9"), ("luxos", "Antminer S21")), sites=1)
    s19, stock, braiins, lux = fleet.miners
    raw = await raw_request(s19.host, s19.port, b'{"command":"stats"}')
    assert raw.startswith(b'{"STATUS": [{"STATUS": "S", "When": ') and b'"total rate": ' in raw
    raw = await raw_request(stock.host, stock.port, b'{"command":"summary"}')
    # printf formats: %.2f rates, %.4f Total MH and percentages, %.8f difficulties
    assert re.search(rb'"MHS av":\d+\.\d\d,', raw) and re.search(rb'"Total MH":\d+\.\d{4},', raw)
    assert re.search(rb'"Difficulty Accepted":\d+\.\d{8},', raw)
    raw = await raw_request(braiins.host, braiins.port, b'{"command":"summary"}')
    keys = list(json.loads(raw[:-1])["SUMMARY"][0])
    assert keys == sorted(keys)
    raw = await raw_request(lux.host, lux.port, b'{"command":"power"}')
    assert raw.startswith(b'{"POWER":[{"PSU":false,"Watts":') and b'"STATUS":[{"Code":311,"Description"' in raw


async def test_avalon_packs_its_readings_into_mm_id0(make_sim_fleet, raw_request):
    real = json.loads((CAPTURES / "avalon10xx-cgminer4.11.1_pools+summary+stats.txt").read_text())
    real_tokens = re.findall(r"(\w+)\[", real["stats"][0]["STATS"][0]["MM ID0"])
    fleet = await make_sim_fleet(groups=(("avalon", "Avalon A1246"),), sites=1)
    m = fleet.miners[0]
    stats = json.loads((await raw_request(m.host, m.port, b'{"command":"estats"}'))[:-1])["STATS"]
    assert list(stats[0])[:8] == list(real["stats"][0]["STATS"][0])[:8]
    ours = dict(re.findall(r"(\w+)\[([^\]]*)\]", stats[0]["MM ID0"]))
    for token in ("Temp", "TMax", "TAvg", "Fan1", "Fan2", "FanR", "PS", "MGHS", "MTmax", "MPO", "Elapsed", "GHSavg"):
        assert token in real_tokens or token in ("WALLPOWER",), token
        assert token in ours, token
    assert ours["WALLPOWER"] == ours["PS"].split()[6]  # as on the A1566 capture (pyasic test)
    snap = fleet.miner(m.index).snapshot()
    assert int(ours["WALLPOWER"]) == snap.power_w
    assert [float(v) for v in ours["MGHS"].split()] == pytest.approx(
        [r / 1e9 for r in snap.board_hashrate_hs], abs=0.01)
