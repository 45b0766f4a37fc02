"""Braiins OS+ bosminer: keys sorted, full-precision floats, extra commands.

Shapes follow a real bOS+ S9 summary (sorted SUMMARY with `MHS 24h`) and the BOSminer
API page: `fans` (Code 202), `temps` (201), `tempctrl` (200), `tunerstatus` (203) whose
`ApproximateMinerPowerConsumption` is the firmware's power figure; hash chains are numbered 6, 7, 8 as on
an S9, and devdetails names the model "Bitmain Antminer ...".
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
    plain,
    pools_section,
    sorted_record,
)

VERSION = "0.2.0-36c56a9363"
FIRST_CHAIN = 6


def _clean(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [sorted_record(item) for item in items]


def _full(value: float) -> float:
    # bosminer prints floats at full precision; keep a stable value per tick.
    return float(value)


def version(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(22, "BOSminer+ versions", "VERSION", [{"API": "3.7", "BOSminer+": VERSION}], text_header=True)


def summary(ident: Identity, s: Snapshot, now: int) -> Section:
    record = cg_summary(ident, s, fx=plain)
    record.update({
        "MHS av": _full(s.hashrate_avg_hs / MH), "MHS 5s": _full(s.hashrate_hs / MH),
        "MHS 1m": _full(s.hashrate_1m_hs / MH), "MHS 5m": _full(s.hashrate_5m_hs / MH),
        "MHS 15m": _full(s.hashrate_15m_hs / MH),
        "MHS 24h": _full(s.hashrate_avg_hs / MH * min(1.0, s.uptime_s / 86400)),
        "Last getwork": now,
    })
    return Section(11, "Summary", "SUMMARY", [sorted_record(record)], text_header=True)


def pools(ident: Identity, s: Snapshot, now: int) -> Section:
    return pools_section(_clean(cg_pools(ident, s, now, fx=plain)))


def devs(ident: Identity, s: Snapshot, now: int) -> Section:
    items = []
    for b in range(BOARDS):
        record = cg_dev(ident, s, b, now, name="", fx=plain)
        record["ID"] = FIRST_CHAIN + b
        record["ASC"] = b
        record["MHS 5s"] = _full(s.board_hashrate_hs[b] / MH)
        record["Temperature"] = 0.0  # bosminer reports temperatures only through `temps`
        record["Nominal MHS"] = _full(s.nominal_hs / BOARDS / MH)
        record["Hardware Error MHS 15m"] = 0.0
        items.append(sorted_record(record))
    return Section(9, f"{BOARDS} ASC(s)", "DEVS", items)


def devdetails(ident: Identity, s: Snapshot, now: int) -> Section:
    items = [
        sorted_record({
            "DEVDETAILS": b, "Name": f"Hash Chain {FIRST_CHAIN + b}", "ID": FIRST_CHAIN + b,
            "Driver": "bitmain", "Kernel": "", "Model": f"Bitmain {ident.model.name}", "Device Path": "",
            "Chips": 63, "Cores": 114, "Frequency": float(s.frequency_mhz * 1_000_000),
            "Voltage": 8.416799545288086 + 0.01 * b,
        })
        for b in range(BOARDS)
    ]
    return Section(69, "Device Details", "DEVDETAILS", items)


def fans(ident: Identity, s: Snapshot, now: int) -> Section:
    items = [sorted_record({"FAN": f, "ID": f, "RPM": rpm, "Speed": min(100, round(rpm * 100 / 6000))})
             for f, rpm in enumerate(s.fan_rpm)]
    return Section(202, f"{len(items)} Fan(s)", "FANS", items)


def temps(ident: Identity, s: Snapshot, now: int) -> Section:
    items = [sorted_record({"Board": s.board_temp_c[b], "Chip": s.chip_temp_c[b], "ID": FIRST_CHAIN + b,
                            "TEMP": b}) for b in range(BOARDS)]
    return Section(201, f"{len(items)} Temp(s)", "TEMPS", items)


def tempctrl(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(200, "Temperature control", "TEMPCTRL",
                   [{"Dangerous": 115.0, "Hot": 100.0, "Mode": "Automatic", "Target": 89.0}])


def tunerstatus(ident: Identity, s: Snapshot, now: int) -> Section:
    chain_power = [round(s.power_w * 0.95 * r / s.hashrate_hs) if s.hashrate_hs else 0 for r in s.board_hashrate_hs]
    chains = [sorted_record({
        "ApproximatePowerConsumptionWatt": chain_power[b], "HashchainIndex": FIRST_CHAIN + b, "Iteration": 3,
        "LoadedProfileCreatedOn": 1595938000, "PowerLimitWatt": s.power_limit_w // BOARDS,
        "StageElapsed": s.uptime_s, "Status": "Stable", "TunerRunning": False, "TuningElapsed": 600,
    }) for b in range(BOARDS)]
    record = {
        "ApproximateChainPowerConsumption": sum(chain_power),
        "ApproximateMinerPowerConsumption": s.power_w,
        "DynamicPowerScaling": "Disabled",
        "PowerLimit": s.power_limit_w,
        "TunerChainStatus": chains,
    }
    return Section(203, "Tuner Status", "TUNERSTATUS", [record])


def config(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(33, "CGMiner config", "CONFIG", [sorted_record({
        "ASC Count": BOARDS, "Device Code": "", "Hotplug": "None", "Log Interval": 5, "OS": "Braiins OS",
        "PGA Count": 0, "Pool Count": 2, "Strategy": "Failover"})], text_header=True)


FIRMWARE = Firmware(
    name="bosminer",
    description=f"BOSminer+ {VERSION}",
    handlers={
        "version": version, "summary": summary, "pools": pools, "devs": devs, "edevs": devs,
        "devdetails": devdetails, "fans": fans, "temps": temps, "tempctrl": tempctrl,
        "tunerstatus": tunerstatus, "config": config,
    },
    style_name="compact_floats",
    reports_power=True,
    fast={"version": fast.static(version), "config": fast.static(config), "summary": fast.bos_summary,
          "pools": fast.bos_pools, "fans": fast.bos_fans, "temps": fast.bos_temps, "tunerstatus": fast.bos_tunerstatus,
          "devdetails": fast.bos_devdetails},
)
