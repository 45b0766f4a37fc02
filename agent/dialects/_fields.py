"""Pure helpers shared by the dialect parsers. The one place where miner units become base units.

No I/O, no logging. Every helper returns None for missing, sentinel or malformed values, never 0.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, overload

from megawatch.agent.model import Pool
from megawatch.common.redact import public_url, public_user

# Firmware reports hashrate under keys prefixed by its unit: "MHS 5s", "GHS av", rate_unit "GH".
_HASH_UNITS: dict[str, float] = {
    "H": 1.0,
    "KH": 1e3,
    "MH": 1e6,
    "GH": 1e9,
    "TH": 1e12,
    "PH": 1e15,
}
T = TypeVar("T")
_SUFFIX = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_LARGEST_FLOAT = int(sys.float_info.max)
_LARGEST_FLOAT_VALUE = sys.float_info.max
_EXACT_INT = 2**53  # every int up to here survives int(float(n)) unchanged
_isfinite = math.isfinite
_NUMBER_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([KMGTP]?)\s*$")


def number(value: Any) -> float | None:
    """Coerce a miner value to float: ints, floats, padded numeric strings, K/M/G/T suffixes.

    bool, NaN, inf, "", "-", "nan" and anything unparsable give None.
    """
    # Hot path (tens of calls per miner per poll): exact float and int first, without isinstance chains.
    kind = type(value)
    if kind is float:
        return value if _isfinite(value) else None
    if kind is int:
        return float(value) if -_LARGEST_FLOAT <= value <= _LARGEST_FLOAT else None
    if kind is str and value.isascii() and "_" not in value:
        # float() accepts exactly what _NUMBER_RE does on ASCII without underscores, plus inf/nan
        # (rejected below as not finite); "5K" and junk fall through to the regex.
        try:
            result = float(value)
        except ValueError:
            pass
        else:
            return result if _isfinite(result) else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) and abs(value) > _LARGEST_FLOAT:
        return None  # float() would raise OverflowError; such a count is garbage anyway
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        match = _NUMBER_RE.match(value)
        if match is None:
            return None
        result = float(match.group(1)) * _SUFFIX.get(match.group(2), 1.0)
    else:
        return None
    return result if _isfinite(result) else None


def integer(value: Any) -> int | None:
    """Like number(), for counters: a non-integral or negative count is None."""
    if type(value) is int and 0 <= value <= _EXACT_INT:
        return value  # what the float round trip below gives for any count a float holds exactly
    result = number(value)
    if result is None or result < 0 or result != int(result):
        return None
    return int(result)


def positive(value: Any) -> float | None:
    """number() but values <= 0 are sentinels (-1 W, 0 RPM from an absent fan) and become None."""
    kind = type(value)
    if kind is float:
        return value if 0 < value <= _LARGEST_FLOAT_VALUE else None  # NaN and inf compare out
    if kind is int:
        return float(value) if 0 < value <= _LARGEST_FLOAT else None
    result = number(value)
    return result if result is not None and result > 0 else None


def temperature_c(value: Any) -> float | None:
    """A temperature in °C; -273 (no sensor), 0 and absurd values are None."""
    kind = type(value)
    if kind is float:
        return value if 0 < value <= 200 else None  # NaN compares out
    if kind is int:
        return float(value) if 0 < value <= 200 else None
    result = number(value)
    if result is None or result <= 0 or result > 200:
        return None
    return result


def hash_unit_factor(unit: str) -> float | None:
    """Factor from a unit such as "GH", "GHS", "MH/s" to H/s."""
    try:
        return _UNIT_FACTORS[unit]
    except KeyError:
        pass
    key = unit.strip().upper().replace("/S", "").rstrip("S") or "H"
    factor = _HASH_UNITS.get(key)
    if len(_UNIT_FACTORS) >= 256:  # units come from miners: keep the memo bounded
        _UNIT_FACTORS.clear()
    _UNIT_FACTORS[unit] = factor
    return factor


_UNIT_FACTORS: dict[str, float | None] = {}


def to_hs(value: Any, unit: str) -> float | None:
    """Convert a hashrate in `unit` (MHS, GHS, THS, "GH", ...) to H/s; negative is None."""
    factor = hash_unit_factor(unit)
    result = number(value)
    if factor is None or result is None or result < 0:
        return None
    hs = result * factor
    return hs if math.isfinite(hs) else None  # 1e300 GH/s from a garbage reply overflows to inf


def dash_list(value: Any) -> list[float | None]:
    """Split bmminer's "38-48-47-52" strings; "-", "", "0-0-0-0" give no values."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [temperature_c(value)]
    if not isinstance(value, str):
        return []
    # The same few strings come back from every board of every miner: split each once (bounded memo).
    found = _DASH_LISTS.get(value)
    if found is None:
        found = tuple(temperature_c(part) for part in value.split("-") if part.strip())
        if len(_DASH_LISTS) >= 4096:
            _DASH_LISTS.clear()
        _DASH_LISTS[value] = found
    return list(found)


