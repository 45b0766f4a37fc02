"""Pure helpers shared by the dialect parsers. The one place where miner units become base units.

No I/O, no logging. Every helper returns None for missing, sentinel or malformed values, never 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

# Firmware reports hashrate under keys prefixed by its unit: "MHS 5s", "GHS av", rate_unit "GH".
_HASH_UNITS: dict[str, float] = {
    "H": 1.0,
    "KH": 1e3,
    "MH": 1e6,
    "GH": 1e9,
    "TH": 1e12,
    "PH": 1e15,
}
_SUFFIX = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_NUMBER_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([KMGTP]?)\s*$")


def number(value: Any) -> float | None:
    """Coerce a miner value to float: ints, floats, padded numeric strings, K/M/G/T suffixes.

    bool, NaN, inf, "", "-", "nan" and anything unparsable give None.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        match = _NUMBER_RE.match(value)
        if match is None:
            return None
        result = float(match.group(1)) * _SUFFIX.get(match.group(2), 1.0)
    else:
        return None
    return result if math.isfinite(result) else None


def integer(value: Any) -> int | None:
    """Like number(), for counters: a non-integral or negative count is None."""
    result = number(value)
    if result is None or result < 0 or result != int(result):
        return None
    return int(result)


def positive(value: Any) -> float | None:
    """number() but values <= 0 are sentinels (-1 W, 0 RPM from an absent fan) and become None."""
    result = number(value)
    return result if result is not None and result > 0 else None


def temperature_c(value: Any) -> float | None:
    """A temperature in °C; -273 (no sensor), 0 and absurd values are None."""
    result = number(value)
    if result is None or result <= 0 or result > 200:
        return None
    return result


def hash_unit_factor(unit: str) -> float | None:
    """Factor from a unit such as "GH", "GHS", "MH/s" to H/s."""
    key = unit.strip().upper().replace("/S", "").rstrip("S") or "H"
    return _HASH_UNITS.get(key)


def to_hs(value: Any, unit: str) -> float | None:
    """Convert a hashrate in `unit` (MHS, GHS, THS, "GH", ...) to H/s; negative is None."""
    factor = hash_unit_factor(unit)
    result = number(value)
    if factor is None or result is None or result < 0:
        return None
    return result * factor


def find_hashrate(section: Mapping[str, Any], window: str) -> float | None:
    """Find "<unit>S <window>" (e.g. "MHS 5s", "GHS av") whatever the unit prefix, in H/s."""
    for unit in ("MHS", "GHS", "THS", "KHS"):
        key = f"{unit} {window}"
        if key in section:
            return to_hs(section[key], unit)
    return None


def short_window_hashrate(section: Mapping[str, Any]) -> float | None:
    """The shortest rolling window the firmware reports: 5 s normally, 20 s (BFGMiner), 30 s (Avalon)."""
    for window in ("5s", "20s", "30s", "1m"):
        value = find_hashrate(section, window)
        if value is not None:
            return value
    return None


def first(section: Mapping[str, Any], *keys: str) -> Any:
    """The first present key's value: for spelling variants like "Getworks"/"Getwork"."""
    for key in keys:
        if key in section:
            return section[key]
    return None


def dash_list(value: Any) -> list[float | None]:
    """Split bmminer's "38-48-47-52" strings; "-", "", "0-0-0-0" give no values."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [temperature_c(value)]
    if not isinstance(value, str):
        return []
    return [temperature_c(part) for part in value.split("-") if part.strip()]


def max_known(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def section(reply: Mapping[str, Any] | None, name: str) -> list[Mapping[str, Any]]:
    """The data section list of a reply (e.g. "SUMMARY"), or [] when absent or not a list of objects."""
    if not isinstance(reply, Mapping):
        return []
    value = reply.get(name)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def first_item(reply: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    items = section(reply, name)
    return items[0] if items else {}


def description(reply: Mapping[str, Any] | None) -> str | None:
    """STATUS[0].Description (e.g. "cgminer 4.11.1"), or None."""
    if not isinstance(reply, Mapping):
        return None
    status = reply.get("STATUS")
    if isinstance(status, list) and status and isinstance(status[0], Mapping):
        desc = status[0].get("Description")
    elif isinstance(reply.get("Description"), str):
        desc = reply.get("Description")
    else:
        desc = None
    return desc if isinstance(desc, str) and desc.strip() else None


def text(value: Any) -> str | None:
    """A non-empty string with surrounding quotes/space removed (btminer wraps versions in '...')."""
    if not isinstance(value, str):
        return None
    cleaned = value.strip().strip("'").strip()
    return cleaned or None
