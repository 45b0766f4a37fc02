"""The status page in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium).

Simulator + agents + collector as real processes: the page loads with no console error and no request to
another origin; a site pushed over its allocation turns red on the open page within two collector cycles of
the collector knowing, with no reload; a site whose miners all hang shows `dark`, never 0 MW; the page says
when the collector has gone away, and how old its data is; with basic auth configured it needs the password.
Screenshots go to tests/artifacts/status-page/ (git-ignored): look at them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from megawatch.collector.config import Alerting, CollectorConfig, ScheduleWindow, Site, Thresholds
from megawatch.collector.service import CollectorService
from megawatch.collector.web import make_app
from tests.collector.fakes import FakeAgent, fake_agent, serve_app
from tests.e2e import processes
from tests.e2e.processes import (
    POLL_S,
    ROOT,
    Proc,
    Procs,
    agent_yaml,
    free_port,
    get_json,
    listening_url,
    megawatch,
    site_view,
    sites_yaml,
    start_agent,
    start_collector,
    wait_until,
)
from tests.security.tls import write_web_config

pytestmark = pytest.mark.e2e
procs = processes.procs
http = processes.http

MW = 1e6
ARTIFACTS = ROOT / "tests" / "artifacts" / "status-page"
# Without the background-networking flags Chromium dials out at start (updates, sync, field trials), which a
# closed network refuses; none of it is the page's doing, and it would hide what the page asks for.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-dev-shm-usage")


def need(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs chromium and chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


class Browser:
    """One Chromium through chromedriver. Selenium blocks: every call runs in a thread, so the fake agents
    and the simulator serving this same event loop keep answering while the browser waits."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def open(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, script, *args)

    async def until(self, script: str, timeout_s: float, what: str) -> Any:
        """Poll a JS expression until it is truthy; fail naming `what` after the deadline."""
        async def probe() -> Any:
            return await self.js("return " + script) or None
        return await wait_until(probe, timeout_s, what, every_s=0.05)

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        # The whole page, not just the first screen: size the window to the document first.
        height = await self.js("return Math.min(4000, document.documentElement.scrollHeight)")
        width = await self.js("return window.outerWidth")
        await self.call(self.driver.set_window_size, width, max(600, int(height) + 120))
        await self.call(self.driver.save_screenshot, str(path))
        return path

    async def console_errors(self) -> list[dict[str, Any]]:
        logs = await self.call(self.driver.get_log, "browser")
        return [e for e in logs if e["level"] == "SEVERE"]

    async def network(self) -> tuple[list[str], dict[str, int]]:
        """What the browser asked for since the last call, and the status of each answer (DevTools log)."""
        urls, statuses = [], {}
        for entry in await self.call(self.driver.get_log, "performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
            elif message["method"] == "Network.responseReceived":
                response = message["params"]["response"]
                statuses[response["url"]] = response["status"]
        return urls, statuses


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Browser]:
    """A fresh headless Chromium with its own profile."""
    binary, chromedriver = need("chromium"), need("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=chromedriver, log_output=str(profile.with_suffix(".chromedriver.log")))
    driver = await asyncio.to_thread(webdriver.Chrome, options=options, service=service)
    try:
        driver.set_page_load_timeout(20)  # a page that never loads fails the test in 20 s, not chromedriver's 300
        page = Browser(driver)
        # Start from a blank tab with empty logs: the new-tab page Chromium opens with is not the page's doing.
        await page.open("about:blank")
        await page.network()
        await page.console_errors()
        yield page
    finally:
        await asyncio.to_thread(driver.quit)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    async with chromium(tmp_path / "chromium") as page:
        yield page


def row(site: str) -> str:
    return f"document.querySelector('#sites li[data-site=\"{site}\"]')"


async def assert_clean(page: Browser, origin: str) -> None:
    """No console error, and nothing asked of another origin (data: URLs are the page's own bytes)."""
    errors = await page.console_errors()
    assert not errors, errors
    urls, _ = await page.network()
    assert urls, "the DevTools network log recorded nothing: the check would prove nothing"
    foreign = [u for u in urls if not (u.startswith(origin + "/") or u.startswith("data:"))]
    assert not foreign, foreign


@pytest.mark.slow
async def test_fleet_and_site_pages_live_over_allocation_and_dark(procs: Procs, http: aiohttp.ClientSession,
                                                                 make_sim_fleet: Any, browser: Browser) -> None:
    sim = await make_sim_fleet()  # two sites, one miner per dialect profile each
    agents = {}
    for site in ("site-a", "site-b"):
        mine = [m for m in sim.miners if m.site == site]
        agents[site] = await start_agent(procs, agent_yaml(procs.tmp / f"{site}.yaml", site, mine), http)
    draw = {}
    for site, agent in agents.items():
        totals = (await get_json(http, agent.url + "/api/v1/summary"))["totals"]
        draw[site] = totals["power_w"]["firmware"] + totals["power_w"]["estimate"]
    allocation_mw = {site: round(w * 1.1 / MW, 6) for site, w in draw.items()}  # x1.2 load is over
    # No Alertmanager: the page shows the collector's own alert state, delivery is not under test here.
    config = sites_yaml(procs.tmp / "sites.yaml", {s: [p.url] for s, p in agents.items()}, allocation_mw,
                        f"http://127.0.0.1:{free_port()}")
    collector = await start_collector(procs, config, http)

    await browser.open(collector.url + "/")
    await browser.until("document.querySelectorAll('#sites li.site').length === 2 && "
                        "document.getElementById('conn').dataset.state === 'live'", 10, "both sites, live")
    await browser.js("window.notReloaded = true")
    await browser.screenshot("fleet-ok")
    await assert_clean(browser, collector.url)
    assert await browser.js(f"return {row('site-a')}.dataset.level") == "ok"

    # Over: the collector knows, then the open page turns the row red within two of its cycles.
    async with http.post(sim.control_url + "/api/v1/sites/site-a/load", json={"factor": 1.2}) as resp:
        assert resp.status == 200

    async def collector_knows() -> bool:
        return (await site_view(http, collector, "site-a"))["utilisation_ratio"] > 1

    await wait_until(collector_knows, 10, "the collector to see site-a over its allocation", every_s=0.05)
    known = time.monotonic()
    await browser.until(f"{row('site-a')}.dataset.level === 'critical'", 2 * POLL_S, "site-a red on the page")
    print(f"status page: site-a red {time.monotonic() - known:.2f} s after the collector knew")
    assert await browser.js("return window.notReloaded") is True  # live, not a reload
    text = await browser.js(f"return {row('site-a')}.innerText")
    assert "over by" in text.lower(), text  # in words, not colour alone
    assert await browser.js(f"return getComputedStyle({row('site-a')}).borderLeftColor") == "rgb(185, 28, 28)"
    assert await browser.js("return document.querySelector('#sites li.site').dataset.site") == "site-a"
    # Curtailment (mode plan by default) says what it would stop; nothing is sent in that mode.
    await browser.until(f"{row('site-a')}.innerText.includes('Curtailment (plan)')", 2 * POLL_S,
                        "site-a's curtailment plan on the page")
    await browser.screenshot("fleet-over")

    # Dark: every miner of site-b hangs. Agents answer, nothing is measured: `dark`, and never 0 MW.
    async with http.post(sim.control_url + "/api/v1/faults",
                         json={"site": "site-b", "fault": "hang", "fraction": 1.0}) as resp:
        assert resp.status == 200, await resp.text()

    async def collector_dark() -> bool:
        return (await site_view(http, collector, "site-b"))["status"] == "dark"

    await wait_until(collector_dark, 20, "the collector to call site-b dark")
    known = time.monotonic()
    await browser.until(f"{row('site-b')}.dataset.status === 'dark'", 2 * POLL_S, "site-b dark on the page")
    print(f"status page: site-b dark {time.monotonic() - known:.2f} s after the collector knew")
    text = await browser.js(f"return {row('site-b')}.innerText")
    assert "DARK" in text.upper() and "none (dark)" in text, text
    assert not re.search(r"(?<![\d.])0(\.0+)? (W|kW|MW)\b", text), text  # an unknown is never shown as zero
    await browser.screenshot("fleet-dark")

    # A phone: one column, nothing wider than the screen.
    await browser.call(browser.driver.set_window_size, 390, 844)
    await browser.until("document.documentElement.scrollWidth <= window.innerWidth", 5, "no sideways scrolling")
    await browser.screenshot("fleet-phone")
    await browser.call(browser.driver.set_window_size, 1280, 900)

    # The site page: chart from the collector's history, agents, worst miners with links to their agent.
    await browser.open(collector.url + "/sites/site-b")
    await browser.until("document.querySelector('#chart path[data-series=\"facility_power_w\"]') && "
                        "document.querySelectorAll('#agents tbody tr').length === 1 && "
                        "document.querySelectorAll('#miners tbody tr').length > 0", 10, "chart, agents, miners")
    links = await browser.js("return [...document.querySelectorAll('#miners tbody a')].map(a => a.href)")
    assert links and all(link.startswith(agents["site-b"].url + "/api/v1/miners?state=") for link in links), links
    reasons = await browser.js("return [...document.querySelectorAll('#miners tbody tr')].map(r => r.dataset.reason)")
    assert set(reasons) <= {"down", "stale"}, reasons
    assert "dark" in (await browser.js(f"return {row('site-b')}.innerText")).lower()
    await browser.screenshot("site-dark")
    await assert_clean(browser, collector.url)


async def test_page_shows_its_own_staleness_when_the_collector_goes_away(
        procs: Procs, http: aiohttp.ClientSession, browser: Browser) -> None:
    async with fake_agent(FakeAgent("site-a", power_firmware_w=8 * MW)) as a:
        config = sites_yaml(procs.tmp / "sites.yaml", {"site-a": [a.url]}, {"site-a": 10},
                            f"http://127.0.0.1:{free_port()}")
        collector = await start_collector(procs, config, http)
        await browser.open(collector.url + "/")
        await browser.until("document.getElementById('conn').dataset.state === 'live'", 10, "the page live")
        collector.stop()
        gone = time.monotonic()
        await browser.until("document.getElementById('conn').dataset.state === 'unreachable'", 2 * POLL_S + 5,
                            "the page to say the collector is unreachable")
        print(f"status page: unreachable shown {time.monotonic() - gone:.2f} s after the collector stopped")
        first = await browser.js("return document.getElementById('conn').innerText")
        assert "unreachable" in first.lower(), first
        # The age keeps counting while nothing answers.
        age = "parseInt(document.getElementById('conn-age').textContent.match(/(\\d+) s old/)[1])"
        start = await browser.js(f"return {age}")
        await browser.until(f"{age} >= {start + 2}", 5, "the data's age to keep growing")
        assert await browser.js("return document.getElementById('main').dataset.stale") == "true"
        # The last figures stay on screen, dimmed, rather than vanish or turn into zeros.
        assert await browser.js(f"return {row('site-a')}.innerText.includes('8.00 MW')")
        await browser.screenshot("fleet-unreachable")


async def test_with_basic_auth_the_page_needs_the_password(procs: Procs, http: aiohttp.ClientSession) -> None:
    web_config = write_web_config(procs.tmp, tls=False, users={"operator": "correct horse"})
    async with fake_agent(FakeAgent("site-a", power_firmware_w=8 * MW)) as a:
        config = sites_yaml(procs.tmp / "sites.yaml", {"site-a": [a.url]}, {"site-a": 10},
                            f"http://127.0.0.1:{free_port()}")
        collector = megawatch(procs, "collector", "collector", "--config", str(config), "--log-format", "json",
                              "--web.config.file", str(web_config))
        collector.url = await listening_url(collector, "collector_started")
        await _until_cycled(http, collector)

        async with chromium(procs.tmp / "chromium-no-password") as browser:
            await browser.open(collector.url + "/")
            _, statuses = await browser.network()
            assert statuses.get(collector.url + "/") == 401, statuses
            assert not await browser.js("return document.getElementById('sites')")  # nothing without it

        # As after an operator answers the browser's password prompt: the browser keeps the credentials for
        # the collector's realm and sends them with the page, its files and every poll. A navigation with
        # them in the URL puts them there; the page itself is then opened without. Live means the page's
        # polls got through, not only the HTML.
        async with chromium(procs.tmp / "chromium-password") as browser:
            host = collector.url.removeprefix("http://")
            await browser.open(f"http://operator:correct%20horse@{host}/healthz")
            await browser.open(collector.url + "/")
            await browser.until(f"document.getElementById('conn').dataset.state === 'live' && {row('site-a')}",
                                10, "the page live with credentials")
            _, statuses = await browser.network()
            assert statuses.get(collector.url + "/api/v1/overview") == 200, statuses
            await browser.screenshot("fleet-basic-auth")


async def _until_cycled(http: aiohttp.ClientSession, collector: Proc) -> None:
    auth = {"Authorization": aiohttp.encode_basic_auth("operator", "correct horse")}

    async def healthy() -> bool:
        async with http.get(collector.url + "/healthz", headers=auth) as resp:
            return resp.status == 200

    await wait_until(healthy, 10, "collector /healthz with credentials")


async def test_meter_schedule_and_alerts_render_as_the_api_gives_them(browser: Browser) -> None:
    """The collector's real app in this process, its fleet given a trusted meter at one site and a schedule
    at another: the page shows the meter as the figure, the next allocation change, and unknowns in words."""
    from megawatch.collector.sitemeter import MeterState, SiteMeter

    async with (fake_agent(FakeAgent("metered", power_firmware_w=5 * MW)) as m,
                fake_agent(FakeAgent("scheduled", power_firmware_w=4 * MW)) as s,
                aiohttp.ClientSession() as session):
        zone = "UTC"
        now = time.time()
        start = datetime.fromtimestamp(now + 7200, ZoneInfo(zone)).time().replace(second=0, microsecond=0)
        window = ScheduleWindow(days=frozenset(range(7)), start=start, end=(datetime.combine(
            datetime.now(ZoneInfo(zone)).date(), start) + timedelta(hours=1)).time(), end_of_day=False,
            timezone=zone, allocation_w=3 * MW)
        config = CollectorConfig(
            path="t.yaml", fleet_name="render", fleet_allocation_w=30 * MW, allow_oversubscription=False,
            sites=(Site("metered", "Metered site", 10 * MW, 1.0, 0.0, (m.url,)),
                   Site("scheduled", "Scheduled site", 10 * MW, 1.0, 0.0, (s.url,), schedule=(window,))),
            thresholds=Thresholds(), alerting=Alerting(), poll_interval_s=5, poll_timeout_s=1)
        service = CollectorService(config, session, "http://127.0.0.1/api/v1/alerts")
        fleet = await service.poll_once()
        meter = SiteMeter(state=MeterState.OK, power_w=7.5 * MW, age_s=1.0, up=True, energy_import_wh=None,
                          miners_facility_power_w=5 * MW, non_miner_load_w=0.0, reconciliation_w=2.5 * MW,
                          reconciliation_ratio=0.5, unseen_w=0.0, error=None, problems=())
        service.fleet = replace(fleet, sites=tuple(
            replace(t, meter=meter, draw=replace(t.draw, facility_power_w=7.5 * MW, utilisation_ratio=0.75))
            if t.site_id == "metered" else t for t in fleet.sites))
        async with serve_app(make_app(service)) as url:
            await browser.open(url + "/")
            await browser.until(f"{row('metered')} && {row('scheduled')}", 10, "both rows")
            metered = await browser.js(f"return {row('metered')}.innerText")
            assert "Figure (meter)" in metered and "7.50 MW" in metered and "Meter (ok)" in metered, metered
            assert await browser.js(f"return !!{row('metered')}.querySelector('.bar .meter')")
            scheduled = await browser.js(f"return {row('scheduled')}.innerText")
            assert "Next change" in scheduled and "3.00 MW at" in scheduled, scheduled
            await browser.screenshot("fleet-meter-and-schedule")
            await assert_clean(browser, url)
