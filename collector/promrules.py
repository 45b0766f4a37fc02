"""Write the Prometheus rules (recording rules and alerts) from the alert catalogue and a sites file.

  megawatch rules --config configs/sites.yaml --out configs/prometheus/rules/megawatch.rules.yml
  megawatch rules --config configs/national/sites.yaml --central --out configs/prometheus/central-rules.yml

Lines (near_ratio, stale_after_s, miners_down_ratio, hysteresis_ratio), hold times (hold_s, hold_overrides_s)
and the evaluation interval (poll.interval_s) come from the sites file, so Prometheus judges as the collector
reading that file does. Sites and allocations do not: the rules read the allocation in force from the
collector's series, so one rules file serves any set of sites with those thresholds.
Exit codes: 0 written, 2 a bad config or flag.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import yaml

from megawatch.collector.catalogue import (
    AGENT_CARRY,
    ALERTS,
    COLLECTOR_CARRY,
    FLEET_ALLOCATION,
    FLEET_ALLOWANCE,
    FLEET_MEASURED,
    FLEET_POWER,
    SITE_ALLOCATION,
    SITE_ALLOWANCE,
    SITE_MARGIN,
    SITE_MEASURED,
    SITE_POWER,
    SITE_UNKNOWN,
    STALL_CYCLES,
    UPPER_BOUND_CARRY,
    AlertPath,
    AlertSpec,
    Subject,
    Unit,
    fill,
    setting,
)
from megawatch.collector.config import CollectorConfig, Thresholds
from megawatch.common.textout import emit

CENTRAL_INTERVAL_S = 30.0  # configs/prometheus/federation.yml pulls the site servers every 30 s

def prom_duration(seconds: float) -> str:
    """Seconds in Prometheus's duration syntax, in the largest unit that is exact (60 -> 1m)."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _matching(spec: AlertSpec) -> str:
    return "site" if spec.subject is Subject.SITE else ""


def _who(spec: AlertSpec) -> str:
    return {
        Subject.SITE: "Site {{ $labels.site }}",
        Subject.AGENT: "Agent {{ $labels.instance }} of site {{ $labels.site }}",
        Subject.FLEET: "The fleet",
        Subject.COLLECTOR: "The collector{{ with $labels.instance }} {{ . }}{{ end }}",
        Subject.SITE_SERVER: "Site server {{ $labels.instance }}",
    }[spec.subject]


def _go(code: str) -> str:
    return "{{ " + code + " }}"


def _shown(unit: Unit, of: str, *, signed: bool = False) -> str:
    """Go template code showing the number `of` (e.g. $value) in `unit`."""
    if unit is Unit.WATTS:
        sign = _go(f"if ge {of} 0.0") + "+" + _go("end") if signed else ""
        return sign + _go(f"{of} | humanize") + "W"
    if unit is Unit.RATIO:
        return _go(f"{of} | humanizePercentage")
    if unit is Unit.SECONDS:
        return _go(f"{of} | humanizeDuration")
    return _go(of)


def _queried(spec: AlertSpec, expr: str, unit: Unit, *, signed: bool = False) -> str:
    """Go template code showing `expr` for this alert's subject (the alert's own site, or the fleet)."""
    shown = _shown(unit, ".Value", signed=signed)
    if spec.subject is Subject.SITE:
        shown = _go("if eq .Labels.site $labels.site") + shown + _go("end")
    return _go(f"range query `{expr}`") + shown + _go("end")


def _on(spec: AlertSpec) -> str:
    return f"on ({_matching(spec)}) "


def _fields(spec: AlertSpec, t: Thresholds, config: CollectorConfig) -> dict[str, str]:
    band = 1 - t.hysteresis_ratio
    fields = {"who": _who(spec), "value": _shown(spec.unit, "$value"),
              "stall_s": f"{STALL_CYCLES * config.poll_interval_s:g}"}
    key = spec.threshold
    if key is not None:
        line = float(getattr(t, key))
        fields[key] = f"{line:g}"
        fields.update(line=setting(spec.unit, line), clear=setting(spec.unit, line * band))
    elif spec.line_is_series:
        fields.update(
            line=_queried(spec, spec.line, spec.unit),
            clear=_queried(spec, f"{band:g} * {spec.line}", spec.unit),
            excess=_queried(spec, f"{spec.value} - {_on(spec)}{spec.line}", spec.unit, signed=True),
            ratio=_queried(spec, f"{spec.value} / {_on(spec)}{spec.line}", Unit.RATIO))
    if spec.parts is not None:
        measured, allowance = spec.parts
        fields.update(measured=_queried(spec, measured, Unit.WATTS), allowance=_queried(spec, allowance, Unit.WATTS))
    return fields


