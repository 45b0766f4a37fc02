"""Hostile HTTP to every endpoint of the agent, the collector and the simulator's control endpoint.

Malformed query strings, oversized request lines, headers and bodies, wrong methods and broken JSON get a
4xx (or, for a request line too broken to answer, a closed connection), never a 5xx and never a crash: the
server answers a normal request afterwards. Sent over raw sockets, since a well-behaved client would not
send most of these.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from megawatch.agent.config import load_agent_config
from megawatch.agent.exposition import FleetCollector
from megawatch.agent.state import FleetState
from megawatch.agent.web import make_app as make_agent_app
from megawatch.collector.service import CollectorService
from megawatch.collector.web import make_app as make_collector_app
from megawatch.simulator.control import make_app as make_control_app
from tests.collector.helpers import make_config

AGENT_PATHS = ("/metrics", "/healthz", "/api/v1/summary", "/api/v1/miners")
COLLECTOR_PATHS = ("/metrics", "/healthz", "/api/v1/sites", "/api/v1/alerts", "/")
CONTROL_PATHS = ("/", "/api/v1/truth", "/api/v1/miners", "/api/v1/faults", "/api/v1/clock", "/api/v1/sites/x/load")
QUERIES = ("?%zz=1", "?state=%ff%fe", "?state=bogus", "?&&&==&", "?state=up&state=down", "?site=%00",
           "?" + "a=1&" * 5000, "?state=" + "x" * 7000, "?;;;")


def _requests(path: str) -> list[bytes]:
    """Raw requests for one path, each a protocol or size violation of its own."""
    big_header = b"X-Big: " + b"h" * 20_000 + b"\r\n"
    many_headers = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    p = path.encode()
    reqs = [b"GET " + p + q.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" for q in QUERIES]
    reqs += [
        b"GET " + p + b"/" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # request line past the limit
        b"GET " + p + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + big_header + b"\r\n",  # one header past the limit
        b"GET " + p + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many_headers + b"\r\n",
        b"GET " + p + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
        b"GET " + p + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        b"GET " + p + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        b"POST " + p + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 8\r\n"
        b"\r\n{broken!",
        b"POST " + p + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3000000\r\n\r\n" + b"x" * 3_000_000,
        b"PUT " + p + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        b"BREW " + p + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET " + p + b" HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello to a plain port
        b"GET " + p + b"\r\n\r\n",  # HTTP/0.9 style
    ]
    return reqs


async def _status(port: int, payload: bytes) -> int | None:
    """Send `payload`, return the status code of the reply, or None if the server just closed."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(payload)
            try:
                await writer.drain()
            except ConnectionError:
                pass  # the server refused the rest of a huge body: read what it said
            try:
                line = await reader.readline()
            except ConnectionError:
                return None
        finally:
            writer.close()
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[0].startswith(b"HTTP/") else None


async def _hammer(server: TestServer, paths: tuple[str, ...], healthy_path: str) -> dict[str, int]:
    port = server.port
    assert port is not None
    seen: dict[str, int] = {}
    for path in paths:
        for payload in _requests(path):
            status = await _status(port, payload)
            what = f"{path} {payload[:80]!r}"
            assert status is None or 400 <= status < 500 or status < 300, (what, status)
            if status is not None and status >= 300:
                seen[what] = status
            elif status is not None:
                # Only tolerant cases may succeed: a query the endpoint ignores (e.g. ?%zz=1 on /metrics).
                assert payload.startswith(b"GET "), (what, status)
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{healthy_path}") as resp:
        assert resp.status == 200, "the server stopped serving after the bad requests"
    return seen


@pytest.fixture
async def agent_server(tmp_path: Path) -> AsyncIterator[TestServer]:
    path = tmp_path / "agent.yaml"
    path.write_text("site: s1\nminers:\n  - address: 127.1.0.1\n")
    config = load_agent_config(path)
    state = FleetState(config.site, len(config.miners))
    registry = CollectorRegistry()
    registry.register(FleetCollector(state))
    server = TestServer(make_agent_app(config, state, registry), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_agent_endpoints_answer_4xx_and_keep_serving(agent_server: TestServer) -> None:
    seen = await _hammer(agent_server, AGENT_PATHS, "/api/v1/summary")
    assert seen[next(k for k in seen if "miners?state=bogus" in k)] == 400
    assert any(v in (413, 405) for k, v in seen.items() if "3000000" in k)


async def test_collector_endpoints_answer_4xx_and_keep_serving() -> None:
    async with aiohttp.ClientSession() as session:
        service = CollectorService(make_config(), session, "http://127.0.0.1:9300/api/v1/alerts")
        await service.poll_once()  # the configured agent does not answer: a cycle with an error, still healthy
        server = TestServer(make_collector_app(service), host="127.0.0.1")
        await server.start_server()
        try:
            seen = await _hammer(server, COLLECTOR_PATHS, "/api/v1/sites")
        finally:
            await server.close()
    assert {v for k, v in seen.items() if k.startswith("/healthz") and "PUT" in k} == {405}


async def test_simulator_control_answers_4xx_and_keeps_serving(sim_fleet: Any) -> None:
    server = TestServer(make_control_app(sim_fleet.backend), host="127.0.0.1")
    await server.start_server()
    try:
        seen = await _hammer(server, CONTROL_PATHS, "/api/v1/truth")
    finally:
        await server.close()
    broken_json = next(k for k in seen if k.startswith("/api/v1/faults b'POST") and "Content-Type" in k)
    assert seen[broken_json] == 400
    assert (await sim_fleet.truth())["fleet"]["faults"] == {}  # nothing a bad request sent changed the fleet


def test_request_limits_are_aiohttp_defaults() -> None:
    # The limits the tests above rely on (8 KiB lines and headers, 1 MiB bodies) are aiohttp's defaults;
    # if a future aiohttp changes them, this says where to look.
    assert web.Application()._client_max_size == 1024**2


@pytest.mark.slow
async def test_bad_requests_leave_no_traceback_in_the_agents_log(tmp_path: Path) -> None:
    from tests.chaos.harness import start_agent, write_agent_config
    from tests.e2e.processes import Procs

    procs = Procs(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            config = write_agent_config(tmp_path / "agent.yaml", "s1", [("127.1.0.1", 1)])
            agent = await start_agent(procs, config, http)
            port = int(agent.url.rsplit(":", 1)[1])
            for payload in _requests("/metrics"):
                await _status(port, payload)
            async with http.get(agent.url + "/healthz") as resp:  # still serving; its log is up to date
                assert resp.status in (200, 503)
    finally:
        procs.stop_all()
    lines = agent.log.read_text().splitlines()
    assert lines and not [line for line in lines if not line.startswith("{")], lines  # one JSON line each
    assert "Traceback" not in agent.log.read_text()
