"""Deliver alerts to Alertmanager (POST /api/v2/alerts) and an optional generic webhook, losing none.

Each target has its own ordered outbox, so one target being down never delays another. A batch leaves the
outbox only once the target accepted it (2xx); connection errors, timeouts and 5xx are retried with
exponential backoff (at most `max_retries` retries in a row, then a pause of `retry_max_s`, then again);
a 4xx means the payload itself is wrong and retrying cannot help: that batch is dropped and logged.
The outbox is bounded (`queue_limit` batches, oldest dropped first and counted) so memory stays bounded.

Firing alerts are re-sent every `resend_interval_s` with endsAt = now + 4 x resend interval, as Prometheus
does: if the collector dies, Alertmanager resolves them by itself. A firing alert's endsAt is computed when it
is sent, not when it was queued, so a batch delivered late never arrives already expired. After a target
comes back, every firing alert is re-sent at once so Alertmanager does not resolve one that never stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import aiohttp

from megawatch.collector.config import Alerting, public_url
from megawatch.collector.model import Alert, AlertPhase
from megawatch.collector.rules import Evaluation
from megawatch.common.logs import get_logger

ENDS_AT_RESENDS = 4  # a firing alert stays valid for this many resend intervals (Prometheus uses 4)


class TargetKind(StrEnum):
    ALERTMANAGER = "alertmanager"
    WEBHOOK = "webhook"


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_labels(alert: Alert) -> dict[str, str]:
    # source tells these apart from the same alerts raised by Prometheus (configs/prometheus/alertmanager.yml
    # inhibits the Prometheus copy while the collector's is active).
    return {"alertname": alert.name, "severity": alert.severity.value, "source": "collector", **dict(alert.labels)}


def render_alertmanager(alert: Alert, now: float, valid_for_s: float, generator_url: str) -> dict[str, object]:
    """One alert in Alertmanager's v2 API shape (postableAlert)."""
    resolved = alert.phase is AlertPhase.RESOLVED and alert.resolved_at is not None
    ends = alert.resolved_at if resolved and alert.resolved_at is not None else now + valid_for_s
    return {
        "labels": alert_labels(alert),
        "annotations": {"summary": alert.summary, "description": alert.description},
        "startsAt": iso(alert.fired_at if alert.fired_at is not None else alert.since),
        "endsAt": iso(ends),
        "generatorURL": generator_url,
    }


def render_webhook(alerts: list[Alert], now: float, generator_url: str) -> dict[str, object]:
    """A batch for a generic webhook: shaped like Alertmanager's own webhook payload, version 4."""
    items = []
    for a in alerts:
        items.append({
            "status": "resolved" if a.phase is AlertPhase.RESOLVED else "firing",
            "labels": alert_labels(a),
            "annotations": {"summary": a.summary, "description": a.description},
            "startsAt": iso(a.fired_at if a.fired_at is not None else a.since),
            "endsAt": iso(a.resolved_at) if a.resolved_at is not None else None,
            "value": a.value,
            "generatorURL": generator_url,
        })
    firing = any(i["status"] == "firing" for i in items)
    return {"version": "4", "receiver": "megawatch", "status": "firing" if firing else "resolved",
            "sentAt": iso(now), "alerts": items}


@dataclass
class TargetStats:
    sent_batches: int = 0
    failed_attempts: int = 0
    dropped_batches: int = 0
    up: bool | None = None  # None until the first attempt
    last_error: str | None = None
    last_success_at: float | None = None


@dataclass
class Target:
    url: str
    kind: TargetKind
    outbox: deque[list[Alert]] = field(default_factory=deque)
    stats: TargetStats = field(default_factory=TargetStats)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    recovered: bool = False  # came back after failures: re-send everything firing

    @property
    def name(self) -> str:
        """How logs and metrics name the target: its URL without credentials or query."""
        return public_url(self.url)

    @property
    def endpoint(self) -> str:
        return f"{self.url}/api/v2/alerts" if self.kind is TargetKind.ALERTMANAGER else self.url


