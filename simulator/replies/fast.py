"""Direct text renderers for the hottest stock-cgminer sections: one %-format per section, no reply tree.

Building a section as dicts of Fixed strings and running json.dumps over it costs ~70-90 µs for a
`summary` on our machines; this one format costs ~10-20 µs, and a benchmark asks 10,000 miners for
these sections every cycle. Each renderer here is the exact text of `encode(as_object(...))` for its
tree twin in common.py (same keys, order, printf formats and arithmetic, in the same order):
tests/agent/test_simulator.py compares the two byte for byte over many miners, ticks, loads and
faults, so an edit to one without the other fails there. Only compact, unsorted firmware uses them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from megawatch.simulator.behaviour import BOARDS, SHARE_DIFFICULTY, Identity, Snapshot
from megawatch.simulator.replies.common import GH, MH, POOL_HOST, TWO32_PER_MIN, Firmware

_json_str: Callable[[str], str] = json.encoder.encode_basestring
# (identity, tick values, now, When, firmware) -> the section object's JSON text.
FastSection = Callable[[Identity, Snapshot, int, int, Firmware], str]


def _status(fw: Firmware, code: int, msg: str) -> str:
    """`{"STATUS":[{..."When":%d...}],` with the firmware's Description, When left as a %d slot."""
    text = (f'{{"STATUS":[{{"STATUS":"S","When":%d,"Code":{code},"Msg":{_json_str(msg)},'
            f'"Description":{_json_str(fw.description)}}}],')
    return text.replace("%", "%%").replace("%%d", "%d", 1)


def _summary_format(fw: Firmware, window: str) -> str:
    return _status(fw, 11, "Summary") + (
        '"SUMMARY":[{"Elapsed":%d,"MHS av":%.2f,"MHS ' + window.replace("%", "%%") + '":%.2f,"MHS 1m":%.2f,'
        '"MHS 5m":%.2f,"MHS 15m":%.2f,"Found Blocks":0,"Getworks":%d,"Accepted":%d,"Rejected":%d,'
        '"Hardware Errors":%d,"Utility":%.2f,"Discarded":%d,"Stale":0,"Get Failures":0,"Local Work":%d,'
        '"Remote Failures":0,"Network Blocks":%d,"Total MH":%.4f,"Work Utility":%.2f,'
        '"Difficulty Accepted":%.8f,"Difficulty Rejected":%.8f,"Difficulty Stale":0.00000000,"Best Share":%d,'
        '"Device Hardware%%":%.4f,"Device Rejected%%":%.4f,"Pool Rejected%%":%.4f,"Pool Stale%%":0.0000,'
        '"Last getwork":0}],"id":1}')


def _summary_values(s: Snapshot) -> tuple[tuple[Any, ...], tuple[float, ...]]:
    """cg_summary()'s values for printf firmware: Elapsed to Best Share, and the three percentages."""
    up = s.uptime_s
    accepted = s.accepted
    rejected = s.rejected
    hw = s.hardware_errors
    avg = s.hashrate_avg_hs
    hw_whole = hw + accepted * SHARE_DIFFICULTY
    shares = accepted + rejected
    rejected_pct = 100.0 * rejected / shares if shares else 0.0
    head = (
        up, avg / MH, s.hashrate_hs / MH, s.hashrate_1m_hs / MH, s.hashrate_5m_hs / MH, s.hashrate_15m_hs / MH,
        up // 30 + 1, accepted, rejected, hw, accepted * 60.0 / up if up else 0.0, up * 12, up * 4000, up // 600,
        avg * up / MH, avg / TWO32_PER_MIN if up else 0.0, s.difficulty_accepted, rejected * SHARE_DIFFICULTY,
        s.best_share,
    )
    return head, (100.0 * hw / hw_whole if hw_whole else 0.0, rejected_pct, rejected_pct)