_DASH_LISTS: dict[str, tuple[float | None, ...]] = {}


def max_known(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def section(reply: Mapping[str, Any] | None, name: str) -> list[Mapping[str, Any]]:
    """The data section list of a reply (e.g. "SUMMARY"), or [] when absent or not a list of objects."""
    if type(reply) is not dict and not isinstance(reply, Mapping):  # decoded JSON is a dict: skip the ABC check
        return []
    value = reply.get(name)
    if not isinstance(value, list):
        return []
    return [item for item in value if type(item) is dict or isinstance(item, Mapping)]


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


# ---- Shared by the cgminer-compatible dialects: summary and pools have the same keys in every fork. ----

_SHORT_WINDOWS = ("5s", "20s", "30s", "1m")
# Misspelt pool states seen on real firmware (stock S19/S21 bmminer says "Deed"; see docs/protocol.md).
_POOL_STATUS_ALIASES = {"deed": "dead"}


def malformed(value: Any) -> bool:
    """True for a value that should be a number, is present, and is not one (worth a `problems` note).

    Absent values and the empty/dash placeholders firmware uses for "nothing here" are not malformed.
    """
    return value is not None and value not in ("", "-") and number(value) is None


def read(
    item: Mapping[str, Any], key: str, convert: Callable[[Any], T | None], problems: list[str], where: str
) -> T | None:
    """`convert(item[key])`; a value that is present but not numeric gives None and a note in `problems`."""
    value = item.get(key)
    kind = type(value)
    if (value is None or (kind is float and _isfinite(value))
            or (kind is int and -_LARGEST_FLOAT <= value <= _LARGEST_FLOAT)):
        return convert(value)  # the usual cases, without parsing the value twice
    if malformed(value):
        problems.append(f"{where}.{key}: not a number: {value!r:.60}")
        return None
    return convert(value)


def seconds(value: Any) -> float | None:
    """A duration in seconds; negative is None."""
    result = number(value)
    return result if result is not None and result >= 0 else None


def numbered(item: Mapping[str, Any], prefix: str) -> dict[int, Any]:
    """Values of the slot-numbered keys `<prefix>1`, `<prefix>2`, ... (Antminer `fan3`, `chain_rate2`).

    Only digits may follow the prefix, so "temp" takes temp1 but not temp2_1 or temp_max.
    """
    return numbered_many(item, prefix)[0]


def numbered_many(item: Mapping[str, Any], *prefixes: str) -> list[dict[int, Any]]:
    """numbered() for several prefixes of one item, in order, looking its key list up once."""
    index = _key_index(tuple(item))
    return [{slot: item[key] for slot, key in index.slots(prefix)} for prefix in prefixes]


def keys_matching(item: Mapping[str, Any], pattern: re.Pattern[str]) -> tuple[str, ...]:
    """The keys of `item` that `pattern` matches (from the start), in the item's order."""
    return _key_index(tuple(item)).matching(pattern)


class _KeyIndex:
    """Which keys of one key list are slot-numbered (per prefix) or match a pattern, worked out on first use."""

    __slots__ = ("_by_pattern", "_by_prefix", "_keys")

    def __init__(self, keys: tuple[Any, ...]) -> None:
        self._keys = keys
        self._by_prefix: dict[str, tuple[tuple[int, str], ...]] = {}
        self._by_pattern: dict[re.Pattern[str], tuple[str, ...]] = {}

    def matching(self, pattern: re.Pattern[str]) -> tuple[str, ...]:
        found = self._by_pattern.get(pattern)
        if found is None:
            found = self._by_pattern[pattern] = tuple(
                key for key in self._keys if isinstance(key, str) and pattern.match(key)
            )
        return found

    def slots(self, prefix: str) -> tuple[tuple[int, str], ...]:
        """(slot, key) of the keys `<prefix><digits>`, by slot; of two keys naming one slot the later wins."""
        found = self._by_prefix.get(prefix)
        if found is None:
            pattern = re.compile(re.escape(prefix) + r"(\d+)$")
            slots: dict[int, str] = {}
            for key in self._keys:
                match = pattern.match(key) if isinstance(key, str) else None
                if match is not None:
                    slots[int(match.group(1))] = key
            found = self._by_prefix[prefix] = tuple(sorted(slots.items()))
        return found


# Replies from one firmware build carry the same keys in the same order, poll after poll: which keys are
# slot-numbered is worked out once per key list and prefix instead of matching every key on every poll
# (bmminer's stats device has ~100 keys and is scanned for 7 prefixes; hashing the key list once per
# device rather than once per prefix saved ~4 us per bmminer poll, measured). Bounded: cleared when full.
_KEY_INDEX: dict[tuple[Any, ...], _KeyIndex] = {}
_KEY_INDEX_SIZE = 1024


def _key_index(keys: tuple[Any, ...]) -> _KeyIndex:
    index = _KEY_INDEX.get(keys)
    if index is None:
        if len(_KEY_INDEX) >= _KEY_INDEX_SIZE:
            _KEY_INDEX.clear()
        index = _KEY_INDEX[keys] = _KeyIndex(keys)
    return index


def _hashrate(item: Mapping[str, Any], windows: Sequence[str], problems: list[str], where: str) -> float | None:
    for window in windows:
        for unit in ("MHS", "GHS", "THS", "KHS"):
            key = f"{unit} {window}"
            if key in item:
                return read(item, key, partial(to_hs, unit=unit), problems, where)
    return None


def summary_fields(reply: Mapping[str, Any] | None, problems: list[str]) -> dict[str, Any]:
    """MinerReading fields from a cgminer-style `summary` reply (any fork): rates in H/s, counts, uptime.

    Returns {} when there is no reply; a reply without a SUMMARY object is noted in `problems`.
    """
    if reply is None:
        return {}
    item = first_item(reply, "SUMMARY")
    if not item:
        problems.append("summary: reply has no SUMMARY object")
        return {}
    return {
        "hashrate_hs": _hashrate(item, _SHORT_WINDOWS, problems, "summary"),
        "hashrate_avg_hs": _hashrate(item, ("av",), problems, "summary"),
        "shares_accepted": read(item, "Accepted", integer, problems, "summary"),
        "shares_rejected": read(item, "Rejected", integer, problems, "summary"),
        "shares_stale": read(item, "Stale", integer, problems, "summary"),
        "hardware_errors": read(item, "Hardware Errors", integer, problems, "summary"),
        "uptime_s": read(item, "Elapsed", seconds, problems, "summary"),
    }


def pools(reply: Mapping[str, Any] | None, problems: list[str]) -> tuple[Pool, ...]:
    """Pools from a cgminer-style `pools` reply; slots without a URL (bmminer keeps empty ones) are skipped."""
    if reply is None:
        return ()
    if not isinstance(reply.get("POOLS"), list):
        problems.append("pools: reply has no POOLS list")
        return ()
    found: list[Pool] = []
    for position, item in enumerate(section(reply, "POOLS")):
        pool = _pool(item, position, problems)
        if pool is not None:
            found.append(pool)
    return tuple(found)


def _pool(item: Mapping[str, Any], position: int, problems: list[str]) -> Pool | None:
    url = text(item.get("URL"))
    if url is None:
        return None
    index = integer(item.get("POOL"))
    status = text(item.get("Status"))
    active = item.get("Stratum Active")
    return Pool(
        index=index if index is not None else position,
        # Firmware shows what was typed in, passwords included: they go here, before anything can export them.
        url=shared(public_url(url)),
        user=_user(text(item.get("User"))),
        status=_pool_status(status) if status else None,
        active=active if isinstance(active, bool) else None,
        priority=read(item, "Priority", integer, problems, f"pools[{position}]"),
    )


def _user(user: str | None) -> str | None:
    """The pool user without a password; often one worker name per miner, so nothing to share."""
    return None if user is None else public_user(user)


def _pool_status(status: str) -> str:
    """"Alive" -> "alive", "Deed" -> "dead": one shared string per status."""
    lowered = status.lower()
    return shared(_POOL_STATUS_ALIASES.get(lowered, lowered))


@overload
def shared(value: str) -> str: ...
@overload
def shared(value: None) -> None: ...
def shared(value: str | None) -> str | None:
    """One copy of a string that thousands of miners repeat (model, firmware, version, pool URL, status).

    Every reply decodes to fresh strings, and the fleet's readings are held twice around each cycle's
    publish: at 10,000 miners the repeats were ~5 MB of 21 MB of readings (measured). Bounded: cleared when
    full, so a value unique to each miner only costs a lookup.
    """
    if value is None:
        return None
    found = _SHARED.get(value)
    if found is None:
        if len(_SHARED) >= _SHARED_SIZE:
            _SHARED.clear()
        found = _SHARED[value] = value
    return found


_SHARED: dict[str, str] = {}
_SHARED_SIZE = 4096


def any_description(replies: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The first STATUS Description among the replies, e.g. "BOSminer+ 0.2.0-ea64aec8e"."""
    for reply in replies.values():
        found = description(reply)
        if found is not None:
            return found
    return None


def split_description(desc: str | None) -> tuple[str | None, str | None]:
    """"LUXminer 2025.4.8.220305-57b389c7" -> ("LUXminer", "2025.4.8.220305-57b389c7"); no space -> (desc, None)."""
    if desc is None:
        return None, None
    name, _, rest = desc.strip().partition(" ")
    return name or None, rest.strip() or None


def mark_active_pool(found: tuple[Pool, ...]) -> tuple[Pool, ...]:
    """When no pool says it is active, the alive pool with the lowest priority is the active one.

    `Stratum Active` is only ever true for a stratum pool: a getwork/GBT pool (BFGMiner on a local node)
    reads false while it is the pool being mined, and older forks omit the key. cgminer fails over in
    priority order, so the first alive pool is the one in use. Left alone when a pool already says it is
    active, or when no alive pool has a priority.
    """
    for pool in found:
        if pool.active:
            return found
    alive = [pool for pool in found if pool.status == "alive" and pool.priority is not None]
    if not alive:
        return found
    chosen = min(alive, key=lambda pool: (pool.priority, pool.index))
    return tuple(pool._replace(active=pool is chosen) for pool in found)


def short_rate(item: Mapping[str, Any], problems: list[str], where: str) -> float | None:
    """The shortest rolling rate ("MHS 5s", "GHS 5s", "MHS 20s", ...) of a section or device in H/s.

    A malformed value is noted in `problems`.
    """
    return _hashrate(item, _SHORT_WINDOWS, problems, where)


def average_rate(item: Mapping[str, Any], problems: list[str], where: str) -> float | None:
    """The since-start average ("MHS av", "GHS av") in H/s, noted if malformed."""
    return _hashrate(item, ("av",), problems, where)
