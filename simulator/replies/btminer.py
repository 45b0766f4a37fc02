"""MicroBT Whatsminer btminer, API v1/v2 on 4028, cgminer 4.9.2 lineage.

`summary` carries the firmware's own power measurement (`Power`, `Power_RT`, `Power Limit`), the fans
(`Fan Speed In/Out`) and chip temperatures, in the key order of the real M30S summary in tests/golden/replies,
including `Firmware Version` wrapped in single quotes. `devs` adds `Slot` and chip temperatures per
board; `devdetails` names the driver "bitmicro" and the model with its board revision ("M30S++V40").
"""

from __future__ import annotations

from typing import Any

from megawatch.simulator.behaviour import BOARDS, Identity, Snapshot
from megawatch.simulator.replies import fast
from megawatch.simulator.replies.common import (
    MH,
    Firmware,
    Section,
    cg_dev,
    cg_pools,
    cg_summary,
    pools_section,
    short_model,
)
from megawatch.simulator.replies.encode import Fixed

FIRMWARE_VERSION = "'20200512.13.REL'"


def model_code(ident: Identity) -> str:
    return short_model(ident).replace(" ", "") + "V40"


def summary(ident: Identity, s: Snapshot, now: int) -> Section:
    base = cg_summary(ident, s)
    tail_keys = ("Device Hardware%", "Device Rejected%", "Pool Rejected%", "Pool Stale%", "Last getwork")
    tail = {key: base.pop(key) for key in tail_keys}
    chip_avg = sum(s.chip_temp_c) / BOARDS
    record: dict[str, Any] = {
        **base,
        "Temperature": Fixed(max(s.board_temp_c)),
        "freq_avg": s.frequency_mhz,
        "Fan Speed In": s.fan_rpm[0],
        "Fan Speed Out": s.fan_rpm[1],
        "Voltage": 1238,
        "Power": s.power_w,
        "Power_RT": s.power_w,
        **tail,
        "Uptime": s.uptime_s + 597,
        "Chip Data": "HP5A05-20043018 D02 BINV02-193005B",
        "Power Current": 249500,
        "Power Fanspeed": 7576,
        "Error Code Count": 0,
        "Factory Error Code Count": 0,
        "Security Mode": 0,
        "Liquid Cooling": False,
        "Hash Stable": True,
        "Hash Stable Cost Seconds": min(s.uptime_s, 1500),
        "Hash Deviation%": Fixed(100.0 * (s.hashrate_hs / s.nominal_hs - 1.0) if s.nominal_hs else 0.0, 4),
        "Target Freq": s.frequency_mhz,
        "Target MHS": int(s.nominal_hs / MH),
        "Env Temp": Fixed(ident.ambient_c),
        "Power Mode": "Normal",
        "Firmware Version": FIRMWARE_VERSION,
        "MAC": ident.mac,
        "Factory GHS": int(ident.model.nominal_hashrate_hs / 1e9),
        "Power Limit": s.power_limit_w,
        "Power Voltage Input": Fixed(228.75),
        "Power Current Input": Fixed(s.power_w / 228.75),
        # A board's chip temperature in the snapshot is its hottest chip: what a monitor alarms on.
        "Chip Temp Min": Fixed(min(s.chip_temp_c) - 12.0),
        "Chip Temp Max": Fixed(max(s.chip_temp_c)),
        "Chip Temp Avg": Fixed(chip_avg - 4.0),
    }
    return Section(11, "Summary", "SUMMARY", [record], text_header=True)


def devs(ident: Identity, s: Snapshot, now: int) -> Section:
    items = []
    for b in range(BOARDS):
        base = cg_dev(ident, s, b, now, name="SM", temperature=Fixed(s.board_temp_c[b]))
        head = {key: base.pop(key) for key in ("ASC", "Name", "ID")}
        record = {
            **head, "Slot": b, **{k: base.pop(k) for k in ("Enabled", "Status", "Temperature")},
            "Chip Frequency": s.frequency_mhz,
            "Fan Speed In": s.fan_rpm[0],
            "Fan Speed Out": s.fan_rpm[1],
            **base,
            "Upfreq Complete": 1,
            "Effective Chips": 111,
            "PCB SN": f"{ident.serial.upper()}{b}",
            "Chip Temp Min": Fixed(s.chip_temp_c[b] - 12.0),
            "Chip Temp Max": Fixed(s.chip_temp_c[b]),
            "Chip Temp Avg": Fixed(s.chip_temp_c[b] - 4.0),
            "chip_vol_diff": 8,
        }
        items.append(record)
    return Section(9, f"{BOARDS} ASC(s)", "DEVS", items)


def devdetails(ident: Identity, s: Snapshot, now: int) -> Section:
    items: list[dict[str, Any]] = [
        {"DEVDETAILS": b, "Name": "SM", "ID": b, "Driver": "bitmicro", "Kernel": "", "Model": model_code(ident)}
        for b in range(BOARDS)
    ]
    return Section(69, "Device Details", "DEVDETAILS", items)


def pools(ident: Identity, s: Snapshot, now: int) -> Section:
    return pools_section(cg_pools(ident, s, now))


def get_miner_info(ident: Identity, s: Snapshot, now: int) -> dict[str, Any]:
    """The native API's network and unit facts (API v2.0.x; pyasic reads Msg.mac, Msg.hostname, Msg.minersn):
    STATUS is a bare letter and Msg an object, not cgminer's envelope."""
    return {"STATUS": "S", "When": now, "Code": 131, "Msg": {
        "ip": ident.host, "proto": "dhcp", "netmask": "255.255.255.0", "gateway": "", "dns": "",
        "hostname": ident.hostname, "mac": ident.mac, "ledstat": "auto",
        "minersn": "HEM" + ident.serial.upper()[:14] + "H56",
    }, "Description": ""}


def version(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(22, "CGMiner versions", "VERSION", [{"CGMiner": "4.9.2", "API": "3.7"}], text_header=True)


FIRMWARE = Firmware(
    name="btminer",
    description="cgminer 4.9.2",
    handlers={"summary": summary, "pools": pools, "devs": devs, "edevs": devs, "devdetails": devdetails,
              "version": version, "get_miner_info": get_miner_info},
    reports_power=True,
    fast={"summary": fast.bt_summary, "pools": fast.pools, "devs": fast.bt_devs, "version": fast.static(version),
          "devdetails": fast.static(devdetails)},
)
