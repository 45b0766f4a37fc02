"""Pieces every cgminer-family firmware shares: the section type and stock cgminer 4.x records.

Field names, order and printf formats follow cgminer api.c and the real replies in
tests/golden/replies; each dialect module copies a record and renames, drops or adds keys as its firmware does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from megawatch.simulator.behaviour import BOARDS, SHARE_DIFFICULTY, Identity, Snapshot
from megawatch.simulator.replies.encode import Fixed

MH = 1e6
GH = 1e9
POOL_HOST = "stratum.megawatch.example"


@dataclass(frozen=True, slots=True)
class Section:
    """A successful reply: STATUS code and message, then the data section `key` holding `items`."""

    code: int
    msg: str
    key: str
    items: list[dict[str, Any]]
    text_header: bool = False  # legacy text form prints "SUMMARY," before single-record sections
    status: str = "S"


@dataclass(frozen=True, slots=True)
class Bare:
    """A reply whose STATUS is a plain string (cgminer restart/quit): {"STATUS":"RESTART","id":1}."""

    status: str


class Number(Protocol):
    """Fixed (printf text, for cgminer-built firmware) or plain (a float, for JSON-library firmware)."""

    def __call__(self, value: float, digits: int = 2) -> Any: ...



def plain(value: float, digits: int = 2) -> float:
    """A number for firmware that prints through a JSON library: rounded, printed as the shortest float."""
    return round(value, digits)


Handler = Callable[[Identity, Snapshot, int], "Section | Bare | dict[str, Any]"]  # (miner, tick values, now)


@dataclass(frozen=True, slots=True)
class Firmware:
    """Everything the request handler needs to know about one dialect's API server."""

    name: str
    description: str  # STATUS Description: --api-description, default PACKAGE_STRING
    handlers: dict[str, Handler]
    style_name: str = "compact"
    sort_envelope: bool = False  # LuxOS sorts the STATUS object's keys too
    describe_invalid: bool = True  # cgminer >= 2018-03 drops Description from Code 14 replies
    allowed: frozenset[str] | None = None  # api-groups allow-list; None = every read command
    joinable: bool = True
    reports_power: bool = False
    when_is_uptime: bool = False  # Avalon has no RTC: When counts seconds since boot
    extra: dict[str, Any] = field(default_factory=dict)
    # Read commands also rendered straight to text (replies/fast.py), the same bytes as `handlers` give.
    fast: dict[str, Callable[..., str]] = field(default_factory=dict)


def sorted_record(record: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(record.items()))


def short_model(ident: Identity) -> str:
    """The model without the vendor word: "Antminer S19 Pro" -> "S19 Pro"."""
    name = ident.model.name
    first, _, rest = name.partition(" ")
    if rest and first.lower() in ("antminer", "whatsminer", "avalon", "avalonminer"):
        return rest
    return name


def pct(fx: Number, part: float, whole: float) -> Any:
    return fx(100.0 * part / whole if whole else 0.0, 4)


def work_utility(s: Snapshot) -> float:
    return s.hashrate_avg_hs / TWO32_PER_MIN if s.uptime_s else 0.0


TWO32_PER_MIN = 4294967296.0 / 60.0


def total_mh(s: Snapshot) -> float:
    return s.hashrate_avg_hs * s.uptime_s / MH


def cg_summary(ident: Identity, s: Snapshot, window: str = "5s", fx: Number = Fixed) -> dict[str, Any]:
    """Stock cgminer 4.x `summary` record (api.c summary()), rates in MH/s with %.2f."""
    diff1 = s.accepted * SHARE_DIFFICULTY
    return {
        "Elapsed": s.uptime_s,
        "MHS av": fx(s.hashrate_avg_hs / MH),
        f"MHS {window}": fx(s.hashrate_hs / MH),
        "MHS 1m": fx(s.hashrate_1m_hs / MH),
        "MHS 5m": fx(s.hashrate_5m_hs / MH),
        "MHS 15m": fx(s.hashrate_15m_hs / MH),
        "Found Blocks": 0,
        "Getworks": s.uptime_s // 30 + 1,
        "Accepted": s.accepted,
        "Rejected": s.rejected,
        "Hardware Errors": s.hardware_errors,
        "Utility": fx(s.accepted * 60.0 / s.uptime_s if s.uptime_s else 0.0),
        "Discarded": s.uptime_s * 12,
        "Stale": 0,
        "Get Failures": 0,
        "Local Work": s.uptime_s * 4000,
        "Remote Failures": 0,
        "Network Blocks": s.uptime_s // 600,
        "Total MH": fx(total_mh(s), 4),
        "Work Utility": fx(work_utility(s)),
        "Difficulty Accepted": fx(s.difficulty_accepted, 8),
        "Difficulty Rejected": fx(s.rejected * SHARE_DIFFICULTY, 8),
        "Difficulty Stale": fx(0.0, 8),
        "Best Share": s.best_share,
        "Device Hardware%": pct(fx, s.hardware_errors, s.hardware_errors + diff1),
        "Device Rejected%": pct(fx, s.rejected, s.accepted + s.rejected),
        "Pool Rejected%": pct(fx, s.rejected, s.accepted + s.rejected),
        "Pool Stale%": fx(0.0, 4),
        "Last getwork": 0,
    }


