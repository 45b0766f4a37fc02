"""Pure: fleet totals + thresholds -> alert states, with hold times and hysteresis, driven by the caller's clock.

Which alerts there are, what each judges against which line and how it reads come from the alert catalogue
(collector/catalogue.py); this module evaluates the collector's share of it. A condition starts when its value
crosses the line and, for an alert with hysteresis, ends only once the value is below line x
(1 - hysteresis_ratio), so a draw hovering on the line neither flaps nor restarts its hold time. An alert fires
once its condition has lasted its hold time. An unknown value (no data at all) never starts or ends a
condition: the last state is kept, and SiteDataStale says why.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from megawatch.collector.catalogue import (
    ALERTS,
    AlertPath,
    AlertSpec,
    Subject,
    Unit,
    duration,
    figure,
    fill,
    mw,
    setting,
)
from megawatch.collector.config import Thresholds
from megawatch.collector.model import Alert, AlertPhase, FleetTotals, Severity, SiteTotals
from megawatch.collector.sitemeter import MeterState

Labels = tuple[tuple[str, str], ...]
RESOLVED_KEPT = 100  # resolved alerts remembered for /api/v1/alerts
__all__ = ["Check", "Evaluation", "RuleEngine", "clock", "duration", "latched", "mw"]


@dataclass(frozen=True, slots=True)
class Check:
    """One subject's condition at one evaluation: `active` None means unknown (keep the last state)."""

    name: str
    labels: Labels
    severity: Severity
    active: bool | None
    value: float | None
    summary: str
    description: str  # "{since}" in it is replaced by when the condition started


@dataclass(frozen=True, slots=True)
class Evaluation:
    active: tuple[Alert, ...]  # pending and firing, in a stable order
    changes: tuple[Alert, ...]  # alerts that started firing or resolved at this evaluation


def clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def latched(value: float | None, line: float, hysteresis: float, was_active: bool, *,
            inclusive: bool = False) -> bool | None:
    """Whether a value-over-line condition holds, ending only below line x (1 - hysteresis)."""
    if value is None:
        return None
    if value > line or (inclusive and value >= line):
        return True
    return was_active and value >= line * (1 - hysteresis)


