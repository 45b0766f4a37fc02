"""Canaan AvalonMiner on its cgminer 4.11.1 fork.

Rates use `MHS 30s` (log interval 30); `When` counts seconds since boot (no RTC); `devs` Temperature is
the -273 sentinel. Temperatures, fans and the wall power live in `stats`/`estats` as one packed
`"MM ID0"` string of `KEY[value]` tokens (real replies in tests/golden/replies/avalon):
Temp (inlet), TMax, TAvg, Fan1/Fan2, FanR, PS[...] (element 6 = wall watts), WALLPOWER, MGHS per board,
MTmax/MTavg per board, MPO (power limit).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from megawatch.simulator.behaviour import BOARDS, Identity, Snapshot, unit
from megawatch.simulator.replies import fast
from megawatch.simulator.replies.common import (
    GH,
    Firmware,
    Section,
    cg_dev,
    cg_pools,
    cg_summary,
    pools_section,
    short_model,
    stats_timing,
)
from megawatch.simulator.replies.encode import Fixed

VERSION = "4.11.1"
FIRMWARE_VERSION = "24102401_25462b2_9ddf522"


def model_number(ident: Identity) -> str:
    return short_model(ident).lstrip("Aa")


def version(ident: Identity, s: Snapshot, now: int) -> Section:
    number = model_number(ident)
    return Section(22, "CGMiner versions", "VERSION", [{
        "CGMiner": VERSION, "API": "3.7", "STM8": "20.08.01", "PROD": f"AvalonMiner {number}",
        "MODEL": number, "HWTYPE": "MM4v2_X3", "SWTYPE": "MM319", "VERSION": FIRMWARE_VERSION,
        "LOADER": "d0d779de.00", "DNA": f"0201{ident.serial[:12]}", "MAC": ident.mac.replace(":", "").lower(),
        "UPAPI": "2",
    }], text_header=True)


def summary(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(11, "Summary", "SUMMARY", [cg_summary(ident, s, window="30s")], text_header=True)


def pools(ident: Identity, s: Snapshot, now: int) -> Section:
    return pools_section(cg_pools(ident, s, now))


def devs(ident: Identity, s: Snapshot, now: int) -> Section:
    record = cg_dev(ident, s, 0, now, name="AVA10", window="30s", temperature=Fixed(-273.0, 1))
    record.update({"MHS av": Fixed(s.hashrate_avg_hs / 1e6), "MHS 30s": Fixed(s.hashrate_hs / 1e6),
                   "Accepted": s.accepted, "Rejected": s.rejected})
    return Section(9, "1 ASC(s)", "DEVS", [record])


def _ints(values: Sequence[float]) -> str:
    return " ".join(str(round(v)) for v in values)


def mm_id(ident: Identity, s: Snapshot, seed_salt: int = 0) -> str:
    """The packed `MM ID0` string: tokens in the firmware's order, values space-separated."""
    chip_max = [round(t) for t in s.chip_temp_c]
    chip_avg = [round(t - 7) for t in s.chip_temp_c]
    pvt = []
    for b, spread in enumerate(_chip_spread(ident.index)):
        # A short per-chip temperature row per board (real ones hold 120-160 chips: ~8 KB per module).
        base = s.chip_temp_c[b] - 12
        pvt.append(f"PVT_T{b}[ " + "  ".join([str(round(base + d)) for d in spread]) + "]")
    ps = [0, 1209, 1187, 297, max(0, s.power_w - 205), 1188, s.power_w]
    tokens = [
        f"Ver[{model_number(ident)}-{FIRMWARE_VERSION}]",
        f"DNA[0201{ident.serial[:12]}]",
        "MEMFREE[1392832.1381104]",
        "NETFAIL[0 0 0 0 0 0 0 0]",
        f"SYSTEMSTATU[Work: In Work, Hash Board: {BOARDS} ]",
        f"Elapsed[{s.uptime_s}]",
        "BOOTBY[0x04.00000000]",
        f"LW[{s.uptime_s * 730}]",
        "MH[" + " ".join("0" for _ in range(BOARDS)) + "]",
        f"HW[{s.hardware_errors}]",
        "DH[1.299%]",
        f"Temp[{round(ident.ambient_c)}]",
        f"TMax[{max(chip_max)}]",
        f"TAvg[{round(sum(chip_avg) / BOARDS)}]",
        *(f"Fan{f + 1}[{rpm}]" for f, rpm in enumerate(s.fan_rpm)),
        f"FanR[{min(100, round(max(s.fan_rpm) * 100 / 6000))}%]",
        "Vo[296]",
        f"PS[{_ints(ps)}]",
        f"WALLPOWER[{s.power_w}]",
        f"GHSspd[{s.hashrate_hs / GH:.2f}]",
        "DHspd[1.299%]",
        f"GHSmm[{s.nominal_hs / GH:.2f}]",
        f"GHSavg[{s.hashrate_avg_hs / GH:.2f}]",
        f"WU[{s.hashrate_avg_hs / 71582788.0:.2f}]",
        f"Freq[{s.frequency_mhz * 0.6:.2f}]",
        "Led[0]",
        "MGHS[" + " ".join(f"{r / GH:.2f}" for r in s.board_hashrate_hs) + "]",
        f"MTmax[{_ints(chip_max)}]",
        f"MTavg[{_ints(chip_avg)}]",
        "TA[480]",
        "Core[A3197S]",
        "PING[131]",
        *pvt,
        "ATAOPTS0[--avalon10-freq 240:258:279:300 --avalon10-voltage-level 1180 --hash-asic 160]",
        "ADJ[1]",
        f"MPO[{s.power_limit_w}]",
        "MVL[87]",
        "WORKMODE[1]",
    ]
    return " ".join(tokens)