def expression(spec: AlertSpec, t: Thresholds, config: CollectorConfig) -> str:
    """The alert's PromQL: value op line, held down to line x (1 - hysteresis) while it is pending or firing."""
    fields = _fields(spec, t, config)
    value = fill(spec.value, fields)
    if not spec.line:
        return value
    if " " in value:
        value = f"({value})"
    line = fill(spec.line, fields)
    on = _on(spec) if spec.line_is_series else ""
    condition = f"{value} {spec.op} {on}{line}"
    if not spec.hysteresis:
        return condition
    band = f"{1 - t.hysteresis_ratio:g}"
    return (f"{condition}\nor\n({value} {spec.op} {on}{band} * {line}\n"
            f'  and {_on(spec)}ALERTS{{alertname="{spec.name}"}})')


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    expr: str
    hold: str
    labels: dict[str, str]
    annotations: dict[str, str]


def alert_rule(spec: AlertSpec, config: CollectorConfig, source: str) -> AlertRule:
    t = config.thresholds
    fields = _fields(spec, t, config)
    return AlertRule(spec.name, expression(spec, t, config), prom_duration(t.hold_for(spec.name)),
                     {"severity": spec.severity.value, "source": source},
                     {"summary": fill(spec.summary, fields), "description": fill(spec.action, fields)})


def _agent(series: str) -> str:
    return f'last_over_time({series}{{job="megawatch-agent"}}[{AGENT_CARRY}])'


def _collector(by: str, series: str) -> str:
    """The collector's current value, else (collector down) its last one: current series only while it is up,
    so a series an old collector instance left behind never mixes with the live one."""
    selector = f'{series}{{job="megawatch-collector"}}'
    return f"max{by}({selector}) or max{by}(last_over_time({selector}[{COLLECTOR_CARRY}]))"


def _pue_aux(series: str) -> str:
    return (f"{series}\n  * on (site) ({_collector(' by (site) ', 'megawatch_site_pue_ratio')})\n"
            f"  + on (site) ({_collector(' by (site) ', 'megawatch_site_aux_power_watts')})")


def _pue(series: str) -> str:
    return f"{series}\n  * on (site) ({_collector(' by (site) ', 'megawatch_site_pue_ratio')})"


_METER_W = 'max by (site) (megawatch_site_meter_power_watts{job="megawatch-collector"})'
_TRUSTED = 'on (site) (max by (site) (megawatch_site_meter_trusted{job="megawatch-collector"}) == 1)'
_NON_MINER = _collector(" by (site) ", "megawatch_site_non_miner_load_watts")
_UNSEEN = _collector(" by (site) ", "megawatch_site_meter_unseen_watts")


def _metered(miners: str, trusted: str, extra: str) -> str:
    """A facility figure of a site: `trusted` while the collector trusts its meter, else `miners` plus, on a metered
    site, `extra` (the declared non-miner load, the load only the meter saw; carried like the config series).
    With the collector down its meter readings go stale at once: the fallback it is."""
    return f"{trusted}\n  and {_TRUSTED}\nor\n(\n{miners}\n) + on (site) ({extra})\nor\n(\n{miners}\n)"


_UPPER = "site:megawatch_miner_upper_bound_watts:sum"
_MEASURED = "site:megawatch_miner_power_watts:sum"
# Measured where an agent answers now, 0 W measured where none does (the upper bound says the site is there).
_MEASURED_OR_0 = f"({_MEASURED} or 0 * {_UPPER})"

