"""LuxOS LUXminer on Antminer hardware: every object's keys sorted, envelope too.

Antminer-style `stats` (header object, then chain keys) and `summary` in GH/s; power from `power` ->
POWER[0].Watts (Code 311 "Power usage", asic-rs luxminer/v1/power.json).
"""

from __future__ import annotations

from typing import Any

from megawatch.simulator.behaviour import BOARDS, Identity, Snapshot
from megawatch.simulator.replies import bmminer, fast
from megawatch.simulator.replies.common import (
    GH,
    Firmware,
    Section,
    cg_pools,
    cg_summary,
    plain,
    pools_section,
)

VERSION = "2025.4.8.220305-57b389c7"


def version(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(22, "CGMiner versions", "VERSION", [{
        "API": "3.7", "LUXminer": VERSION, "Miner": VERSION, "Type": ident.model.name,
    }], text_header=True)


def summary(ident: Identity, s: Snapshot, now: int) -> Section:
    record: dict[str, Any] = cg_summary(ident, s, fx=plain)
    for key in ("MHS av", "MHS 5s", "MHS 1m", "MHS 5m", "MHS 15m"):
        record.pop(key)
    record["GHS 5s"] = round(s.hashrate_hs / GH, 2)
    record["GHS av"] = round(s.hashrate_avg_hs / GH, 2)
    record["GHS 30m"] = round(s.hashrate_15m_hs / GH, 2)
    return Section(11, "Summary", "SUMMARY", [record], text_header=True)


def pools(ident: Identity, s: Snapshot, now: int) -> Section:
    return pools_section(cg_pools(ident, s, now, fx=plain))


def stats(ident: Identity, s: Snapshot, now: int) -> Section:
    items = bmminer._stats_s19(ident, s).items
    header = {"LUXminer": VERSION, "Miner": VERSION, "CompileTime": "Tue Apr 8 22:03:05 UTC 2025",
              "Type": ident.model.name}
    return Section(70, "CGMiner stats", "STATS", [header, items[1]])


def power(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(311, "Power usage", "POWER", [{"PSU": False, "Watts": s.power_w}])


def temps(ident: Identity, s: Snapshot, now: int) -> Section:
    items = [{"ID": b, "Board": s.board_temp_c[b], "TopLeft": s.chip_temp_c[b] - 2, "TopRight": s.chip_temp_c[b],
              "BottomLeft": s.board_temp_c[b], "BottomRight": s.chip_temp_c[b] - 4} for b in range(BOARDS)]
    return Section(201, f"{BOARDS} Temp(s)", "TEMPS", items)


def fans(ident: Identity, s: Snapshot, now: int) -> Section:
    items = [{"ID": f, "RPM": rpm, "Speed": min(100, round(rpm * 100 / 6000))} for f, rpm in enumerate(s.fan_rpm)]
    return Section(202, f"{len(items)} Fan(s)", "FANS", items)


def config(ident: Identity, s: Snapshot, now: int) -> Section:
    """cgminer's `config` with LuxOS's unit facts added (MACAddr is what pyasic reads; SerialNumber, Hostname)."""
    return Section(33, "CGMiner config", "CONFIG", [{
        "ASC Count": BOARDS, "PGA Count": 0, "Pool Count": 3, "Strategy": "Failover", "Log Interval": 5,
        "Device Code": "", "OS": "Linux", "Hotplug": "None", "Model": ident.model.name,
        "SerialNumber": "JYZZ" + ident.serial.upper()[:13], "MACAddr": ident.mac, "Hostname": ident.hostname,
        "IsAtmEnabled": False, "IsTuning": False,
    }])


def devdetails(ident: Identity, s: Snapshot, now: int) -> Section:
    items = [{"DEVDETAILS": b, "Driver": "bitmain_soc", "ID": b, "Kernel": "", "Model": ident.model.name,
              "Name": "BTM_SOC", "Device Path": ""} for b in range(BOARDS)]
    return Section(69, "Device Details", "DEVDETAILS", items)


FIRMWARE = Firmware(
    name="luxos",
    description=f"LUXminer {VERSION}",
    handlers={"version": version, "summary": summary, "pools": pools, "stats": stats, "power": power,
              "temps": temps, "fans": fans, "devs": bmminer.devs, "devdetails": devdetails, "config": config},
    style_name="sorted_floats",
    fast={"version": fast.static(version), "devdetails": fast.static(devdetails), "pools": fast.lux_pools,
          "summary": fast.lux_summary, "stats": fast.lux_stats},
    sort_envelope=True,
    reports_power=True,
)
