"""Soak: an agent under hostile miners, scrape bursts, malformed requests and slow-loris, for minutes.

A real agent process polls a simulated site in which a fifth of the miners misbehave on the wire (hang,
drip, reset, garbage, replies past the byte cap), while the test keeps up to SLOW_LORIS idle connections
open to it, fires a burst of concurrent scrapes and a round of malformed requests every cycle. Per cycle
the agent's RSS and open descriptors are read from /proc and printed. After a warm-up the RSS may not keep
growing (a bound on growth per cycle and on the total), the descriptors return to the baseline once the
attack stops, and every healthy miner reads as the simulator's ground truth all along.

SOAK_S (default 120 s, MEGAWATCH_SOAK_S overrides) bounds the run; every load loop is bounded in count.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.chaos.harness import INTERVAL_S, miners, scrape, start_agent, wait_for_cycle, write_agent_config
from tests.e2e import processes
from tests.e2e.processes import Proc, Procs, wait_until
from tests.security.test_http_bad_input import _requests, _status

pytestmark = [pytest.mark.slow]
procs = processes.procs
http = processes.http

SOAK_S = float(os.environ.get("MEGAWATCH_SOAK_S", "120"))
WARMUP_S = 40.0  # caches, the allocator and the first oversize replies settle in this long
PER_PROFILE = 10  # 8 reply profiles x 10 = 80 miners
FAULTS: dict[str, tuple[int, dict[str, float]]] = {
    "hang": (3, {}),
    "drip": (3, {"interval_ms": 500}),
    "reset": (3, {}),
    "garbage": (3, {}),
    "oversize": (4, {"size_bytes": 4 * 1024 * 1024}),  # each read up to the agent's 1 MiB cap
}
SLOW_LORIS = 150  # idle connections kept open (re-opened when the agent closes them)
SCRAPE_BURST = 12  # concurrent scrapes per cycle, plain and gzip
# Growth after the warm-up: the least-squares slope of RSS per cycle and the whole rise. A leak of one
# reply buffer a cycle (1 MiB) or of one miner's reading per poll would pass both by far.
SLOPE_BOUND_BYTES = 64 * 1024
RISE_BOUND_BYTES = 24 * 1024 * 1024
FD_SLACK = 8


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _slow_loris(port: int, stop: asyncio.Event) -> int:
    """Keep SLOW_LORIS idle connections open until `stop`; return how many were opened in all."""
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened = 0
    while not stop.is_set():
        # The agent closed it (keep-alive time, or room for a newer one): a new one replaces it.
        for reader, writer in [c for c in held if c[0].at_eof() or c[1].is_closing()]:
            writer.close()
            held.remove((reader, writer))
        while len(held) < SLOW_LORIS and opened < SLOW_LORIS * 150:  # bounded in count
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                break
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            held.append((reader, writer))
            opened += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    for _, writer in held:
        writer.close()
    return opened


async def _scrape_burst(url: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as burst:
        async def one(i: int) -> None:
            headers = {"Accept-Encoding": "gzip"} if i % 2 else {"Accept-Encoding": "identity"}
            async with burst.get(url + "/metrics", headers=headers) as resp:
                assert resp.status == 200
                await resp.read()

        await asyncio.gather(*(one(i) for i in range(SCRAPE_BURST)))


async def _bad_requests(port: int) -> None:
    for payload in _requests("/metrics"):
        await _status(port, payload)


@contextlib.asynccontextmanager
async def _attack(agent: Proc) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    port = int(agent.url.rsplit(":", 1)[1])
    loris = asyncio.create_task(_slow_loris(port, stop))
    try:
        yield stop
    finally:
        stop.set()
        await loris


def _slope(values: list[float]) -> float:
    xs = list(range(len(values)))
    mx, my = statistics.fmean(xs), statistics.fmean(values)
    return sum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True)) / sum((x - mx) ** 2 for x in xs)


async def test_soak_hostile_site_and_http_abuse(procs: Procs, http: aiohttp.ClientSession,
                                                make_sim_fleet: Any) -> None:
    sim = await make_sim_fleet(sites=1, per_group=PER_PROFILE)
    healthy = list(sim.miners)
    for kind, (count, params) in FAULTS.items():
        step = len(healthy) // count
        chosen = healthy[::step][:count]
        sim.set_fault(chosen, kind, **params)
        healthy = [m for m in healthy if m not in chosen]
    agent = await start_agent(procs, write_agent_config(procs.tmp / "agent.yaml", "site-a",
                                                        [(m.host, m.port) for m in sim.miners]), http)
    pid = agent.popen.pid
    await wait_for_cycle(http, agent, 2, 20)
    baseline_fds = _fds(pid)

    samples: list[tuple[float, int, int, int]] = []  # (seconds since start, cycle, RSS, fds)
    started = time.monotonic()
    cycle = 2
    async with _attack(agent):
        while time.monotonic() - started < SOAK_S:
            cycle = await wait_for_cycle(http, agent, cycle + 1, INTERVAL_S * 3 + 10)
            await asyncio.gather(_scrape_burst(agent.url), _bad_requests(int(agent.url.rsplit(":", 1)[1])))
            rows = await miners(http, agent)
            for m in healthy:  # right all along, not only at the end
                row = rows[m.address]
                snap = sim.miner(m.index).snapshot()
                assert row["state"] == "up" and row["hashrate_hs"] == pytest.approx(snap.hashrate_hs, rel=0.01), row
            samples.append((time.monotonic() - started, cycle, _rss(pid), _fds(pid)))
            t, c, rss, fds = samples[-1]
            print(f"soak t={t:6.1f}s cycle={c:4d} rss={rss / 2**20:6.1f} MB fds={fds}")
    metrics = await scrape(http, agent)
    assert metrics.value("megawatch_agent_fd_exhausted_total") == 0
    assert metrics.value("megawatch_agent_cycle_overruns_total", site="site-a") == 0

    # Descriptors: once the attack stops and the keep-alive time has passed, back to the baseline.
    async def settled() -> int | None:
        n = _fds(pid)
        return n if n <= baseline_fds + FD_SLACK else None

    end_fds = await wait_until(settled, 30, f"the agent's descriptors back near {baseline_fds}")
    after = [s for s in samples if s[0] >= WARMUP_S]
    assert len(after) >= 10, f"too few cycles after the warm-up: {len(samples)} in all"
    rss_after = [float(s[2]) for s in after]
    slope, rise = _slope(rss_after), max(rss_after) - rss_after[0]
    print(f"soak: {len(samples)} cycles over {samples[-1][0]:.0f} s; RSS {samples[0][2] / 2**20:.1f} MB at the "
          f"start, {rss_after[0] / 2**20:.1f} MB after the warm-up, {rss_after[-1] / 2**20:.1f} MB at the end "
          f"(peak {max(s[2] for s in samples) / 2**20:.1f} MB); growth {slope / 1024:.1f} KiB/cycle after the "
          f"warm-up; fds baseline {baseline_fds}, peak {max(s[3] for s in samples)}, end {end_fds}")
    assert slope < SLOPE_BOUND_BYTES, f"RSS grows {slope / 1024:.0f} KiB per cycle after the warm-up"
    assert rise < RISE_BOUND_BYTES, f"RSS rose {rise / 2**20:.1f} MB after the warm-up"
    assert agent.alive()
