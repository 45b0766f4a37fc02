"""Firmware dialects: one pure parser module per firmware family.

Contract of every dialect module:
- `NAME: str`; `COMMANDS: tuple[str, ...]` sent once per poll; `JOINABLE: bool`, whether they may go
  as one `a+b+c` multicommand (the poller falls back to one command per connection when a join fails).
- `parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading`: `replies` maps each command that
  answered successfully to its decoded reply object (the one holding STATUS and the data section).
  A missing field gives None; a malformed one gives None plus a note in `reading.problems`. `parse`
  never raises on miner content and never does I/O. Power is set only when the firmware reports it
  (`PowerSource.FIRMWARE`); estimates are added later from the model table (agent/models.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from agent.dialects import avalon, bfgminer, bmminer, bosminer, btminer, cgminer, luxos

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

# Order matters: Braiins and LuxOS run on Antminer hardware and mention "Antminer" too.
_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bosminer", ("BOSMINER", "BOSER")),
    ("luxos", ("LUXMINER",)),
    ("btminer", ("BTMINER", "BITMICRO", "WHATSMINER")),
    ("avalon", ("AVALON",)),
    ("bfgminer", ("BFGMINER",)),
    ("bmminer", ("BMMINER", "ANTMINER")),
)


def detect(replies: Mapping[str, Mapping[str, Any]]) -> str:
    """Name the dialect from the `version` (and, when answered, `devdetails`) replies.

    Falls back to "cgminer": every firmware here speaks at least the stock cgminer subset.
    """
    blob = " ".join(json.dumps(replies.get(cmd), default=str) for cmd in DETECT_COMMANDS).upper()
    for name, markers in _MARKERS:
        if any(marker in blob for marker in markers):
            return name
    return "cgminer"
