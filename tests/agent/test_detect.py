"""detect(): real `version`/`devdetails` replies of all seven dialects name the right one.

Files come from tests/golden/replies (provenance in SOURCES.md); the few inline replies say where they are from.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from dialect_cases import GOLDEN_REPLIES, load_case

from megawatch.agent.dialects import DETECT_COMMANDS, DIALECTS, detect
from megawatch.agent.protocol.framing import decode_reply


def _golden(path: str) -> dict[str, Any]:
    """The detection commands' replies from one golden directory (others are not sent to an unknown miner)."""
    replies = load_case(GOLDEN_REPLIES / path)
    return {command: reply for command, reply in replies.items() if command in DETECT_COMMANDS}


# Antminer S9 on Hiveon: foreman-apps AntminerStatsITest.java @ 861a09fd, "Antminer S9 (Hiveon)" version handler.
HIVEON_S9_VERSION = (
    b'{"STATUS":[{"STATUS":"S","When":1600293257,"Code":22,"Msg":"BMMiner versions","Description":"bmminer 1.0.0"}],'
    b'"VERSION":[{"BMMiner":"2.0.0 rwglr","API":"3.1","Miner":"30.0.1.3","CompileTime":"Tue Nov 20 10:12:30 UTC 2019",'
    b'"Type":"Antminer S9 Hiveon"}],"id":1}'
)
# Antminer D3 stock: same file, "Antminer D3" version handler (older builds name the key CGMiner).
D3_VERSION = (
    b'{"STATUS":[{"STATUS":"S","When":1526315502,"Code":22,"Msg":"CGMiner versions","Description":"cgminer 4.9.0"}],'
    b'"VERSION":[{"CGMiner":"4.9.0","API":"3.1","Miner":"1.0.1.3","CompileTime":"Fri Aug 25 17:28:57 CST 2017",'
    b'"Type":"Antminer D3"}],"id":1}'
)
# COMPOSED (no real Whatsminer version/devdetails capture was found): cgminer's devdetails() key set with
# the Driver "bitmicro" and Description "cgminer 4.9.2" that pyasic and asic-rs key Whatsminer on; the
# version reply is the stock one old btminer builds send ("cgminer 4.9.2", as in the M30S summary capture).
WHATSMINER_VERSION = {
    "STATUS": [{"STATUS": "S", "When": 1606354856, "Code": 22, "Msg": "CGMiner versions",
                "Description": "cgminer 4.9.2"}],
    "VERSION": [{"CGMiner": "4.9.2", "API": "3.7"}],
    "id": 1,
}
WHATSMINER_DEVDETAILS = {
    "STATUS": [{"STATUS": "S", "When": 1606354856, "Code": 69, "Msg": "Device Details",
                "Description": "cgminer 4.9.2"}],
    "DEVDETAILS": [{"DEVDETAILS": 0, "Name": "SM", "ID": 0, "Driver": "bitmicro", "Kernel": "", "Model": "M30S",
                    "Device Path": ""}],
    "id": 1,
}

CASES = [
    ("bmminer", lambda: _golden("bmminer/antminer-s9k-bmminer-4.9.0")),
    ("bmminer", lambda: _golden("bmminer/antminer-s19-bmminer-1.0.0")),
    ("bmminer", lambda: _golden("bmminer/antminer-s21-bmminer-1.0.0")),
    ("bmminer", lambda: {"version": decode_reply(HIVEON_S9_VERSION)}),
    ("bmminer", lambda: {"version": decode_reply(D3_VERSION)}),
    ("bosminer", lambda: _golden("bosminer/0.2.0-36c56a9363")),
    ("bosminer", lambda: _golden("bosminer/0.2.0-d360818")),
    ("bosminer", lambda: _golden("bosminer/boser-buildroot-0.1.0-45f356ea")),
    # Only devdetails answered, and it says "Bitmain Antminer S9": still Braiins, not stock bmminer.
    ("bosminer", lambda: _golden("bosminer/0.2.0-ea64aec8e")),
    ("luxos", lambda: _golden("luxos/2025.4.8.220305-57b389c7")),
    ("avalon", lambda: _golden("avalon/24102401_25462b2_9ddf522")),
    ("bfgminer", lambda: _golden("bfgminer/bfgminer-5.5.0")),
    ("btminer", lambda: {"version": WHATSMINER_VERSION, "devdetails": WHATSMINER_DEVDETAILS}),
    ("cgminer", lambda: _golden("cgminer/cgminer-4.11.1")),
]


@pytest.mark.parametrize(("expected", "replies"), CASES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(CASES)])
def test_real_replies_name_their_dialect(expected: str, replies: Any) -> None:
    assert detect(replies()) == expected


def test_braiins_and_luxos_on_antminer_hardware_are_not_taken_for_bmminer() -> None:
    luxos = _golden("luxos/2025.4.8.220305-57b389c7")
    assert "Antminer" in json.dumps(luxos["version"])
    assert detect(luxos) == "luxos"
    braiins = _golden("bosminer/0.2.0-ea64aec8e")
    assert "Antminer" in json.dumps(braiins["devdetails"])
    assert detect(braiins) == "bosminer"


def test_hardware_named_in_devdetails_does_not_override_the_firmware() -> None:
    # BFGMiner and stock cgminer can drive Avalon USB devices: devdetails then says "avalon".
    replies = _golden("cgminer/cgminer-4.11.1")
    replies["devdetails"]["DEVDETAILS"][0]["Driver"] = "avalon"
    assert detect(replies) == "cgminer"


def test_whatsminer_is_named_by_devdetails_when_version_looks_stock() -> None:
    assert detect({"version": WHATSMINER_VERSION}) == "cgminer"
    assert detect({"version": WHATSMINER_VERSION, "devdetails": WHATSMINER_DEVDETAILS}) == "btminer"


def test_nothing_answered_falls_back_to_stock_cgminer() -> None:
    assert detect({}) == "cgminer"


def test_every_detected_name_is_a_dialect() -> None:
    assert {name for name, _ in CASES} == set(DIALECTS)
