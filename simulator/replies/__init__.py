"""Reply templates per firmware dialect, rendered from the simulator's own tick values.

The simulator never imports the parsers in agent/dialects: these templates are derived from the real
replies in tests/golden/replies, and tests parse every one of them with its dialect so the two cannot drift
apart silently.
"""

from __future__ import annotations

from typing import Any

from megawatch.simulator.behaviour import Identity
from megawatch.simulator.replies import (
    avalon,
    bfgminer,
    bmminer,
    bosminer,
    btminer,
    cgminer,
    luxos,
)
from megawatch.simulator.replies.common import Bare, Firmware, Section
from megawatch.simulator.replies.encode import (
    COMPACT,
    COMPACT_FLOATS,
    SORTED_FLOATS,
    SPACED_FLOATS,
    Style,
    encode,
    text_record,
)

DIALECTS: tuple[str, ...] = ("cgminer", "bfgminer", "bmminer", "btminer", "bosminer", "luxos", "avalon")
STYLES: dict[str, Style] = {
    "compact": COMPACT, "spaced_floats": SPACED_FLOATS, "sorted_floats": SORTED_FLOATS,
    "compact_floats": COMPACT_FLOATS,
}
_FIXED: dict[str, Firmware] = {
    "cgminer": cgminer.FIRMWARE,
    "bfgminer": bfgminer.FIRMWARE,
    "btminer": btminer.FIRMWARE,
    "bosminer": bosminer.FIRMWARE,
    "luxos": luxos.FIRMWARE,
    "avalon": avalon.FIRMWARE,
}
# Which model families each firmware runs on (checked at config load).
VENDORS: dict[str, tuple[str, ...]] = {
    "bmminer": ("Antminer",),
    "bosminer": ("Antminer",),
    "luxos": ("Antminer",),
    "btminer": ("Whatsminer",),
    "avalon": ("Avalon",),
}


def firmware_for(ident: Identity) -> Firmware:
    if ident.dialect == "bmminer":
        return bmminer.pick(ident)
    return _FIXED[ident.dialect]


def status(fw: Firmware, letter: str, code: int, msg: str, when: int, describe: bool = True) -> dict[str, Any]:
    record: dict[str, Any] = {"STATUS": letter, "When": when, "Code": code, "Msg": msg}
    if describe:
        record["Description"] = fw.description
    return record


def error(fw: Firmware, code: int, msg: str, when: int) -> dict[str, Any]:
    """An E reply; Code 14 drops Description on firmware built after cgminer 8e0b18a3 (2018-03)."""
    describe = code != 14 or fw.describe_invalid
    return {"STATUS": [status(fw, "E", code, msg, when, describe)], "id": 1}


def as_object(fw: Firmware, result: Section | Bare | dict[str, Any], when: int) -> dict[str, Any]:
    """The reply object for one command: {"STATUS":[...],"SECTION":[...],"id":1}."""
    if isinstance(result, dict):
        return result
    if isinstance(result, Bare):
        return {"STATUS": result.status, "id": 1}
    head: dict[str, Any] = {"STATUS": [status(fw, result.status, result.code, result.msg, when)]}
    if result.key:
        head[result.key] = result.items
    head["id"] = 1
    return head


def encode_json(fw: Firmware, obj: dict[str, Any]) -> str:
    return encode(obj, STYLES[fw.style_name])


def as_text(fw: Firmware, result: Section | Bare | dict[str, Any], when: int) -> str:
    """cgminer's legacy text reply: `STATUS=S,When=..,Code=..,Msg=..,Description=..|SUMMARY,...|`."""
    if isinstance(result, Bare):
        return result.status
    if isinstance(result, dict):
        return "".join(text_record(record) for record in result["STATUS"])
    out = [text_record(status(fw, result.status, result.code, result.msg, when))]
    for item in result.items:
        out.append(text_record(item, result.key if result.text_header else None))
    return "".join(out)
