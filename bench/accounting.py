"""`python -m bench --accounting`: a site's figure against the simulator's truth, fault mix by fault mix.

A simulator with four metered sites (mixed dialects: some power reported by firmware, some estimated from
hashrate; each site's meter on its own register map), one agent per site and a collector, all on loopback.
For each fault mix in turn the fault goes in through the control endpoint; once every agent has polled twice
since and the collector has added that up (and a faulted meter has been judged), `cycles` collector cycles
are checked, each against the truth fetched right after it:

- truth: the simulator's true facility draw (true miner draw x PUE + aux + non-miner load, the meter's truth);
- the site's figure (`facility_power_w`, what the allocation is judged on) must not be below it. A figure
  taken from a meter (trusted now, or its last excess carried while it is not) is allowed the meter's
  accuracy (METER_TOLERANCE): an instrument, not a bound. Anything lower is a violation, printed loudly;
- beside it the miners' own figures (measured, allowance, upper bound), what the site read before
  allowances (measured only: the under-count the issue is about) and the meter, each as error against truth.
  The miners' upper bound must not be below what the miners truly draw (truth less undeclared load) either:
  a site without a meter is judged on it. Except in a mix the miners cannot see (`miners_blind`: a surge
  draws more at the same hashrate, which no reading shows; meters and their reconciliation alert are for
  that), a cycle where it is lower is a violation too.

The faults are cleared (and every site back to ok on its meter) before the next mix.
"""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from bench.procs import BenchError, Proc, free_port, http_json, megawatch_command, wait_for

AGENT_S, COLLECTOR_S, METER_STALE_S = 3.0, 2.0, 5.0
# A meter answering late on a busy machine is not the fault under test: the read may take most of a cycle.
READ_TIMEOUT_S = 1.5
# The whole poll of one miner may take most of a cycle: a busy shared machine must not turn slow replies into
# miners down (allowance is conservative, but it is not what a fault mix is about).
CONNECT_S, REQUEST_S = 1.0, 2.5
METER_TOLERANCE = 0.005  # a class 0.5 revenue meter: its reading is the truth within 0.5%
MW = 1e6


@dataclass(frozen=True, slots=True)
class SiteSpec:
    id: str
    groups: tuple[tuple[float, str, str], ...]  # (share of the site, model, dialect)
    sim_meter: dict[str, Any]
    reader: dict[str, Any]  # the collector's `meter:` section, host and port added at run time
    pue: float
    aux_kw: float
    declared_kw: float = 0.0  # non-miner load on the feeder, declared to the collector


SITES = (
    SiteSpec("a", ((0.4, "Antminer S19 Pro", "bmminer"), (0.3, "Whatsminer M30S++", "btminer"),
                   (0.3, "Antminer S19", "cgminer")),
             {"map": "sunspec", "unit_id": 1}, {"map": "sunspec", "unit_id": 1}, 1.05, 20.0),
    SiteSpec("b", ((0.4, "Antminer S19j Pro", "bosminer"), (0.3, "Antminer S21", "luxos"),
                   (0.3, "Antminer S9k", "bfgminer")),
             {"map": "sdm630", "unit_id": 3}, {"map": "sdm630", "unit_id": 3}, 1.08, 10.0),
    SiteSpec("c", ((0.5, "Avalon A1246", "avalon"), (0.5, "Antminer S19 XP", "bmminer")),
             {"map": "pm5100", "unit_id": 255}, {"map": "pm5100", "unit_id": 255}, 1.12, 0.0),
    SiteSpec("d", ((0.3, "Whatsminer M30S++", "btminer"), (0.4, "Antminer S19 Pro", "bmminer"),
                   (0.3, "Antminer S21", "luxos")),
             {"map": "generic", "unit_id": 1, "generic": {"function": "input", "power_address": 500,
                                                           "energy_address": 510, "type": "int32",
                                                           "word_order": "little", "power_scale": 0.1,
                                                           "energy_scale": 10.0}},
             {"map": "generic", "unit_id": 1, "registers": {
                 "power": {"table": "input", "address": 500, "type": "int32", "word_order": "little",
                           "scale": 0.1, "unit": "W"},
                 "energy_import": {"table": "input", "address": 510, "type": "int32", "word_order": "little",
                                   "scale": 10, "unit": "Wh"}}},
             1.03, 5.0, declared_kw=50.0),
)


def _counts(spec: SiteSpec, miners: int) -> list[int]:
    counts = [max(1, int(share * miners)) for share, _, _ in spec.groups]
    counts[0] += max(0, miners - sum(counts))
    return counts