_PER_BLOCK = 2**32  # expected hashes per block at difficulty 1
_HASHRATE = "site:megawatch_hashrate_hashes_per_second:sum"
# (comment, record, expr): energy and production (docs/energy.md). Energy is the collector's own counters (it
# integrates every cycle and keeps them across restarts); these are their rates and the production figures.
ENERGY_RECORDS: tuple[tuple[str, str, str], ...] = (
    ("Average draw over the last hour from the collector's energy counters (joules per second = watts).",
     "site:megawatch_energy_joules:rate1h",
     'max by (site) (rate(megawatch_site_energy_joules_total{job="megawatch-collector"}[1h]))'),
    ("", "fleet:megawatch_energy_joules:rate1h",
     'max(rate(megawatch_fleet_energy_joules_total{job="megawatch-collector"}[1h]))'),
    ("Network difficulty and block reward for expected BTC: a series an operator feeds (megawatch_network_difficulty, "
     "megawatch_network_block_reward_btc, e.g. from a node exporter textfile) wins over the sites file's "
     "production settings the collector serves.",
     "megawatch:network_difficulty:max",
     'max(megawatch_network_difficulty) or max(megawatch_production_difficulty{job="megawatch-collector"})'),
    ("", "megawatch:block_reward_btc:max",
     'max(megawatch_network_block_reward_btc) or max(megawatch_production_block_reward_btc'
     '{job="megawatch-collector"})'),
    ("Expected, not mined: hashrate x reward / (difficulty x 2^32) BTC per second.",
     "site:megawatch_expected_btc_per_second:sum",
     f"{_HASHRATE}\n  * on () group_left () (megawatch:block_reward_btc:max\n"
     f"  / on () (megawatch:network_difficulty:max * {_PER_BLOCK}))"),
    ("", "fleet:megawatch_expected_btc_per_second:sum", "sum(site:megawatch_expected_btc_per_second:sum)"),
    ("Efficiency: the judged facility draw per TH/s (J/TH), and expected BTC per MWh of it; none while a site "
     "hashes nothing.",
     "site:megawatch_joules_per_terahash:ratio", f"{SITE_POWER} / on (site) ({_HASHRATE} > 0) * 1e12"),
    ("", "site:megawatch_expected_btc_per_megawatt_hour:ratio",
     f"site:megawatch_expected_btc_per_second:sum * 3.6e9 / on (site) ({SITE_POWER} > 0)"),
    ("", "fleet:megawatch_joules_per_terahash:ratio",
     f"{FLEET_POWER} / on () (sum({_HASHRATE}) > 0) * 1e12"),
    ("", "fleet:megawatch_expected_btc_per_megawatt_hour:ratio",
     f"fleet:megawatch_expected_btc_per_second:sum * 3.6e9 / on () ({FLEET_POWER} > 0)"),
)

