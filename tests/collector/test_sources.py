"""Reading agents over real loopback HTTP: deadlines, bad replies, carried values, summary contract."""

from __future__ import annotations

import json
import math
import time
from contextlib import AsyncExitStack
from dataclasses import replace

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from megawatch.collector.aggregate import aggregate_site
from megawatch.collector.config import Alerting, CollectorConfig, Site, Thresholds
from megawatch.collector.model import SiteStatus
from megawatch.collector.service import CollectorService
from megawatch.collector.sources import (
    SUMMARY_FIELDS,
    AgentReader,
    SummaryError,
    SummaryNotReady,
    observe,
    page_hint,
    parse_summary,
)
from megawatch.collector.web import make_app
from tests.collector.fakes import FakeAgent, fake_agent
from tests.collector.helpers import MW, make_site, make_summary, observed


def test_parse_summary_reads_base_units_and_keeps_unknown_as_none() -> None:
    doc = FakeAgent(site="a", power_firmware_w=900_000.0, power_estimate_w=None).summary()
    s = parse_summary(doc)
    assert s.site == "a" and s.power_firmware_w == 900_000.0 and s.power_estimate_w is None
    assert s.power_w == 900_000.0 and s.miners_total == 100 and s.age_at_fetch_s == 0.5


@pytest.mark.parametrize(("doc", "message"), [
    ([], "expected a JSON object"),
    ({"version": 2}, "unsupported summary version 2"),
])
def test_parse_summary_rejects_what_it_cannot_trust(doc: object, message: str) -> None:
    with pytest.raises(SummaryError, match=message.replace("(", r"\(")):
        parse_summary(doc)


def test_summary_before_the_first_cycle_is_not_ready_not_zero() -> None:
    with pytest.raises(SummaryNotReady):
        parse_summary({"version": 1, "site": "a", "cycle": None, "totals": None})


async def test_fetch_all_is_concurrent_and_a_hung_agent_costs_only_its_deadline() -> None:
    async with (fake_agent(FakeAgent("a")) as good, fake_agent(FakeAgent("a", mode="hang")) as hung,
                fake_agent(FakeAgent("a", mode="garbage")) as garbage, fake_agent(FakeAgent("a", mode="huge")) as huge,
                fake_agent(FakeAgent("a", mode="error")) as failing, aiohttp.ClientSession() as session):
        reader = AgentReader(session, timeout_s=0.5, clock=time.monotonic, max_bytes=64 * 1024)
        started = time.monotonic()
        results = {r.url: r for r in await reader.fetch_all([good.url, hung.url, garbage.url, huge.url,
                                                             failing.url, "http://127.0.0.1:9"])}
        elapsed = time.monotonic() - started
    assert elapsed < 1.5, "the hung agent must cost its own 0.5 s deadline, not stall the others"
    assert results[good.url].summary is not None and results[good.url].error is None
    assert results[hung.url].error == "no answer within 0.5 s"
    assert "not JSON" in (results[garbage.url].error or "")
    assert "larger than 65536 bytes" in (results[huge.url].error or "")
    assert results[failing.url].error == "HTTP 500 from /api/v1/summary"
    assert "ClientConnectorError" in (results["http://127.0.0.1:9"].error or "")


async def test_observe_keeps_the_last_good_summary_while_down() -> None:
    async with fake_agent(FakeAgent("a", power_firmware_w=2e6)) as agent, aiohttp.ClientSession() as session:
        reader = AgentReader(session, timeout_s=1, clock=time.monotonic)
        (first,) = await reader.fetch_all([agent.url])
        obs = observe(None, first, now=100)
        agent.mode = "error"
        (second,) = await reader.fetch_all([agent.url])
        obs = observe(obs, second, now=115)
        obs = observe(obs, second, now=130)
    assert not obs.up and obs.consecutive_failures == 2 and obs.down_since == 115
    assert obs.summary is not None and obs.summary.power_w == 2e6 and obs.fetched_at == 100
    assert obs.last_error == "HTTP 500 from /api/v1/summary"