def site_address(base: str, index: int) -> str:
    return str(ipaddress.IPv4Address(base) + index * 1024)


def write_sim(path: Path, base: str, miners: int) -> None:
    sites = []
    for i, spec in enumerate(SITES):
        meter = {"host": "127.0.0.1", "port": 0, "pue": spec.pue, "aux_kw": spec.aux_kw,
                 "extra_load_kw": spec.declared_kw, **spec.sim_meter}
        sites.append({"id": spec.id, "address": site_address(base, i), "ambient_c": 22 + 4 * i, "meter": meter,
                      "groups": [{"count": n, "model": m, "dialect": d}
                                 for n, (_, m, d) in zip(_counts(spec, miners), spec.groups, strict=True)]})
    config = {"seed": 12, "tick_s": 1, "control": {"host": "127.0.0.1", "port": 0}, "sites": sites}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def write_agent(path: Path, spec: SiteSpec, first: str, miners: int) -> None:
    last = ipaddress.IPv4Address(first) + miners - 1
    config = {"site": spec.id, "agent_id": f"bench-{spec.id}", "miners": [{"range": f"{first}-{last}"}],
              "poll": {"interval_s": AGENT_S, "connect_timeout_s": CONNECT_S, "request_timeout_s": REQUEST_S,
                       "jitter_s": 0, "stale_grace_s": AGENT_S},
              "http": {"listen": "127.0.0.1", "port": 0}, "log": {"format": "json", "level": "info"}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def write_collector(path: Path, agents: dict[str, str], meter_ports: dict[str, int],
                    allocations_w: dict[str, float]) -> None:
    sites = []
    mw = {site: round(w / MW, 4) for site, w in allocations_w.items()}
    for spec in SITES:
        meter = {"host": "127.0.0.1", "port": meter_ports[spec.id], "timeout_s": READ_TIMEOUT_S,
                 "stale_after_s": METER_STALE_S, "non_miner_load_mw": spec.declared_kw / 1000, **spec.reader}
        sites.append({"id": spec.id, "allocation_mw": mw[spec.id], "pue": spec.pue,
                      "aux_mw": spec.aux_kw / 1000, "agents": [agents[spec.id]], "meter": meter})
    config = {"fleet": {"name": "accounting-bench", "allocation_mw": round(sum(mw.values()), 4)},
              "sites": sites, "thresholds": {"stale_after_s": 3 * AGENT_S, "meter_mismatch_ratio": 0.05},
              "poll": {"interval_s": COLLECTOR_S, "timeout_s": READ_TIMEOUT_S}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _send(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    with urllib.request.urlopen(request, timeout=10) as resp:  # the simulator's loopback control endpoint
        return json.loads(resp.read())


@dataclass(slots=True)
class Rig:
    control: str
    collector: str
    agents: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)

    def fault(self, site: str, kind: str, fraction: float, **params: float) -> None:
        _send("POST", self.control + "/api/v1/faults", {"site": site, "fault": kind, "fraction": fraction, **params})

    def meter_fault(self, site: str, kind: str, **params: float) -> None:
        _send("POST", self.control + f"/api/v1/meters/{site}/fault", {"fault": kind, **params})

    def extra_load(self, site: str, kw: float) -> None:
        _send("POST", self.control + f"/api/v1/meters/{site}/extra_load", {"kw": kw})

    def reset(self) -> None:
        _send("DELETE", self.control + "/api/v1/faults")
        for spec in SITES:
            _send("DELETE", self.control + f"/api/v1/meters/{spec.id}/fault")
            self.extra_load(spec.id, spec.declared_kw)

    def truth(self) -> dict[str, Any]:
        body: dict[str, Any] | None = http_json(self.control + "/api/v1/truth", 10)
        if body is None:
            raise BenchError(f"the simulator's /api/v1/truth did not answer; {self.procs['simulator'].log_tail()}")
        return body

    def sites(self) -> dict[str, Any] | None:
        return http_json(self.collector + "/api/v1/sites", 5)

    def agent_cycle(self, site: str) -> int:
        body = http_json(self.agents[site] + "/api/v1/summary", 5)
        return int(body["cycle"]["number"] or 0) if body is not None else -1


@dataclass(frozen=True, slots=True)
class Mix:
    key: str
    title: str
    apply: Callable[[Rig, dict[str, Any]], None]
    meters_down: tuple[str, ...] = ()  # sites whose meter must be judged untrusted before checking
    # The fault changes what miners draw without changing anything they report: no upper bound the miners'
    # readings give can cover it, so only the site's figure (a meter) is held to the truth.
    miners_blind: bool = False


def _everywhere(action: Callable[[Rig, str, int], None]) -> Callable[[Rig, dict[str, Any]], None]:
    def apply(rig: Rig, _: dict[str, Any]) -> None:
        for i, spec in enumerate(SITES):
            action(rig, spec.id, i)
    return apply


def _extra(rig: Rig, truth: dict[str, Any]) -> None:
    for spec in SITES:  # a GPU hall nobody declared: 8% of the site, on the feeder only
        rig.extra_load(spec.id, spec.declared_kw + 0.08 * truth["sites"][spec.id]["meter"]["truth_w"] / 1000)


def _extra_then_offline(rig: Rig, truth: dict[str, Any]) -> None:
    """The undeclared load, seen by every meter while trusted, then every meter gone: what was seen is carried.
    (A meter lost in the same instant the load appears cannot tell anyone about it.)"""
    _extra(rig, truth)
    expected = {s.id: truth["sites"][s.id]["meter"]["truth_w"] * 1.06 for s in SITES}

    def seen() -> bool | None:
        sites = (rig.sites() or {}).get("sites", [])
        return True if len(sites) == len(SITES) and all(
            s["meter"]["state"] == "ok" and (s["meter"]["unseen_w"] or 0) > 0
            and (s["meter"]["power_w"] or 0) > expected[s["id"]] for s in sites) else None
    wait_for("every meter trusted with the undeclared load", seen, 10 * COLLECTOR_S + 5, rig.procs["collector"],
             every_s=0.2)
    _everywhere(lambda r, site, _: r.meter_fault(site, "offline"))(rig, truth)


_ALL = tuple(s.id for s in SITES)
MIXES: dict[str, Mix] = {m.key: m for m in (
    Mix("none", "no faults", lambda rig, _: None),
    Mix("hung10", "10% of every site's miners hung (API silent, still hashing)",
        _everywhere(lambda r, site, _: r.fault(site, "hang", 0.1))),
    Mix("dark", "every miner of site a hung: the site is dark to its agent",
        lambda rig, _: rig.fault("a", "hang", 1.0)),
    Mix("surge", "power surge x1.3 on 10% of every site's miners",
        _everywhere(lambda r, site, _: r.fault(site, "power_surge", 0.1, factor=1.3)), miners_blind=True),
    Mix("meter_stale", "every meter stale (a gateway repeating its cache)",
        _everywhere(lambda r, site, _: r.meter_fault(site, "stale")), _ALL),
    Mix("meter_offline", "every meter offline (connection refused)",
        _everywhere(lambda r, site, _: r.meter_fault(site, "offline")), _ALL),
    Mix("meter_scale", "every meter on a wrong scale: x1000 at a, c; /10 at b, d",
        _everywhere(lambda r, site, i: r.meter_fault(site, "wrong_scale", exponent=3 if i % 2 == 0 else -1)), _ALL),
    Mix("extra_load", "non-miner load nobody declared (8% of each site): the meter sees it, the miners do not",
        _extra),
    Mix("extra_then_offline", "that undeclared load, then every meter offline: the load last seen is carried",
        _extra_then_offline, _ALL),
)}


def _fresh_cycle(rig: Rig, after: float, timeout_s: float) -> dict[str, Any]:
    """The collector's first /api/v1/sites whose cycle ended after `after` (its `at`, wall clock)."""
    def check() -> dict[str, Any] | None:
        body = rig.sites()
        return body if body is not None and body["at"] is not None and body["at"] > after else None
    return wait_for("a collector cycle", check, timeout_s, rig.procs["collector"], every_s=0.1)


def _reached(rig: Rig, site: str, cycle: int) -> bool | None:
    return True if rig.agent_cycle(site) >= cycle else None


def _settle(rig: Rig, mix: Mix, timeout_s: float) -> float:
    """Wait until the mix has reached every process; returns how long that took."""
    t0 = time.monotonic()
    want = {s.id: rig.agent_cycle(s.id) + 2 for s in SITES}  # one cycle may have begun before the fault
    for site, cycle in want.items():
        wait_for(f"agent {site} cycle {cycle}", partial(_reached, rig, site, cycle), timeout_s,
                 rig.procs[f"agent-{site}"], every_s=0.2)
    polled = time.time()
    if mix.meters_down:
        def judged() -> bool | None:
            body = rig.sites()
            states = {s["id"]: s["meter"]["state"] for s in (body or {}).get("sites", [])}
            return True if all(states.get(site) not in (None, "ok") for site in mix.meters_down) else None
        wait_for("the faulted meters judged untrusted", judged, METER_STALE_S + timeout_s, rig.procs["collector"],
                 every_s=0.2)
    _fresh_cycle(rig, max(polled, time.time()), timeout_s)
    return time.monotonic() - t0


def _healthy(rig: Rig, timeout_s: float) -> None:
    """Every site back on its meter, every miner measured (after a reset)."""
    seen: list[str] = []

    def check() -> bool | None:
        sites = (rig.sites() or {}).get("sites", [])
        seen[:] = [f"{s['id']} {s['status']}, meter {s['meter']['state']} {s['meter'].get('error') or ''}".strip()
                   for s in sites]
        ok = len(sites) == len(SITES) and all(s["status"] == "ok" and s["figure_source"] == "meter" for s in sites)
        return True if ok else None
    try:
        wait_for("every site ok on its meter", check, timeout_s, rig.procs["collector"], every_s=0.2)
    except BenchError as exc:
        raise BenchError(f"{exc} (last seen: {'; '.join(seen) or 'no sites'})") from None


def row(site: dict[str, Any], truth_site: dict[str, Any], spec: SiteSpec) -> dict[str, Any]:
    """One site at one cycle: every figure in W and its error against the truth."""
    meter_truth = truth_site["meter"]
    truth = meter_truth["truth_w"]
    pue, aux, declared = site["pue"], site["aux_w"], spec.declared_kw * 1000
    miners_measured = site["miner_power_w"] or 0.0
    measured_only = miners_measured * pue + aux + declared  # the site's figure before allowances
    allowance = (site["miner_allowance_w"] or 0.0) * pue
    upper = measured_only + allowance  # the miners' upper bound at the facility
    figure = site["facility_power_w"]
    meter = site["meter"]
    source = site["figure_source"]
    carried = meter.get("unseen_w") or 0.0
    from_meter = source == "meter" or carried > 0
    floor = truth * (1 - METER_TOLERANCE) if from_meter else truth

    def err(value: float | None) -> float | None:
        return None if value is None or truth <= 0 else (value - truth) / truth

    # What the miners can know of: the undeclared load is the meter's alone.
    visible = truth_site["power_w"] * pue + aux + declared
    reported, estimable = truth_site["power_w_reported"], truth_site["power_w_estimable"]
    return {
        "site": site["id"], "truth_w": truth, "miners_truth_w": truth_site["power_w"],
        "measured_only_w": measured_only, "allowance_w": allowance, "upper_bound_w": upper,
        "meter_w": meter.get("power_w"), "meter_state": meter["state"], "carried_w": carried,
        "figure_w": figure, "source": source, "status": site["status"],
        "allowance_ratio": site.get("allowance_ratio"),
        "err_measured_only": err(measured_only), "err_upper_bound": err(upper),
        "err_meter": err(meter.get("power_w")) if meter["state"] == "ok" else None, "err_figure": err(figure),
        "violation": figure is None or figure < floor,
        "miners_visible_truth_w": visible, "upper_bound_short": upper < visible,
        "err_upper_bound_visible": (upper - visible) / visible if visible > 0 else None,
        # Where the miners' figure errs: firmware sensors, and J/TH x hashrate against the true draw.
        "err_firmware": (reported - truth_site["power_w_reported_true"]) / reported if reported else None,
        "err_estimate": (estimable - truth_site["power_w_unmeasured"]) / estimable if estimable else None,
        "meter_fault": meter_truth.get("fault"), "extra_load_w": meter_truth.get("extra_load_w"),
    }


def run_mix(rig: Rig, mix: Mix, cycles: int, timeout_s: float, say: Callable[[str], None]) -> dict[str, Any]:
    rig.reset()
    _healthy(rig, timeout_s)
    mix.apply(rig, rig.truth())
    settle_s = _settle(rig, mix, timeout_s)
    say(f"  {mix.key}: {mix.title} (reached every process in {settle_s:.1f} s)")
    checked: list[list[dict[str, Any]]] = []
    last = 0.0
    for _ in range(cycles):
        body = _fresh_cycle(rig, last, timeout_s)
        last = body["at"]
        truth = rig.truth()
        by_id = {s["id"]: s for s in body["sites"]}
        checked.append([row(by_id[spec.id], truth["sites"][spec.id], spec) for spec in SITES])
    return {**judge(mix, checked, say), "settle_s": settle_s}


def judge(mix: Mix, checked: list[list[dict[str, Any]]], say: Callable[[str], None]) -> dict[str, Any]:
    """A mix's checked cycles (rows from `row`): each violation printed at once, and counted."""
    violations = [r for cycle in checked for r in cycle if r["violation"]]
    for r in violations:
        say(f"  !!! VIOLATION {mix.key} site {r['site']}: truth {r['truth_w'] / 1e3:,.1f} kW > figure "
            f"{(r['figure_w'] or 0) / 1e3:,.1f} kW ({r['source']}, meter {r['meter_state']}, status {r['status']})")
    short = [r for cycle in checked for r in cycle if r["upper_bound_short"]]
    if not mix.miners_blind:
        for r in short:
            say(f"  !!! VIOLATION {mix.key} site {r['site']}: the miners truly draw "
                f"{r['miners_visible_truth_w'] / 1e3:,.1f} kW > their upper bound {r['upper_bound_w'] / 1e3:,.1f} kW "
                f"({_pct(r['err_upper_bound_visible'])}, status {r['status']})")
    return {"key": mix.key, "title": mix.title, "cycles": checked,
            "violations": len(violations), "miners_blind": mix.miners_blind,
            "upper_bound_short": len(short), "upper_bound_violations": 0 if mix.miners_blind else len(short)}


def measure(logs: Path, *, miners: int, mixes: list[str], cycles: int, base: str, budget: Any,
            say: Callable[[str], None] = print) -> dict[str, Any]:
    # Not pinned: this phase judges figures, not speed, and four agents on one core of a shared machine would
    # turn late replies into miners down.
    logs.mkdir(parents=True, exist_ok=True)
    write_sim(logs / "sim.yaml", base, miners)
    started: list[Proc] = []
    say(f"[accounting] {len(SITES)} sites x {miners} miners from {base}, agents every {AGENT_S:g} s, collector "
        f"every {COLLECTOR_S:g} s; {cycles} checked cycles per mix")
    try:
        sim = Proc("simulator", [*megawatch_command(), "simulate", "--config", str(logs / "sim.yaml"),
                                 "--log-format", "json"], logs / "simulator.log", None, pipe_stdout=True)
        started.append(sim)
        deadline = time.monotonic() + budget.cap(120)
        line = ""
        while not line.startswith("control endpoint:"):
            line = sim.read_line(max(1.0, deadline - time.monotonic()))
        control = line.split()[2].rstrip("/")
        truth = wait_for("the simulator's truth", lambda: http_json(control + "/api/v1/truth", 5), 30, sim)
        agents: dict[str, str] = {}
        procs = {"simulator": sim}
        for i, spec in enumerate(SITES):
            write_agent(logs / f"agent-{spec.id}.yaml", spec, site_address(base, i), miners)
            port = free_port()
            proc = Proc(f"agent-{spec.id}", [*megawatch_command(), "agent", "--config",
                                              str(logs / f"agent-{spec.id}.yaml"), "--listen", f"127.0.0.1:{port}"],
                        logs / f"agent-{spec.id}.log", None)
            started.append(proc)
            procs[proc.name] = proc
            agents[spec.id] = f"http://127.0.0.1:{port}"
        # Allocations 10% over each site's truth now: a figure's errors show against a real allocation.
        allocations = {s.id: truth["sites"][s.id]["meter"]["truth_w"] * 1.1 for s in SITES}
        ports = {s.id: truth["sites"][s.id]["meter"]["port"] for s in SITES}
        write_collector(logs / "sites.yaml", agents, ports, allocations)
        cport = free_port()
        collector = Proc("collector", [*megawatch_command(), "collector", "--config", str(logs / "sites.yaml"),
                                       "--listen", f"127.0.0.1:{cport}", "--log-format", "json"],
                         logs / "collector.log", None)
        started.append(collector)
        procs["collector"] = collector
        rig = Rig(control, f"http://127.0.0.1:{cport}", agents, procs)
        timeout = 10 * AGENT_S + 10
        _healthy(rig, budget.cap(90))  # the agents' first cycles detect every miner's dialect
        results = []
        for key in mixes:
            results.append(run_mix(rig, MIXES[key], cycles, budget.cap(timeout), say))
        rig.reset()
    finally:
        for proc in reversed(started):
            proc.stop()
    return {"miners_per_site": miners, "cycles": cycles, "meter_tolerance": METER_TOLERANCE, "mixes": results,
            "violations": sum(m["violations"] for m in results),
            "upper_bound_short": sum(m["upper_bound_short"] for m in results),
            "upper_bound_violations": sum(m["upper_bound_violations"] for m in results)}


def _kw(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e3:,.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2%}"


def report(result: dict[str, Any]) -> str:
    """Per mix and site: the last checked cycle's figures; the check and the worst errors over every cycle."""
    lines = [f"Accounting against the simulator's truth: {len(SITES)} sites x {result['miners_per_site']} miners, "
             f"{result['cycles']} collector cycles checked per mix. kW; (x%) = (figure - truth) / truth; the "
             "upper bound's error is against what the miners can know of (truth less undeclared load)."]
    head = (f"  {'site':4} {'truth':>8} {'measured only':>17} {'allowance':>9} {'upper bound':>17} "
            f"{'firmware':>8} {'estimate':>8} {'meter':>21} {'figure [source]':>24} {'status':>8}  check")
    for mix in result["mixes"]:
        lines += ["", f"{mix['key']}: {mix['title']}", head]
        cycles = mix["cycles"]
        for i, r in enumerate(cycles[-1]):
            mine = [c[i] for c in cycles]
            bad = sum(1 for c in mine if c["violation"] or (c["upper_bound_short"] and not mix["miners_blind"]))
            worst = min((c["err_figure"] for c in mine if c["err_figure"] is not None), default=None)
            verdict = f"ok (worst {_pct(worst)})" if not bad else f"VIOLATED in {bad} of {len(mine)} cycles"
            sources = {src: sum(1 for c in mine if c["source"] == src) for src in {c["source"] for c in mine}}
            if len(sources) > 1:  # a meter read that timed out on a busy machine: that cycle fell back
                verdict += "; figure from " + ", ".join(f"{k} {n}x" for k, n in sorted(sources.items()))
            meter = f"{_kw(r['meter_w'])} {r['meter_state']}" + (
                f" ({_pct(r['err_meter'])})" if r["err_meter"] is not None else "")
            lines.append(
                f"  {r['site']:4} {_kw(r['truth_w']):>8} {_kw(r['measured_only_w']):>7} "
                f"({_pct(r['err_measured_only'])}) {_kw(r['allowance_w']):>9} {_kw(r['upper_bound_w']):>7} "
                f"({_pct(r['err_upper_bound_visible'])}) {_pct(r['err_firmware']):>8} {_pct(r['err_estimate']):>8} "
                f"{meter:>21} {_kw(r['figure_w']) + ' [' + r['source'] + '] (' + _pct(r['err_figure']) + ')':>24} "
                f"{r['status']:>8}  {verdict}")
    lines += ["", "measured only: the miners' fresh readings x PUE + aux + declared load, what a site read before "
              "allowances; upper bound: that + the allowance for miners not known now (x PUE), the site's figure "
              "without a meter; firmware / estimate: error of the power firmware reports / of hashrate x J/TH, "
              "against those miners' true draw; figure: what the allocation is judged on (the meter when trusted, "
              f"allowed its {METER_TOLERANCE:.1%} accuracy)."]
    site_cycles = sum(len(m["cycles"]) for m in result["mixes"]) * len(SITES)
    for blind in (False, True):
        rows = [r for m in result["mixes"] if m["miners_blind"] is blind for c in m["cycles"] for r in c]
        short = [r for r in rows if r["upper_bound_short"]]
        if not short:
            continue
        worst = min(short, key=lambda r: r["err_upper_bound_visible"])
        where = ("in a mix the miners cannot see (a surge: more draw at the same hashrate), where the meter is the "
                 "figure" if blind else "with nothing hidden from the miners: VIOLATION")
        lines.append(f"NOTE: the miners' upper bound was below what they truly draw in {len(short)} of {len(rows)} "
                     f"site-cycles, worst {_pct(worst['err_upper_bound_visible'])} (site {worst['site']}), {where}.")
    total = result["violations"]
    lines.append(f"truth > figure: {total} violation(s) in {site_cycles} site-cycles" +
                 ("" if not total else "  <<< A SITE'S FIGURE UNDER-COUNTED ITS TRUE DRAW"))
    upper = result.get("upper_bound_violations", 0)
    lines.append(f"miners' truth > their upper bound (outside surge mixes): {upper} violation(s)" +
                 ("" if not upper else "  <<< A SITE WITHOUT A METER WOULD BE JUDGED LOW"))
    return "\n".join(lines)

