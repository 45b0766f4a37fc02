"""Stock cgminer (ckolivas/cgminer 4.x, API 3.x) on TCP 4028 - and the section parsers its forks reuse.

Covers cgminer 4.9-4.11 as its source defines the replies (ckolivas/cgminer api.c `apiversion`, `summary`,
`poolstatus`, `ascstatus`, `devdetails`); golden replies in tests/golden/replies/cgminer (composed from api.c,
see SOURCES.md).
Commands: version, summary, pools, devs, devdetails (all joinable, API >= 3.1).
Quirks: `MHS %ds` follows `--log` (5 s by default, 30 s on Avalon builds); a device without a sensor reports
`Temperature` 0 or -273; `devs`/`devdetails` answer E/10 "No ASCs" when nothing is attached (the poller then
drops them and the reading has no boards). No power figure: cgminer does not measure it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from megawatch.agent.dialects import _fields as f
from megawatch.agent.model import Board, MinerReading

NAME = "cgminer"
COMMANDS: tuple[str, ...] = ("version", "summary", "pools", "devs", "devdetails")
# cgminer joins report commands since API 3.1 (api.c `cmds[]`, joinable column).
JOINABLE = True

# The device-kind key that numbers each `devs` entry: ASC on modern builds, PGA/GPU on older ones and BFGMiner.
_DEVICE_INDEX_KEYS = ("ASC", "PGA", "GPU", "ID")


def parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading:
    """Normalise one poll of a stock cgminer (see the module docstring for sources and quirks)."""
    return stock_reading(NAME, replies, firmware_from_version(replies, ("CGMiner",)))


def stock_reading(
    dialect: str, replies: Mapping[str, Mapping[str, Any]], firmware: tuple[str | None, str | None]
) -> MinerReading:
    """A reading from the stock command set (summary, pools, devs, devdetails), for cgminer and BFGMiner."""
    problems: list[str] = []
    return MinerReading(
        dialect=dialect,
        model=f.shared(devdetails_model(replies.get("devdetails"))),
        firmware=f.shared(firmware[0]),
        firmware_version=f.shared(firmware[1]),
        **f.summary_fields(replies.get("summary"), problems),
        boards=devs_boards(replies.get("devs"), problems),
        pools=f.mark_active_pool(f.pools(replies.get("pools"), problems)),
        problems=tuple(problems),
    )


def firmware_from_version(
    replies: Mapping[str, Mapping[str, Any]], keys: Sequence[str], *more: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """(family, version) from the first of `keys` in VERSION[0] or `more`: "CGMiner": "4.11.1" is ("cgminer", "4.11.1").

    Keys are tried in order across all items, so a preferred key wins wherever it appears (the S9k's
    `version` says "CGMiner" where its `stats` header says "BMMiner"). Falls back to a STATUS Description
    ("cgminer 4.11.1") of any reply, so a poll whose `version` failed still names the firmware.
    """
    items = (f.first_item(replies.get("version"), "VERSION"), *more)
    for key in keys:
        for item in items:
            value = f.text(item.get(key))
            if value is not None:
                return key.lower(), value
    name, version = f.split_description(f.any_description(replies))
    return (name.lower() if name else None), version


def devdetails_model(reply: Mapping[str, Any] | None) -> str | None:
    """The first device's `Model` from `devdetails` (BFGMiner lists them under DEVS, cgminer under DEVDETAILS)."""
    for name in ("DEVDETAILS", "DEVS"):
        for item in f.section(reply, name):
            model = f.text(item.get("Model"))
            if model is not None:
                return model
    return None


def devs_boards(reply: Mapping[str, Any] | None, problems: list[str]) -> tuple[Board, ...]:
    """One Board per `devs` entry: its short-window rate and its one `Temperature`, as the chip temperature.

    That one figure is the device's hottest reading - a die sensor on most ASIC drivers, the hottest
    processor on BFGMiner (api.c devstatus_an) - and the one both programs compare with --temp-cutoff.
    Exported as the chip sensor it is a temperature series by default, where stock firmware has no other;
    as a board sensor it was hidden unless board temperatures were switched on.
    0 and -273 mean "no sensor" (temperature_c makes them None); BFGMiner leaves the key out instead.
    """
    boards: list[Board] = []
    for position, item in enumerate(f.section(reply, "DEVS")):
        where = f"devs[{position}]"
        index = next((f.integer(item[key]) for key in _DEVICE_INDEX_KEYS if key in item), None)
        boards.append(
            Board(
                index=index if index is not None else position,
                # S19 Pro bmminer spells it "Tenperature" (asic-rs v2020 devs.json).
                chip_temp_c=f.read(item, _temperature_key(item), f.temperature_c, problems, where),
                hashrate_hs=f.short_rate(item, problems, where),
            )
        )
    return tuple(boards)


def _temperature_key(item: Mapping[str, Any]) -> str:
    return "Tenperature" if "Tenperature" in item and "Temperature" not in item else "Temperature"