def cg_pools(ident: Identity, s: Snapshot, now: int, fx: Number = Fixed) -> list[dict[str, Any]]:
    """Stock cgminer `pools` records (api.c poolstatus()): a primary doing the work and a backup."""
    pools = []
    for n in range(2):
        active = n == 0
        accepted = s.accepted if active else 0
        pools.append({
            "POOL": n,
            "URL": f"stratum+tcp://{POOL_HOST}:{3333 + n}",
            "Status": "Alive",
            "Priority": n,
            "Quota": 1,
            "Long Poll": "N",
            "Getworks": s.uptime_s // 30 + 1 if active else 1,
            "Accepted": accepted,
            "Rejected": s.rejected if active else 0,
            "Works": s.uptime_s * 40 if active else 0,
            "Discarded": s.uptime_s * 12 if active else 0,
            "Stale": 0,
            "Get Failures": 0,
            "Remote Failures": 0,
            "User": f"{ident.site}.{ident.index}",
            "Last Share Time": now - 3 if accepted else 0,
            "Diff1 Shares": int(accepted * SHARE_DIFFICULTY),
            "Proxy Type": "",
            "Proxy": "",
            "Difficulty Accepted": fx(accepted * SHARE_DIFFICULTY, 8),
            "Difficulty Rejected": fx((s.rejected if active else 0) * SHARE_DIFFICULTY, 8),
            "Difficulty Stale": fx(0.0, 8),
            "Last Share Difficulty": fx(SHARE_DIFFICULTY if accepted else 0.0, 8),
            "Work Difficulty": fx(SHARE_DIFFICULTY, 8),
            "Has Stratum": True,
            "Stratum Active": active,
            "Stratum URL": POOL_HOST if active else "",
            "Stratum Difficulty": fx(SHARE_DIFFICULTY if active else 0.0, 8),
            "Has Vmask": True,
            "Has GBT": False,
            "Best Share": s.best_share if active else 0,
            "Pool Rejected%": pct(fx, s.rejected, s.accepted + s.rejected) if active else fx(0.0, 4),
            "Pool Stale%": fx(0.0, 4),
            "Bad Work": 0,
            "Current Block Height": 870000 + s.tick // 120,
            "Current Block Version": 536870912,
        })
    return pools


def pools_section(items: list[dict[str, Any]]) -> Section:
    return Section(7, f"{len(items)} Pool(s)", "POOLS", items)


def board_share(s: Snapshot, b: int, total: float) -> int:
    """Split a miner-wide counter over its boards in proportion to their hashrate."""
    return int(total * s.board_hashrate_hs[b] / s.hashrate_hs) if s.hashrate_hs else 0


def cg_dev(ident: Identity, s: Snapshot, b: int, now: int, *, kind: str = "ASC", name: str = "BTM",
           window: str = "5s", temperature: Any = None, fx: Number = Fixed) -> dict[str, Any]:
    """One stock cgminer `devs` record per hash board (api.c ascstatus())."""
    rate = s.board_hashrate_hs[b]
    accepted = board_share(s, b, s.accepted)
    rejected = board_share(s, b, s.rejected)
    hw = board_share(s, b, s.hardware_errors)
    return {
        kind: b,
        "Name": name,
        "ID": b,
        "Enabled": "Y",
        "Status": "Alive",
        "Temperature": fx(s.chip_temp_c[b]) if temperature is None else temperature,
        "MHS av": fx(s.hashrate_avg_hs / BOARDS / MH),
        f"MHS {window}": fx(rate / MH),
        "MHS 1m": fx(s.hashrate_1m_hs / BOARDS / MH),
        "MHS 5m": fx(s.hashrate_5m_hs / BOARDS / MH),
        "MHS 15m": fx(s.hashrate_15m_hs / BOARDS / MH),
        "Accepted": accepted,
        "Rejected": rejected,
        "Hardware Errors": hw,
        "Utility": fx(accepted * 60.0 / s.uptime_s if s.uptime_s else 0.0),
        "Last Share Pool": 0 if accepted else -1,
        "Last Share Time": now - 3 if accepted else 0,
        "Total MH": fx(total_mh(s) / BOARDS, 4),
        "Diff1 Work": int(accepted * SHARE_DIFFICULTY),
        "Difficulty Accepted": fx(accepted * SHARE_DIFFICULTY, 8),
        "Difficulty Rejected": fx(rejected * SHARE_DIFFICULTY, 8),
        "Last Share Difficulty": fx(SHARE_DIFFICULTY if accepted else 0.0, 8),
        "Last Valid Work": now - 1,
        "Device Hardware%": pct(fx, hw, hw + accepted * SHARE_DIFFICULTY),
        "Device Rejected%": pct(fx, rejected, accepted + rejected),
        "Device Elapsed": s.uptime_s,
    }


def cg_config(ident: Identity, s: Snapshot, *, device_code: str = "ICA ") -> dict[str, Any]:
    """Stock `config` (api.c minerconfig()); cgminer's Device Code really ends with a space (seen on 4.11.1)."""
    return {
        "ASC Count": BOARDS,
        "PGA Count": 0,
        "Pool Count": 2,
        "Strategy": "Failover",
        "Log Interval": 5,
        "Device Code": device_code,
        "OS": "Linux",
        "Hotplug": "None",
    }


def stats_timing(index: int, ident_id: str, s: Snapshot, fx: Number = Fixed) -> dict[str, Any]:
    """The fields cgminer's itemstats() prints before any driver-specific stats."""
    return {
        "STATS": index,
        "ID": ident_id,
        "Elapsed": s.uptime_s,
        "Calls": 0,
        "Wait": fx(0.0, 6),
        "Max": fx(0.0, 6),
        "Min": fx(99999999.0, 6),
    }