class Notifier:
    """Turns rule evaluations into deliveries; `run()` delivers until cancelled."""

    def __init__(self, alerting: Alerting, session: aiohttp.ClientSession, generator_url: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.alerting = alerting
        self.session = session
        self.generator_url = generator_url
        self.clock = clock
        self.targets = [Target(u, TargetKind.ALERTMANAGER) for u in alerting.alertmanager_urls]
        if alerting.webhook_url is not None:
            self.targets.append(Target(alerting.webhook_url, TargetKind.WEBHOOK))
        self._last_resend: float | None = None
        self._log = get_logger()

    def submit(self, evaluation: Evaluation, now: float) -> None:
        """Queue this evaluation's changes, and every firing alert when a resend is due."""
        firing = [a for a in evaluation.active if a.phase is AlertPhase.FIRING]
        resend_due = self._last_resend is None or now - self._last_resend >= self.alerting.resend_interval_s
        if resend_due:
            self._last_resend = now
        for target in self.targets:
            batch = list(evaluation.changes)
            if target.kind is TargetKind.ALERTMANAGER and firing:
                recovered, target.recovered = target.recovered, False
                # While a backlog waits, a resend adds nothing: each firing alert in it gets a fresh endsAt.
                if recovered or (resend_due and not target.outbox):
                    changed = {a.key for a in batch}
                    batch += [a for a in firing if a.key not in changed]
            if batch:
                self._enqueue(target, batch)

    def _enqueue(self, target: Target, batch: list[Alert]) -> None:
        if len(target.outbox) >= self.alerting.queue_limit:
            target.outbox.popleft()
            target.stats.dropped_batches += 1
            self._log.error("alert_batch_dropped", target=target.name, reason="queue full",
                            queue_limit=self.alerting.queue_limit)
        target.outbox.append(batch)
        target.wake.set()

    def pending(self) -> Iterable[tuple[Target, int]]:
        return ((t, len(t.outbox)) for t in self.targets)

    async def run(self) -> None:
        """Deliver until cancelled (with no target configured, just wait to be cancelled)."""
        if not self.targets:
            await asyncio.get_running_loop().create_future()
        async with asyncio.TaskGroup() as group:  # each deliverer handles its own errors
            for target in self.targets:
                group.create_task(self._deliver(target))

    async def drain(self, timeout_s: float) -> bool:
        """Wait (bounded) until every outbox is empty; for shutdown and tests."""
        try:
            async with asyncio.timeout(timeout_s):
                while any(t.outbox for t in self.targets):
                    await asyncio.sleep(0.01)
        except TimeoutError:
            return False
        return True

    async def _deliver(self, target: Target) -> None:
        a = self.alerting
        while True:
            if not target.outbox:
                target.wake.clear()
                await target.wake.wait()
                continue
            delay = a.retry_base_s
            for attempt in range(a.max_retries + 1):
                outcome = await self._post(target, target.outbox[0])
                if outcome != "retry":
                    target.outbox.popleft()
                    break
                if attempt < a.max_retries:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, a.retry_max_s)
            else:
                self._log.warning("alert_delivery_paused", target=target.name, pending=len(target.outbox),
                                  retry_in_s=a.retry_max_s, error=target.stats.last_error)
                await asyncio.sleep(a.retry_max_s)

    async def _post(self, target: Target, batch: list[Alert]) -> str:
        """POST one batch: 'sent', 'rejected' (4xx: drop it) or 'retry'."""
        now = self.clock()
        valid_for = ENDS_AT_RESENDS * self.alerting.resend_interval_s
        if target.kind is TargetKind.ALERTMANAGER:
            body: object = [render_alertmanager(x, now, valid_for, self.generator_url) for x in batch]
        else:
            body = render_webhook(batch, now, self.generator_url)
        stats = target.stats
        try:
            async with self.session.post(target.endpoint, data=json.dumps(body),
                                         headers={"Content-Type": "application/json"},
                                         timeout=aiohttp.ClientTimeout(total=self.alerting.timeout_s)) as resp:
                text = (await resp.content.read(2048)).decode("utf-8", "replace")
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return self._failed(target, error)
        if 200 <= status < 300:
            if stats.up is False:
                target.recovered = True
                self._log.info("alert_target_up", target=target.name)
            stats.up, stats.last_error, stats.last_success_at = True, None, now
            stats.sent_batches += 1
            self._log.info("alert_sent", target=target.name, alerts=[
                f"{x.name}:{dict(x.labels).get('site', '')}:{x.phase.value}" for x in batch])
            return "sent"
        if 400 <= status < 500 and status not in (408, 429):
            stats.dropped_batches += 1
            self._log.error("alert_batch_rejected", target=target.name, status=status, reply=text.strip()[:300])
            return "rejected"
        return self._failed(target, f"HTTP {status}: {text.strip()[:200]}")

    def _failed(self, target: Target, error: str) -> str:
        stats = target.stats
        if stats.up is not False:
            self._log.warning("alert_target_down", target=target.name, error=error)
        stats.up, stats.last_error = False, error
        stats.failed_attempts += 1
        return "retry"
