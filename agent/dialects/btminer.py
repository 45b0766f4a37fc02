"""MicroBT Whatsminer (btminer), API v1/v2 on TCP 4028.

Covers the real replies in tests/golden/replies/btminer: M20S (fw 20200917.22), M30S (20200512.13) and
M31S (20201202.22, `Description` "btminer"); sources in SOURCES.md. API doc: Whatsminer API V2.0.5;
fields summed up in docs/protocol.md. Commands: summary, pools, devs, devdetails (cgminer shapes, joinable).
Quirks: `summary` carries the whole-miner extras - `Power` (W, -1 = unknown), `Power Limit` (W),
`Fan Speed In`/`Fan Speed Out` (RPM, 0 = no such fan) and `Firmware Version` wrapped in single quotes
("'20200512.13.REL'"); `Description` names the cgminer library ("cgminer 4.9.2"), not the firmware.
`devs` and `edevs` give one entry per hash board with `Slot`, board `Temperature`, `Chip Temp Min/Max/Avg`
and `Effective Chips`; `devdetails` gives `Model` ("M30S+_VE40"), kept as the miner says it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from megawatch.agent.dialects import _fields as f
from megawatch.agent.dialects.cgminer import devdetails_model
from megawatch.agent.model import Board, Fan, MinerReading, PowerSource

NAME = "btminer"
COMMANDS: tuple[str, ...] = ("summary", "pools", "devs", "devdetails")
# cgminer-shaped read commands join on btminer; only the native `get_*`/`status` ones cannot
# (pyasic rpc/btminer.py `multicommand`).
JOINABLE = True

# Both in summary and in each devs entry, in this order: intake then exhaust.
_FAN_KEYS = ("Fan Speed In", "Fan Speed Out")


def parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading:
    """Normalise one poll of a Whatsminer (see the module docstring for sources and quirks)."""
    problems: list[str] = []
    summary = f.first_item(replies.get("summary"), "SUMMARY")
    # Some tools poll `edevs` instead of `devs`; the two answer with the same DEVS entries on btminer.
    devs = f.section(replies.get("devs", replies.get("edevs")), "DEVS")
    power_w = f.read(summary, "Power", f.positive, problems, "summary")
    return MinerReading(
        dialect=NAME,
        model=f.shared(devdetails_model(replies.get("devdetails"))),
        firmware=NAME if replies else None,
        firmware_version=f.shared(f.text(summary.get("Firmware Version"))),
        **f.summary_fields(replies.get("summary"), problems),
        boards=_boards(devs, problems),
        fans=_fans(summary, "summary", problems) if summary else _fans(devs[0] if devs else {}, "devs[0]", problems),
        pools=f.mark_active_pool(f.pools(replies.get("pools"), problems)),
        power_w=power_w,
        power_source=PowerSource.FIRMWARE if power_w is not None else None,
        power_limit_w=f.read(summary, "Power Limit", f.positive, problems, "summary"),
        problems=tuple(problems),
    )


def _boards(devs: list[Mapping[str, Any]], problems: list[str]) -> tuple[Board, ...]:
    boards: list[Board] = []
    for position, item in enumerate(devs):
        where = f"devs[{position}]"
        index = next((f.integer(item[key]) for key in ("Slot", "ASC", "ID") if key in item), None)
        # The chip that overheats first is what throttles the board: Max, with Avg when Max is absent.
        chip_key = "Chip Temp Max" if "Chip Temp Max" in item else "Chip Temp Avg"
        boards.append(
            Board(
                index=index if index is not None else position,
                chip_temp_c=f.read(item, chip_key, f.temperature_c, problems, where),
                board_temp_c=f.read(item, "Temperature", f.temperature_c, problems, where),
                hashrate_hs=f.short_rate(item, problems, where),
                chips=f.read(item, "Effective Chips", f.integer, problems, where),
            )
        )
    return tuple(boards)


def _fans(item: Mapping[str, Any], where: str, problems: list[str]) -> tuple[Fan, ...]:
    fans: list[Fan] = []
    for index, key in enumerate(_FAN_KEYS):
        # 0 RPM: the M31S reports "Fan Speed Out":0 - a model with one fan, not a stopped one.
        rpm = f.read(item, key, f.positive, problems, where)
        if rpm is not None:
            fans.append(Fan(index=index, rpm=rpm))
    return tuple(fans)