class RuleEngine:
    """Keeps each alert's state between evaluations; never reads a clock or does I/O."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self._alerts: dict[tuple[str, Labels], Alert] = {}
        self.resolved: deque[Alert] = deque(maxlen=RESOLVED_KEPT)

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Take back pending and firing alerts saved before a restart (collector/alertstate.py).

        A restored firing alert stays firing with its original start: the next evaluation resolves it
        only if its condition is known to have ended, and an unknown condition (no data yet) keeps it.
        """
        for alert in alerts:
            if alert.phase is not AlertPhase.RESOLVED:
                self._alerts[alert.key] = alert

    @property
    def active(self) -> tuple[Alert, ...]:
        return tuple(self._alerts[k] for k in sorted(self._alerts))

    def _was_active(self, name: str, labels: Labels) -> bool:
        return (name, labels) in self._alerts

    def evaluate(self, fleet: FleetTotals, now: float) -> Evaluation:
        changes: list[Alert] = []
        seen: set[tuple[str, Labels]] = set()
        for check in self._checks(fleet):
            key = (check.name, check.labels)
            seen.add(key)
            change = self._step(check, now)
            if change is not None:
                changes.append(change)
        # A subject that disappeared (no longer evaluated) resolves: nothing is left firing forever.
        for key in [k for k in self._alerts if k not in seen]:
            gone = self._alerts.pop(key)
            if gone.phase is AlertPhase.FIRING:
                changes.append(self._resolve(gone, now))
        return Evaluation(active=self.active, changes=tuple(changes))

    def _step(self, check: Check, now: float) -> Alert | None:
        key = (check.name, check.labels)
        current = self._alerts.get(key)
        if check.active is None:  # unknown: keep whatever state (and message) the alert had
            return None
        if not check.active:
            if current is None:
                return None
            del self._alerts[key]
            return self._resolve(current, now) if current.phase is AlertPhase.FIRING else None
        since = current.since if current is not None else now
        hold = self.thresholds.hold_for(check.name)
        firing = (current is not None and current.phase is AlertPhase.FIRING) or now - since >= hold
        alert = Alert(
            name=check.name, labels=check.labels, severity=check.severity,
            phase=AlertPhase.FIRING if firing else AlertPhase.PENDING, since=since,
            fired_at=(current.fired_at if current is not None and current.fired_at is not None else now)
            if firing else None,
            resolved_at=None, summary=check.summary,
            description=check.description.replace("{since}", f"{clock(since)} ({duration(now - since)} ago)"),
            value=check.value,
        )
        self._alerts[key] = alert
        newly_firing = firing and (current is None or current.phase is not AlertPhase.FIRING)
        return alert if newly_firing else None

    def _resolve(self, alert: Alert, now: float) -> Alert:
        done = replace(alert, phase=AlertPhase.RESOLVED, resolved_at=now,
                       description=f"Resolved at {clock(now)} after {duration(now - alert.since)}. "
                                   f"{alert.description}")
        self.resolved.appendleft(done)
        return done


    def _checks(self, fleet: FleetTotals) -> Iterator[Check]:
        for spec in ALERTS.values():
            if AlertPath.COLLECTOR in spec.paths:
                for subject, labels, who in _subjects(spec.subject, fleet):
                    yield self._check(spec, subject, labels, who)

    def _check(self, spec: AlertSpec, subject: Any, labels: Labels, who: str) -> Check:
        t = self.thresholds
        assert spec.measure is not None, f"{spec.name} is in the collector's path but has no measure"
        value = spec.measure(subject)
        if value is None:
            return Check(spec.name, labels, spec.severity, None, None, "", "")
        fields = {"who": who, "value": figure(spec.unit, value)}
        line: float | None = None
        if spec.limit is not None:
            line = spec.limit(subject)
            fields.update(line=figure(spec.unit, line), clear=figure(spec.unit, line * (1 - t.hysteresis_ratio)),
                          excess=figure(spec.unit, value - line, signed=True), ratio=figure(Unit.RATIO, value / line))
        elif spec.threshold is not None:
            line = float(getattr(t, spec.threshold))
            fields.update(line=setting(spec.unit, line), clear=setting(spec.unit, line * (1 - t.hysteresis_ratio)))
        elif spec.line:
            line = float(spec.line)
        if spec.measure_parts is not None:
            measured, allowance = spec.measure_parts(subject)
            fields.update(measured=figure(Unit.WATTS, measured) if measured is not None else "nothing",
                          allowance=figure(Unit.WATTS, allowance) if allowance is not None else "nothing")
        note, detail = _NOTES.get(spec.name, _nothing)(subject, t)
        # An infinite figure (data never received) reads as such in the text; the alert's JSON value stays valid.
        return Check(spec.name, labels, spec.severity, self._holds(spec, labels, value, line),
                     value if math.isfinite(value) else None,
                     fill(spec.summary, fields) + (f" {note}" if note else ""),
                     "Since {since}. " + fill(spec.action, fields) + (f" {detail}" if detail else ""))

    def _holds(self, spec: AlertSpec, labels: Labels, value: float, line: float | None) -> bool | None:
        inclusive = spec.op == ">="
        if line is None:
            return bool(value)
        if spec.hysteresis:
            return latched(value, line, self.thresholds.hysteresis_ratio, self._was_active(spec.name, labels),
                           inclusive=inclusive)
        return value > line or (inclusive and value >= line)


def _site_who(site: SiteTotals) -> str:
    return f"Site {site.site_id}" + (f" ({site.name})" if site.name != site.site_id else "")


def _subjects(kind: Subject, fleet: FleetTotals) -> Iterator[tuple[Any, Labels, str]]:
    base: Labels = (("fleet", fleet.name),)
    if kind is Subject.FLEET:
        yield fleet, base, f"Fleet {fleet.name}"
        return
    for site in fleet.sites:
        labels: Labels = (*base, ("site", site.site_id))
        if kind is Subject.SITE:
            yield site, labels, _site_who(site)
        elif kind is Subject.AGENT:
            for agent in site.agents:
                yield agent, (*labels, ("agent", agent.url)), f"Agent {agent.url} of {_site_who(site)}"
        else:
            raise ValueError(f"the collector has no {kind.value} subject to judge")


# What only the collector knows, added to an alert's text: (summary note, description detail).
Notes = Callable[[Any, Thresholds], tuple[str, str]]


def _nothing(subject: Any, t: Thresholds) -> tuple[str, str]:
    return "", ""


def _allowed(d: Any) -> str:
    """What the allowance is made of, when there is one."""
    if not d.facility_allowance_w:
        return ""
    bases = [f"{n} at {what}" for n, what in ((d.allowance_last_known, "last known draw"),
                                               (d.allowance_nameplate, "nameplate"),
                                               (d.allowance_default, "the default")) if n]
    parts = [f"miners {', '.join(bases)}"] if bases else []
    if d.agents_allowed_for:
        parts.append(f"{d.agents_allowed_for} agent(s) not heard from now, at their last or a default figure")
    return f"; allowed for: {'; '.join(parts)}" if parts else ""


