"""The report as one printable HTML page: summary table and inline SVG charts, nothing loaded from elsewhere."""

from __future__ import annotations

from collections import defaultdict
from html import escape
from typing import Any

from megawatch.report import Row

USED, UNKNOWN, ALLOCATED, OVER = "#2b6cb0", "#a0aec0", "#e2e8f0", "#c53030"
CSS = """
body { font: 13px/1.4 system-ui, sans-serif; color: #1a202c; margin: 24px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 6px; break-after: avoid; }
p.meta { color: #4a5568; margin: 0 0 12px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { border-bottom: 1px solid #e2e8f0; padding: 3px 6px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f7fafc; font-weight: 600; }
td.over { color: #c53030; font-weight: 600; }
section { break-inside: avoid; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; }
@media print { body { margin: 10mm; } a { color: inherit; } }
"""


def _num(value: float | None, digits: int = 4) -> str:
    """Four significant digits, whole numbers with separators: a day of a small site is a few MWh, a month
    of a programme tens of thousands, and a few seconds of test data micro-MWh."""
    if value is None:
        return "unknown"
    if value == 0 or abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "unknown" if value is None else f"{100 * value:.1f} %"


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return f"{seconds / 3600:,.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 \
        else f"{seconds:.0f} s"


def bar_chart(rows: list[Row], width: int = 760, height: int = 200) -> str:
    """Per period: energy used (with unknown on top) beside the energy allocated, in MWh."""
    top = max([v for r in rows for v in ((r.energy_mwh or 0) + (r.unknown_mwh or 0), r.allocated_mwh or 0)]
              + [1e-9])
    left, inner_h = 56, height - 44
    slot = (width - left - 10) / max(1, len(rows))
    bar = max(2.0, min(28.0, slot * 0.38))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="energy used and allocated per period">']
    for i in range(5):
        value = top * i / 4
        y = 10 + inner_h - inner_h * i / 4
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#edf2f7"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{_num(value, 3)}</text>')
    for i, r in enumerate(rows):
        x = left + i * slot + slot / 2
        def rect(x0: float, value: float, base: float, colour: str, title: str) -> str:
            h, y0 = inner_h * value / top, 10 + inner_h - inner_h * (value + base) / top
            return (f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                    f'<title>{escape(title)}</title></rect>')
        used, unknown = r.energy_mwh or 0.0, r.unknown_mwh or 0.0
        out.append(rect(x - bar, r.allocated_mwh or 0.0, 0.0, ALLOCATED, f"allocated {_num(r.allocated_mwh)} MWh"))
        out.append(rect(x, used, 0.0, OVER if r.over_mwh else USED, f"used {_num(r.energy_mwh)} MWh"))
        if unknown:
            out.append(rect(x, unknown, used, UNKNOWN, f"unknown {_num(r.unknown_mwh)} MWh"))
        if len(rows) <= 31:
            out.append(f'<text x="{x:.1f}" y="{height - 16}" font-size="10" text-anchor="middle">'
                       f'{escape(r.period_start[5:10] if len(rows) > 1 else "window")}</text>')
    out.append(f'<text x="{width - 10}" y="8" font-size="10" text-anchor="end">MWh</text></svg>')
    return "".join(out)


