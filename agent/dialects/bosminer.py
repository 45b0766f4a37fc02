"""Braiins OS / OS+ (BOSminer, BOSminer+, later BOSer) on TCP 4028.

Covers BOSminer 0.2.0 (bOS), BOSminer+ 0.2.0 (bOS+, S9), bosminer-plus 0.4.0 and BOSer boser-buildroot
0.1.0 as seen in tests/golden/replies/bosminer.
API reference: https://docs.braiins.com/os/plus-en/Development/1_api.html
Commands: version, summary, pools (cgminer shapes) plus the Braiins-only fans, temps, tunerstatus and devdetails.
Quirks: keys sorted, floats at full precision; chains are numbered by the firmware's hash-chain index
(6, 7, 8 on an S9) in temps, devdetails, devs and tunerstatus, and Board.index keeps that number; temps
report `Chip: 0.0` when the chip sensor is not read (unknown, not 0 °C); fans report 0 RPM on empty
headers. Power: `tunerstatus` TUNERSTATUS[0].ApproximateMinerPowerConsumption (W, the firmware's own
estimate of the whole miner) and PowerLimit (W).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from megawatch.agent.dialects import _fields as f
from megawatch.agent.model import Board, Fan, MinerReading, PowerSource

NAME = "bosminer"
COMMANDS: tuple[str, ...] = ("version", "summary", "pools", "fans", "temps", "tunerstatus", "devdetails")
# Braiins documents `version+config`-style joins; bOS answers each joined section like cgminer.
JOINABLE = True

# VERSION keys naming the firmware, newest last; the value is its version ("0.2.0-36c56a9363").
_FIRMWARE_KEYS = ("BOSminer", "BOSminer+", "BOSer")


def parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading:
    """Normalise one poll of a Braiins OS miner (see the module docstring for sources and quirks)."""
    problems: list[str] = []
    firmware, firmware_version = _firmware(replies)
    power_w, power_limit_w = _power(replies.get("tunerstatus"), problems)
    return MinerReading(
        dialect=NAME,
        model=f.shared(_model(replies.get("devdetails"))),
        firmware=f.shared(firmware),
        firmware_version=f.shared(firmware_version),
        **f.summary_fields(replies.get("summary"), problems),
        boards=_boards(replies.get("temps"), replies.get("devdetails"), problems),
        fans=_fans(replies.get("fans"), problems),
        pools=f.pools(replies.get("pools"), problems),
        power_w=power_w,
        power_source=PowerSource.FIRMWARE if power_w is not None else None,
        power_limit_w=power_limit_w,
        problems=tuple(problems),
    )


def _firmware(replies: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, str | None]:
    version = f.first_item(replies.get("version"), "VERSION")
    for key in _FIRMWARE_KEYS:
        value = f.text(version.get(key))
        if value is not None:
            return key, value
    # Every Braiins reply carries "BOSminer+ 0.2.0-ea64aec8e" as STATUS Description: enough without `version`.
    return f.split_description(f.any_description(replies))


def _model(devdetails: Mapping[str, Any] | None) -> str | None:
    for chain in f.section(devdetails, "DEVDETAILS"):
        model = f.text(chain.get("Model"))
        if model is not None:
            return model
    return None


def _power(tunerstatus: Mapping[str, Any] | None, problems: list[str]) -> tuple[float | None, float | None]:
    if tunerstatus is None:
        return None, None
    tuner = f.first_item(tunerstatus, "TUNERSTATUS")
    if not tuner:
        problems.append("tunerstatus: reply has no TUNERSTATUS object")
        return None, None
    # 0 W is what a paused miner reports: the firmware has no estimate then, and unknown is never 0.
    power = f.read(tuner, "ApproximateMinerPowerConsumption", f.positive, problems, "tunerstatus")
    limit = f.read(tuner, "PowerLimit", f.positive, problems, "tunerstatus")
    return power, limit


def _boards(
    temps: Mapping[str, Any] | None, devdetails: Mapping[str, Any] | None, problems: list[str]
) -> tuple[Board, ...]:
    chips: dict[int, int | None] = {}
    for position, chain in enumerate(f.section(devdetails, "DEVDETAILS")):
        chain_id = f.integer(chain.get("ID"))
        if chain_id is None:
            problems.append(f"devdetails[{position}].ID: not a chain index: {chain.get('ID')!r:.60}")
            continue
        chips[chain_id] = f.read(chain, "Chips", f.integer, problems, f"devdetails[{position}]")
    temperatures: dict[int, tuple[float | None, float | None]] = {}
    for position, sensor in enumerate(f.section(temps, "TEMPS")):
        chain_id = f.integer(sensor.get("ID"))
        if chain_id is None:
            problems.append(f"temps[{position}].ID: not a chain index: {sensor.get('ID')!r:.60}")
            continue
        where = f"temps[{position}]"
        temperatures[chain_id] = (
            f.read(sensor, "Chip", f.temperature_c, problems, where),
            f.read(sensor, "Board", f.temperature_c, problems, where),
        )
    boards = []
    for chain_id in sorted(chips.keys() | temperatures.keys()):
        chip_temp, board_temp = temperatures.get(chain_id, (None, None))
        boards.append(
            Board(index=chain_id, chip_temp_c=chip_temp, board_temp_c=board_temp, chips=chips.get(chain_id))
        )
    return tuple(boards)


def _fans(reply: Mapping[str, Any] | None, problems: list[str]) -> tuple[Fan, ...]:
    fans = []
    for position, fan in enumerate(f.section(reply, "FANS")):
        index = f.integer(fan.get("FAN"))
        fans.append(
            Fan(
                index=index if index is not None else position,
                rpm=f.read(fan, "RPM", f.positive, problems, f"fans[{position}]"),
            )
        )
    return tuple(fans)
