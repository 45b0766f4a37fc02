"""Energy accounts through the collector's own cycle: fake agents over HTTP -> poll_once -> /metrics, restarts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from megawatch.collector.config import CollectorConfig, Site
from megawatch.collector.production import Production
from megawatch.collector.service import CollectorService
from megawatch.collector.web import make_app
from tests.collector.fakes import FakeAgent, fake_agent
from tests.collector.helpers import MW, make_config
from tests.collector.test_collector_web import Clock, samples

PRODUCTION = Production(difficulty=1e14, block_subsidy_btc=3.125, fees_per_block_btc=0.25)


def _config(url: str, state: Path) -> CollectorConfig:
    site = Site("a", "A", 2 * MW, 1.1, 0.1 * MW, (url,))
    return replace(make_config(site, fleet_mw=3.0), poll_interval_s=5, poll_timeout_s=1, state_file=state,
                   production=PRODUCTION)


async def _metrics(service: CollectorService) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with TestClient(TestServer(make_app(service))) as client:
        return samples(await (await client.get("/metrics")).text())


async def test_counters_carry_over_a_restart_and_a_long_outage_is_unknown(tmp_path: Path) -> None:
    # Firmware 1 MW + estimate 0.2 MW at PUE 1.1 + 0.1 MW aux: 1.42 MW at the facility, 0.22 MW estimated.
    agent = FakeAgent("a", power_firmware_w=1 * MW, power_estimate_w=0.2 * MW, hashrate_hs=5e16, age_s=0.0)
    facility, estimated = 1.2 * MW * 1.1 + 0.1 * MW, 0.2 * MW * 1.1
    async with fake_agent(agent) as a, aiohttp.ClientSession() as session:
        config = _config(a.url, tmp_path / "state.json")
        clock = Clock()
        t0 = clock.t
        first = CollectorService(config, session, "http://x/", clock=clock)
        for _ in range(3):
            await first.poll_once()
            clock.t += 5
        # Killed after the cycle at t0+10; a new process starts and polls at t0+25: 15 s since the last sample.
        clock.t = t0 + 25
        second = CollectorService(config, session, "http://x/", clock=clock)
        await second.poll_once()
        m = await _metrics(second)
        site, fleet = (("site", "a"),), (("fleet", "test-fleet"),)
        assert m[("megawatch_site_energy_joules_total", site)] == facility * 25
        assert abs(m[("megawatch_site_energy_estimated_joules_total", site)] - estimated * 25) < 1e-3
        assert m[("megawatch_fleet_energy_joules_total", fleet)] == facility * 25
        assert m[("megawatch_site_allocation_energy_joules_total", site)] == 2 * MW * 25
        assert m[("megawatch_site_energy_unknown_seconds_total", site)] == 0
        assert m[("megawatch_site_hashes_total", site)] == 5e16 * 25
        expected = 5e16 * 25 * 3.375 / (1e14 * 2**32)
        assert abs(m[("megawatch_site_expected_btc_total", site)] - expected) < expected * 1e-12
        assert m[("megawatch_production_difficulty", ())] == 1e14
        # Down for an hour: the hour is unknown energy at the allocation (2 MW > 1.42 MW), and logged.
        clock.t += 3600
        third = CollectorService(config, session, "http://x/", clock=clock)
        with capture_logs() as logs:
            await third.poll_once()
        m = await _metrics(third)
        assert m[("megawatch_site_energy_joules_total", site)] == facility * 25
        assert m[("megawatch_site_energy_unknown_seconds_total", site)] == 3600
        assert m[("megawatch_site_energy_unknown_joules_total", site)] == 2 * MW * 3600
        assert m[("megawatch_fleet_energy_unknown_joules_total", fleet)] == 3 * MW * 3600
        gaps = [e for e in logs if e["event"] == "energy_gap_counted_unknown"]
        assert {(e["kind"], e["gap_s"]) for e in gaps} == {("site", 3600), ("fleet", 3600)}


async def test_without_a_state_file_the_counters_start_at_zero_and_expected_btc_needs_settings() -> None:
    agent = FakeAgent("a", power_firmware_w=1 * MW, power_estimate_w=0.0, age_s=0.0)
    async with fake_agent(agent) as a, aiohttp.ClientSession() as session:
        config = replace(_config(a.url, Path("unused")), state_file=None, production=None)
        clock = Clock()
        service = CollectorService(config, session, "http://x/", clock=clock)
        await service.poll_once()
        clock.t += 5
        await service.poll_once()
        m = await _metrics(service)
    assert m[("megawatch_site_energy_joules_total", (("site", "a"),))] == (1 * MW * 1.1 + 0.1 * MW) * 5
    assert not any(name == "megawatch_site_expected_btc_total" for name, _ in m)
    assert ("megawatch_production_difficulty", ()) not in m


async def test_an_agent_going_away_keeps_its_energy_counted_as_allowance(tmp_path: Path) -> None:
    # The agent stops answering for 60 s (an agent restart, a network cut): its miners keep drawing, so the
    # site's energy goes on at its last known figure, counted as allowance, never as 0 W.
    agent = FakeAgent("a", power_firmware_w=1 * MW, power_estimate_w=0.0, hashrate_hs=5e16, age_s=0.0)
    facility = 1 * MW * 1.1 + 0.1 * MW
    async with fake_agent(agent) as a, aiohttp.ClientSession() as session:
        config = replace(_config(a.url, tmp_path / "state.json"), thresholds=replace(
            make_config().thresholds, stale_after_s=10))
        clock = Clock()
        service = CollectorService(config, session, "http://x/", clock=clock)
        for step in range(25):  # 120 s: up for 30 s, away for 60 s, back for 30 s
            agent.mode = "error" if 30 <= step * 5 < 90 else "ok"
            await service.poll_once()
            clock.t += 5
        t = service.energy.accounts[("site", "a")].totals
    assert t.judged_j == facility * 120
    # Fresh for the first 10 s of its silence (stale_after_s), carried as allowance for the other 50 s.
    assert t.allowance_j == (1 * MW * 1.1) * 50 and t.measured_j == t.judged_j - t.allowance_j
    assert t.unknown_s == 0
    assert t.hashes == 5e16 * 70  # a stale agent's carried hashrate is not production
