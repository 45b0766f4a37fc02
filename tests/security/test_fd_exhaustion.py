"""File descriptors: a flood of HTTP connections cannot starve the polls, and a shortage is the agent's own.

A real agent process runs with a small open-file limit (256, soft and hard) against simulated miners while
hundreds of loopback connections sit idle or trickle a header that never ends. Its HTTP connections are
capped, so /metrics still answers, every miner is up and no poll lacks a socket; a connection that never
finishes its request is closed after FIRST_REQUEST_S. In-process, a poll that cannot open its socket
(EMFILE) is counted as the agent's failure, logged once per episode and shown by /healthz, and the miner is
neither marked down nor backed off.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from megawatch.agent.config import load_agent_config
from megawatch.agent.poller import Poller
from megawatch.agent.protocol.errors import LocalShortage
from megawatch.agent.resources import ShortageCollector
from megawatch.agent.state import FleetState, MinerStatus
from megawatch.agent.web import POLLER, make_app
from megawatch.common.httplimits import FD_RESERVE, FIRST_REQUEST_S, HTTP_DESCRIPTORS
from tests.chaos.harness import miners, scrape, wait_for_cycle, write_agent_config
from tests.e2e import processes
from tests.e2e.processes import Proc, Procs, wait_until

procs = processes.procs
http = processes.http

NOFILE = 256
IDLE = 300  # connections that never send a byte: more than the agent's whole open-file limit
TRICKLE = 40  # connections that send a header a few bytes at a time and never finish it
# Runs the agent under a lowered limit (soft and hard, so it cannot raise it back): setrlimit, then exec.
LIMITED = "import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); " \
          "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"


async def _start_limited_agent(procs: Procs, config: Path) -> Proc:
    proc = procs.start("agent", [sys.executable, "-c", LIMITED, str(NOFILE), "-m", "megawatch.cli", "agent",
                                 "--config", str(config)], env={"PYTHONUNBUFFERED": "1"})

    async def started() -> str | None:
        assert proc.alive(), proc.output()
        with proc.log.open(errors="replace") as log:
            for line in log:
                if '"agent_started"' in line:
                    host, port = json.loads(line)["listen"][0]
                    return f"http://{host}:{port}"
        return None

    proc.url = await wait_until(started, 15, "the agent to start")
    return proc


async def _trickle(port: int, stop: asyncio.Event) -> bool:
    """Send a request header one piece a second, never ending it; True if the agent closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while not stop.is_set():
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
            try:
                async with asyncio.timeout(1):
                    if await reader.read(1) == b"":
                        return True
            except TimeoutError:
                continue
        return False
    except ConnectionError:
        return True
    finally:
        writer.close()


@pytest.mark.slow
async def test_slow_loris_leaves_polls_their_descriptors(procs: Procs, http: aiohttp.ClientSession,
                                                         make_sim_fleet: Any) -> None:
    sim = await make_sim_fleet(sites=1, per_group=3)  # 24 miners, every dialect profile
    config = write_agent_config(procs.tmp / "agent.yaml", "site-a", [(m.host, m.port) for m in sim.miners])
    agent = await _start_limited_agent(procs, config)
    port = int(agent.url.rsplit(":", 1)[1])
    await wait_for_cycle(http, agent, 1, 15)

    idle: list[asyncio.StreamWriter] = []
    stop = asyncio.Event()
    started = time.monotonic()
    try:
        for _ in range(IDLE):  # bounded: IDLE connections, all to the agent's own loopback port
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                break  # the backlog is full; the agent is not obliged to accept the rest
            idle.append(writer)
        trickling = [asyncio.create_task(_trickle(port, stop)) for _ in range(TRICKLE)]
        cycle = await wait_for_cycle(http, agent, 1, 5)
        for n in range(cycle + 1, cycle + 4):  # three cycles under attack
            await wait_for_cycle(http, agent, n, 10)
            metrics = await scrape(http, agent)  # answers: a scrape gets a connection of its own
            rows = await miners(http, agent)
            assert {r["state"] for r in rows.values()} == {"up"}, {k: r for k, r in rows.items()
                                                                   if r["state"] != "up"}
            assert metrics.value("megawatch_agent_fd_exhausted_total") == 0
            open_fds = metrics.value("process_open_fds")
            assert open_fds is not None and open_fds <= HTTP_DESCRIPTORS + len(sim.miners) + FD_RESERVE, open_fds
        polls = {lbl["outcome"]: v for n, lbl, v in metrics.samples if n == "megawatch_agent_polls_total"}
        assert {o for o, v in polls.items() if v and o != "ok"} == set(), polls
        # A header never finished is cut after FIRST_REQUEST_S, however steadily it trickles.
        closed = await asyncio.wait_for(asyncio.gather(*trickling), FIRST_REQUEST_S + 10)
        assert all(closed) and time.monotonic() - started < FIRST_REQUEST_S + 20
    finally:
        stop.set()
        for w in idle:
            w.close()
    print(f"slow-loris: {len(idle)} idle + {TRICKLE} trickling connections against nofile {NOFILE}; "
          f"agent open fds {open_fds:.0f}, polls {polls}")
    assert agent.alive()