def _table(rows: list[Row], label: str) -> str:
    head = [label, "Used MWh", "Allocated MWh", "Used", "Peak MW", "Over MWh", "Time over", "Unknown",
            "Allowance", "Estimated", "Hashrate TH/s", "Expected BTC", "BTC/MWh", "J/TH"]
    out = ["<table><thead><tr>", *[f"<th>{h}</th>" for h in head], "</tr></thead><tbody>"]
    for r in rows:
        first = r.name if label == "Site" else f"{r.period_start[:10]}"
        over = ' class="over"' if r.over_mwh else ""
        cells = [escape(first), _num(r.energy_mwh), _num(r.allocated_mwh), _pct(r.used_ratio),
                 _num(r.peak_mw), _num(r.over_mwh), _hours(r.over_s), _pct(r.unknown_share),
                 _pct(r.allowance_share), _pct(r.estimated_share), _num(r.avg_hashrate_ths),
                 _num(r.expected_btc), _num(r.btc_per_mwh), _num(r.j_per_th)]
        out.append("<tr>" + "".join(f"<td{over if i in (5, 6) else ''}>{c}</td>" for i, c in enumerate(cells))
                   + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _totals(rows: list[Row]) -> list[Row]:
    """One row per subject over the whole window (sums of its periods), for the summary."""
    by: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by[(r.scope, r.name)].append(r)
    out = []
    for (scope, name), rs in by.items():
        def total(field: str, rs: list[Row] = rs) -> float | None:
            known = [getattr(r, field) for r in rs if getattr(r, field) is not None]
            return sum(known) if known else None
        energy, allocated, unknown, btc = total("energy_mwh"), total("allocated_mwh"), total("unknown_mwh"), \
            total("expected_btc")
        weighted = [(r.j_per_th, r.energy_mwh) for r in rs if r.j_per_th and r.energy_mwh]
        hashes_th = sum((e or 0) * 3.6e9 / j for j, e in weighted) if weighted else None
        seconds = sum(_span(r) for r in rs)
        out.append(Row(
            rs[0].period_start, rs[-1].period_end, scope, name, energy, allocated,
            energy / allocated if energy is not None and allocated else None,
            max((r.peak_mw for r in rs if r.peak_mw is not None), default=None),
            max((r.peak_utilisation_ratio for r in rs if r.peak_utilisation_ratio is not None), default=None),
            total("over_mwh"), total("over_s"), unknown, total("unknown_s"),
            unknown / ((energy or 0) + unknown) if unknown is not None and (energy or 0) + unknown else None,
            _weighted(rs, "allowance_share"), _weighted(rs, "estimated_share"),
            hashes_th / seconds if hashes_th is not None and seconds else None, btc,
            btc / energy if btc is not None and energy else None,
            energy * 3.6e9 / hashes_th if energy is not None and hashes_th else None,
            sum(r.resets for r in rs), rs[0].data_from))
    return out


def _span(r: Row) -> float:
    from datetime import datetime
    return (datetime.fromisoformat(r.period_end) - datetime.fromisoformat(r.period_start)).total_seconds()


def _weighted(rows: list[Row], field: str) -> float | None:
    pairs = [(getattr(r, field), r.energy_mwh) for r in rows if getattr(r, field) is not None and r.energy_mwh]
    weight = sum(e for _, e in pairs)
    return sum(v * e for v, e in pairs) / weight if weight else None


def render_html(rows: list[Row], meta: dict[str, Any], title: str) -> str:
    summary = _totals(rows)
    by: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by[(r.scope, r.name)].append(r)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p class='meta'>{escape(meta['from'])} to {escape(meta['to'])} ({escape(meta['timezone'])}), "
        f"by {escape(meta['step'])}. Expected BTC is what the measured hashrate earns on average at the "
        "configured difficulty and block reward, not what was mined. Unknown energy is time the collector did "
        "not see, counted at the larger of the last figure and the allocation, and not in the energy used.</p>",
        "<div class='legend'>"
        f"<span><i style='background:{USED}'></i>used</span><span><i style='background:{OVER}'></i>used, "
        f"over the allocation at times</span><span><i style='background:{UNKNOWN}'></i>unknown</span>"
        f"<span><i style='background:{ALLOCATED}'></i>allocated</span></div>",
        "<h2>Summary</h2>",
        _table([r for r in summary if r.scope == "fleet"] + [r for r in summary if r.scope == "site"], "Site"),
    ]
    for (scope, name), rs in sorted(by.items(), key=lambda kv: (kv[0][0] != "fleet", kv[0][1])):
        resets = sum(r.resets for r in rs)
        parts.append(f"<section><h2>{'Fleet' if scope == 'fleet' else 'Site'} {escape(name)}</h2>")
        if resets:
            parts.append(f"<p class='meta'>The collector's counters restarted {resets} time(s) in this window "
                         "without their state file: energy between the last scrape and the restart is missing.</p>")
        parts.append(bar_chart(rs))
        parts.append(_table(rs, "Period"))
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)