def summary(window: str) -> FastSection:
    """cg_summary(ident, s, window) as `summary` answers it."""
    formats: dict[str, str] = {}

    def render(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
        fmt = formats.get(fw.description)
        if fmt is None:
            fmt = formats[fw.description] = _summary_format(fw, window)
        head, tail = _summary_values(s)
        return fmt % (when, *head, *tail)

    return render


def _pool_format(n: int, user: str, zero_as_int: bool = False) -> str:
    text = (
        f'{{"POOL":{n},"URL":{_json_str(f"stratum+tcp://{POOL_HOST}:{3333 + n}")},"Status":"Alive",'
        f'"Priority":{n},"Quota":1,"Long Poll":"N",'.replace("%", "%%")
        + '"Getworks":%d,"Accepted":%d,"Rejected":%d,"Works":%d,"Discarded":%d,"Stale":0,"Get Failures":0,'
        '"Remote Failures":0,"User":' + _json_str(user).replace("%", "%%") + ',"Last Share Time":%d,'
        '"Diff1 Shares":%d,"Proxy Type":"","Proxy":"","Difficulty Accepted":%.8f,"Difficulty Rejected":%.8f,'
        '"Difficulty Stale":0.00000000,"Last Share Difficulty":%.8f,"Work Difficulty":%.8f,"Has Stratum":true,'
        '"Stratum Active":%s,"Stratum URL":%s,"Stratum Difficulty":%.8f,"Has Vmask":true,"Has GBT":false,'
        '"Best Share":%d,"Pool Rejected%%":%.4f,"Pool Stale%%":0.0000,"Bad Work":0,"Current Block Height":%d,'
        '"Current Block Version":536870912}')
    if zero_as_int:  # BFGMiner: difficulties come as text, a zero one as the integer 0
        for name in ("Difficulty Accepted", "Difficulty Rejected", "Last Share Difficulty"):
            text = text.replace(f'"{name}":%.8f', f'"{name}":%s')
        text = text.replace('"Difficulty Stale":0.00000000', '"Difficulty Stale":0')
    return text


_POOLS_FORMATS: dict[tuple[str, str], str] = {}


def pools(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """pools_section(cg_pools(ident, s, now)): a primary doing the work and an idle backup."""
    user = f"{ident.site}.{ident.index}"
    key = (fw.description, user)
    fmt = _POOLS_FORMATS.get(key)
    if fmt is None:
        # Per miner (the user name): bounded by the miners of this process.
        fmt = _POOLS_FORMATS[key] = (_status(fw, 7, "2 Pool(s)") + '"POOLS":[' + _pool_format(0, user) + ","
                                     + _pool_format(1, user) + '],"id":1}')
    return fmt % (when, *_pool_values(s, now, float))


def _pool_values(s: Snapshot, now: int, difficulty: Callable[[float], Any]) -> tuple[Any, ...]:
    """cg_pools()'s slot values, primary then backup; `difficulty` prints the three share difficulties."""
    up = s.uptime_s
    accepted = s.accepted
    rejected = s.rejected
    shares = s.accepted + s.rejected
    height = 870000 + s.tick // 120
    idle = difficulty(0.0)
    return (
        # the primary
        up // 30 + 1, accepted, rejected, up * 40, up * 12, now - 3 if accepted else 0,
        int(accepted * SHARE_DIFFICULTY), difficulty(accepted * SHARE_DIFFICULTY),
        difficulty(rejected * SHARE_DIFFICULTY), difficulty(SHARE_DIFFICULTY if accepted else 0.0), SHARE_DIFFICULTY,
        "true", _QUOTED_HOST, SHARE_DIFFICULTY, s.best_share, 100.0 * rejected / shares if shares else 0.0, height,
        # the backup: no work, no shares
        1, 0, 0, 0, 0, 0, 0, idle, idle, idle, SHARE_DIFFICULTY, "false", '""', 0.0, 0, 0.0, height,
    )


_QUOTED_HOST = _json_str(POOL_HOST)


# cg_dev()'s fields from "MHS av" to "Device Elapsed" (dialects put their own fields around them).
_DEV_COUNTERS = (
    '"MHS av":%.2f,"MHS 5s":%.2f,"MHS 1m":%.2f,"MHS 5m":%.2f,"MHS 15m":%.2f,"Accepted":%d,"Rejected":%d,'
    '"Hardware Errors":%d,"Utility":%.2f,"Last Share Pool":%d,"Last Share Time":%d,"Total MH":%.4f,'
    '"Diff1 Work":%d,"Difficulty Accepted":%.8f,"Difficulty Rejected":%.8f,"Last Share Difficulty":%.8f,'
    '"Last Valid Work":%d,"Device Hardware%%":%.4f,"Device Rejected%%":%.4f,"Device Elapsed":%d')


def _dev_counters(s: Snapshot, now: int) -> list[tuple[Any, ...]]:
    """Per board, the values of _DEV_COUNTERS (cg_dev's arithmetic, in its order)."""
    up = s.uptime_s
    total = s.hashrate_hs
    avg = s.hashrate_avg_hs / BOARDS / MH
    one_m = s.hashrate_1m_hs / BOARDS / MH
    five_m = s.hashrate_5m_hs / BOARDS / MH
    fifteen_m = s.hashrate_15m_hs / BOARDS / MH
    total_mh = s.hashrate_avg_hs * up / MH / BOARDS
    boards: list[tuple[Any, ...]] = []
    for rate in s.board_hashrate_hs:
        # board_share(): a miner-wide counter split in proportion to the board's hashrate.
        accepted = int(s.accepted * rate / total) if total else 0
        rejected = int(s.rejected * rate / total) if total else 0
        hw = int(s.hardware_errors * rate / total) if total else 0
        hw_whole = hw + accepted * SHARE_DIFFICULTY
        shares = accepted + rejected
        boards.append((
            avg, rate / MH, one_m, five_m, fifteen_m, accepted, rejected, hw,
            accepted * 60.0 / up if up else 0.0, 0 if accepted else -1, now - 3 if accepted else 0, total_mh,
            int(accepted * SHARE_DIFFICULTY), accepted * SHARE_DIFFICULTY, rejected * SHARE_DIFFICULTY,
            SHARE_DIFFICULTY if accepted else 0.0, now - 1, 100.0 * hw / hw_whole if hw_whole else 0.0,
            100.0 * rejected / shares if shares else 0.0, up,
        ))
    return boards


_DEVS_FORMATS: dict[str, str] = {}


def devs(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """Stock cgminer `devs`: cg_dev(ident, s, b, now) for each hash board."""
    fmt = _DEVS_FORMATS.get(fw.description)
    if fmt is None:
        record = ('{"ASC":%d,"Name":"BTM","ID":%d,"Enabled":"Y","Status":"Alive","Temperature":%.2f,'
                  + _DEV_COUNTERS + "}")
        fmt = _DEVS_FORMATS[fw.description] = (_status(fw, 9, f"{BOARDS} ASC(s)") + '"DEVS":['
                                               + ",".join([record] * BOARDS) + '],"id":1}')
    values: list[object] = [when]
    for b, counters in enumerate(_dev_counters(s, now)):
        values += (b, b, s.chip_temp_c[b], *counters)
    return fmt % tuple(values)


# Larger than any process's fleet (10,000 miners x a few static sections); cleared, not grown, past it.
_STATIC_LIMIT = 50_000
# A When no reply can carry otherwise: its digits mark where When goes in a static section's text.
_WHEN_PROBE = 987654321987


def static(handler: Callable[[Identity, Snapshot, int], Any]) -> FastSection:
    """A section that depends only on the miner (version, devdetails): rendered once, When filled in."""
    texts: dict[tuple[str, int], tuple[Identity, str]] = {}

    def render(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
        key = (fw.description, ident.index)
        entry = texts.get(key)
        if entry is None or entry[0] is not ident:  # another fleet in this process (tests) reuses indexes
            if len(texts) >= _STATIC_LIMIT:
                texts.clear()
            entry = texts[key] = (ident, _when_slot(fw, handler(ident, s, now)))
        return entry[1] % when

    return render


def _when_slot(fw: Firmware, section: Any) -> str:
    from megawatch.simulator.replies import (  # the package imports this module
        as_object,
        encode_json,
    )

    text = encode_json(fw, as_object(fw, section, _WHEN_PROBE))
    probe = str(_WHEN_PROBE)
    if text.count(probe) != 1:
        raise ValueError(f"{fw.name}: a static section must hold When exactly once: {text[:80]}")
    return text.replace("%", "%%").replace(probe, "%d")


# -- bmminer 1.0 on S19/S21 class: Python-style ": " spacing and shortest floats (%r prints a float exactly
# as json does: float.__repr__; ints print the same either way) --------------------------------------------
def _spaced_status(fw: Firmware, code: int, msg: str) -> str:
    text = (f'{{"STATUS": [{{"STATUS": "S", "When": %d, "Code": {code}, "Msg": {_json_str(msg)}, '
            f'"Description": {_json_str(fw.description)}}}], ')
    return text.replace("%", "%%").replace("%%d", "%d", 1)


_S19_FORMATS: dict[tuple[str, ...], str] = {}


def s19_summary(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bmminer.summary() for the S19 class: cg_summary in plain floats with GH/s rates in front."""
    key = ("summary", fw.description)
    fmt = _S19_FORMATS.get(key)
    if fmt is None:
        fmt = _S19_FORMATS[key] = _spaced_status(fw, 11, "Summary") + (
            '"SUMMARY": [{"Elapsed": %d, "GHS 5s": %r, "GHS av": %r, "GHS 30m": %r, "Found Blocks": 0, '
            '"Getworks": %d, "Accepted": %d, "Rejected": %d, "Hardware Errors": %d, "Utility": %r, "Discarded": %d, '
            '"Stale": 0, "Get Failures": 0, "Local Work": %d, "Remote Failures": 0, "Network Blocks": %d, '
            '"Total MH": %r, "Work Utility": %r, "Difficulty Accepted": %r, "Difficulty Rejected": %r, '
            '"Difficulty Stale": 0.0, "Best Share": %d, "Device Hardware%%": %r, "Device Rejected%%": %r, '
            '"Pool Rejected%%": %r, "Pool Stale%%": 0.0, "Last getwork": 0}], "id": 1}')
    # The printf firmware's values, rounded as a JSON library firmware rounds them (common.plain).
    head, tail = _summary_values(s)
    return fmt % (
        when, head[0], round(s.hashrate_hs / GH, 2), round(s.hashrate_avg_hs / GH, 2),
        round(s.hashrate_15m_hs / GH, 2), *head[6:10], round(head[10], 2), *head[11:14], round(head[14], 4),
        round(head[15], 2), round(head[16], 8), round(head[17], 8), head[18], *[round(v, 4) for v in tail],
    )


def _s19_idle_pool(n: int, url: str, status: str, getworks: int, user: str) -> str:
    return (f'{{"POOL": {n}, "URL": {_json_str(url)}, "Status": "{status}", "Priority": {n}, "Quota": 1, '
            f'"Long Poll": "N", "Getworks": {getworks}, "Accepted": 0, "Rejected": 0, "Discarded": 0, "Stale": 0, '
            f'"Get Failures": 0, "Remote Failures": 0, "User": {user}, "Last Share Time": "0", "Diff": "", '
            '"Diff1 Shares": 0, "Proxy Type": "", "Proxy": "", "Difficulty Accepted": 0.0, '
            '"Difficulty Rejected": 0.0, "Difficulty Stale": 0.0, "Last Share Difficulty": 0.0, '
            '"Has Stratum": true, "Stratum Active": false, "Stratum URL": "", "Has GBT": false, "Best Share": 0, '
            '"Pool Rejected%": 0.0, "Pool Stale%%": 0.0}')


def s19_pools(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bmminer.pools() for the S19 class: the primary, an idle backup and the dead pool spelt "Deed"."""
    user = _json_str(f"{ident.site}.{ident.index}")
    key = ("pools", fw.description, user)
    fmt = _S19_FORMATS.get(key)
    if fmt is None:
        # Per miner (the user name): bounded by the miners of this process.
        primary = (
            '{"POOL": 0, "URL": ' + _json_str(f"stratum+tcp://{POOL_HOST}:3333") + ', "Status": "Alive", '
            '"Priority": 0, "Quota": 1, "Long Poll": "N", "Getworks": %d, "Accepted": %d, "Rejected": %d, '
            '"Discarded": %d, "Stale": 0, "Get Failures": 0, "Remote Failures": 0, "User": '
            + user.replace("%", "%%") + ', "Last Share Time": %s, "Diff": "262K", "Diff1 Shares": %d, '
            '"Proxy Type": "", "Proxy": "", "Difficulty Accepted": %r, "Difficulty Rejected": %r, '
            '"Difficulty Stale": 0.0, "Last Share Difficulty": %r, "Has Stratum": true, "Stratum Active": true, '
            '"Stratum URL": ' + _json_str(POOL_HOST) + ', "Has GBT": false, "Best Share": %d, '
            '"Pool Rejected%%": %r, "Pool Stale%%%%": 0.0}')
        idle = ", ".join([
            _s19_idle_pool(1, f"stratum+tcp://{POOL_HOST}:3334", "Alive", 1, user),
            _s19_idle_pool(2, "stratum+tcp://backup.megawatch.example:443", "Deed", 0, user),
        ]).replace("%", "%%")
        fmt = _S19_FORMATS[key] = (_spaced_status(fw, 7, "3 Pool(s)")
                                   + '"POOLS": [' + primary + ", " + idle + '], "id": 1}')
    accepted = s.accepted
    rejected = s.rejected
    shares = accepted + rejected
    return fmt % (
        when, s.uptime_s // 30 + 1, accepted, rejected, s.uptime_s * 12, '"0:00:03"' if accepted else '"0"',
        int(accepted * SHARE_DIFFICULTY), round(accepted * SHARE_DIFFICULTY, 8),
        round(rejected * SHARE_DIFFICULTY, 8), round(SHARE_DIFFICULTY if accepted else 0.0, 8), s.best_share,
        round(100.0 * rejected / shares if shares else 0.0, 4),
    )


_PCB = (2, 0, 1, 3)
_CHIP = (3, 1, 0, 2)


def s19_stats(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bmminer._stats_s19(): the version header, then one record of chains, fans and temperatures."""
    from megawatch.simulator.replies import bmminer  # bmminer imports this module

    key = ("stats", fw.description, ident.model.name, str(ident.fans), ident.serial)
    fmt = _S19_FORMATS.get(key)
    if fmt is None:
        # Per miner (the serial): bounded by the miners of this process.
        chips = bmminer._chips(ident)
        header = ", ".join(f"{_json_str(k)}: {_json_str(v)}" for k, v in bmminer._header(ident).items())
        fans = "".join(f'"fan{f + 1}": %d, ' for f in range(ident.fans))
        temps = "".join(f'"temp{b + 1}": %d, "temp2_{b + 1}": %d, ' for b in range(BOARDS))
        dashes = "".join(f'"temp_{family}{b + 1}": "%s", '
                         for family in ("pcb", "chip", "pic") for b in range(BOARDS + 1))
        acn = "".join(f'"chain_acn{b + 1}": {chips if b < BOARDS else 0}, ' for b in range(BOARDS + 1))
        acs = "".join(f'"chain_acs{b + 1}": "{" oo" * chips if b < BOARDS else ""}", ' for b in range(BOARDS + 1))
        hw = "".join(f'"chain_hw{b + 1}": %d, ' for b in range(BOARDS + 1))
        rate = "".join(f'"chain_rate{b + 1}": "%s", ' for b in range(BOARDS + 1))
        freq = "".join(f'"freq{b + 1}": %d, ' for b in range(BOARDS + 1))
        fmt = _S19_FORMATS[key] = _spaced_status(fw, 70, "CGMiner stats") + (
            '"STATS": [{' + header.replace("%", "%%") + '}, {"STATS": 0, "ID": "BTM_SOC0", "Elapsed": %d, '
            '"Calls": 0, "Wait": 0, "Max": 0, "Min": 99999999, "GHS 5s": %r, "GHS av": %r, "rate_30m": %r, '
            f'"Mode": 2, "miner_count": {BOARDS}, "frequency": %d, "fan_num": {ident.fans}, ' + fans
            + f'"temp_num": {BOARDS}, ' + temps + dashes + '"total_rateideal": %r, "rate_unit": "GH", '
            f'"total_freqavg": %d, "total_acn": {chips * BOARDS}, "total rate": %r, "temp_max": %d, '
            '"no_matching_work": %d, ' + acn + acs + hw + rate + freq
            + '"miner_version": "49.0.1.3", "miner_id": ' + _json_str(ident.serial).replace("%", "%%") + '}], "id": 1}')
    freq_mhz = s.frequency_mhz
    board = [round(t) for t in s.board_temp_c]
    chip = [round(t) for t in s.chip_temp_c]
    total = s.hashrate_hs
    values: list[object] = [when, s.uptime_s, round(total / GH, 2), round(s.hashrate_avg_hs / GH, 2),
                            round(s.hashrate_15m_hs / GH, 2), freq_mhz, *s.fan_rpm]
    for b in range(BOARDS):
        values += (board[b], chip[b])
    for sensors, offsets in ((board, _PCB), (chip, _CHIP), (board, _PCB)):
        values += ["-".join([str(t - o) for o in offsets]) for t in sensors]
        values.append("0-0-0-0")
    values += (round(s.nominal_hs / GH, 2), freq_mhz, round(total / GH, 2), round(max(s.board_temp_c)),
               s.hardware_errors)
    values += [int(s.hardware_errors * r / total) if total else 0 for r in s.board_hashrate_hs]
    values.append(0)
    values += [f"{r / GH:.2f}" for r in s.board_hashrate_hs]
    values.append("")
    values += (freq_mhz,) * BOARDS
    values.append(0)
    return fmt % tuple(values)


# -- btminer (Whatsminer): stock cgminer records with Whatsminer's own fields around them -----------------
_BT_FORMATS: dict[tuple[str, ...], str] = {}


def bt_summary(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """btminer.summary(): cg_summary with temperature, fans and power in the middle and vendor fields after."""
    from megawatch.simulator.replies import btminer  # btminer imports this module

    key = ("summary", fw.description, ident.mac, f"{ident.ambient_c!r}", ident.model.name)
    fmt = _BT_FORMATS.get(key)
    if fmt is None:
        # Per miner (MAC, ambient): bounded by the miners of this process.
        fmt = _BT_FORMATS[key] = _status(fw, 11, "Summary") + (
            '"SUMMARY":[{"Elapsed":%d,"MHS av":%.2f,"MHS 5s":%.2f,"MHS 1m":%.2f,"MHS 5m":%.2f,"MHS 15m":%.2f,'
            '"Found Blocks":0,"Getworks":%d,"Accepted":%d,"Rejected":%d,"Hardware Errors":%d,"Utility":%.2f,'
            '"Discarded":%d,"Stale":0,"Get Failures":0,"Local Work":%d,"Remote Failures":0,"Network Blocks":%d,'
            '"Total MH":%.4f,"Work Utility":%.2f,"Difficulty Accepted":%.8f,"Difficulty Rejected":%.8f,'
            '"Difficulty Stale":0.00000000,"Best Share":%d,"Temperature":%.2f,"freq_avg":%d,"Fan Speed In":%d,'
            '"Fan Speed Out":%d,"Voltage":1238,"Power":%d,"Power_RT":%d,"Device Hardware%%":%.4f,'
            '"Device Rejected%%":%.4f,"Pool Rejected%%":%.4f,"Pool Stale%%":0.0000,"Last getwork":0,"Uptime":%d,'
            '"Chip Data":"HP5A05-20043018 D02 BINV02-193005B","Power Current":249500,"Power Fanspeed":7576,'
            '"Error Code Count":0,"Factory Error Code Count":0,"Security Mode":0,"Liquid Cooling":false,'
            '"Hash Stable":true,"Hash Stable Cost Seconds":%d,"Hash Deviation%%":%.4f,"Target Freq":%d,'
            '"Target MHS":%d,' + (
                f'"Env Temp":{ident.ambient_c:.2f},"Power Mode":"Normal",'
                f'"Firmware Version":{_json_str(btminer.FIRMWARE_VERSION)},"MAC":{_json_str(ident.mac)},'
                f'"Factory GHS":{int(ident.model.nominal_hashrate_hs / 1e9)},').replace("%", "%%")
            + '"Power Limit":%d,"Power Voltage Input":228.75,"Power Current Input":%.2f,"Chip Temp Min":%.2f,'
            '"Chip Temp Max":%.2f,"Chip Temp Avg":%.2f}],"id":1}')
    head, tail = _summary_values(s)
    up = s.uptime_s
    chips = s.chip_temp_c
    power = s.power_w
    nominal = s.nominal_hs
    return fmt % (
        when, *head, max(s.board_temp_c), s.frequency_mhz, s.fan_rpm[0], s.fan_rpm[1], power, power, *tail,
        up + 597, min(up, 1500), 100.0 * (s.hashrate_hs / nominal - 1.0) if nominal else 0.0, s.frequency_mhz,
        int(nominal / MH),
        s.power_limit_w, power / 228.75, min(chips) - 12.0, max(chips), sum(chips) / BOARDS - 4.0,
    )


def bt_devs(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """btminer.devs(): cg_dev per board with slot, frequency and fans in front and chip data after."""
    key = ("devs", fw.description, ident.serial)
    fmt = _BT_FORMATS.get(key)
    if fmt is None:
        # Per miner (the board serials): bounded by the miners of this process.
        records = [
            '{"ASC":%d,"Name":"SM","ID":%d,"Slot":%d,"Enabled":"Y","Status":"Alive","Temperature":%.2f,'
            '"Chip Frequency":%d,"Fan Speed In":%d,"Fan Speed Out":%d,' + _DEV_COUNTERS
            + ',"Upfreq Complete":1,"Effective Chips":111,"PCB SN":'
            + _json_str(f"{ident.serial.upper()}{b}").replace("%", "%%")
            + ',"Chip Temp Min":%.2f,"Chip Temp Max":%.2f,"Chip Temp Avg":%.2f,"chip_vol_diff":8}'
            for b in range(BOARDS)
        ]
        fmt = _BT_FORMATS[key] = _status(fw, 9, f"{BOARDS} ASC(s)") + '"DEVS":[' + ",".join(records) + '],"id":1}'
    values: list[object] = [when]
    fans = s.fan_rpm
    for b, counters in enumerate(_dev_counters(s, now)):
        chip = s.chip_temp_c[b]
        values += (b, b, b, s.board_temp_c[b], s.frequency_mhz, fans[0], fans[1], *counters,
                   chip - 12.0, chip, chip - 4.0)
    return fmt % tuple(values)


# -- bosminer (Braiins): every record's keys sorted, full-precision floats (%r, as json prints them) -------
def _sorted_record(fields: dict[str, str]) -> tuple[str, Callable[[dict[str, Any]], Any]]:
    """One record's format with its keys sorted, and a getter for its slot values (fields "%r" or "%s")."""
    keys = sorted(fields)
    slots = [key for key in keys if fields[key] in _SLOT_TEXT]
    text = ",".join(
        _json_str(key).replace("%", "%%") + ":" + _SLOT_TEXT.get(fields[key], fields[key].replace("%", "%%"))
        for key in keys
    )
    return "{" + text + "}", itemgetter(*slots)


# A slot's field value in _sorted_record: a number (%r prints it as json does), or a string that needs no
# JSON escaping (digits, dashes, dots: the simulator's own formatted numbers).
_SLOT_TEXT = {"%r": "%r", "%s": '"%s"'}


_BOS_SUMMARY = _sorted_record({
    **dict.fromkeys(("Accepted", "Best Share", "Device Hardware%", "Device Rejected%", "Difficulty Accepted",
                     "Difficulty Rejected", "Discarded", "Elapsed", "Getworks", "Hardware Errors", "Last getwork",
                     "Local Work", "MHS 15m", "MHS 1m", "MHS 24h", "MHS 5m", "MHS 5s", "MHS av", "Network Blocks",
                     "Pool Rejected%", "Rejected", "Total MH", "Utility", "Work Utility"), "%r"),
    "Difficulty Stale": "0.0", "Found Blocks": "0", "Get Failures": "0", "Pool Stale%": "0.0", "Remote Failures": "0",
    "Stale": "0",
})
_BOS_FORMATS: dict[tuple[str, ...], str] = {}


def bos_summary(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bosminer.summary(): cg_summary in plain floats, MHS at full precision plus MHS 24h, keys sorted."""
    key = ("summary", fw.description)
    fmt = _BOS_FORMATS.get(key)
    if fmt is None:
        fmt = _BOS_FORMATS[key] = _status(fw, 11, "Summary") + '"SUMMARY":[' + _BOS_SUMMARY[0] + '],"id":1}'
    (up, av, five_s, one_m, five_m, fifteen_m, getworks, accepted, rejected, hw, utility, discarded, local,
     blocks, total_mh, work_utility, diff_accepted, diff_rejected, best), (hw_pct, rejected_pct, _) = _summary_values(s)
    rejected_pct = round(rejected_pct, 4)
    values = {
        "Accepted": accepted, "Best Share": best, "Device Hardware%": round(hw_pct, 4),
        "Device Rejected%": rejected_pct, "Difficulty Accepted": round(diff_accepted, 8),
        "Difficulty Rejected": round(diff_rejected, 8), "Discarded": discarded, "Elapsed": up, "Getworks": getworks,
        "Hardware Errors": hw, "Last getwork": now, "Local Work": local, "MHS 15m": fifteen_m, "MHS 1m": one_m,
        "MHS 24h": av * min(1.0, up / 86400), "MHS 5m": five_m, "MHS 5s": five_s, "MHS av": av,
        "Network Blocks": blocks, "Pool Rejected%": rejected_pct, "Rejected": rejected,
        "Total MH": round(total_mh, 4), "Utility": round(utility, 2), "Work Utility": round(work_utility, 2),
    }
    return fmt % (when, *_BOS_SUMMARY[1](values))


_POOL_SLOTS = ("Accepted", "Best Share", "Current Block Height", "Diff1 Shares", "Difficulty Accepted",
               "Difficulty Rejected", "Discarded", "Getworks", "Last Share Difficulty", "Last Share Time",
               "Pool Rejected%", "Rejected", "Stratum Difficulty", "Works")


def _bos_pool(n: int, user: str) -> tuple[str, Callable[[dict[str, Any]], Any]]:
    active = n == 0
    return _sorted_record({
        **dict.fromkeys(_POOL_SLOTS, "%r"),
        "Bad Work": "0", "Current Block Version": "536870912", "Difficulty Stale": "0.0", "Get Failures": "0",
        "Has GBT": "false", "Has Stratum": "true", "Has Vmask": "true", "Long Poll": '"N"', "POOL": str(n),
        "Pool Stale%": "0.0", "Priority": str(n), "Proxy": '""', "Proxy Type": '""', "Quota": "1",
        "Remote Failures": "0", "Stale": "0", "Status": '"Alive"', "Stratum Active": "true" if active else "false",
        "Stratum URL": _json_str(POOL_HOST if active else ""),
        "URL": _json_str(f"stratum+tcp://{POOL_HOST}:{3333 + n}"),
        "User": user, "Work Difficulty": "262144.0",
    })


def bos_pools(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bosminer.pools(): cg_pools in plain floats, keys sorted."""
    user = _json_str(f"{ident.site}.{ident.index}")
    key = ("pools", fw.description, user)
    fmt = _BOS_FORMATS.get(key)
    if fmt is None:
        # Per miner (the user name): bounded by the miners of this process.
        fmt = _BOS_FORMATS[key] = (_status(fw, 7, "2 Pool(s)") + '"POOLS":[' + _bos_pool(0, user)[0] + ","
                                   + _bos_pool(1, user)[0] + '],"id":1}')
    return fmt % (when, *_sorted_pool_values(s, now))


def _sorted_pool_values(s: Snapshot, now: int) -> tuple[Any, ...]:
    """The slot values of cg_pools(fx=plain) with sorted keys: the primary's, then the backup's."""
    up = s.uptime_s
    accepted = s.accepted
    rejected = s.rejected
    shares = accepted + rejected
    height = 870000 + s.tick // 120
    primary = {
        "Accepted": accepted, "Best Share": s.best_share, "Current Block Height": height,
        "Diff1 Shares": int(accepted * SHARE_DIFFICULTY), "Difficulty Accepted": round(accepted * SHARE_DIFFICULTY, 8),
        "Difficulty Rejected": round(rejected * SHARE_DIFFICULTY, 8), "Discarded": up * 12, "Getworks": up // 30 + 1,
        "Last Share Difficulty": round(SHARE_DIFFICULTY if accepted else 0.0, 8),
        "Last Share Time": now - 3 if accepted else 0,
        "Pool Rejected%": round(100.0 * rejected / shares if shares else 0.0, 4), "Rejected": rejected,
        "Stratum Difficulty": round(SHARE_DIFFICULTY, 8), "Works": up * 40,
    }
    backup = {
        "Accepted": 0, "Best Share": 0, "Current Block Height": height, "Diff1 Shares": 0, "Difficulty Accepted": 0.0,
        "Difficulty Rejected": 0.0, "Discarded": 0, "Getworks": 1, "Last Share Difficulty": 0.0, "Last Share Time": 0,
        "Pool Rejected%": 0.0, "Rejected": 0, "Stratum Difficulty": 0.0, "Works": 0,
    }
    return (*_POOL_GETTER(primary), *_POOL_GETTER(backup))


_POOL_GETTER = itemgetter(*sorted(_POOL_SLOTS))


# -- LuxOS: bosminer's sorted records, and the envelope sorted too ------------------------------------------
def _sorted_object(fw: Firmware, code: int, msg: str, key: str, items: str) -> tuple[str, bool]:
    """`{KEY:[items],"STATUS":[...],"id":1}` with every key sorted; True when When is the first slot."""
    status = (f'"STATUS":[{{"Code":{code},"Description":{_json_str(fw.description)},"Msg":{_json_str(msg)},'
              '"STATUS":"S","When":%d}]').replace("%", "%%").replace("%%d", "%d", 1)
    section = f"{_json_str(key)}:[".replace("%", "%%") + items + "]"
    when_first = "STATUS" < key
    first, second = (status, section) if when_first else (section, status)
    return "{" + first + "," + second + ',"id":1}', when_first


_LUX_FORMATS: dict[tuple[str, ...], tuple[str, bool]] = {}


def lux_pools(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """luxos.pools(): bosminer's pool records under a sorted envelope (POOLS sorts before STATUS)."""
    user = _json_str(f"{ident.site}.{ident.index}")
    key = ("pools", fw.description, user)
    entry = _LUX_FORMATS.get(key)
    if entry is None:
        # Per miner (the user name): bounded by the miners of this process.
        entry = _LUX_FORMATS[key] = _sorted_object(fw, 7, "2 Pool(s)", "POOLS",
                                                   _bos_pool(0, user)[0] + "," + _bos_pool(1, user)[0])
    values = _sorted_pool_values(s, now)
    return entry[0] % ((when, *values) if entry[1] else (*values, when))


_LUX_SUMMARY = _sorted_record({
    **dict.fromkeys(("Accepted", "Best Share", "Device Hardware%", "Device Rejected%", "Difficulty Accepted",
                     "Difficulty Rejected", "Discarded", "Elapsed", "GHS 30m", "GHS 5s", "GHS av", "Getworks",
                     "Hardware Errors", "Local Work", "Network Blocks", "Pool Rejected%", "Rejected", "Total MH",
                     "Utility", "Work Utility"), "%r"),
    "Difficulty Stale": "0.0", "Found Blocks": "0", "Get Failures": "0", "Last getwork": "0", "Pool Stale%": "0.0",
    "Remote Failures": "0", "Stale": "0",
})


def lux_summary(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """luxos.summary(): cg_summary in plain floats with GH/s rates instead of MH/s, every key sorted."""
    entry = _LUX_FORMATS.get(("summary", fw.description))
    if entry is None:
        entry = _LUX_FORMATS[("summary", fw.description)] = _sorted_object(fw, 11, "Summary", "SUMMARY",
                                                                          _LUX_SUMMARY[0])
    (up, _, _, _, _, _, getworks, accepted, rejected, hw, utility, discarded, local, blocks, total_mh, work_utility,
     diff_accepted, diff_rejected, best), (hw_pct, rejected_pct, _) = _summary_values(s)
    rejected_pct = round(rejected_pct, 4)
    values = _LUX_SUMMARY[1]({
        "Accepted": accepted, "Best Share": best, "Device Hardware%": round(hw_pct, 4),
        "Device Rejected%": rejected_pct, "Difficulty Accepted": round(diff_accepted, 8),
        "Difficulty Rejected": round(diff_rejected, 8), "Discarded": discarded, "Elapsed": up,
        "GHS 30m": round(s.hashrate_15m_hs / GH, 2), "GHS 5s": round(s.hashrate_hs / GH, 2),
        "GHS av": round(s.hashrate_avg_hs / GH, 2), "Getworks": getworks, "Hardware Errors": hw, "Local Work": local,
        "Network Blocks": blocks, "Pool Rejected%": rejected_pct, "Rejected": rejected, "Total MH": round(total_mh, 4),
        "Utility": round(utility, 2), "Work Utility": round(work_utility, 2),
    })
    return entry[0] % ((when, *values) if entry[1] else (*values, when))


_CHAINS = range(1, BOARDS + 1)
_LUX_STATS_NAMES = {family: tuple(f"{family}{b}" for b in _CHAINS) for family in (
    "temp", "temp2_", "temp_pcb", "temp_chip", "temp_pic", "chain_hw", "chain_rate", "freq")}


def _lux_stats_format(fw: Firmware, ident: Identity) -> tuple[tuple[str, bool], Callable[[dict[str, Any]], Any]]:
    from megawatch.simulator.replies import bmminer, luxos  # both import this module

    chips = bmminer._chips(ident)
    idle = BOARDS + 1
    fields: dict[str, str] = {
        "STATS": "0", "ID": '"BTM_SOC0"', "Calls": "0", "Wait": "0", "Max": "0", "Min": "99999999", "Mode": "2",
        "miner_count": str(BOARDS), "fan_num": str(ident.fans), "temp_num": str(BOARDS), "rate_unit": '"GH"',
        "total_acn": str(chips * BOARDS), f"temp_pcb{idle}": '"0-0-0-0"', f"temp_chip{idle}": '"0-0-0-0"',
        f"temp_pic{idle}": '"0-0-0-0"', f"chain_acn{idle}": "0", f"chain_acs{idle}": '""', f"chain_hw{idle}": "0",
        f"chain_rate{idle}": '""', f"freq{idle}": "0", "miner_version": '"49.0.1.3"',
        "miner_id": _json_str(ident.serial),
        **{f"chain_acn{b}": str(chips) for b in _CHAINS}, **{f"chain_acs{b}": f'"{" oo" * chips}"' for b in _CHAINS},
        **dict.fromkeys(("Elapsed", "GHS 5s", "GHS av", "rate_30m", "frequency", "total_rateideal", "total_freqavg",
                         "total rate", "temp_max", "no_matching_work"), "%r"),
        **{f"fan{f}": "%r" for f in range(1, ident.fans + 1)},
        **{name: "%r" for family in ("temp", "temp2_", "chain_hw", "freq") for name in _LUX_STATS_NAMES[family]},
        **{name: "%s" for family in ("temp_pcb", "temp_chip", "temp_pic", "chain_rate")
           for name in _LUX_STATS_NAMES[family]},
    }
    record, getter = _sorted_record(fields)
    header = ",".join(f"{_json_str(k)}:{_json_str(v)}" for k, v in sorted({
        "LUXminer": luxos.VERSION, "Miner": luxos.VERSION, "CompileTime": "Tue Apr 8 22:03:05 UTC 2025",
        "Type": ident.model.name}.items()))
    return _sorted_object(fw, 70, "CGMiner stats", "STATS", "{" + header.replace("%", "%%") + "}," + record), getter


def lux_stats(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """luxos.stats(): its own header, then bmminer's S19-class stats record, every key sorted."""
    key = ("stats", fw.description, ident.model.name, str(ident.fans), ident.serial)
    entry = _LUX_STATS.get(key)
    if entry is None:
        # Per miner (the serial): bounded by the miners of this process.
        entry = _LUX_STATS[key] = _lux_stats_format(fw, ident)
    (fmt, when_first), getter = entry
    total = s.hashrate_hs
    freq = s.frequency_mhz
    board = [round(t) for t in s.board_temp_c]
    chip = [round(t) for t in s.chip_temp_c]
    values: dict[str, Any] = {
        "Elapsed": s.uptime_s, "GHS 5s": round(total / GH, 2), "GHS av": round(s.hashrate_avg_hs / GH, 2),
        "rate_30m": round(s.hashrate_15m_hs / GH, 2), "frequency": freq, "total_rateideal": round(s.nominal_hs / GH, 2),
        "total_freqavg": freq, "total rate": round(total / GH, 2), "temp_max": round(max(s.board_temp_c)),
        "no_matching_work": s.hardware_errors,
    }
    for f, rpm in enumerate(s.fan_rpm, 1):
        values[f"fan{f}"] = rpm
    names = _LUX_STATS_NAMES
    for b in range(BOARDS):
        rate = s.board_hashrate_hs[b]
        values[names["temp"][b]] = board[b]
        values[names["temp2_"][b]] = chip[b]
        values[names["temp_pcb"][b]] = "-".join([str(board[b] - o) for o in _PCB])
        values[names["temp_chip"][b]] = "-".join([str(chip[b] - o) for o in _CHIP])
        values[names["temp_pic"][b]] = "-".join([str(board[b] - o) for o in _PCB])
        values[names["chain_hw"][b]] = int(s.hardware_errors * rate / total) if total else 0
        values[names["chain_rate"][b]] = f"{rate / GH:.2f}"
        values[names["freq"][b]] = freq
    slots = getter(values)
    return fmt % ((when, *slots) if when_first else (*slots, when))


_LUX_STATS: dict[tuple[str, ...], tuple[tuple[str, bool], Callable[[dict[str, Any]], Any]]] = {}


# -- Avalon: the device record with its packed MM ID0 string, then two pool records --------------------------
def _av_pool(n: int) -> str:
    return (f'{{"STATS":{n + 1},"ID":"POOL{n}","Elapsed":%d,"Calls":0,"Wait":0.000000,"Max":0.000000,'
            '"Min":99999999.000000,"Pool Calls":0,"Pool Attempts":0,"Pool Wait":0.000000,"Pool Max":0.000000,'
            '"Pool Min":99999999.000000,"Pool Av":0.000000,"Work Had Roll Time":false,"Work Can Roll":false,'
            '"Work Had Expire":false,"Work Roll Time":0,"Work Diff":262144.00000000,"Min Diff":262144.00000000,'
            '"Max Diff":262144.00000000,"Min Diff Count":%d,"Max Diff Count":%d,"Times Sent":%d,"Bytes Sent":%d,'
            '"Times Recv":%d,"Bytes Recv":%d,"Net Bytes Sent":%d,"Net Bytes Recv":%d}')


_AV_FORMATS: dict[str, str] = {}


def av_stats(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """avalon.stats() (estats too): the AVA100 record around mm_id(), and avalon's two POOL records."""
    from megawatch.simulator.replies import avalon  # avalon imports this module

    fmt = _AV_FORMATS.get(fw.description)
    if fmt is None:
        fmt = _AV_FORMATS[fw.description] = _status(fw, 70, "CGMiner stats") + (
            '"STATS":[{"STATS":0,"ID":"AVA100","Elapsed":%d,"Calls":0,"Wait":0.000000,"Max":0.000000,'
            '"Min":99999999.000000,"MM ID0":%s,"MM Count":1,"Smart Speed":1,"Voltage Level Offset":0,'
            '"Nonce Mask":25},' + _av_pool(0) + "," + _av_pool(1) + '],"id":1}')
    up = s.uptime_s
    accepted = s.accepted
    sent = accepted * 120 + 300
    received = (up // 30 + 5, up * 20 + 1500)
    traffic = (accepted + 3, sent, *received, sent, received[1])
    return fmt % (when, up, _json_str(avalon.mm_id(ident, s)), up, accepted, accepted, *traffic,
                  up, 0, 0, *traffic)


# -- BFGMiner: cgminer's records at a 20 s window, without 1m/5m/15m, and a zero difficulty printed as 0 -----
def _bfg_difficulty(value: float) -> str:
    # bfgminer._zero_as_int(): a difficulty that prints as zero is printed as the integer 0.
    text = f"{value:.8f}"
    return "0" if float(text) == 0 else text


_BFG_FORMATS: dict[tuple[str, ...], str] = {}


def bfg_summary(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bfgminer.summary(): cg_summary(window="20s") without the 1m/5m/15m rates."""
    key = ("summary", fw.description)
    fmt = _BFG_FORMATS.get(key)
    if fmt is None:
        fmt = _BFG_FORMATS[key] = _status(fw, 11, "Summary") + (
            '"SUMMARY":[{"Elapsed":%d,"MHS av":%.2f,"MHS 20s":%.2f,"Found Blocks":0,"Getworks":%d,"Accepted":%d,'
            '"Rejected":%d,"Hardware Errors":%d,"Utility":%.2f,"Discarded":%d,"Stale":0,"Get Failures":0,'
            '"Local Work":%d,"Remote Failures":0,"Network Blocks":%d,"Total MH":%.4f,"Work Utility":%.2f,'
            '"Difficulty Accepted":%s,"Difficulty Rejected":%s,"Difficulty Stale":0,"Best Share":%d,'
            '"Device Hardware%%":%.4f,"Device Rejected%%":%.4f,"Pool Rejected%%":%.4f,"Pool Stale%%":0.0000,'
            '"Last getwork":0}],"id":1}')
    head, tail = _summary_values(s)
    return fmt % (when, *head[0:3], *head[6:16], _bfg_difficulty(head[16]), _bfg_difficulty(head[17]), head[18],
                  *tail)


def bfg_pools(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bfgminer.pools(): cg_pools with zero difficulties printed as 0."""
    user = f"{ident.site}.{ident.index}"
    key = ("pools", fw.description, user)
    fmt = _BFG_FORMATS.get(key)
    if fmt is None:
        # Per miner (the user name): bounded by the miners of this process.
        fmt = _BFG_FORMATS[key] = (_status(fw, 7, "2 Pool(s)") + '"POOLS":[' + _pool_format(0, user, True) + ","
                                   + _pool_format(1, user, True) + '],"id":1}')
    return fmt % (when, *_pool_values(s, now, _bfg_difficulty))


def bfg_devs(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bfgminer.devs(): cg_dev(kind="PGA", window="20s") per board, 1m/5m/15m dropped, zero difficulties 0."""
    key = ("devs", fw.description)
    fmt = _BFG_FORMATS.get(key)
    if fmt is None:
        record = ('{"PGA":%d,"Name":"BTM","ID":%d,"Enabled":"Y","Status":"Alive","Temperature":%.2f,"MHS av":%.2f,'
                  '"MHS 20s":%.2f,"Accepted":%d,"Rejected":%d,"Hardware Errors":%d,"Utility":%.2f,'
                  '"Last Share Pool":%d,"Last Share Time":%d,"Total MH":%.4f,"Diff1 Work":%d,'
                  '"Difficulty Accepted":%s,"Difficulty Rejected":%s,"Last Share Difficulty":%s,"Last Valid Work":%d,'
                  '"Device Hardware%%":%.4f,"Device Rejected%%":%.4f,"Device Elapsed":%d}')
        fmt = _BFG_FORMATS[key] = (_status(fw, 9, f"{BOARDS} PGA(s)") + '"DEVS":[' + ",".join([record] * BOARDS)
                                   + '],"id":1}')
    values: list[object] = [when]
    for b, c in enumerate(_dev_counters(s, now)):
        values += (b, b, s.chip_temp_c[b], c[0], c[1], *c[5:13], _bfg_difficulty(c[13]), _bfg_difficulty(c[14]),
                   _bfg_difficulty(c[15]), *c[16:])
    return fmt % tuple(values)


def bos_fans(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bosminer.fans(): one sorted record per fan."""
    key = ("fans", fw.description, str(len(s.fan_rpm)))
    fmt = _BOS_FORMATS.get(key)
    if fmt is None:
        records = ",".join(f'{{"FAN":{f},"ID":{f},"RPM":%d,"Speed":%d}}' for f in range(len(s.fan_rpm)))
        fmt = _BOS_FORMATS[key] = _status(fw, 202, f"{len(s.fan_rpm)} Fan(s)") + '"FANS":[' + records + '],"id":1}'
    values: list[int] = [when]
    for rpm in s.fan_rpm:
        values += (rpm, min(100, round(rpm * 100 / 6000)))
    return fmt % tuple(values)


def bos_temps(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bosminer.temps(): board and chip temperature per hash chain, sorted records."""
    # Imported here: bosminer imports this module.
    from megawatch.simulator.replies.bosminer import FIRST_CHAIN

    key = ("temps", fw.description)
    fmt = _BOS_FORMATS.get(key)
    if fmt is None:
        records = ",".join(f'{{"Board":%r,"Chip":%r,"ID":{FIRST_CHAIN + b},"TEMP":{b}}}' for b in range(BOARDS))
        fmt = _BOS_FORMATS[key] = _status(fw, 201, f"{BOARDS} Temp(s)") + '"TEMPS":[' + records + '],"id":1}'
    values: list[object] = [when]
    for board, chip in zip(s.board_temp_c, s.chip_temp_c, strict=True):
        values += (board, chip)
    return fmt % tuple(values)


def bos_tunerstatus(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bosminer.tunerstatus(): the miner's power figures and one sorted record per chain."""
    # Imported here: bosminer imports this module.
    from megawatch.simulator.replies.bosminer import FIRST_CHAIN

    key = ("tunerstatus", fw.description)
    fmt = _BOS_FORMATS.get(key)
    if fmt is None:
        chains = ",".join(
            f'{{"ApproximatePowerConsumptionWatt":%d,"HashchainIndex":{FIRST_CHAIN + b},"Iteration":3,'
            '"LoadedProfileCreatedOn":1595938000,"PowerLimitWatt":%d,"StageElapsed":%d,"Status":"Stable",'
            '"TunerRunning":false,"TuningElapsed":600}' for b in range(BOARDS))
        fmt = _BOS_FORMATS[key] = _status(fw, 203, "Tuner Status") + (
            '"TUNERSTATUS":[{"ApproximateChainPowerConsumption":%d,"ApproximateMinerPowerConsumption":%d,'
            '"DynamicPowerScaling":"Disabled","PowerLimit":%d,"TunerChainStatus":[' + chains + ']}],"id":1}')
    total = s.hashrate_hs
    power = s.power_w
    chain_power = [round(power * 0.95 * r / total) if total else 0 for r in s.board_hashrate_hs]
    values: list[int] = [when, sum(chain_power), power, s.power_limit_w]
    for watts in chain_power:
        values += (watts, s.power_limit_w // BOARDS, s.uptime_s)
    return fmt % tuple(values)


def bos_devdetails(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """bosminer.devdetails(): per chain, sorted; the frequency follows the site's load."""
    # Imported here: bosminer imports this module.
    from megawatch.simulator.replies.bosminer import FIRST_CHAIN

    key = ("devdetails", fw.description, ident.model.name)
    fmt = _BOS_FORMATS.get(key)
    if fmt is None:
        model = _json_str(f"Bitmain {ident.model.name}").replace("%", "%%")
        records = ",".join(
            f'{{"Chips":63,"Cores":114,"DEVDETAILS":{b},"Device Path":"","Driver":"bitmain","Frequency":%r,'
            f'"ID":{FIRST_CHAIN + b},"Kernel":"","Model":{model},"Name":"Hash Chain {FIRST_CHAIN + b}",'
            f'"Voltage":{8.416799545288086 + 0.01 * b!r}}}' for b in range(BOARDS))
        fmt = _BOS_FORMATS[key] = _status(fw, 69, "Device Details") + '"DEVDETAILS":[' + records + '],"id":1}'
    frequency = float(s.frequency_mhz * 1_000_000)
    return fmt % (when, *(frequency,) * BOARDS)