# (comment, record, expr) of a site server: the site totals, the way the collector computes them.
SITE_RECORDS: tuple[tuple[str, str, str], ...] = (
    ("Measured: the agents answering now (a scrape that fails leaves no sample, so a dark agent measures "
     "nothing).", _MEASURED, 'sum by (site) (megawatch_site_power_watts{job="megawatch-agent"})'),
    (f"Upper bound: measured plus the agents' allowance for miners whose draw is not known now; an agent that "
     f"stops answering keeps its last upper bound for {UPPER_BOUND_CARRY}, as allowance, so losing sight of a "
     f"site never lowers it.",
     _UPPER, f"sum by (site) (last_over_time(megawatch_site_power_upper_bound_watts{{job=\"megawatch-agent\"}}"
             f"[{UPPER_BOUND_CARRY}]))"),
    ("", "site:megawatch_miner_allowance_watts:sum", f"{_UPPER} - on (site) {_MEASURED_OR_0}"),
    ("", "site:megawatch_hashrate_hashes_per_second:sum",
     f"sum by (site) ({_agent('megawatch_site_hashrate_hashes_per_second')})"),
    ("", "site:megawatch_miners:sum", f"sum by (site, state) ({_agent('megawatch_site_miners')})"),
    ("Allocation in force (schedules applied), PUE and aux are config the collector serves; with the collector "
     "down, the last it served.",
     SITE_ALLOCATION, _collector(" by (site) ", "megawatch_site_allocation_watts")),
    ("Facility figures as the collector's: measured x PUE + aux, allowance x PUE; the judged figure is the upper "
     "bound. A metered site: all measured by its meter while the collector trusts it, else the declared "
     "non-miner load is measured too and the load only the meter saw is allowance.",
     SITE_MEASURED, _metered(_pue_aux(_MEASURED_OR_0), _METER_W, _NON_MINER)),
    ("", SITE_ALLOWANCE, _metered(_pue("site:megawatch_miner_allowance_watts:sum"), f"0 * {_METER_W}", _UNSEEN)),
    # _NON_MINER is an `or`, which binds looser than `+`: unbracketed it would drop the unseen load.
    ("", SITE_POWER, _metered(_pue_aux(_UPPER), _METER_W, f"({_NON_MINER})\n  + on (site) ({_UNSEEN})")),
    ("", "site:megawatch_allowance:ratio", f"{SITE_ALLOWANCE} / on (site) {SITE_POWER}"),
    ("The agents' margin on the draws they estimate, x PUE: uncertainty on known draw, not draw out of sight. "
     "Only from agents answering now, as measured is: a dark agent's whole figure is unknown, margin and all. "
     "The rest of the allowance (never below 0 W: a trusted meter leaves none) is what SiteUnknownShareHigh "
     "judges.",
     SITE_MARGIN, _pue('sum by (site) (megawatch_site_power_allowance_basis_watts{job="megawatch-agent",'
                       'basis=~".*_margin"})')),
    ("", SITE_UNKNOWN, f"clamp_min({SITE_ALLOWANCE} - on (site) ({SITE_MARGIN} or 0 * {SITE_ALLOWANCE}), 0)"),
    ("", "site:megawatch_unknown:ratio", f"{SITE_UNKNOWN} / on (site) {SITE_POWER}"),
    ("", "site:megawatch_utilisation:ratio", f"{SITE_POWER} / on (site) {SITE_ALLOCATION}"),
    ("", "site:megawatch_data_age_seconds:max",
     'time() - min by (site) (last_over_time(megawatch_agent_last_cycle_timestamp_seconds{job="megawatch-agent"}'
     '[1h]))'),
    ("", FLEET_POWER, f"sum({SITE_POWER})"),
    ("", FLEET_MEASURED, f"sum({SITE_MEASURED})"),
    ("", FLEET_ALLOWANCE, f"sum({SITE_ALLOWANCE})"),
    ("", FLEET_ALLOCATION, _collector("", "megawatch_fleet_allocation_watts")),
    *ENERGY_RECORDS,
)

SITE_NOTE = ("A site server: the site totals the collector computes, from the agents' own series, and the "
             "alerts. Run with the collector's job down it still alerts: see CollectorDown.")
CENTRAL_NOTE = ("The central tier (configs/prometheus/federation.yml): fleet totals from the site servers' "
                "federated site series. A site may arrive through two servers (an HA pair scraping the same "
                "agents): max by (site) counts it once. A site server that stops answering leaves its last "
                "figures carried rather than 0 W, and SiteServerDown says so. A site server's own "
                "FleetOverAllocation sees one site only; this one sees them all.")
_FED = f"[{AGENT_CARRY}]"
CENTRAL_RECORDS: tuple[tuple[str, str, str], ...] = (
    ("", "fleet:megawatch_miner_power_watts:sum",
     f"sum(max by (site) (last_over_time(site:megawatch_miner_power_watts:sum{_FED})))"),
    ("", "fleet:megawatch_hashrate_hashes_per_second:sum",
     f"sum(max by (site) (last_over_time(site:megawatch_hashrate_hashes_per_second:sum{_FED})))"),
    ("", "fleet:megawatch_miners:sum",
     f"sum by (state) (max by (site, state) (last_over_time(site:megawatch_miners:sum{_FED})))"),
    (f"A site's upper bound is carried for {UPPER_BOUND_CARRY}, as the site servers carry their agents': losing "
     f"sight of a site never lowers the fleet's figure. What is measured is only what arrives now; the rest is "
     f"allowance.", FLEET_POWER, f"sum(max by (site) (last_over_time({SITE_POWER}[{UPPER_BOUND_CARRY}])))"),
    ("", FLEET_MEASURED, f"sum(max by (site) ({SITE_MEASURED})) or 0 * {FLEET_POWER}"),
    ("", FLEET_ALLOWANCE, f"{FLEET_POWER} - {FLEET_MEASURED}"),
    ("Every site server serves the fleet allocation from the collector: one figure, max() not sum().",
     FLEET_ALLOCATION, f"max(last_over_time(megawatch_fleet_allocation_watts[{COLLECTOR_CARRY}]))"),
    ("", "fleet:megawatch_utilisation:ratio", f"{FLEET_POWER} / on () {FLEET_ALLOCATION}"),
    ("", "fleet:megawatch_sites_reporting:count", "count(max by (site) (site:megawatch_miner_power_watts:sum))"),
)


