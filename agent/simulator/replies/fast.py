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

from agent.simulator.behaviour import BOARDS, SHARE_DIFFICULTY, Identity, Snapshot
from agent.simulator.replies.common import MH, POOL_HOST, TWO32_PER_MIN, Firmware

_json_str: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
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


def summary(window: str) -> FastSection:
    """cg_summary(ident, s, window) as `summary` answers it."""
    formats: dict[str, str] = {}

    def render(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
        fmt = formats.get(fw.description)
        if fmt is None:
            fmt = formats[fw.description] = _summary_format(fw, window)
        up = s.uptime_s
        accepted = s.accepted
        rejected = s.rejected
        hw = s.hardware_errors
        diff1 = accepted * SHARE_DIFFICULTY
        avg = s.hashrate_avg_hs
        shares = accepted + rejected
        hw_whole = hw + diff1
        rejected_pct = 100.0 * rejected / shares if shares else 0.0
        return fmt % (
            when, up, avg / MH, s.hashrate_hs / MH, s.hashrate_1m_hs / MH, s.hashrate_5m_hs / MH,
            s.hashrate_15m_hs / MH, up // 30 + 1, accepted, rejected, hw, accepted * 60.0 / up if up else 0.0,
            up * 12, up * 4000, up // 600, avg * up / MH, avg / TWO32_PER_MIN if up else 0.0,
            s.difficulty_accepted, rejected * SHARE_DIFFICULTY, s.best_share,
            100.0 * hw / hw_whole if hw_whole else 0.0, rejected_pct, rejected_pct,
        )

    return render


def _pool_format(n: int, user: str) -> str:
    return (
        f'{{"POOL":{n},"URL":{_json_str(f"stratum+tcp://{POOL_HOST}:{3333 + n}")},"Status":"Alive",'
        f'"Priority":{n},"Quota":1,"Long Poll":"N",'.replace("%", "%%")
        + '"Getworks":%d,"Accepted":%d,"Rejected":%d,"Works":%d,"Discarded":%d,"Stale":0,"Get Failures":0,'
        '"Remote Failures":0,"User":' + _json_str(user).replace("%", "%%") + ',"Last Share Time":%d,'
        '"Diff1 Shares":%d,"Proxy Type":"","Proxy":"","Difficulty Accepted":%.8f,"Difficulty Rejected":%.8f,'
        '"Difficulty Stale":0.00000000,"Last Share Difficulty":%.8f,"Work Difficulty":%.8f,"Has Stratum":true,'
        '"Stratum Active":%s,"Stratum URL":%s,"Stratum Difficulty":%.8f,"Has Vmask":true,"Has GBT":false,'
        '"Best Share":%d,"Pool Rejected%%":%.4f,"Pool Stale%%":0.0000,"Bad Work":0,"Current Block Height":%d,'
        '"Current Block Version":536870912}')


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
    up = s.uptime_s
    accepted = s.accepted
    rejected = s.rejected
    shares = s.accepted + s.rejected
    height = 870000 + s.tick // 120
    return fmt % (
        when,
        # the primary
        up // 30 + 1, accepted, rejected, up * 40, up * 12, now - 3 if accepted else 0,
        int(accepted * SHARE_DIFFICULTY), accepted * SHARE_DIFFICULTY, rejected * SHARE_DIFFICULTY,
        SHARE_DIFFICULTY if accepted else 0.0, SHARE_DIFFICULTY, "true", _QUOTED_HOST, SHARE_DIFFICULTY,
        s.best_share, 100.0 * rejected / shares if shares else 0.0, height,
        # the backup: no work, no shares
        1, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, SHARE_DIFFICULTY, "false", '""', 0.0, 0, 0.0, height,
    )


_QUOTED_HOST = _json_str(POOL_HOST)


def _dev_format() -> str:
    return (
        '{"ASC":%d,"Name":"BTM","ID":%d,"Enabled":"Y","Status":"Alive","Temperature":%.2f,"MHS av":%.2f,'
        '"MHS 5s":%.2f,"MHS 1m":%.2f,"MHS 5m":%.2f,"MHS 15m":%.2f,"Accepted":%d,"Rejected":%d,'
        '"Hardware Errors":%d,"Utility":%.2f,"Last Share Pool":%d,"Last Share Time":%d,"Total MH":%.4f,'
        '"Diff1 Work":%d,"Difficulty Accepted":%.8f,"Difficulty Rejected":%.8f,"Last Share Difficulty":%.8f,'
        '"Last Valid Work":%d,"Device Hardware%%":%.4f,"Device Rejected%%":%.4f,"Device Elapsed":%d}')


_DEVS_FORMATS: dict[str, str] = {}


def devs(ident: Identity, s: Snapshot, now: int, when: int, fw: Firmware) -> str:
    """Stock cgminer `devs`: cg_dev(ident, s, b, now) for each hash board."""
    fmt = _DEVS_FORMATS.get(fw.description)
    if fmt is None:
        fmt = _DEVS_FORMATS[fw.description] = (_status(fw, 9, f"{BOARDS} ASC(s)") + '"DEVS":['
                                               + ",".join([_dev_format()] * BOARDS) + '],"id":1}')
    up = s.uptime_s
    total = s.hashrate_hs
    avg = s.hashrate_avg_hs / BOARDS / MH
    one_m = s.hashrate_1m_hs / BOARDS / MH
    five_m = s.hashrate_5m_hs / BOARDS / MH
    fifteen_m = s.hashrate_15m_hs / BOARDS / MH
    total_mh = s.hashrate_avg_hs * up / MH / BOARDS
    values: list[object] = [when]
    for b in range(BOARDS):
        rate = s.board_hashrate_hs[b]
        # board_share(): a miner-wide counter split in proportion to the board's hashrate.
        accepted = int(s.accepted * rate / total) if total else 0
        rejected = int(s.rejected * rate / total) if total else 0
        hw = int(s.hardware_errors * rate / total) if total else 0
        hw_whole = hw + accepted * SHARE_DIFFICULTY
        shares = accepted + rejected
        values += (
            b, b, s.chip_temp_c[b], avg, rate / MH, one_m, five_m, fifteen_m, accepted, rejected, hw,
            accepted * 60.0 / up if up else 0.0, 0 if accepted else -1, now - 3 if accepted else 0, total_mh,
            int(accepted * SHARE_DIFFICULTY), accepted * SHARE_DIFFICULTY, rejected * SHARE_DIFFICULTY,
            SHARE_DIFFICULTY if accepted else 0.0, now - 1, 100.0 * hw / hw_whole if hw_whole else 0.0,
            100.0 * rejected / shares if shares else 0.0, up,
        )
    return fmt % tuple(values)
