"""HTTP: /metrics (plain and gzip), /healthz, /api/v1/summary, /api/v1/miners, the poller in cleanup_ctx."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from megawatch.agent.config import AgentConfig, load_agent_config
from megawatch.agent.exposition import FleetCollector
from megawatch.agent.poller import Poller
from megawatch.agent.state import FleetState
from megawatch.agent.web import POLLER_TASK, make_app

sys.path.insert(0, str(Path(__file__).parent))
from test_exposition import T0, fixed_snapshot


@pytest.fixture
def config(tmp_path: Path) -> AgentConfig:
    path = tmp_path / "agent.yaml"
    path.write_text("site: karachi-1\nagent_id: agent-a\nminers:\n  - range: 127.1.0.1-127.1.0.7\n"
                    "poll: {interval_s: 15, request_timeout_s: 5}\n")
    return load_agent_config(path)


async def _client(app) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
async def client(config: AgentConfig) -> AsyncIterator[TestClient]:
    state = FleetState(config.site, len(config.miners))
    state.publish(fixed_snapshot())
    registry = CollectorRegistry()
    registry.register(FleetCollector(state))
    async for c in _client(make_app(config, state, registry, wall_clock=lambda: T0 + 5)):
        yield c


def _parse(text: str) -> dict[str, list]:  # type: ignore[type-arg]
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


async def test_metrics_serves_miner_and_site_families(client: TestClient) -> None:
    resp = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = _parse(await resp.text())
    assert "megawatch_miner_up" in families and "megawatch_site_power_watts" in families
    assert "megawatch_agent_polls" in families  # counter family; samples are *_total


async def test_metrics_gzip_is_the_same_text(client: TestClient) -> None:
    plain = await (await client.get("/metrics", headers={"Accept-Encoding": "identity"})).read()
    resp = await client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    raw = await resp.read()
    assert len(raw) < len(plain) / 3
    assert gzip.decompress(raw) == plain


async def test_metrics_is_compressed_family_by_family_never_rendered_whole(
    config: AgentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At 10,000 miners the whole text is ~20 MB and its encoded copy as much again: building them to then
    # compress cost ~70 MB of peak RSS (bench/). The served text must still be exactly the whole render.
    from megawatch.agent.exposition import MinerRenderer

    whole = MinerRenderer(config.exposition).render(fixed_snapshot())
    monkeypatch.setattr(MinerRenderer, "render", lambda self, snapshot: pytest.fail("rendered whole"))
    state = FleetState(config.site, len(config.miners))
    state.publish(fixed_snapshot())
    async for c in _client(make_app(config, state, CollectorRegistry(), wall_clock=lambda: T0 + 5)):
        resp = await c.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert gzip.decompress(await resp.read()).decode() == whole


def test_plain_text_is_decompressed_a_piece_at_a_time(config: AgentConfig) -> None:
    # A scraper that does not ask for gzip gets the text streamed from the compressed copy, never held whole.
    from megawatch.agent.exposition import MinerRenderer
    from megawatch.agent.web import MetricsCache

    cache = MetricsCache(MinerRenderer(config.exposition))
    rendered = cache._render(fixed_snapshot())
    pieces = list(rendered.text_pieces(size=256))
    whole = MinerRenderer(config.exposition).render(fixed_snapshot()).encode()
    assert len(pieces) > 1 and max(map(len, pieces)) <= 256
    assert b"".join(pieces) == whole and rendered.text_bytes == len(whole)


async def test_summary_matches_the_collector_contract(client: TestClient) -> None:
    from megawatch.collector.sources import (
        parse_summary,  # the reader on the other end of the wire
    )

    doc = await (await client.get("/api/v1/summary")).json()
    assert doc["version"] == 1 and doc["agent"] == "agent-a" and doc["site"] == "karachi-1"
    assert doc["staleness"]["age_s"] == 5.0
    s = parse_summary(doc)
    assert (s.miners_up, s.miners_down, s.miners_stale, s.miners_total) == (3, 2, 1, 7)
    # Measured: fresh readings only; the stale, down and unknown-power miners are allowance, never 0 W.
    assert s.power_firmware_w == 3230.0 and s.power_estimate_w == 3277.5
    assert s.miners_power_unknown == 5
    # The estimated draws, measured (3277.5 W) and last known (3277.5 W), carry the 10% estimate margin.
    assert s.power_allowance_w == pytest.approx(3277.5 + 3230.0 + 3 * 3500.0 + 0.10 * 2 * 3277.5)
    assert doc["totals"]["power_upper_bound_w"] == 3230.0 + 3277.5 + s.power_allowance_w
    assert doc["totals"]["allowance_miners"] == {"last_known": 2, "nameplate": 0, "default": 3,
                                                 "estimate_margin": 2, "firmware_margin": 0}
    assert doc["totals"]["allowance_w"] == pytest.approx({"last_known": 3277.5 + 3230.0, "nameplate": 0.0,
                                                          "default": 3 * 3500.0, "estimate_margin": 655.5,
                                                          "firmware_margin": 0.0})


async def test_summary_before_first_cycle_has_no_figures(config: AgentConfig) -> None:
    state = FleetState(config.site, len(config.miners))
    async for c in _client(make_app(config, state, CollectorRegistry())):
        doc = await (await c.get("/api/v1/summary")).json()
    assert doc["totals"]["hashrate_hs"] is None and doc["totals"]["power_w"] is None
    assert doc["totals"]["power_unknown_miners"] == 7 and doc["cycle"]["finished_s"] is None


@pytest.mark.parametrize(("query", "expected"), [
    ("", 6), ("?state=up", 3), ("?state=down", 2), ("?state=stale", 1),
])
async def test_miners_filter(client: TestClient, query: str, expected: int) -> None:
    doc = await (await client.get("/api/v1/miners" + query)).json()
    assert doc["count"] == expected == len(doc["miners"])


async def test_miners_json_shows_unknown_power_as_null(client: TestClient) -> None:
    doc = await (await client.get("/api/v1/miners?state=down")).json()
    by_name = {m["miner"]: m for m in doc["miners"]}
    down = by_name["127.1.0.4:4028"]
    assert down["power_w"] is None and down["last_error"] == "unreachable" and down["model"] == "Whatsminer M30S"


async def test_bad_filter_is_400(client: TestClient) -> None:
    resp = await client.get("/api/v1/miners?state=sleeping")
    assert resp.status == 400
    assert "expected one of up, stale, down" in await resp.text()


async def test_healthz_ok_then_stalled(config: AgentConfig) -> None:
    state = FleetState(config.site, len(config.miners))
    state.publish(fixed_snapshot())
    now = [T0 + 1]
    async for c in _client(make_app(config, state, CollectorRegistry(), wall_clock=lambda: now[0])):
        resp = await c.get("/healthz")
        assert resp.status == 200
        assert (await resp.json())["poll_interval_s"] == 15
        now[0] = T0 + 3 * 15 + 5 + 1  # three intervals and a deadline without a cycle
        resp = await c.get("/healthz")
        assert resp.status == 503
        assert "no poll cycle finished" in (await resp.json())["problem"]


class _OneCycleQuery:
    """Answers like a tiny fleet so the real Poller can run inside the app."""

    async def __call__(self, host: str, commands: tuple[str, ...], **_: object) -> object:
        from test_poller import Result

        return Result({c: {"VERSION": [{"dialect": "fake"}]} if c == "version"
                       else {"SUMMARY": [{"hs": 1e12, "model": "S19"}]} for c in commands})


async def test_app_runs_poller_and_stops_it(config: AgentConfig) -> None:
    from test_poller import DIALECTS, _detect

    state = FleetState(config.site, len(config.miners))
    poller = Poller(config, state, query=_OneCycleQuery(), deadlines=object(), dialects=DIALECTS, detect=_detect)
    app = make_app(config, state, CollectorRegistry(), poller=poller)
    async for c in _client(app):
        async with asyncio.timeout(5):
            snap = await state.wait_for_cycle(1)
        assert snap.totals.up == 7
        assert (await c.get("/healthz")).status == 200
        task = app[POLLER_TASK]
    assert task.cancelled()


async def test_healthz_and_summary_follow_a_reloaded_interval(config: AgentConfig) -> None:
    # After SIGHUP sets a 60 s interval, 100 s without a cycle is normal (limit 3 x 60 s + deadline), not a
    # stall judged by the 15 s the agent started with; the summary tells the collector the new grace too.
    import dataclasses
    import time as _time

    from test_poller import DIALECTS, _detect

    class FrozenWallClock:
        def time(self) -> float:
            return T0

        def monotonic(self) -> float:
            return _time.monotonic()

    reloaded = dataclasses.replace(config, poll=dataclasses.replace(config.poll, interval_s=60, stale_grace_s=300))
    state = FleetState(config.site, len(config.miners))
    poller = Poller(config, state, query=_OneCycleQuery(), deadlines=object(), dialects=DIALECTS, detect=_detect,
                    clock=FrozenWallClock())
    poller.reconfigure(reloaded)
    await poller.poll_once()  # a reload takes effect at the start of the next cycle
    async for c in _client(make_app(config, state, CollectorRegistry(), poller=poller, wall_clock=lambda: T0 + 100)):
        resp = await c.get("/healthz")
        assert resp.status == 200, await resp.json()
        body = await resp.json()
        assert (body["poll_interval_s"], body["stall_limit_s"]) == (60, 3 * 60 + config.poll.request_timeout_s)
        assert (await (await c.get("/api/v1/summary")).json())["staleness"]["grace_s"] == 300


async def test_healthz_503_when_poller_dies(config: AgentConfig) -> None:
    class Broken(Poller):
        async def run(self) -> None:
            raise RuntimeError("boom")

    state = FleetState(config.site, len(config.miners))
    poller = Broken(config, state, query=_OneCycleQuery(), deadlines=object())
    async for c in _client(make_app(config, state, CollectorRegistry(), poller=poller)):
        resp = await c.get("/healthz")
        assert resp.status == 503
        assert "boom" in (await resp.json())["problem"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
async def test_real_scrape_of_agent_polling_the_simulator_passes_promtool(
        tmp_path: Path, make_sim_fleet: object) -> None:
    sim = await make_sim_fleet(sites=1, per_group=2)  # type: ignore[operator]
    sim.set_fault(sim.miners[:1], "offline")
    entries = "".join(f"  - {{address: {m.host}, port: {m.port}}}\n" for m in sim.miners)
    path = tmp_path / "agent.yaml"
    path.write_text(f"site: {sim.miners[0].site}\nminers:\n{entries}"
                    "poll: {interval_s: 5, request_timeout_s: 2, connect_timeout_s: 1, jitter_s: 0}\n"
                    "exposition: {board_temperatures: true, all_pools: true}\n")
    config = load_agent_config(path)
    state = FleetState(config.site, len(config.miners))
    registry = CollectorRegistry()
    registry.register(FleetCollector(state))
    app = make_app(config, state, registry, poller=Poller(config, state))
    async for c in _client(app):
        async with asyncio.timeout(20):
            await state.wait_for_cycle(1)
        text = await (await c.get("/metrics")).text()
    families = _parse(text)
    assert len(families["megawatch_miner_up"]) == len(sim.miners)
    assert {s.labels["dialect"] for s in families["megawatch_miner_info"]} >= {"bmminer", "btminer", "luxos"}
    proc = await asyncio.create_subprocess_exec("promtool", "check", "metrics", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(30):
        out, _ = await proc.communicate(text.encode())
    assert (proc.returncode, out) == (0, b"")
