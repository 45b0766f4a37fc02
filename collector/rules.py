"""Pure: fleet totals + thresholds -> alert states, with hold times and hysteresis, driven by the caller's clock.

A condition starts when its value crosses the line and ends only once the value is below
line x (1 - hysteresis_ratio), so a draw hovering on the line neither flaps nor restarts its hold time.
An alert fires once its condition has lasted its hold time. An unknown value (no data at all) never
starts or ends a condition: the last state is kept, and SiteDataStale says why.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from megawatch.collector.config import Thresholds
from megawatch.collector.model import Alert, AlertPhase, FleetTotals, Severity, SiteTotals

Labels = tuple[tuple[str, str], ...]
RESOLVED_KEPT = 100  # resolved alerts remembered for /api/v1/alerts


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


def mw(watts: float) -> str:
    """Format a power for people (kW below 1 MW, so small sites stay readable); the data stays in W."""
    if abs(watts) < 1e6:
        return f"{watts / 1e3:,.1f} kW"
    return f"{watts / 1e6:,.2f} MW"


def clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


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
        firing = current is not None and current.phase is AlertPhase.FIRING or now - since >= hold
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
        base: Labels = (("fleet", fleet.name),)
        for site in fleet.sites:
            yield from self._site_checks(site, base)
        yield self._fleet_check(fleet, base)

    def _site_checks(self, site: SiteTotals, base: Labels) -> Iterator[Check]:
        t = self.thresholds
        labels: Labels = (*base, ("site", site.site_id))
        who = f"Site {site.site_id}" + (f" ({site.name})" if site.name != site.site_id else "")
        d = site.draw
        power, alloc = d.facility_power_w, d.allocation_w
        data = (f"Data: {site.status.value}, oldest {duration(site.data_age_s or 0)} old"
                + (f"; {d.estimated_power_ratio:.0%} of miner power is estimated"
                   if d.estimated_power_ratio is not None and d.estimated_power_ratio > 0 else "")
                + ".")
        over = latched(power, alloc, t.hysteresis_ratio, self._was_active("SiteOverAllocation", labels))
        if power is not None:
            excess = power - alloc
            yield Check(
                "SiteOverAllocation", labels, Severity.CRITICAL, over, power,
                f"{who} draws {mw(power)} against its {mw(alloc)} allocation "
                f"({'+' if excess >= 0 else '-'}{mw(abs(excess))}, {power / alloc:.1%}).",
                f"Over allocation since {{since}}. Shed at least {mw(max(excess, 0.0))} now; the alert clears "
                f"below {mw(alloc * (1 - t.hysteresis_ratio))}. {data}")
            near_line = alloc * t.near_ratio
            near = latched(power, near_line, t.hysteresis_ratio, self._was_active("SiteNearAllocation", labels),
                           inclusive=True)
            yield Check(
                "SiteNearAllocation", labels, Severity.WARNING, near, power,
                f"{who} draws {mw(power)}, {power / alloc:.1%} of its {mw(alloc)} allocation "
                f"(warning at {t.near_ratio:.0%}; {mw(alloc - power)} headroom left).",
                f"Near allocation since {{since}}. Hold back load increases; the warning clears below "
                f"{mw(near_line * (1 - t.hysteresis_ratio))}. {data}")
        else:
            yield Check("SiteOverAllocation", labels, Severity.CRITICAL, over, None, "", "")
            yield Check("SiteNearAllocation", labels, Severity.WARNING, None, None, "", "")

        stale_agents = [a for a in site.agents if a.stale]
        counted = (f"its last known {mw(power)} is still counted" if power is not None
                   else "no power figure is known for it")
        yield Check(
            "SiteDataStale", labels, Severity.WARNING, site.stale, site.data_age_s,
            f"{who} data is stale: {len(stale_agents)} of {len(site.agents)} agents have no data newer than "
            f"{duration(t.stale_after_s)}; {counted}.",
            "Stale since {since}. Check the agents: "
            + "; ".join(f"{a.url} ({'never answered' if not a.has_data else duration(a.age_s or 0) + ' old'}"
                        f"{', ' + a.last_error if a.last_error else ''})" for a in stale_agents) + ".")
        for agent in site.agents:
            yield Check(
                "AgentDown", (*labels, ("agent", agent.url)), Severity.WARNING, not agent.up,
                None, f"Agent {agent.url} of {who} does not answer.",
                f"Down since {{since}}: {agent.last_error or 'no answer yet'}. Its site's totals carry its last "
                f"known values" + (f" ({duration(agent.age_s)} old)." if agent.age_s is not None else "."))

        down, total = d.miners_down, d.miners_total
        ratio = down / total if down is not None and total is not None and total > 0 else None
        many_down = latched(ratio, t.miners_down_ratio, t.hysteresis_ratio,
                            self._was_active("SiteMinersDown", labels), inclusive=True)
        yield Check(
            "SiteMinersDown", labels, Severity.WARNING, many_down, ratio,
            f"{who}: {down} of {total} miners are down ({ratio:.0%}; warning at {t.miners_down_ratio:.0%})."
            if ratio is not None else "",
            f"Many miners down since {{since}}. Look for a tripped breaker, a switch or a pool outage. {data}")

    def _fleet_check(self, fleet: FleetTotals, base: Labels) -> Check:
        t = self.thresholds
        d = fleet.draw
        power, alloc = d.facility_power_w, d.allocation_w
        over = latched(power, alloc, t.hysteresis_ratio, self._was_active("FleetOverAllocation", base))
        if power is None:
            return Check("FleetOverAllocation", base, Severity.CRITICAL, over, None, "", "")
        worst = sorted((s for s in fleet.sites if s.draw.headroom_w is not None),
                       key=lambda s: s.draw.headroom_w or 0.0)[:3]
        return Check(
            "FleetOverAllocation", base, Severity.CRITICAL, over, power,
            f"Fleet {fleet.name} draws {mw(power)} against its {mw(alloc)} allocation "
            f"(+{mw(max(power - alloc, 0.0))}, {power / alloc:.1%}).",
            "Over allocation since {since}. Least headroom: "
            + ", ".join(f"{s.site_id} {mw(s.draw.headroom_w or 0.0)}" for s in worst)
            + f". {fleet.sites_stale} site(s) have stale data.")
