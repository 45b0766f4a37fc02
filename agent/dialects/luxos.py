"""LuxOS (LUXminer) on Antminer hardware, TCP 4028.

Covers LUXminer 2025.4.8 (tests/golden/replies/luxos). API reference: https://docs.luxor.tech/firmware/api
Commands: version, summary, pools (cgminer-compatible), stats (Antminer-style: STATS[0] is a header with
`Type`, STATS[1] holds fanN, chain_rateN, chain_acnN, tempN, temp2_N, temp_pcbN, temp_chipN; see
docs/protocol.md) and the LuxOS-only `power`. Reads never need a session.
Quirks: keys sorted; pools carry `Last Share Time` as an "HH:MM:SS" age; empty chain slots send
`chain_acnN: 0` and `"0-0-0-0"` temperatures. Boards and fans keep the slot number of their keys
(chain_rate1 -> Board 1, fan1 -> Fan 1). Power: `power` POWER[0].Watts (W).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from megawatch.agent.dialects import _fields as f
from megawatch.agent.model import Board, Fan, MinerReading, PowerSource

NAME = "luxos"
COMMANDS: tuple[str, ...] = ("version", "summary", "pools", "stats", "power")
# LuxOS keeps cgminer's multicommand handling for read commands.
JOINABLE = True

_FIRMWARE_KEY = "LUXminer"


def parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading:
    """Normalise one poll of a LuxOS miner (see the module docstring for sources and quirks)."""
    problems: list[str] = []
    version = f.first_item(replies.get("version"), "VERSION")
    stats = f.section(replies.get("stats"), "STATS")
    firmware_version = f.text(version.get(_FIRMWARE_KEY))
    if firmware_version is not None:
        firmware: str | None = _FIRMWARE_KEY
    else:
        firmware, firmware_version = f.split_description(f.any_description(replies))
    power_w = _power(replies.get("power"), problems)
    chains = _chain_stats(stats)
    return MinerReading(
        dialect=NAME,
        model=f.shared(f.text(version.get("Type")) or _header_type(stats)),
        firmware=f.shared(firmware),
        firmware_version=f.shared(firmware_version),
        **f.summary_fields(replies.get("summary"), problems),
        boards=_boards(chains, problems),
        fans=_fans(chains, problems),
        pools=f.pools(replies.get("pools"), problems),
        power_w=power_w,
        power_source=PowerSource.FIRMWARE if power_w is not None else None,
        problems=tuple(problems),
    )


def _header_type(stats: list[Mapping[str, Any]]) -> str | None:
    for item in stats:
        model = f.text(item.get("Type"))
        if model is not None:
            return model
    return None


def _chain_stats(stats: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The STATS item holding the per-chain keys (STATS[1] on every capture; found by content, not place)."""
    for item in stats:
        if "ID" in item or "fan_num" in item or "chain_acn1" in item:
            return item
    return {}


def _power(reply: Mapping[str, Any] | None, problems: list[str]) -> float | None:
    if reply is None:
        return None
    item = f.first_item(reply, "POWER")
    if not item:
        problems.append("power: reply has no POWER object")
        return None
    return f.read(item, "Watts", f.positive, problems, "power")


def _boards(chains: Mapping[str, Any], problems: list[str]) -> tuple[Board, ...]:
    unit = f.text(chains.get("rate_unit")) or "GH"
    if f.hash_unit_factor(unit) is None:
        problems.append(f"stats.rate_unit: unknown hashrate unit: {unit!r:.20}")
    boards = []
    rates, counts = f.numbered_many(chains, "chain_rate", "chain_acn")
    for slot in sorted(rates.keys() | counts.keys()):
        chips = f.read(chains, f"chain_acn{slot}", f.integer, problems, "stats")
        rate = f.read(chains, f"chain_rate{slot}", lambda v: f.to_hs(v, unit), problems, "stats")
        chip_temp = f.read(chains, f"temp2_{slot}", f.temperature_c, problems, "stats")
        if chip_temp is None:
            chip_temp = f.max_known(f.dash_list(chains.get(f"temp_chip{slot}")))
        board_temp = f.read(chains, f"temp{slot}", f.temperature_c, problems, "stats")
        if board_temp is None:
            board_temp = f.max_known(f.dash_list(chains.get(f"temp_pcb{slot}")))
        if chips in (None, 0) and rate in (None, 0.0) and chip_temp is None and board_temp is None:
            continue  # an empty slot: no chips, no hashrate, "0-0-0-0" temperatures
        boards.append(
            Board(index=slot, chip_temp_c=chip_temp, board_temp_c=board_temp, hashrate_hs=rate, chips=chips)
        )
    return tuple(boards)


def _fans(chains: Mapping[str, Any], problems: list[str]) -> tuple[Fan, ...]:
    return tuple(
        Fan(index=slot, rpm=f.read(chains, f"fan{slot}", f.positive, problems, "stats"))
        for slot in f.numbered(chains, "fan")
    )
