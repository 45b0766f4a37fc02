"""Reading agents over real loopback HTTP: deadlines, bad replies, carried values, summary contract."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import aiohttp
import pytest
from structlog.testing import capture_logs

from megawatch.collector.sources import (
    AgentReader,
    SummaryError,
    SummaryNotReady,
    observe,
    page_hint,
    parse_summary,
)
from tests.collector.fakes import FakeAgent, fake_agent


def test_parse_summary_reads_base_units_and_keeps_unknown_as_none() -> None:
    doc = FakeAgent(site="a", power_firmware_w=900_000.0, power_estimate_w=None).summary()
    s = parse_summary(doc)
    assert s.site == "a" and s.power_firmware_w == 900_000.0 and s.power_estimate_w is None
    assert s.power_w == 900_000.0 and s.miners_total == 100 and s.age_at_fetch_s == 0.5


@pytest.mark.parametrize(("doc", "message"), [
    ([], "expected a JSON object"),
    ({"version": 2}, "unsupported summary version 2"),
    ({"version": 1, "totals": {"hashrate_hs": "fast"}}, "totals.hashrate_hs: expected a number >= 0 or null"),
    ({"version": 1, "totals": {"power_w": {"firmware": -5}}}, "totals.power_w.firmware: expected a number >= 0"),
    ({"version": 1, "miners": {"up": 1.5}, "totals": {"hashrate_hs": 1}}, "miners.up: expected a whole count"),
    ({"version": 1, "totals": {"hashrate_hs": True}}, "expected a number"),
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
