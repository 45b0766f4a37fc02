"""Bitmain bmminer: stock Antminer firmware (S9/S9k/D3/L3 era cgminer 4.x forks, S19/S21 "BMMiner 1.0.0").

Covers the real replies in tests/golden/replies/bmminer: D3 on Blissz (cgminer 4.10.0), S9k (BMMiner 4.9.0),
S19 (BMMiner 1.0.0, Dec 2020) and S21 (BMMiner 1.0.0, uart_trans.1.3); sources in SOURCES.md. Reference:
bitmaintech/bmminer-mix api.c and driver-btm-c5.c `get_api_stats` (summed up in docs/protocol.md).
Commands: version, summary, stats, pools.
Quirks: STATS[0] is a header (`BMMiner`/`CGMiner`, `Type`) and STATS[1] the hash-board device; chains are
slot-numbered keys (`chain_rateN` in `rate_unit`, GH by default, "" for an empty slot; S9k pads 16 slots);
`tempN`/`temp_pcbN` are board sensors and `temp2_N`/`temp_chipN` chip sensors, the dashed strings ("25-61",
"39-37-40-39") holding several sensors, "-"/"0-0-0-0" none; `fanN` is 0 for an empty header; `GHS 5s` is a
string on S9-era builds; pools say "Deed" (S19/S21) and `Pool Stale%%`; summary says `Getwork` (S21).
Power: only some builds report it, in `stats`: Hiveon `total_power` (W) or `chain_power` ("3250 W").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from megawatch.agent.dialects import _fields as f
from megawatch.agent.dialects.cgminer import firmware_from_version
from megawatch.agent.model import Board, Fan, MinerReading, PowerSource

NAME = "bmminer"
COMMANDS: tuple[str, ...] = ("version", "summary", "stats", "pools")
# Joins work on S9-era builds but some stock S19 builds refuse them (pyasic rpc/base.py
# `multicommand` notes it). One join costs one connection instead of four; the poller falls back to
# one command per connection when a miner refuses and remembers that per miner until it re-detects.
JOINABLE = True

# Keys naming the program in VERSION[0] / STATS[0], preferred first (S9k: version "CGMiner", stats "BMMiner").
_FIRMWARE_KEYS = ("BMMiner", "CGMiner")
# Whole-miner power, most specific first: Hiveon 2025 `total_power` (int W), S21/Hiveon `chain_power` ("3250 W").
_POWER_KEYS = ("total_power", "chain_power")


def parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading:
    """Normalise one poll of a stock Antminer (see the module docstring for sources and quirks)."""
    problems: list[str] = []
    stats = f.section(replies.get("stats"), "STATS")
    header = stats[0] if stats else {}
    device = _device(stats)
    if replies.get("stats") is not None and not device:
        problems.append("stats: reply has no hash-board device entry")
    version = f.first_item(replies.get("version"), "VERSION")
    firmware, firmware_version = firmware_from_version(replies, _FIRMWARE_KEYS, header)
    power_w = _power(device, problems)
    return MinerReading(
        dialect=NAME,
        model=f.shared(f.text(version.get("Type")) or f.text(header.get("Type"))),
        firmware=f.shared(firmware),
        firmware_version=f.shared(firmware_version),
        **_rates(replies.get("summary"), device, problems),
        boards=_boards(device, problems),
        fans=_fans(device, problems),
        pools=f.mark_active_pool(f.pools(replies.get("pools"), problems)),
        power_w=power_w,
        power_source=PowerSource.FIRMWARE if power_w is not None else None,
        problems=tuple(problems),
    )


def _device(stats: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    # The first entry after the header that is not a per-pool entry (ID "POOL0" on cgminer-style builds).
    for item in stats[1:]:
        ident = item.get("ID")
        if not (isinstance(ident, str) and ident.startswith("POOL")):
            return item
    return {}


def _rates(summary: Mapping[str, Any] | None, device: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """Summary counters; when `summary` is missing, the rates and uptime that `stats` repeats."""
    fields = f.summary_fields(summary, problems)
    fallback: dict[str, Callable[[], float | None]] = {
        "hashrate_hs": lambda: _stats_rate(device, problems),
        "hashrate_avg_hs": lambda: f.average_rate(device, problems, "stats"),
        "uptime_s": lambda: f.read(device, "Elapsed", f.seconds, problems, "stats"),
    }
    for key, from_stats in fallback.items():
        if fields.get(key) is None:
            fields[key] = from_stats()
    return fields


def _stats_rate(device: Mapping[str, Any], problems: list[str]) -> float | None:
    rate = f.short_rate(device, problems, "stats")
    return rate if rate is not None else _total_rate(device, problems)


def _total_rate(device: Mapping[str, Any], problems: list[str]) -> float | None:
    # Sum of the chain rates in `rate_unit`; S19/S21 spell it "total rate", S9k "total_rate".
    unit = f.text(device.get("rate_unit")) or "GH"
    key = "total rate" if "total rate" in device else "total_rate"
    return f.read(device, key, lambda v: f.to_hs(v, unit), problems, "stats")


def _boards(device: Mapping[str, Any], problems: list[str]) -> tuple[Board, ...]:
    rates, chips, board_temps, chip_temps, pcb_lists, chip_lists = f.numbered_many(
        device, "chain_rate", "chain_acn", "temp", "temp2_", "temp_pcb", "temp_chip"
    )
    unit = f.text(device.get("rate_unit")) or "GH"
    boards: list[Board] = []
    for slot in sorted(rates.keys() | chips.keys()):
        count = f.read(device, f"chain_acn{slot}", f.integer, problems, "stats")
        # An empty slot reports chain_rate "" and chain_acn 0: it is no board, not a board hashing 0.
        if rates.get(slot) in (None, "") and not count:
            continue
        boards.append(
            Board(
                index=slot,
                # Each board has several sensors (dashed lists on S9k/S19); the hottest is the one to watch.
                chip_temp_c=f.max_known([f.temperature_c(chip_temps.get(slot)), *f.dash_list(chip_lists.get(slot))]),
                board_temp_c=f.max_known([f.temperature_c(board_temps.get(slot)), *f.dash_list(pcb_lists.get(slot))]),
                hashrate_hs=f.read(device, f"chain_rate{slot}", lambda v: f.to_hs(v, unit), problems, "stats"),
                chips=count,
            )
        )
    return tuple(boards)


def _fans(device: Mapping[str, Any], problems: list[str]) -> tuple[Fan, ...]:
    fans: list[Fan] = []
    for slot in f.numbered(device, "fan"):
        # 0 RPM is an empty header (S9k reports fan3..fan8 = 0), not a stopped fan we could tell apart.
        rpm = f.read(device, f"fan{slot}", f.positive, problems, "stats")
        if rpm is not None:
            fans.append(Fan(index=slot, rpm=rpm))
    return tuple(fans)


def _power(device: Mapping[str, Any], problems: list[str]) -> float | None:
    for key in _POWER_KEYS:
        if key in device:
            value = device[key]
            # S21 and older Hiveon builds print the unit into the value: "3250 W".
            if isinstance(value, str):
                value = value.strip().removesuffix("W").removesuffix("w")
            return f.read({key: value}, key, f.positive, problems, "stats")
    return None