class _Emfile:
    """Miners that answer, except that the agent has no descriptor left in the cycles listed."""

    def __init__(self, short_in: set[int]) -> None:
        self.short_in = short_in
        self.cycle = 0

    async def __call__(self, host: str, commands: tuple[str, ...], **_: object) -> Any:
        from tests.agent.test_poller import Result

        if self.cycle in self.short_in:
            raise LocalShortage(f"no socket for {host}:4028: Too many open files", 24)
        return Result({c: {"VERSION": [{"dialect": "fake"}]} if c == "version"
                       else {"SUMMARY": [{"hs": 1e12, "model": "S19"}]} for c in commands})


async def test_emfile_is_the_agents_failure_not_the_miners(tmp_path: Path) -> None:
    from tests.agent.test_poller import DIALECTS, _detect

    path = tmp_path / "agent.yaml"
    path.write_text("site: s1\nminers:\n  - range: 127.1.0.1-127.1.0.5\npoll: {stale_grace_s: 3600}\n")
    config = load_agent_config(path)
    state = FleetState(config.site, len(config.miners))
    query = _Emfile(short_in={2, 3})
    poller = Poller(config, state, query=query, deadlines=object(), dialects=DIALECTS, detect=_detect)
    registry = CollectorRegistry()
    registry.register(ShortageCollector(config.site, poller.shortage))
    app = make_app(config, state, registry)
    app[POLLER] = poller  # as the running agent has it, without its poll loop: the test runs the cycles
    health: list[tuple[int, Any]] = []
    with capture_logs() as logs:
        async with TestClient(TestServer(app)) as client:
            for cycle in (1, 2, 3, 4):
                query.cycle = cycle
                snap = await poller.poll_once()
                resp = await client.get("/healthz")
                health.append((resp.status, (await resp.json())["problem"]))
                states = {m.status for m in snap.miners}
                if cycle in query.short_in:
                    assert states == {MinerStatus.STALE}  # the last reading counts, marked not fresh
                else:
                    assert states == {MinerStatus.UP}
                assert all(m.consecutive_failures == 0 and m.last_error is None for m in snap.miners)
            metrics = await (await client.get("/metrics")).text()
    assert [s for s, _ in health] == [200, 503, 503, 200], health
    assert "file descriptors" in health[1][1]
    events = [e["event"] for e in logs]
    assert events.count("agent_fd_exhausted") == 1 and events.count("agent_fd_exhausted_ended") == 1, events
    assert "miner_down" not in events
    assert 'megawatch_agent_fd_exhausted_total{site="s1"} 10.0' in metrics
    assert snap.counters.polls.get("unreachable", 0) == 0  # never counted against a miner


# (soft, hard limit, polls) -> (limit in force after, event logged): needs polls + 96 HTTP + 64 reserve
LIMITS = [
    ((1024, 1024, 512), (1024, None)),  # 672 needed: enough
    ((256, 4096, 512), (672, "fd_limit_raised")),  # raised to what is needed, within the hard limit
    ((256, 400, 512), (400, "fd_limit_too_low")),  # raised to the hard limit, still short: says so
    ((256, 256, 24), (256, None)),  # a small site: 184 needed
]


@pytest.mark.parametrize(("limits", "expected"), LIMITS)
def test_fd_limit_is_checked_and_raised_at_start(monkeypatch: pytest.MonkeyPatch, limits: tuple[int, int, int],
                                                 expected: tuple[int, str | None]) -> None:
    from megawatch.common import httplimits

    soft, hard, polls = limits
    current = [soft, hard]
    monkeypatch.setattr(httplimits.resource, "getrlimit", lambda _: tuple(current))
    monkeypatch.setattr(httplimits.resource, "setrlimit", lambda _, new: current.__setitem__(0, new[0]))
    with capture_logs() as logs:
        assert httplimits.check_fd_limit("agent", polls=polls) == expected[0]
    assert current[0] == expected[0]
    assert [e["event"] for e in logs] == ([expected[1]] if expected[1] else [])
    if expected[1] == "fd_limit_too_low":
        assert logs[-1]["needed"] == 672 and logs[-1]["limit"] == 400