async def test_deadline_starts_when_an_agents_turn_comes_not_in_the_queue() -> None:
    slow = [FakeAgent("a", mode="slow", delay_s=0.2) for _ in range(6)]
    async with AsyncExitStack() as stack:
        agents = [await stack.enter_async_context(fake_agent(a)) for a in slow]
        session = await stack.enter_async_context(aiohttp.ClientSession())
        reader = AgentReader(session, timeout_s=0.5, clock=time.monotonic, concurrency=2)
        results = await reader.fetch_all([a.url for a in agents])
    # Three waves of 0.2 s: the last starts at 0.4 s; with the deadline counted from the queue it would miss.
    assert [r.error for r in results] == [None] * 6


def fetch_events(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if str(e["event"]).startswith("agent_fetch_")]


async def test_one_event_when_fetches_start_failing_and_one_when_they_recover() -> None:
    now = [1000.0]
    async with fake_agent(FakeAgent("a", mode="error")) as agent, aiohttp.ClientSession() as session:
        url = agent.url.replace("http://", "http://ops:hunter2@")
        reader = AgentReader(session, timeout_s=1, clock=lambda: now[0])
        with capture_logs() as logs:
            for _ in range(4):  # four failing polls, one event
                (result,) = await reader.fetch_all([url])
                assert result.error == "HTTP 500 from /api/v1/summary"
                now[0] += 15
            failed = fetch_events(logs)
            agent.mode = "ok"
            for _ in range(3):  # three good polls, one event
                (result,) = await reader.fetch_all([url])
                assert result.error is None
                now[0] += 15
    assert failed == [{"event": "agent_fetch_failed", "log_level": "warning", "url": agent.url,
                       "error": "HTTP 500 from /api/v1/summary"}]
    assert fetch_events(logs)[1:] == [{"event": "agent_fetch_recovered", "log_level": "info", "url": agent.url,
                                       "failing_for_s": 60.0}]
    assert "hunter2" not in repr(logs)


async def test_an_agent_failing_from_the_first_poll_is_logged() -> None:
    # The wrong port in sites.yaml: the agent was never up, so there is no "went down" to notice.
    async with aiohttp.ClientSession() as session:
        reader = AgentReader(session, timeout_s=1, clock=time.monotonic)
        with capture_logs() as logs:
            await reader.fetch_all(["http://127.0.0.1:9"])
            await reader.fetch_all(["http://127.0.0.1:9"])
    (event,) = fetch_events(logs)
    assert event["event"] == "agent_fetch_failed" and "ClientConnectorError" in str(event["error"])


async def test_an_answer_before_the_first_cycle_is_a_recovery_not_a_failure() -> None:
    async with fake_agent(FakeAgent("a", mode="error")) as agent, aiohttp.ClientSession() as session:
        reader = AgentReader(session, timeout_s=1, clock=time.monotonic)
        with capture_logs() as logs:
            await reader.fetch_all([agent.url])
            agent.mode = "not_ready"
            await reader.fetch_all([agent.url])
            await reader.fetch_all([agent.url])
    assert [e["event"] for e in fetch_events(logs)] == ["agent_fetch_failed", "agent_fetch_recovered"]


async def test_a_url_that_names_the_metrics_page_gets_a_hint() -> None:
    async with fake_agent(FakeAgent("a")) as agent, aiohttp.ClientSession() as session:
        reader = AgentReader(session, timeout_s=1, clock=time.monotonic)
        with capture_logs() as logs:
            (result,) = await reader.fetch_all([agent.url + "/metrics"])
    assert result.error == (f"HTTP 404 from /api/v1/summary (the agent URL ends in /metrics: list the agent's "
                            f"base URL ({agent.url}); the collector asks for /api/v1/summary itself)")
    assert fetch_events(logs)[0]["error"] == result.error


