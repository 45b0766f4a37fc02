"""Bitmain bmminer on stock Antminer firmware, in two generations:

- S9/S9k/S17 class ("BMMiner 4.9.0"): compact JSON, `GHS 5s` as a string, `total_rate`, 16 slots per
  family (`temp1..16`, `chain_rate1..16` with "" for absent chains), `temp_pcbN`/`temp_chipN` "lo-hi";
  from the real S9k reply in tests/golden/replies/bmminer.
- S19/S21 class ("BMMiner 1.0.0"): Python-style `": "` spacing, plain floats, `total rate` (space),
  `rate_unit`, 4-value dash strings, pools with `"Pool Stale%%"` and a dead pool spelt "Deed"; from
  the real S19 stats and pools replies in tests/golden/replies/bmminer.

Both answer only stats, pools, devs, summary and version to remote clients: stock configs ship
`api-groups A:stats:pools:devs:summary:version` (fm AntminerChangePoolsITest), so devdetails gets E/45.
No power over the API.
"""

from __future__ import annotations

from typing import Any

from megawatch.simulator.behaviour import BOARDS, SHARE_DIFFICULTY, Identity, Snapshot
from megawatch.simulator.replies import fast
from megawatch.simulator.replies.common import (
    GH,
    Firmware,
    Number,
    Section,
    board_share,
    cg_dev,
    cg_pools,
    cg_summary,
    plain,
    pools_section,
    stats_timing,
)
from megawatch.simulator.replies.encode import Fixed

ALLOWED = frozenset({"stats", "pools", "devs", "summary", "version"})
_SUMMARY_DROPPED = ("MHS av", "MHS 5s", "MHS 1m", "MHS 5m", "MHS 15m")


def is_s19_class(ident: Identity) -> bool:
    name = ident.model.name.upper()
    return not any(old in name for old in ("S9", "S17", "T17"))


def _header(ident: Identity) -> dict[str, Any]:
    if is_s19_class(ident):
        return {"BMMiner": "1.0.0", "Miner": "49.0.1.3", "CompileTime": "Fri Dec 11 11:15:40 CST 2020",
                "Type": ident.model.name}
    return {"BMMiner": "4.9.0", "Miner": "13.10.1.3", "CompileTime": "Sun Sep 29 15:25:10 CST 2019",
            "Type": ident.model.name}


def version(ident: Identity, s: Snapshot, now: int) -> Section:
    record = _header(ident)
    record = {"BMMiner": record["BMMiner"], "API": "3.1", **{k: v for k, v in record.items() if k != "BMMiner"}}
    return Section(22, "CGMiner versions", "VERSION", [record], text_header=True)


def _number(ident: Identity) -> Number:
    # S19-class firmware prints through a JSON library: shortest floats, not printf text.
    return plain if is_s19_class(ident) else Fixed


def summary(ident: Identity, s: Snapshot, now: int) -> Section:
    base = cg_summary(ident, s, fx=_number(ident))
    rates: dict[str, Any] = {"Elapsed": base.pop("Elapsed")}
    for key in _SUMMARY_DROPPED:
        base.pop(key)
    if is_s19_class(ident):
        rates["GHS 5s"] = plain(s.hashrate_hs / GH)
        rates["GHS av"] = plain(s.hashrate_avg_hs / GH)
        rates["GHS 30m"] = plain(s.hashrate_15m_hs / GH)
    else:
        # bmminer S9: api_add_string(root, "GHS 5s", displayed_hash_rate) -> a quoted number.
        rates["GHS 5s"] = f"{s.hashrate_hs / GH:.2f}"
        rates["GHS av"] = Fixed(s.hashrate_avg_hs / GH)
    return Section(11, "Summary", "SUMMARY", [{**rates, **base}], text_header=True)


