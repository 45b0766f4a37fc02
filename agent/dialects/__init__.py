"""Firmware dialects: one pure parser module per firmware family.

Contract of every dialect module:
- `NAME: str`; `COMMANDS: tuple[str, ...]` sent once per poll; `JOINABLE: bool`, whether they may go
  as one `a+b+c` multicommand (the poller falls back to one command per connection when a join fails).
- `parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading`: `replies` maps each command that
  answered successfully to its decoded reply object (the one holding STATUS and the data section).
  A missing field gives None; a malformed one gives None plus a note in `reading.problems`. `parse`
  never raises on miner content and never does I/O. Power is set only when the firmware reports it
  (`PowerSource.FIRMWARE`); estimates are added later from the model table (agent/modeltable.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from megawatch.agent.dialects import avalon, bfgminer, bmminer, bosminer, btminer, cgminer, luxos
from megawatch.agent.dialects._fields import description

DIALECTS: dict[str, ModuleType] = {
    "cgminer": cgminer,
    "bfgminer": bfgminer,
    "bmminer": bmminer,
    "btminer": btminer,
    "bosminer": bosminer,
    "luxos": luxos,
    "avalon": avalon,
}

# Sent to an unknown miner; devdetails may be refused (stock Antminer allow-list), version alone suffices.
DETECT_COMMANDS: tuple[str, ...] = ("version", "devdetails")

# Markers looked for in the upper-cased `version` reply, first match wins. Order matters: Braiins and
# LuxOS run on Antminer hardware and report "Antminer" too; an Avalon controller's `version` carries
# PROD/MODEL keys. (pyasic and asic-rs identify firmware from the same strings.)
_VERSION_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bosminer", ("BOSMINER", "BOSER")),
    ("luxos", ("LUXMINER",)),
    ("btminer", ("BTMINER", "BITMICRO", "WHATSMINER")),
    ("bfgminer", ("BFGMINER",)),
    ("avalon", ("AVALON", '"PROD":')),
    ("bmminer", ("BMMINER", "ANTMINER")),
)
# In `devdetails` only the STATUS Description names the firmware ("BOSminer+ 0.2.0-...", "bfgminer 5.5.0");
# its Model/Driver strings name hardware - a bOS S9 says "Bitmain Antminer S9", a BFGMiner or cgminer
# driving an Avalon USB device says "avalon" - and would mislabel the firmware, except Whatsminer's
# Driver "bitmicro", which only btminer sends.
_DEVDETAILS_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (("btminer", ("BTMINER", "BITMICRO")),)


def _find(reply: Mapping[str, Any] | str | None, markers: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    if reply is None:
        return None
    blob = json.dumps(reply, default=str).upper()
    for name, words in markers:
        if any(word in blob for word in words):
            return name
    return None


def detect(replies: Mapping[str, Mapping[str, Any]]) -> str:
    """Name the dialect from the `version` (and, when answered, `devdetails`) replies.

    Falls back to "cgminer": every firmware here speaks at least the stock cgminer subset.
    """
    devdetails = replies.get("devdetails")
    return (
        _find(replies.get("version"), _VERSION_MARKERS)
        or _find(description(devdetails), _VERSION_MARKERS)
        or _find(devdetails, _DEVDETAILS_MARKERS)
        or "cgminer"
    )
