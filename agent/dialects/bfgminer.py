"""BFGMiner (luke-jr/bfgminer 5.x, API 3.1) on TCP 4028.

Covers BFGMiner 5.5.0 as observed on loopback and its source (luke-jr/bfgminer api.c
@ c6e7c912: `apiversion`, `summary`, `poolstatus`, `devstatus_an`, `devdetail_an`); golden replies in
tests/golden/replies/bfgminer (composed from that source, see SOURCES.md). API doc: README.RPC.
Commands: version, summary, pools, devs, devdetails (joinable like cgminer).
Quirks: VERSION has no "BFGMiner" key - `"Miner":"bfgminer 5.5.0"` plus `"CGMiner":"5.5.0"` (the version of
BFGMiner itself, not of a cgminer); the rolling rate is `MHS 20s` (BFGMiner's default --log is 20 s) and
summary has no 1m/5m/15m; devices are numbered by `PGA` (a CPU too); `devdetails` puts its items under DEVS,
with `Model` only when the driver knows one. No power figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from megawatch.agent.dialects import _fields as f
from megawatch.agent.dialects.cgminer import firmware_from_version, stock_reading
from megawatch.agent.model import MinerReading

NAME = "bfgminer"
COMMANDS: tuple[str, ...] = ("version", "summary", "pools", "devs", "devdetails")
# BFGMiner kept cgminer's `a+b` joins (5.5.0 answers joined requests, repeats collapsed).
JOINABLE = True


def parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading:
    """Normalise one poll of a BFGMiner (see the module docstring for sources and quirks)."""
    return stock_reading(NAME, replies, _firmware(replies))


def _firmware(replies: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, str | None]:
    # "Miner":"bfgminer 5.5.0" names the program; "CGMiner" holds the same version (api.c apiversion()).
    name, version = f.split_description(f.text(f.first_item(replies.get("version"), "VERSION").get("Miner")))
    if name is not None and name.lower() == "bfgminer":
        return "bfgminer", version
    return firmware_from_version(replies, ("CGMiner",))
