"""The status page in one process: its files, the overview it polls, history, next allocation change,
worst miners from fake agents, and basic auth in front of all of it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, time
from importlib import resources
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from megawatch.collector import page
from megawatch.collector.config import Alerting, CollectorConfig, ScheduleWindow, Site, Thresholds
from megawatch.collector.page import STATIC_FILES, next_allocation_change, worst_miners
from megawatch.collector.service import CollectorService
from megawatch.collector.web import make_app
from megawatch.common.webconfig import WebConfig, protect
from tests.collector.fakes import FakeAgent, fake_agent, serve_app

MW = 1e6
ZONE = "Europe/Berlin"


class Clock:
    def __init__(self, t: float = 1_795_820_400.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


Rig = tuple[CollectorService, TestClient[Any, Any], dict[str, FakeAgent], Clock]


class DarkableAgent(FakeAgent):
    """A fake agent that can go dark as a real one does: every miner down, their draw allowance only."""

    dark: bool = False

    def summary(self) -> dict[str, Any]:
        body = super().summary()
        if self.dark:
            body["totals"].update(power_w={"firmware": None, "estimate": None}, power_unknown_miners=100,
                                  power_allowance_w=3.2 * MW, power_upper_bound_w=3.2 * MW,
                                  allowance_miners={"last_known": 100})
            body["miners"].update(up=0, down=100)
        return body


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with (fake_agent(FakeAgent("ok", power_firmware_w=5 * MW)) as ok,
                fake_agent(FakeAgent("over", power_firmware_w=9 * MW)) as over,
                fake_agent(DarkableAgent("dark", power_firmware_w=5 * MW)) as dark,
                aiohttp.ClientSession() as session):
        config = CollectorConfig(
            path="t.yaml", fleet_name="f", fleet_allocation_w=40 * MW, allow_oversubscription=False,
            sites=(Site("ok", "Site OK", 10 * MW, 1.0, 0.0, (ok.url,)),
                   Site("over", "Site Over", 10 * MW, 1.0, 0.0, (over.url,)),
                   Site("dark", "Site Dark", 10 * MW, 1.0, 0.0, (dark.url,))),
            thresholds=replace(Thresholds(), hold_s=10, stale_after_s=30),
            alerting=Alerting(), poll_interval_s=5, poll_timeout_s=1)
        clock = Clock()
        service = CollectorService(config, session, "http://127.0.0.1:9300/api/v1/alerts", clock=clock)
        async with TestClient(TestServer(make_app(service))) as client:
            yield service, client, {"ok": ok, "over": over, "dark": dark}, clock


def static_text(name: str) -> str:
    return (resources.files("megawatch.collector") / "static" / name).read_text()


async def test_pages_and_their_files_are_served_by_the_collector_with_nothing_from_elsewhere(rig: Rig) -> None:
    _, client, _, _ = rig
    for path in ("/", "/sites/ok"):
        resp = await client.get(path)
        assert resp.status == 200 and resp.content_type == "text/html"
        # The browser itself refuses anything from another origin.
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        html = await resp.text()
        loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert loaded and all(u[0] in "/#" and not u.startswith("//") for u in loaded), loaded
    for name in STATIC_FILES:
        resp = await client.get(f"/static/{name}")
        assert resp.status == 200, name
        assert await resp.read() == static_text(name).encode()
        # No absolute URL in any file: the one allowed is the SVG namespace name, which is never fetched.
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", static_text(name)))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
    assert (await client.get("/static/../web.py")).status == 404
    assert (await client.get("/static/nope.js")).status == 404
    resp = await client.get("/sites/nowhere")
    assert resp.status == 404 and "nowhere" in await resp.text()


async def test_overview_is_worst_first_and_an_unknown_stays_unknown(rig: Rig) -> None:
    service, client, agents, clock = rig
    body = await (await client.get("/api/v1/overview")).json()
    assert body["fleet"] is None and body["sites"] == [] and body["at"] is None  # no cycle yet: nothing made up
    agents["over"].power_firmware_w = 11 * MW
    dark = agents["dark"]
    assert isinstance(dark, DarkableAgent)
    dark.dark = True  # answers, but no miner's draw is known
    await service.poll_once()
    body = await (await client.get("/api/v1/overview")).json()
    assert [s["id"] for s in body["sites"]] == ["over", "dark", "ok"]
    by_id = {s["id"]: s for s in body["sites"]}
    assert [by_id[s]["level"] for s in ("over", "dark", "ok")] == ["critical", "unknown", "ok"]
    assert by_id["dark"]["status"] == "dark" and by_id["dark"]["miner_power_w"] is None
    assert by_id["dark"]["facility_power_w"] == 3.2 * MW  # its figure is the allowance, never 0 MW
    assert by_id["over"]["utilisation_ratio"] == pytest.approx(1.1)
    assert "agents" not in by_id["ok"] and by_id["ok"]["agents_total"] == 1 and by_id["ok"]["agents_up"] == 1
    assert body["refresh_s"] == 5 and body["stall_limit_s"] == 15 and body["served_at"] == clock.t
    assert body["fleet"]["allocation_w"] == 40 * MW
    # Curtailment's plan rides along (mode plan by default: computed and shown, nothing sent).
    assert by_id["over"]["curtailment"]["mode"] == "plan"
    assert by_id["over"]["curtailment"]["need_w"] > 0 and by_id["ok"]["curtailment"]["need_w"] == 0

    # Held long enough, the over-allocation alert fires and rides on its site's row.
    for _ in range(3):
        clock.t += 5
        await service.poll_once()
    body = await (await client.get("/api/v1/overview?site=over")).json()
    (over,) = body["sites"]
    # Critical first: the row's first alert is why it is red.
    assert [a["alertname"] for a in over["alerts"]] == ["SiteOverAllocation", "SiteNearAllocation"]
    assert over["agents"][0]["url"] == agents["over"].url
    assert (await client.get("/api/v1/overview?site=nowhere")).status == 404


async def test_history_keeps_one_point_per_cycle_for_the_chart(rig: Rig) -> None:
    service, client, agents, clock = rig
    assert (await (await client.get("/api/v1/sites/ok/history")).json())["series"] == {}
    for mw in (5, 6, 7):
        agents["ok"].power_firmware_w = mw * MW
        await service.poll_once()
        clock.t += 5
    body = await (await client.get("/api/v1/sites/ok/history")).json()
    series = body["series"]
    assert series["facility_power_w"] == [5 * MW, 6 * MW, 7 * MW]
    assert series["allocation_w"] == [10 * MW] * 3 and series["status"] == ["ok"] * 3
    assert series["meter_w"] == [None] * 3  # no meter: unknown, not 0
    since = series["t"][1]
    assert (await (await client.get(f"/api/v1/sites/ok/history?since={since}")).json())["series"]["t"] == \
        series["t"][1:]
    assert (await client.get("/api/v1/sites/ok/history?since=yesterday")).status == 400
    assert (await client.get("/api/v1/sites/nowhere/history")).status == 404


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(ZONE)).timestamp()


def test_next_allocation_change_follows_the_schedule_across_days_and_dst() -> None:
    evening = ScheduleWindow(days=frozenset(range(5)), start=time(18), end=time(22), end_of_day=False,
                             timezone=ZONE, allocation_w=6 * MW)  # weekdays 18-22: 6 MW
    night = ScheduleWindow(days=frozenset({4}), start=time(23), end=time(6), end_of_day=False, timezone=ZONE,
                           allocation_w=4 * MW)  # Friday 23:00 to Saturday 06:00
    site = Site("a", "A", 10 * MW, 1.0, 0.0, ("http://127.0.0.1:1",), schedule=(evening, night))
    # 2026-03-26 is a Thursday.
    assert next_allocation_change(site, at("2026-03-26T12:00")) == {"at": at("2026-03-26T18:00"),
                                                                     "allocation_w": 6 * MW}
    assert next_allocation_change(site, at("2026-03-26T19:00")) == {"at": at("2026-03-26T22:00"),
                                                                     "allocation_w": 10 * MW}
    assert next_allocation_change(site, at("2026-03-27T22:30")) == {"at": at("2026-03-27T23:00"),
                                                                     "allocation_w": 4 * MW}
    # Saturday 06:00 back to base; the clocks went forward that night (29 March is a Sunday, so not yet).
    assert next_allocation_change(site, at("2026-03-28T01:00")) == {"at": at("2026-03-28T06:00"),
                                                                     "allocation_w": 10 * MW}
    # Over the weekend the next change is Monday evening, across the DST change: local 18:00 still.
    nxt = next_allocation_change(site, at("2026-03-28T12:00"))
    assert nxt == {"at": at("2026-03-30T18:00"), "allocation_w": 6 * MW}
    assert next_allocation_change(replace(site, schedule=()), at("2026-03-26T12:00")) is None
    same = replace(evening, allocation_w=10 * MW)  # a window at the base allocation changes nothing
    assert next_allocation_change(replace(site, schedule=(same,)), at("2026-03-26T12:00")) is None


def miner(name: str, state: str = "up", temp: float | None = 70.0, problems: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"miner": name, "address": "127.0.0.1", "port": 4028, "state": state, "model": "S19",
            "power_w": 3000.0 if state == "up" else None, "chip_temp_max_c": temp, "problems": list(problems),
            "last_error": "timeout" if state == "down" else None}


def test_worst_miners_rank_down_then_stale_then_hot_then_implausible() -> None:
    miners = {"http://a": [miner("ok"), miner("warm", temp=84.9), miner("hot1", temp=88), miner("dead", "down", None),
                           miner("odd", problems=("power_w above 20 kW",))],
              "http://b": [miner("hot2", temp=95), miner("late", "stale", 80), miner("dead2", "down", None)]}
    body = worst_miners(miners)
    assert [(m["miner"], m["reason"]) for m in body["miners"]] == [
        ("dead", "down"), ("dead2", "down"), ("late", "stale"), ("hot2", "hot"), ("hot1", "hot"),
        ("odd", "implausible")]
    assert body["counts"] == {"down": 2, "stale": 1, "hot": 2, "implausible": 1}
    assert body["miners"][1]["agent"] == "http://b"
    assert body["miners"][1]["detail_url"] == "http://b/api/v1/miners?state=down"
    assert len(worst_miners(miners, limit=2)["miners"]) == 2


async def test_worst_miners_are_fetched_from_the_agents_bounded_in_time_and_cached(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    service, client, _, _ = rig
    monkeypatch.setattr(page, "MINERS_TIMEOUT_S", 0.3)
    asked = {"good": 0, "hung": 0}
    release = asyncio.Event()

    async def good(request: web.Request) -> web.Response:
        asked["good"] += 1
        return web.json_response({"version": 1, "miners": [miner("a1"), miner("a2", "down", None)]})

    async def hung(request: web.Request) -> web.Response:
        asked["hung"] += 1
        await release.wait()
        return web.json_response({"miners": []})

    apps = []
    for handler in (good, hung):
        app = web.Application()
        app.router.add_get("/api/v1/miners", handler)
        apps.append(app)
    async with serve_app(apps[0]) as good_url, serve_app(apps[1]) as hung_url:
        try:
            site = Site("ok", "Site OK", 10 * MW, 1.0, 0.0, (good_url, hung_url))
            service.apply_config(replace(service.config, sites=(site,)))
            started = asyncio.get_running_loop().time()
            body = await (await client.get("/api/v1/sites/ok/worst_miners")).json()
            assert asyncio.get_running_loop().time() - started < 2.0  # the hung agent did not hold the page
            assert [m["miner"] for m in body["miners"]] == ["a2"]
            assert body["errors"] == {hung_url: "no answer within 0.3 s"}
            assert body["agents_answered"] == 1 and body["agents"] == 2
            await client.get("/api/v1/sites/ok/worst_miners")
            assert asked == {"good": 1, "hung": 1}  # a reload within the cache time asks nobody again
        finally:
            release.set()


async def test_basic_auth_guards_the_pages_their_files_and_their_json(rig: Rig) -> None:
    service, _, _, _ = rig
    users = MappingProxyType({"op": bcrypt.hashpw(b"secret", bcrypt.gensalt(4))})
    app = make_app(service)
    protect(app, WebConfig("web.yml", users=users))
    async with TestClient(TestServer(app)) as client:
        for path in ("/", "/sites/ok", "/static/page.js", "/api/v1/overview", "/api/v1/sites/ok/history",
                     "/api/v1/sites/ok/worst_miners"):
            resp = await client.get(path)
            assert resp.status == 401 and "Basic" in resp.headers["WWW-Authenticate"], path
        resp = await client.get("/", headers={"Authorization": aiohttp.encode_basic_auth("op", "secret")})
        assert resp.status == 200 and "fleet.js" in await resp.text()