def _data(site: SiteTotals) -> str:
    d = site.draw
    return (f"Data: {site.status.value}, oldest {duration(site.data_age_s or 0)} old"
            + (f"; {d.estimated_power_ratio:.0%} of measured miner power is estimated"
               if d.estimated_power_ratio is not None and d.estimated_power_ratio > 0 else "")
            + _allowed(d) + ".")


def _near(site: SiteTotals, t: Thresholds) -> tuple[str, str]:
    d = site.draw
    headroom = f"{mw(d.headroom_w)} headroom left of {mw(d.allocation_w)}. " if d.headroom_w is not None else ""
    return "", headroom + _data(site) + _figure(site)


def _stale(site: SiteTotals, t: Thresholds) -> tuple[str, str]:
    stale = [a for a in site.agents if a.stale]
    power = site.draw.facility_power_w
    counted = (f"its last known figures are counted as allowance (site upper bound {mw(power)})"
               if power is not None
               else "no power figure is known for it")
    agents = "; ".join(f"{a.url} ({'never answered' if not a.has_data else duration(a.age_s or 0) + ' old'}"
                       f"{', ' + a.last_error if a.last_error else ''})" for a in stale)
    return f"{len(stale)} of {len(site.agents)} agents are stale; {counted}.", f"Stale agents: {agents}."


def _agent(agent: Any, t: Thresholds) -> tuple[str, str]:
    age = f" Its data is {duration(agent.age_s)} old." if agent.age_s is not None else ""
    return "", f"Last error: {agent.last_error or 'no answer yet'}.{age}"


def _miners(site: SiteTotals, t: Thresholds) -> tuple[str, str]:
    return "", f"{site.draw.miners_down} of {site.draw.miners_total} miners are down. {_data(site)}"


def _fleet(fleet: FleetTotals, t: Thresholds) -> tuple[str, str]:
    worst = sorted((s for s in fleet.sites if s.draw.headroom_w is not None),
                   key=lambda s: s.draw.headroom_w or 0.0)[:3]
    return "", ("Least headroom: " + ", ".join(f"{s.site_id} {mw(s.draw.headroom_w or 0.0)}" for s in worst)
                + f". {fleet.sites_stale} site(s) have stale data.")


def _duplicates(site: SiteTotals, t: Thresholds) -> tuple[str, str]:
    return "", (f"Agent ids: {', '.join(site.duplicate_agent_ids)}; the site's agents: "
                + ", ".join(a.url for a in site.agents) + ".")


_NOTES: dict[str, Notes] = {
    "SiteOverAllocation": lambda site, t: ("", _data(site) + _figure(site)),
    "SiteNearAllocation": _near,
    "SiteDataStale": _stale,
    "AgentDown": _agent,
    "FleetOverAllocation": _fleet,
    "SiteMinersDown": _miners,
    "SiteDuplicateAgentId": _duplicates,
    "SiteUnknownShareHigh": lambda site, t: ("", _data(site)),
    "SiteMeterMismatch": lambda site, t: ("", _meter(site)),
}


def _figure(site: SiteTotals) -> str:
    """Where a metered site's figure comes from now, for the alerts judged on it."""
    m = site.meter
    if m is None:
        return ""
    if m.state is MeterState.OK:
        beside = m.miners_facility_power_w
        return " Judged on the site meter" + (f"; the miners' figure is {mw(beside)}." if beside is not None else ".")
    why = f" ({m.error})" if m.error else f" ({', '.join(m.problems)})" if m.problems else ""
    unseen = f", plus {mw(m.unseen_w)} the meter last showed beyond it" if m.unseen_w > 0 else ""
    return f" The site meter is {m.state.value}{why}: judged on the miners' figure{unseen}."


def _meter(site: SiteTotals) -> str:
    m = site.meter
    if m is None or m.power_w is None or m.miners_facility_power_w is None:
        return ""
    return (f"Meter {mw(m.power_w)} ({m.state.value}), miners' figure {mw(m.miners_facility_power_w)} "
            f"(declared non-miner load {mw(m.non_miner_load_w)} included): "
            f"{figure(Unit.WATTS, m.reconciliation_w or 0.0, signed=True)} unaccounted for. {_data(site)}")