def test_page_hint_only_for_the_agents_own_pages() -> None:
    assert page_hint("http://u:p@10.0.0.1:9540/api/v1/summary/") == (
        "the agent URL ends in /api/v1/summary: list the agent's base URL (http://10.0.0.1:9540); "
        "the collector asks for /api/v1/summary itself")
    assert page_hint("https://proxy.example/site-a/metrics").startswith(
        "the agent URL ends in /metrics: list the agent's base URL (https://proxy.example/site-a)")
    assert page_hint("http://127.0.0.1:9540") == page_hint("https://proxy.example/site-a") == ""


# ---- A bad field costs that field, never the agent ----

def _good() -> dict:  # type: ignore[type-arg]
    return FakeAgent(site="a", power_firmware_w=900_000.0, power_estimate_w=100_000.0, hashrate_hs=3e16).summary()


@pytest.mark.parametrize(("path", "bad", "message"), [
    (("totals", "hashrate_hs"), "fast", "totals.hashrate_hs: expected a number >= 0 or null"),
    (("totals", "hashrate_hs"), True, "totals.hashrate_hs: expected a number"),
    (("totals", "hashrate_hs"), float("inf"), "totals.hashrate_hs: expected a number"),
    (("totals", "hashrate_hs"), 1e25, "totals.hashrate_hs: 1e+25 is more than any site gives"),
    (("totals", "power_w", "firmware"), -5, "totals.power_w.firmware: expected a number >= 0"),
    (("totals", "power_w", "firmware"), float("nan"), "totals.power_w.firmware: expected a number"),
    (("totals", "power_w", "estimate"), float("inf"), "totals.power_w.estimate: expected a number"),
    (("totals", "power_w", "firmware"), 1e308, "totals.power_w.firmware: 1e+308 is more than any site gives"),
    (("totals", "power_w", "firmware"), 9e9, "totals.power_w.firmware: 9e+09 is more than any site gives"),
    (("miners", "up"), 1.5, "miners.up: expected a whole count"),
    (("miners", "down"), 1e12, "miners.down: expected a whole count up to 1000000"),
    (("agent",), 42, "agent: expected a string"),
])
def test_a_bad_field_is_dropped_and_named_and_the_rest_is_kept(path: tuple[str, ...], bad: object,
                                                               message: str) -> None:
    doc = _good()
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = bad
    rejected: list[str] = []
    s = parse_summary(doc, rejected)
    assert len(rejected) == 1 and rejected[0].startswith(message), rejected
    assert s.site == "a" and s.miners_total == 100 and s.cycle_ts is not None  # the agent still counts
    good = parse_summary(_good())
    for name in ("hashrate_hs", "power_firmware_w", "power_estimate_w", "miners_up", "miners_down", "agent_id"):
        dropped = ".".join(SUMMARY_FIELDS[name]) == ".".join(path)
        assert getattr(s, name) == (None if dropped else getattr(good, name)), name
    if path[:2] == ("totals", "power_w"):
        # Which miners lied is not known: every one of the agent's miners is of unknown draw now.
        assert s.miners_power_unknown == s.miners_total


async def test_an_agent_reporting_infinity_stays_read_and_its_bad_field_is_logged_once() -> None:
    agent = FakeAgent("a", power_firmware_w=float("inf"), power_estimate_w=2e6)
    async with fake_agent(agent) as served, aiohttp.ClientSession() as session:
        reader = AgentReader(session, timeout_s=1, clock=time.monotonic)
        with capture_logs() as logs:
            (first,) = await reader.fetch_all([served.url])
            (second,) = await reader.fetch_all([served.url])
            agent.power_firmware_w = 1e6
            (third,) = await reader.fetch_all([served.url])
    # Python's json reads `Infinity`; the field is dropped, the agent is not.
    assert first.error is None and first.summary is not None
    assert first.summary.power_firmware_w is None and first.summary.power_estimate_w == 2e6
    assert first.summary.miners_up == 100 and second.summary is not None
    assert third.summary is not None and third.summary.power_firmware_w == 1e6
    events = [(e["event"], e.get("fields")) for e in logs if e["event"].startswith("agent_fields")]
    assert events == [("agent_fields_rejected", [
        "totals.power_w.firmware: expected a number >= 0 or null, got inf: dropped as unknown"]),
        ("agent_fields_accepted", None)]


