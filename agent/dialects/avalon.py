"""Canaan AvalonMiner (cgminer 4.11 fork, drivers avalon10 and later) on TCP 4028.

Covers the AvalonMiner 10xx (build 20051101_85dc6f0_0332654) and A1566 "15-194" (build
24102401_25462b2_9ddf522) replies in tests/golden/replies/avalon, and the three-module Avalon 841
`stats` quoted in tests/agent/test_dialect_avalon.py. No vendor API document; the reference
is cgminer's driver-avalon8.c/driver-avalon10.c `get_api_stats` (summed up in docs/protocol.md).
Commands: version (PROD, MODEL, VERSION), summary (`MHS 30s`: Avalon logs every 30 s), pools, estats
(`stats` is accepted too: same shape). Each controller module sends one packed `"MM ID<n>"` string of
`Key[value]` tokens whose values hold spaces, commas, `%`, `:` and `--options`; per hash board `MGHS`
(GH/s) and `MTmax` (°C), per module `Fan1..N` or `Fan` (RPM), `WALLPOWER` (W at the wall), `MPO`
(power limit, W).
Quirks: `When` counts seconds since boot; the 10xx has no power meter (`PS[0 0 0 0 0 0]`, no WALLPOWER,
`POW_I2C[FAILED]`) so its power is unknown; the Nano 3 has no WALLPOWER but puts the same figure in
`PS[...]` element 6. Boards are numbered from 0 as in `MGHS`/`PVT_T<n>`, fans from 1 as in `Fan<n>`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from megawatch.agent.dialects import _fields as f
from megawatch.agent.model import Board, Fan, MinerReading, PowerSource

NAME = "avalon"
COMMANDS: tuple[str, ...] = ("version", "summary", "pools", "estats")
# A real 10xx answered `pools+summary+stats` in one reply (tests/golden/replies/avalon/20051101_85dc6f0_0332654).
JOINABLE = True

# One `Key[value]` token; a value never holds `]` in any capture, so it ends at the first one.
_TOKEN = re.compile(r"([A-Za-z_]\w*)\[([^\]]*)\]")
_MODULE_KEY = re.compile(r"MM ID\d+$")
_FAN_KEY = re.compile(r"Fan(\d*)$")
# The build in `Ver[<model>-<yymmddnn>_<git>_<git>]`: "15-194-24102401_25462b2_9ddf522" -> ("15-194", ...).
_VER = re.compile(r"^(.+?)-(\d{8}_\w+)$")
_PS_WALL_POWER = 6  # PS[...] element holding the wall power on the Nano 3 (equal to WALLPOWER on the A1566)


def parse_tokens(packed: str) -> dict[str, str]:
    """Split an `MM ID<n>` string into {key: raw value}; the first of a repeated key wins."""
    tokens: dict[str, str] = {}
    for key, value in _TOKEN.findall(packed):
        tokens.setdefault(key, value.strip())
    return tokens


@dataclass(slots=True)
class _Modules:
    boards: list[Board] = field(default_factory=list)
    fans: list[Fan] = field(default_factory=list)
    power_w: list[float | None] = field(default_factory=list)
    limit_w: list[float | None] = field(default_factory=list)
    hashrate_hs: list[float | None] = field(default_factory=list)
    hashrate_avg_hs: list[float | None] = field(default_factory=list)
    uptime_s: float | None = None
    model: str | None = None
    build: str | None = None


def parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading:
    """Normalise one poll of an AvalonMiner (see the module docstring for sources and quirks)."""
    problems: list[str] = []
    version = f.first_item(replies.get("version"), "VERSION")
    stats = replies.get("estats") or replies.get("stats")
    modules = _modules(stats, problems)
    summary = f.summary_fields(replies.get("summary"), problems)
    if replies.get("summary") is None:
        # Without `summary` the modules' own figures are the next best (their sum over modules).
        summary = {
            "hashrate_hs": _total(modules.hashrate_hs),
            "hashrate_avg_hs": _total(modules.hashrate_avg_hs),
            "uptime_s": modules.uptime_s,
        }
    power_w = _total(modules.power_w)
    return MinerReading(
        dialect=NAME,
        model=f.shared(f.text(version.get("PROD")) or f.text(version.get("MODEL")) or modules.model),
        firmware=f.shared(f.split_description(f.any_description(replies))[0]),
        firmware_version=f.shared(f.text(version.get("VERSION")) or modules.build),
        **summary,
        boards=tuple(modules.boards),
        fans=tuple(modules.fans),
        pools=f.pools(replies.get("pools"), problems),
        power_w=power_w,
        power_source=PowerSource.FIRMWARE if power_w is not None else None,
        power_limit_w=_total(modules.limit_w),
        problems=tuple(problems),
    )


def _total(values: list[float | None]) -> float | None:
    """Sum over modules; unknown if any module's share is unknown (a partial sum would under-report)."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def _numbers(value: str | None) -> list[float | None]:
    return [f.number(part) for part in value.split()] if value else []


