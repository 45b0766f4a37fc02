"""Fake agents and a fake Alertmanager on loopback: small aiohttp apps the collector reads over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeAgent:
    """Serves /api/v1/summary in the agent's summary shape; `mode` injects faults."""

    site: str
    agent: str = ""  # agent_id in the summary; default fake-<site>, so two fakes of one site share it
    power_firmware_w: float | None = 1e6
    power_estimate_w: float | None = 0.0
    hashrate_hs: float | None = 1e17
    up: int = 100
    down: int = 0
    stale: int = 0
    age_s: float = 0.5
    mode: str = "ok"  # ok | slow (delay_s) | error (HTTP 500) | hang | garbage | huge | not_ready
    delay_s: float = 0.0
    requests: int = 0
    url: str = ""
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def summary(self) -> dict[str, Any]:
        now = time.time()
        return {
            "version": 1,
            "agent": self.agent or f"fake-{self.site}",
            "site": self.site,
            "cycle": {"number": 7, "finished_s": now - self.age_s, "duration_s": 0.2},
            "staleness": {"age_s": self.age_s},
            "totals": {
                "hashrate_hs": self.hashrate_hs,
                "power_w": {"firmware": self.power_firmware_w, "estimate": self.power_estimate_w},
                "power_unknown_miners": 0,
            },
            "miners": {"configured": self.up + self.down + self.stale, "up": self.up, "down": self.down,
                       "stale": self.stale},
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.mode == "error":
            return web.Response(status=500, text="boom")
        if self.mode == "hang":
            await self.released.wait()
        if self.mode == "slow":
            await asyncio.sleep(self.delay_s)  # a slow agent, as the test asks
        if self.mode == "garbage":
            return web.Response(text="{not json", content_type="application/json")
        if self.mode == "huge":
            return web.Response(text='{"version": 1, "pad": "' + "x" * (2 << 20) + '"}',
                                content_type="application/json")
        if self.mode == "not_ready":
            return web.json_response({"version": 1, "agent": "x", "site": self.site, "cycle": None,
                                      "totals": None, "miners": None})
        return web.json_response(self.summary())


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Run an aiohttp app on an ephemeral loopback port; yield its base URL; always clean up."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def fake_agent(agent: FakeAgent) -> AsyncIterator[FakeAgent]:
    app = web.Application()
    app.router.add_get("/api/v1/summary", agent.handle)
    async with serve_app(app) as url:
        agent.url = url
        try:
            yield agent
        finally:
            agent.released.set()


@dataclass
class FakeAlertmanager:
    """Accepts POST /api/v2/alerts; fails the first `fail_first` requests with `fail_status`."""

    fail_first: int = 0
    fail_status: int = 503
    received: list[list[dict[str, Any]]] = field(default_factory=list)
    attempts: int = 0
    url: str = ""
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=self.fail_status, text="not now")
        batch = await request.json()
        async with self.arrived:
            self.received.append(batch)
            self.arrived.notify_all()
        return web.Response(status=200)

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[list[dict[str, Any]]]:
        async with asyncio.timeout(timeout_s), self.arrived:
            await self.arrived.wait_for(lambda: len(self.received) >= count)
        return self.received


@asynccontextmanager
async def fake_alertmanager(am: FakeAlertmanager) -> AsyncIterator[FakeAlertmanager]:
    app = web.Application()
    app.router.add_post("/api/v2/alerts", am.handle)
    async with serve_app(app) as url:
        am.url = url
        yield am