def _doc(**totals: object) -> dict[str, object]:
    base: dict[str, object] = {"hashrate_hs": 1e15, "power_w": {"firmware": 60_000.0, "estimate": 0.0},
                               "power_unknown_miners": 5}
    return {"version": 1, "agent": "a", "site": "s", "cycle": {"finished_s": 100.0}, "staleness": {"age_s": 1.0},
            "totals": base | totals, "miners": {"configured": 20, "up": 15, "down": 5, "stale": 0}}


def test_the_allowance_is_read_and_an_older_agent_gets_one_at_the_default() -> None:
    s = parse_summary(_doc(power_allowance_w=20_900.0, power_upper_bound_w=80_900.0,
                           allowance_miners={"last_known": 5, "nameplate": 0, "default": 0}))
    assert s.power_allowance_w == 20_900.0 and s.upper_bound_w == 80_900.0 and s.allowance_last_known == 5
    older = parse_summary(_doc())  # no allowance keys: 5 unknown miners at 3500 W each, never 0 W
    assert older.power_allowance_w == 5 * 3500.0 and older.allowance_default == 5


def test_a_power_figure_that_lies_leaves_every_miner_allowed_for() -> None:
    s = parse_summary(_doc(power_w={"firmware": 9e15, "estimate": 0.0}, power_allowance_w=20_900.0))
    assert s.power_firmware_w is None and s.miners_power_unknown == 20
    assert s.power_allowance_w == 20 * 3500.0 and s.allowance_default == 20 and s.allowance_last_known is None


@pytest.mark.parametrize("totals", [
    {"power_w": {"firmware": None, "estimate": None}, "power_unknown_miners": 0},
    {"power_w": {"firmware": None, "estimate": None}, "power_unknown_miners": 0, "power_allowance_w": 0.0},
    {"power_w": None, "power_unknown_miners": 0, "power_allowance_w": 0.0},
    {"power_w": None, "power_unknown_miners": 0},
    {"power_w": None},
], ids=["nulls-no-allowance", "nulls-zero-allowance", "null-zero-allowance", "null-no-allowance", "null-only"])
def test_a_summary_without_any_power_figure_counts_every_miner_as_unknown_never_zero(
        totals: dict[str, object]) -> None:
    doc = _doc(**totals)
    if "power_unknown_miners" not in totals:
        del doc["totals"]["power_unknown_miners"]  # type: ignore[index]
    s = parse_summary(doc)
    # The agent finished a cycle yet says nothing of its draw: each of its 20 miners at the default.
    assert s.power_w is None and s.miners_power_unknown == 20
    assert s.power_allowance_w == 20 * 3500.0 and s.allowance_default == 20
    site = make_site(allocation_mw=1.0)
    url = site.agents[0]
    t = aggregate_site(site, {url: observed(url, s, at=100.0)}, now=101.0, stale_after_s=60.0)
    assert t.draw.facility_power_w == 20 * 3500.0 and t.draw.miner_allowance_w == 20 * 3500.0
    assert t.status is SiteStatus.DARK


def test_a_summary_without_power_or_a_miner_count_counts_as_an_agent_never_heard_from() -> None:
    doc = _doc(power_w=None, power_unknown_miners=0, power_allowance_w=0.0)
    doc["miners"] = {}
    s = parse_summary(doc)
    assert s.power_allowance_w is None and s.upper_bound_w is None
    site = make_site(allocation_mw=1.0, agents=2)
    url = site.agents[0]
    t = aggregate_site(site, {url: observed(url, s, at=100.0)}, now=101.0, stale_after_s=60.0)
    # Its share of the allocation, and the other agent's (never heard from): the site reads at its allocation.
    assert t.draw.facility_power_w == pytest.approx(1.0 * MW) and t.status is SiteStatus.DARK


