"""Reading agents over real loopback HTTP: deadlines, bad replies, carried values, summary contract."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import aiohttp
import pytest

from megawatch.collector.sources import AgentReader, SummaryError, SummaryNotReady, observe, parse_summary
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
