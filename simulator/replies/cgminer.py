"""Stock cgminer 4.11.1 (API 3.7) with ASC hash boards: compact JSON, %.2f rates in MH/s, no power.

From cg:api.c and cgminer 4.11.1 on loopback: `MHS 5s` from the default 5 s log interval; Code 14
replies carry no Description; devdetails names each board's model.
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

VERSION = "4.11.1"


def version(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(22, "CGMiner versions", "VERSION", [{"CGMiner": VERSION, "API": "3.7"}], text_header=True)


def summary(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(11, "Summary", "SUMMARY", [cg_summary(ident, s)], text_header=True)


def pools(ident: Identity, s: Snapshot, now: int) -> Section:
    return pools_section(cg_pools(ident, s, now))


def devs(ident: Identity, s: Snapshot, now: int) -> Section:
    items = [cg_dev(ident, s, b, now) for b in range(BOARDS)]
    return Section(9, f"{BOARDS} ASC(s)", "DEVS", items)


def devdetails(ident: Identity, s: Snapshot, now: int) -> Section:
    items: list[dict[str, Any]] = [
        {"DEVDETAILS": b, "Name": "BTM", "ID": b, "Driver": "bitmain", "Kernel": "",
         "Model": short_model(ident), "Device Path": f"1:{b + 2}"}
        for b in range(BOARDS)
    ]
    return Section(69, "Device Details", "DEVDETAILS", items)


def config(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(33, "CGMiner config", "CONFIG", [cg_config(ident, s)], text_header=True)


def stats(ident: Identity, s: Snapshot, now: int) -> Section:
    items = [stats_timing(b, f"BTM{b}", s) for b in range(BOARDS)]
    return Section(70, "CGMiner stats", "STATS", items)


def coin(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(78, "CGMiner coin", "COIN", [{
        "Hash Method": "sha256", "Current Block Time": f"{s.uptime_s}.000000",
        "Current Block Hash": f"{s.tick:064x}", "LP": True, "Network Difficulty": 1.0e14,
    }], text_header=True)


FIRMWARE = Firmware(
    name="cgminer",
    description=f"cgminer {VERSION}",
    handlers={
        "version": version, "summary": summary, "pools": pools, "devs": devs, "edevs": devs,
        "devdetails": devdetails, "config": config, "stats": stats, "estats": stats, "coin": coin,
    },
    describe_invalid=False,
    fast={"summary": fast.summary("5s"), "pools": fast.pools, "devs": fast.devs, "version": fast.static(version),
          "devdetails": fast.static(devdetails), "config": fast.static(config)},
)
