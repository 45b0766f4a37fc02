"""Alert delivery to a fake Alertmanager over loopback: payload shape, retries, nothing lost, resends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from megawatch.collector.alertmanager import Notifier
from megawatch.collector.config import Alerting
from megawatch.collector.model import Alert, AlertPhase, Severity
from megawatch.collector.rules import Evaluation
from tests.collector.fakes import FakeAlertmanager, fake_alertmanager

NOW = 1_795_820_400.0


def over(phase: AlertPhase = AlertPhase.FIRING, site: str = "a") -> Alert:
    return Alert(name="SiteOverAllocation", labels=(("fleet", "f"), ("site", site)), severity=Severity.CRITICAL,
                 phase=phase, since=NOW - 60, fired_at=NOW - 30,
                 resolved_at=NOW if phase is AlertPhase.RESOLVED else None,
                 summary=f"Site {site} draws 10.50 MW", description="Shed 0.50 MW", value=10.5e6)


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@asynccontextmanager
async def running(notifier: Notifier) -> AsyncIterator[Notifier]:
    task = asyncio.create_task(notifier.run())
    try:
        yield notifier
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def alerting(url: str, **kw: Any) -> Alerting:
    return replace(Alerting(alertmanager_urls=(url,), retry_base_s=0.01, retry_max_s=0.05, max_retries=2,
                            resend_interval_s=60), **kw)


async def test_firing_alert_reaches_alertmanager_in_v2_shape() -> None:
    async with fake_alertmanager(FakeAlertmanager()) as am, aiohttp.ClientSession() as session:
        notifier = Notifier(alerting(am.url), session, "http://127.0.0.1:9300/api/v1/alerts", clock=lambda: NOW)
        async with running(notifier):
            notifier.submit(Evaluation(active=(over(),), changes=(over(),)), NOW)
            (batch,) = await am.wait_for(1)
    (alert,) = batch
    assert alert["labels"] == {"alertname": "SiteOverAllocation", "severity": "critical", "source": "collector",
                               "fleet": "f", "site": "a"}
    assert alert["annotations"] == {"summary": "Site a draws 10.50 MW", "description": "Shed 0.50 MW"}
    assert ts(alert["startsAt"]) == NOW - 30
    assert ts(alert["endsAt"]) == NOW + 4 * 60  # valid for four resend intervals, then Alertmanager resolves
    assert alert["generatorURL"] == "http://127.0.0.1:9300/api/v1/alerts"


async def test_resolved_alert_carries_its_end_time() -> None:
    async with fake_alertmanager(FakeAlertmanager()) as am, aiohttp.ClientSession() as session:
        notifier = Notifier(alerting(am.url), session, "http://x/", clock=lambda: NOW + 5)
        async with running(notifier):
            notifier.submit(Evaluation(active=(), changes=(over(AlertPhase.RESOLVED),)), NOW)
            (batch,) = await am.wait_for(1)
    assert ts(batch[0]["endsAt"]) == NOW


async def test_alertmanager_down_then_back_loses_nothing_and_keeps_order() -> None:
    async with fake_alertmanager(FakeAlertmanager(fail_first=7)) as am, aiohttp.ClientSession() as session:
        notifier = Notifier(alerting(am.url), session, "http://x/", clock=lambda: NOW)
        async with running(notifier):
            notifier.submit(Evaluation(active=(over(),), changes=(over(),)), NOW)
            notifier.submit(Evaluation(active=(), changes=(over(AlertPhase.RESOLVED),)), NOW + 10)
            received = await am.wait_for(2)
            assert await notifier.drain(1.0)
    assert am.attempts == 9  # 7 refused (3 attempts per round, paused between rounds), then both delivered
    assert [b[0]["labels"]["alertname"] for b in received] == ["SiteOverAllocation"] * 2
    assert ts(received[0][0]["endsAt"]) > NOW and ts(received[1][0]["endsAt"]) == NOW  # fire, then resolve
    (target,) = notifier.targets
    assert target.stats.failed_attempts == 7 and target.stats.sent_batches == 2 and target.stats.up


async def test_alertmanager_unreachable_keeps_alerts_pending() -> None:
    async with aiohttp.ClientSession() as session:
        notifier = Notifier(alerting("http://127.0.0.1:9"), session, "http://x/", clock=lambda: NOW)
        async with running(notifier):
            notifier.submit(Evaluation(active=(over(),), changes=(over(),)), NOW)
            assert not await notifier.drain(0.3)
        (target,) = notifier.targets
        assert len(target.outbox) == 1 and target.stats.up is False and target.stats.failed_attempts >= 3


async def test_rejected_payload_is_dropped_not_retried_forever() -> None:
    async with fake_alertmanager(FakeAlertmanager(fail_first=1, fail_status=400)) as am, \
            aiohttp.ClientSession() as session:
        notifier = Notifier(alerting(am.url), session, "http://x/", clock=lambda: NOW)
        async with running(notifier):
            notifier.submit(Evaluation(active=(over(),), changes=(over(),)), NOW)
            notifier.submit(Evaluation(active=(), changes=(over(AlertPhase.RESOLVED),)), NOW + 1)
            await am.wait_for(1)
    assert am.attempts == 2 and notifier.targets[0].stats.dropped_batches == 1


async def test_firing_alerts_are_resent_every_interval_and_not_more() -> None:
    async with fake_alertmanager(FakeAlertmanager()) as am, aiohttp.ClientSession() as session:
        notifier = Notifier(alerting(am.url), session, "http://x/", clock=lambda: NOW)
        firing = Evaluation(active=(over(), over(site="b")), changes=())
        async with running(notifier):
            for t in (0, 15, 30, 45, 60, 75):
                notifier.submit(firing, NOW + t)
                assert await notifier.drain(1.0)
    assert len(am.received) == 2  # at 0 s and at 60 s
    assert all(len(b) == 2 for b in am.received)


async def test_webhook_gets_changes_only_and_its_token_is_never_logged() -> None:
    async with fake_alertmanager(FakeAlertmanager()) as hook, aiohttp.ClientSession() as session:
        notifier = Notifier(Alerting(webhook_url=hook.url + "/api/v2/alerts?token=s3cr3t"), session, "http://x/",
                            clock=lambda: NOW)
        with capture_logs() as logs:
            async with running(notifier):
                notifier.submit(Evaluation(active=(over(),), changes=(over(),)), NOW)
                notifier.submit(Evaluation(active=(over(),), changes=()), NOW + 120)
                (doc,) = await hook.wait_for(1)
                assert await notifier.drain(1.0)
    assert doc["status"] == "firing" and doc["alerts"][0]["labels"]["site"] == "a"  # type: ignore[call-overload]
    assert len(hook.received) == 1
    assert any(e["event"] == "alert_sent" for e in logs) and "s3cr3t" not in repr(logs)
    assert notifier.targets[0].name == hook.url + "/api/v2/alerts"