def test_a_fresh_summary_with_no_power_and_zero_allowance_is_never_zero_in_the_totals() -> None:
    # Built directly (a summary parse_summary would have fixed): the aggregate does not trust it either.
    site = make_site(allocation_mw=1.0)
    url = site.agents[0]
    s = make_summary(power_w=None, estimate_w=None, allowance_w=0.0)
    t = aggregate_site(site, {url: observed(url, s, at=100.0)}, now=101.0, stale_after_s=60.0)
    assert t.draw.facility_power_w == pytest.approx(1.0 * MW) and t.status is not SiteStatus.OK


def test_the_margin_on_known_draws_is_judged_but_leaves_a_fully_read_site_ok() -> None:
    margins = {"last_known": 0.0, "nameplate": 0.0, "default": 0.0, "estimate_margin": 5_000.0,
               "firmware_margin": 1_000.0}
    read = parse_summary(_doc(power_unknown_miners=0, power_allowance_w=6_000.0, allowance_w=margins))
    assert read.allowance_margin_w == 6_000.0
    site = make_site(allocation_mw=1.0)
    url = site.agents[0]
    t = aggregate_site(site, {url: observed(url, read, at=100.0)}, now=101.0, stale_after_s=60.0)
    assert t.draw.facility_power_w == 66_000.0 and t.draw.miner_allowance_w == 6_000.0
    assert t.status is SiteStatus.OK  # every miner read: the margin is no miner out of sight
    hung = parse_summary(_doc(power_allowance_w=6_000.0 + 5 * 3300.0, allowance_w=margins | {"last_known": 16_500.0}))
    t = aggregate_site(site, {url: observed(url, hung, at=100.0)}, now=101.0, stale_after_s=60.0)
    assert t.status is SiteStatus.PARTIAL and t.draw.facility_power_w == 60_000.0 + 22_500.0


def _strict_json(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


async def test_an_agent_stating_infinity_keeps_its_site_and_every_collector_api_stays_json() -> None:
    # Two agents of one site: one healthy, one whose power is Infinity (what two miners at 1e308 W made an
    # older agent serve). The site keeps both agents' miners and the healthy agent's watts; nothing is NaN.
    async with (fake_agent(FakeAgent("a", power_firmware_w=3e6, power_estimate_w=0.0)) as healthy,
                fake_agent(FakeAgent("a", agent="liar", power_firmware_w=float("inf"))) as liar,
                aiohttp.ClientSession() as session):
        config = CollectorConfig(
            path="t.yaml", fleet_name="f", fleet_allocation_w=20e6, allow_oversubscription=False,
            sites=(Site("a", "Site A", 10e6, 1.0, 0.0, (healthy.url, liar.url)),),
            thresholds=Thresholds(), alerting=Alerting(alertmanager_urls=()), poll_interval_s=5, poll_timeout_s=1)
        service = CollectorService(config, session, "http://127.0.0.1:9300/api/v1/alerts")
        fleet = await service.poll_once()
        (site,) = fleet.sites
        assert site.status.value != "no_data" and all(a.up and a.has_data for a in site.agents)
        assert site.draw.miners_up == 200 and site.draw.power_firmware_w == 3e6
        assert site.draw.miners_power_unknown == 100  # the liar's miners: draw unknown, never 0 W
        async with TestClient(TestServer(make_app(service))) as client:
            for path in ("/api/v1/sites", "/api/v1/alerts"):
                resp = await client.get(path)
                assert resp.status == 200 and resp.content_type == "application/json"
                _strict_json(await resp.text())
            # Were a non-finite figure ever to reach the totals, the API writes null, not NaN.
            service.fleet = replace(fleet, draw=replace(fleet.draw, utilisation_ratio=math.nan,
                                                        headroom_w=-math.inf))
            body = _strict_json(await (await client.get("/api/v1/sites")).text())
            assert body["fleet"]["utilisation_ratio"] is None and body["fleet"]["headroom_w"] is None  # type: ignore[index]