def _age(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def pools(ident: Identity, s: Snapshot, now: int) -> Section:
    s19 = is_s19_class(ident)
    items = []
    for pool in cg_pools(ident, s, now, fx=_number(ident)):
        accepted = pool["Accepted"]
        record = {key: pool[key] for key in (
            "POOL", "URL", "Status", "Priority", "Quota", "Long Poll", "Getworks", "Accepted", "Rejected",
            "Discarded", "Stale", "Get Failures", "Remote Failures", "User")}
        # bmminer poolstatus(): Last Share Time becomes an "H:MM:SS" age, Diff a suffixed string.
        record["Last Share Time"] = _age(3) if accepted else "0"
        record["Diff"] = "262K" if pool["Stratum Active"] else ""
        for key in ("Diff1 Shares", "Proxy Type", "Proxy", "Difficulty Accepted", "Difficulty Rejected",
                    "Difficulty Stale", "Last Share Difficulty", "Has Stratum", "Stratum Active",
                    "Stratum URL", "Has GBT", "Best Share", "Pool Rejected%"):
            record[key] = pool[key]
        record["Pool Stale%%" if s19 else "Pool Stale%"] = pool["Pool Stale%"]
        items.append(record)
    if s19:
        dead = dict(items[-1])
        # S19 firmware really spells a dead pool "Deed" (proto-fleet: "typo in actual response").
        dead.update({"POOL": 2, "URL": "stratum+tcp://backup.megawatch.example:443", "Status": "Deed",
                     "Priority": 2, "Getworks": 0, "Diff": ""})
        items.append(dead)
    return pools_section(items)


def devs(ident: Identity, s: Snapshot, now: int) -> Section:
    if not is_s19_class(ident):
        items = [cg_dev(ident, s, b, now) for b in range(BOARDS)]
        return Section(9, f"{BOARDS} ASC(s)", "DEVS", items)
    record = cg_dev(ident, s, 0, now, name="BTM_SOC", fx=plain)
    record.update({
        "MHS av": plain(s.hashrate_avg_hs / 1e6), "MHS 5s": plain(s.hashrate_hs / 1e6),
        "Accepted": s.accepted, "Rejected": s.rejected, "Hardware Errors": s.hardware_errors,
        # S19 Pro and S21 put the last share's timestamp here (asic-rs devs.json; proto-fleet).
        "Last Share Difficulty": now - 3 if s.accepted else 0,
    })
    # S19 Pro spells it "Tenperature" (asic-rs v2020/devs.json).
    record = {("Tenperature" if key == "Temperature" else key): value for key, value in record.items()}
    return Section(9, "1 ASC(s)", "DEVS", [record])


def _dash(values: list[int]) -> str:
    return "-".join(str(v) for v in values)


def stats(ident: Identity, s: Snapshot, now: int) -> Section:
    return _stats_s19(ident, s) if is_s19_class(ident) else _stats_s9(ident, s)


def _stats_s19(ident: Identity, s: Snapshot) -> Section:
    rec: dict[str, Any] = stats_timing(0, "BTM_SOC0", s, fx=plain)
    rec.update({"Wait": 0, "Max": 0, "Min": 99999999})
    rec["GHS 5s"] = plain(s.hashrate_hs / GH)
    rec["GHS av"] = plain(s.hashrate_avg_hs / GH)
    rec["rate_30m"] = plain(s.hashrate_15m_hs / GH)
    rec["Mode"] = 2
    rec["miner_count"] = BOARDS
    rec["frequency"] = s.frequency_mhz
    rec["fan_num"] = ident.fans
    for f, rpm in enumerate(s.fan_rpm, 1):
        rec[f"fan{f}"] = rpm
    rec["temp_num"] = BOARDS
    for b in range(BOARDS):
        rec[f"temp{b + 1}"] = round(s.board_temp_c[b])
        rec[f"temp2_{b + 1}"] = round(s.chip_temp_c[b])
    for family, temps, offsets in (("pcb", s.board_temp_c, (2, 0, 1, 3)), ("chip", s.chip_temp_c, (3, 1, 0, 2)),
                                   ("pic", s.board_temp_c, (2, 0, 1, 3))):
        for b in range(BOARDS + 1):
            # Four sensors per chain; the hottest equals the chain's temperature. Slot 4 is empty.
            values = [round(temps[b]) - o for o in offsets] if b < BOARDS else [0, 0, 0, 0]
            rec[f"temp_{family}{b + 1}"] = _dash(values)
    chips = _chips(ident)
    rec["total_rateideal"] = plain(s.nominal_hs / GH)
    rec["rate_unit"] = "GH"
    rec["total_freqavg"] = s.frequency_mhz
    rec["total_acn"] = chips * BOARDS
    rec["total rate"] = plain(s.hashrate_hs / GH)
    rec["temp_max"] = round(max(s.board_temp_c))
    rec["no_matching_work"] = s.hardware_errors
    for b in range(BOARDS + 1):
        rec[f"chain_acn{b + 1}"] = chips if b < BOARDS else 0
    for b in range(BOARDS + 1):
        rec[f"chain_acs{b + 1}"] = " oo" * chips if b < BOARDS else ""
    for b in range(BOARDS + 1):
        rec[f"chain_hw{b + 1}"] = board_share(s, b, s.hardware_errors) if b < BOARDS else 0
    for b in range(BOARDS + 1):
        rec[f"chain_rate{b + 1}"] = f"{s.board_hashrate_hs[b] / GH:.2f}" if b < BOARDS else ""
    for b in range(BOARDS + 1):
        rec[f"freq{b + 1}"] = s.frequency_mhz if b < BOARDS else 0
    rec["miner_version"] = "49.0.1.3"
    rec["miner_id"] = ident.serial
    items = [_header(ident), rec]
    return Section(70, "CGMiner stats", "STATS", items)


# Key names of the 16 per-chain slots, built once (this record is rendered for every S9 poll).
_S9_SLOTS = 16
_S9_NAMES = {family: tuple(f"{family}{b + 1}" for b in range(_S9_SLOTS)) for family in (
    "temp", "temp2_", "temp_pcb", "temp_chip", "freq_avg", "chain_rateideal", "chain_acn", "chain_acs",
    "chain_hw", "chain_rate")}
_S9_FREQ = tuple(f"freq{b + 1}" for b in range(8))
_S9_FAN = tuple(f"fan{f + 1}" for f in range(8))
_S9_ZERO = Fixed(0.0)


def _stats_s9(ident: Identity, s: Snapshot) -> Section:
    slots = _S9_SLOTS
    names = _S9_NAMES
    idle = range(BOARDS, slots)
    rec: dict[str, Any] = stats_timing(0, "BTM_SOC0", s)
    rec["GHS 5s"] = f"{s.hashrate_hs / GH:.2f}"
    rec["GHS av"] = Fixed(s.hashrate_avg_hs / GH)
    rec["Voltage"] = "9.90"
    rec["Mode"] = "H"
    rec["miner_count"] = BOARDS
    rec["frequency"] = str(s.frequency_mhz)
    freq = str(s.frequency_mhz)
    for b, key in enumerate(_S9_FREQ):
        rec[key] = freq if b < BOARDS else "0"
    rec["fan_num"] = ident.fans
    fans = s.fan_rpm
    for f, key in enumerate(_S9_FAN):
        rec[key] = fans[f] if f < len(fans) else 0
    rec["temp_num"] = BOARDS * 2
    board = [round(t) for t in s.board_temp_c]
    chip = [round(t) for t in s.chip_temp_c]
    for family, values in (("temp", board), ("temp2_", chip)):
        keys = names[family]
        for b in range(BOARDS):
            rec[keys[b]] = values[b]
        for b in idle:
            rec[keys[b]] = 0
    for family, values, low in (("temp_pcb", board, 30), ("temp_chip", chip, 8)):
        keys = names[family]
        for b in range(BOARDS):
            rec[keys[b]] = f"{values[b] - low}-{values[b]}"
        for b in idle:
            rec[keys[b]] = "-"
    for key in names["freq_avg"]:
        rec[key] = _S9_ZERO
    chips = _chips(ident)
    rec["total_rateideal"] = Fixed(s.nominal_hs / GH)
    rec["total_freqavg"] = _S9_ZERO
    rec["total_acn"] = chips * BOARDS
    rec["total_rate"] = Fixed(s.hashrate_hs / GH)
    for key in names["chain_rateideal"]:
        rec[key] = _S9_ZERO
    rec["temp_max"] = round(max(s.board_temp_c))
    diff1 = s.accepted * SHARE_DIFFICULTY
    rec["Device Hardware%"] = Fixed(100.0 * s.hardware_errors / (s.hardware_errors + diff1) if diff1 else 0.0, 4)
    rec["no_matching_work"] = s.hardware_errors
    acs = " oooooooo" * (chips // 8) + " " + "o" * (chips % 8)
    for family, active, empty in (("chain_acn", chips, 0), ("chain_acs", acs, "")):
        keys = names[family]
        for b in range(BOARDS):
            rec[keys[b]] = active
        for b in idle:
            rec[keys[b]] = empty
    keys = names["chain_hw"]
    for b in range(BOARDS):
        rec[keys[b]] = board_share(s, b, s.hardware_errors)
    for b in idle:
        rec[keys[b]] = 0
    keys = names["chain_rate"]
    for b in range(BOARDS):
        rec[keys[b]] = f"{s.board_hashrate_hs[b] / GH:.2f}"
    for b in idle:
        rec[keys[b]] = ""
    for b in range(BOARDS):
        # Braces inside strings: a naive `}{` repair must not touch these (S9k capture).
        rec[f"chain_xtime{b + 1}"] = "{X6=1}" if b == 2 else "{}"
    for b in range(BOARDS):
        rec[f"chain_offside_{b + 1}"] = "0"
    for b in range(BOARDS):
        rec[f"chain_opencore_{b + 1}"] = "0"
    rec["miner_version"] = "13.10.1.3"
    rec["miner_id"] = ident.serial
    return Section(70, "CGMiner stats", "STATS", [_header(ident), rec])


def _chips(ident: Identity) -> int:
    name = ident.model.name.upper()
    if "S21" in name:
        return 108
    if "XP" in name:
        return 110
    if is_s19_class(ident):
        return 76
    return 60


def _firmware(name: str, description: str, style: str, renderers: dict[str, Any]) -> Firmware:
    return Firmware(
        name=name, description=description,
        handlers={"version": version, "summary": summary, "pools": pools, "devs": devs, "stats": stats},
        style_name=style, allowed=ALLOWED, fast={"version": fast.static(version), **renderers},
    )


FIRMWARE_S9 = _firmware("bmminer", "cgminer 4.9.0", "compact", {})
FIRMWARE_S19 = _firmware("bmminer", "cgminer 1.0.0", "spaced_floats", {
    "summary": fast.s19_summary, "pools": fast.s19_pools, "stats": fast.s19_stats})


def pick(ident: Identity) -> Firmware:
    return FIRMWARE_S19 if is_s19_class(ident) else FIRMWARE_S9