def _scalar(text: str, indent: str, *, plain: bool = True) -> str:
    """A YAML scalar: plain when it reads back unchanged, else a literal block or a double-quoted string."""
    if "\n" in text:
        return "|-\n" + "\n".join(indent + "  " + line for line in text.splitlines())
    if plain and yaml.safe_load(f"k: {text}") == {"k": text}:
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _comment(text: str, indent: str) -> list[str]:
    if not text:
        return []
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(indent) + 2 + len(line) + 1 + len(word) > 110:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [f"{indent}# {x}" for x in [*lines, line]]


def render(config: CollectorConfig, origin: str, *, central: bool = False) -> str:
    """The rules file for a site server (or, central=True, for the central tier), as YAML text."""
    path = AlertPath.CENTRAL if central else AlertPath.PROMETHEUS
    source = "prometheus-central" if central else "prometheus"
    interval = CENTRAL_INTERVAL_S if central else config.poll_interval_s
    command = f"megawatch rules --config {origin}" + (" --central" if central else "")
    out = _comment(f"Generated by `{command}`: do not edit. Alerts come from the alert catalogue "
                   "(collector/catalogue.py), lines and hold times from that sites file's thresholds, the "
                   + ("evaluation interval from federation.yml's scrape interval. " if central else
                      "evaluation interval from its poll.interval_s. ")
                   + "Change those and regenerate; docs/alerts.md explains each alert.", "")
    out += _comment(CENTRAL_NOTE if central else SITE_NOTE, "")
    out += [
        "groups:",
        f"  - name: {'megawatch-central' if central else 'megawatch'}",
        f"    interval: {prom_duration(interval)}",
        "    rules:",
    ]
    ind = "      "
    for comment, record, expr in CENTRAL_RECORDS if central else SITE_RECORDS:
        out += _comment(comment, ind)
        out += [f"{ind}- record: {record}", f"{ind}  expr: {_scalar(expr, ind + '  ')}"]
    out += _comment("Alerts run in the same group after the totals, so they see this evaluation's totals.", ind)
    for spec in ALERTS.values():
        if path not in spec.paths:
            continue
        rule = alert_rule(spec, config, source)
        out += [f"{ind}- alert: {rule.name}", f"{ind}  expr: {_scalar(rule.expr, ind + '  ')}",
                f"{ind}  for: {rule.hold}", f"{ind}  labels:"]
        out += [f"{ind}    {k}: {_scalar(v, ind + '    ')}" for k, v in rule.labels.items()]
        out.append(f"{ind}  annotations:")
        out += [f"{ind}    {k}: {_scalar(v, ind + '    ', plain=False)}" for k, v in rule.annotations.items()]
    return "\n".join(out) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="SITES.yaml",
                        help="the sites file whose thresholds, hold times and poll interval the rules use")
    parser.add_argument("--out", metavar="FILE", help="write the rules here (default: standard output)")
    parser.add_argument("--central", action="store_true",
                        help="the central tier's rules (fleet totals from federated site series)")


def run(args: argparse.Namespace) -> int:
    from megawatch.collector.config import load_collector_config
    from megawatch.common.configfile import ConfigError

    try:
        config = load_collector_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    text = render(config, args.config, central=args.central)
    return emit(text, args.out)
