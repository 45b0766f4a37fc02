"""BFGMiner 5.5.0 (API 3.1): `MHS 20s`, devices listed as PGA, devdetails items under DEVS, no power.

From bfg: README.RPC and what BFGMiner 5.5.0 answered on loopback: no edevs, estats
or lcd; zero difficulties print as integer 0, others as floats.
"""

from __future__ import annotations

from typing import Any

from megawatch.simulator.behaviour import BOARDS, Identity, Snapshot
from megawatch.simulator.replies import fast
from megawatch.simulator.replies.common import (
    Firmware,
    Section,
    cg_config,
    cg_dev,
    cg_pools,
    cg_summary,
    pools_section,
    short_model,
    stats_timing,
)
from megawatch.simulator.replies.encode import fixed_value, is_fixed

VERSION = "5.5.0"
_DROPPED = ("MHS 1m", "MHS 5m", "MHS 15m")


def _zero_as_int(record: dict[str, Any]) -> dict[str, Any]:
    # BFGMiner prints a zero difficulty as 0, not 0.00000000 (seen on 5.5.0).
    for key in ("Difficulty Rejected", "Difficulty Stale", "Difficulty Accepted", "Last Share Difficulty"):
        value = record.get(key)
        if isinstance(value, str) and is_fixed(value) and fixed_value(value) == 0:
            record[key] = 0
    return record


def version(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(22, "BFGMiner versions", "VERSION", [{"BFGMiner": VERSION, "API": "3.1"}],
                   text_header=True)


def summary(ident: Identity, s: Snapshot, now: int) -> Section:
    record = cg_summary(ident, s, window="20s")
    for key in _DROPPED:
        record.pop(key)
    return Section(11, "Summary", "SUMMARY", [_zero_as_int(record)], text_header=True)


def pools(ident: Identity, s: Snapshot, now: int) -> Section:
    return pools_section([_zero_as_int(p) for p in cg_pools(ident, s, now)])


def devs(ident: Identity, s: Snapshot, now: int) -> Section:
    items = []
    for b in range(BOARDS):
        record = cg_dev(ident, s, b, now, kind="PGA", name="BTM", window="20s")
        for key in _DROPPED:
            record.pop(key)
        items.append(_zero_as_int(record))
    return Section(9, f"{BOARDS} PGA(s)", "DEVS", items)


def devdetails(ident: Identity, s: Snapshot, now: int) -> Section:
    items: list[dict[str, Any]] = [
        {"DEVDETAILS": b, "Name": "BTM", "ID": b, "Driver": "bitmain", "Kernel": "",
         "Model": short_model(ident), "Device Path": f"/dev/ttyUSB{b}"}
        for b in range(BOARDS)
    ]
    # BFGMiner really puts devdetails items under "DEVS" (seen on 5.5.0).
    return Section(69, "Device Details", "DEVS", items)


def config(ident: Identity, s: Snapshot, now: int) -> Section:
    record = cg_config(ident, s, device_code="BTM ")
    record["Coinbase-Sig"] = "(null)"
    return Section(33, "BFGMiner config", "CONFIG", [record], text_header=True)


def stats(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(70, "BFGMiner stats", "STATS", [stats_timing(b, f"BTM{b}", s) for b in range(BOARDS)])


FIRMWARE = Firmware(
    name="bfgminer",
    description=f"bfgminer {VERSION}",
    handlers={
        "version": version, "summary": summary, "pools": pools, "devs": devs,
        "devdetails": devdetails, "config": config, "stats": stats,
    },
    fast={"version": fast.static(version), "devdetails": fast.static(devdetails), "config": fast.static(config),
          "summary": fast.bfg_summary, "pools": fast.bfg_pools, "devs": fast.bfg_devs},
)