def _modules(stats: Mapping[str, Any] | None, problems: list[str]) -> _Modules:
    found = _Modules()
    if stats is None:
        return found
    # ~100 keys per reply, few of them modules: which ones is worked out once per key list.
    packed = [(key, item[key]) for item in f.section(stats, "STATS") for key in f.keys_matching(item, _MODULE_KEY)]
    if not packed:
        problems.append("estats: no \"MM ID<n>\" module string in STATS")
    for key, value in packed:
        if not isinstance(value, str):
            problems.append(f"estats.{key}: not a packed string: {value!r:.60}")
            continue
        _add_module(found, key, parse_tokens(value), problems)
    return found


def _add_module(found: _Modules, key: str, tokens: dict[str, str], problems: list[str]) -> None:
    ver = _VER.match(tokens.get("Ver", ""))
    if ver is not None and found.model is None:
        found.model, found.build = ver.group(1), ver.group(2)
    uptime = f.seconds(tokens.get("Elapsed"))
    if uptime is not None and found.uptime_s is None:
        found.uptime_s = uptime
    found.hashrate_hs.append(f.to_hs(tokens.get("GHSspd"), "GH"))
    found.hashrate_avg_hs.append(f.to_hs(tokens.get("GHSavg"), "GH"))

    rates = _numbers(tokens.get("MGHS"))
    chip_temps = _numbers(tokens.get("MTmax"))
    if rates:
        for position, rate in enumerate(rates):
            chip_temp = chip_temps[position] if position < len(chip_temps) else None
            found.boards.append(
                Board(
                    index=len(found.boards),
                    chip_temp_c=f.temperature_c(chip_temp),
                    hashrate_hs=f.to_hs(rate, "GH"),
                )
            )
    elif "GHSspd" in tokens or "TMax" in tokens:
        # Older modules without per-board figures: the module is the board.
        found.boards.append(
            Board(
                index=len(found.boards),
                chip_temp_c=f.temperature_c(tokens.get("TMax")),
                hashrate_hs=f.to_hs(tokens.get("GHSspd"), "GH"),
            )
        )

    # Avalon 8xx modules have one fan and say `Fan[5730]`; later ones number them `Fan1[..] Fan2[..]`.
    fan_keys = sorted((int(token[3:] or 1), token) for token in f.keys_matching(tokens, _FAN_KEY))
    offset = len(found.fans)
    for number, fan_key in fan_keys:
        found.fans.append(Fan(index=offset + number, rpm=f.read(tokens, fan_key, f.positive, problems, key)))

    power = f.read(tokens, "WALLPOWER", f.positive, problems, key)
    if power is None:
        supply = _numbers(tokens.get("PS"))
        if len(supply) > _PS_WALL_POWER:
            power = f.positive(supply[_PS_WALL_POWER])
    found.power_w.append(power)
    found.limit_w.append(f.read(tokens, "MPO", f.positive, problems, key))