@functools.cache
def _chip_spread(index: int) -> tuple[tuple[float, ...], ...]:
    # Each chip's fixed offset from its board: 72 hashes per estats reply otherwise, the same every tick
    # (one small tuple per Avalon miner of the process).
    return tuple(tuple([10 * unit(index, b, c, 60) for c in range(24)]) for b in range(BOARDS))


def _pool_stats(n: int, s: Snapshot) -> dict[str, Any]:
    record = stats_timing(n + 1, f"POOL{n}", s)
    record.update({
        "Pool Calls": 0, "Pool Attempts": 0, "Pool Wait": Fixed(0.0, 6), "Pool Max": Fixed(0.0, 6),
        "Pool Min": Fixed(99999999.0, 6), "Pool Av": Fixed(0.0, 6), "Work Had Roll Time": False,
        "Work Can Roll": False, "Work Had Expire": False, "Work Roll Time": 0,
        "Work Diff": Fixed(262144.0, 8), "Min Diff": Fixed(262144.0, 8), "Max Diff": Fixed(262144.0, 8),
        "Min Diff Count": s.accepted if n == 0 else 0, "Max Diff Count": s.accepted if n == 0 else 0,
        "Times Sent": s.accepted + 3, "Bytes Sent": s.accepted * 120 + 300,
        "Times Recv": s.uptime_s // 30 + 5, "Bytes Recv": s.uptime_s * 20 + 1500,
        "Net Bytes Sent": s.accepted * 120 + 300, "Net Bytes Recv": s.uptime_s * 20 + 1500,
    })
    return record


def stats(ident: Identity, s: Snapshot, now: int) -> Section:
    device = stats_timing(0, "AVA100", s)
    device.update({"MM ID0": mm_id(ident, s), "MM Count": 1, "Smart Speed": 1, "Voltage Level Offset": 0,
                   "Nonce Mask": 25})
    return Section(70, "CGMiner stats", "STATS", [device, _pool_stats(0, s), _pool_stats(1, s)])


def devdetails(ident: Identity, s: Snapshot, now: int) -> Section:
    return Section(69, "Device Details", "DEVDETAILS", [{
        "DEVDETAILS": 0, "Name": "AVA10", "ID": 0, "Driver": "avalon10", "Kernel": "",
        "Model": f"AvalonMiner {model_number(ident)}", "Device Path": "",
    }])


FIRMWARE = Firmware(
    name="avalon",
    description=f"cgminer {VERSION}",
    handlers={"version": version, "summary": summary, "pools": pools, "devs": devs, "edevs": devs,
              "stats": stats, "estats": stats, "devdetails": devdetails},
    describe_invalid=False,
    reports_power=True,
    when_is_uptime=True,
    fast={"summary": fast.summary("30s"), "pools": fast.pools, "version": fast.static(version),
          "devdetails": fast.static(devdetails), "stats": fast.av_stats, "estats": fast.av_stats},
)
