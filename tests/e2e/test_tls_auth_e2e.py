"""TLS and basic auth on the agent and the collector, scraped by a real Prometheus with its usual settings.

One web-config file (exporter-toolkit format) serves both. Prometheus scrapes them over https with
`tls_config.ca_file` and `basic_auth`: up == 1. The same targets scraped without credentials, or over plain
http, are refused: up == 0. The collector reads the agent over the same TLS and auth (agent_client).
The agent binds where it is told (127.0.0.2), and nothing answers on 127.0.0.1 at its port.
"""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from tests.e2e import processes
from tests.e2e.processes import (
    Proc,
    Procs,
    get_json,
    listening_url,
    megawatch,
    start_prometheus,
    wait_until,
)
from tests.security.tls import write_web_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
procs = processes.procs
http = processes.http

USER, PASSWORD = "prometheus", "scrape-s3cret"
AGENT_HOST = "127.0.0.2"


def _auth() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


async def _start_agent(procs: Procs, tmp: Path, miners: list[Any], web_config: Path, tls: ssl.SSLContext,
                       http: aiohttp.ClientSession) -> Proc:
    config = tmp / "agent.yaml"
    entries = "".join(f"  - {{address: {m.host}, port: {m.port}, dialect: {m.dialect}}}\n" for m in miners)
    config.write_text(f"site: site-a\nagent_id: tls-e2e\nminers:\n{entries}"
                      "poll: {interval_s: 1, connect_timeout_s: 0.5, request_timeout_s: 0.8, jitter_s: 0}\n"
                      f"http: {{listen: {AGENT_HOST}, port: 0}}\nlog: {{format: json}}\n")
    proc = megawatch(procs, "agent", "agent", "--config", str(config), "--web.config.file", str(web_config))

    async def started() -> str | None:
        assert proc.alive(), proc.output()
        for line in proc.output().splitlines():
            if '"agent_started"' in line:
                doc = json.loads(line)
                assert doc["scheme"] == "https" and doc["basic_auth"] is True
                host, port = doc["listen"][0]
                return f"https://{host}:{port}"
        return None

    proc.url = await wait_until(started, 15, "the agent to start")

    async def first_cycle() -> bool:
        async with http.get(proc.url + "/api/v1/summary", ssl=tls, headers=_auth()) as resp:
            return resp.status == 200 and (await resp.json())["totals"]["power_w"] is not None

    await wait_until(first_cycle, 10, "the agent's first cycle, read over TLS with auth")
    return proc


def _prometheus_yml(tmp: Path, ca: Path, agent: Proc, collector: Proc) -> str:
    (tmp / "password").write_text(PASSWORD)
    secure = (f"    scheme: https\n    tls_config: {{ca_file: {ca}}}\n"
              f"    basic_auth: {{username: {USER}, password_file: {tmp / 'password'}}}\n")
    a, c = agent.url.removeprefix("https://"), collector.url.removeprefix("https://")
    return f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: agent
{secure}    static_configs: [{{targets: ['{a}']}}]
  - job_name: collector
{secure}    static_configs: [{{targets: ['{c}']}}]
  - job_name: agent-no-auth
    scheme: https
    tls_config: {{ca_file: {ca}}}
    static_configs: [{{targets: ['{a}']}}]
  - job_name: agent-plain-http
    basic_auth: {{username: {USER}, password_file: {tmp / 'password'}}}
    static_configs: [{{targets: ['{a}']}}]
  - job_name: collector-wrong-password
    scheme: https
    tls_config: {{ca_file: {ca}}}
    basic_auth: {{username: {USER}, password: not-the-password}}
    static_configs: [{{targets: ['{c}']}}]
"""


async def test_prometheus_scrapes_agent_and_collector_over_tls_with_basic_auth(
        procs: Procs, http: aiohttp.ClientSession, make_sim_fleet: Any) -> None:
    tmp = procs.tmp
    web_config = write_web_config(tmp, users={USER: PASSWORD})
    ca = tmp / "server.crt"
    tls = ssl.create_default_context(cafile=str(ca))
    sim = await make_sim_fleet(sites=1)
    agent = await _start_agent(procs, tmp, sim.miners, web_config, tls, http)

    (tmp / "agent-password").write_text(PASSWORD + "\n")
    sites = tmp / "sites.yaml"
    sites.write_text(
        "fleet: {name: tls, allocation_mw: 10}\n"
        f"sites:\n  - id: site-a\n    allocation_mw: 5\n    agents: [{agent.url}]\n"
        "listen: {address: 127.0.0.1, port: 0}\npoll: {interval_s: 1, timeout_s: 0.8}\n"
        f"web_config_file: {web_config.name}\n"
        f"agent_client: {{ca_file: {ca.name}, username: {USER}, password_file: agent-password}}\n")
    collector = megawatch(procs, "collector", "collector", "--config", str(sites), "--log-format", "json")
    collector.url = await listening_url(collector, "collector_started")
    assert collector.url.startswith("https://127.0.0.1:")

    async def collector_reads_agent() -> bool:
        async with http.get(collector.url + "/api/v1/sites", ssl=tls, headers=_auth()) as resp:
            if resp.status != 200:
                return False
            site = (await resp.json())["sites"][0]
            return site["status"] == "ok" and site["miner_power_w"] > 0

    await wait_until(collector_reads_agent, 10, "the collector to read the agent over TLS with auth")

    prom = await start_prometheus(procs, http, _prometheus_yml(tmp, ca, agent, collector))

    async def up_by_job() -> dict[str, float] | None:
        body = await get_json(http, prom.url + "/api/v1/query?" + urlencode({"query": "up"}))
        found = {r["metric"]["job"]: float(r["value"][1]) for r in body["data"]["result"]}
        return found if len(found) == 5 and found["agent"] == 1 and found["collector"] == 1 else None

    up = await wait_until(up_by_job, 20, "Prometheus to scrape every job")
    assert up == {"agent": 1, "collector": 1, "agent-no-auth": 0, "agent-plain-http": 0,
                  "collector-wrong-password": 0}, up
    body = await get_json(http, prom.url + "/api/v1/targets")
    errors = {t["labels"]["job"]: t["lastError"] for t in body["data"]["activeTargets"]}
    assert "401" in errors["agent-no-auth"] and "401" in errors["collector-wrong-password"], errors
    scraped = await get_json(http, prom.url + "/api/v1/query?" + urlencode(
        {"query": 'megawatch_site_miners_configured{job="agent"}'}))
    assert float(scraped["data"]["result"][0]["value"][1]) == len(sim.miners)

    # Every endpoint of both refuses a request without credentials; plain http to the TLS port gets no page.
    for base, paths in ((agent.url, ("/metrics", "/healthz", "/api/v1/summary", "/api/v1/miners")),
                        (collector.url, ("/metrics", "/healthz", "/api/v1/sites", "/api/v1/alerts", "/"))):
        for path in paths:
            async with http.get(base + path, ssl=tls) as resp:
                assert resp.status == 401, base + path
            async with http.get(base + path, ssl=tls, headers=_auth()) as resp:
                assert resp.status == 200, base + path
        with pytest.raises(aiohttp.ClientError):
            async with http.get(base.replace("https://", "http://") + "/metrics", headers=_auth()) as resp:
                await resp.read()
    # The agent is bound where configured, not on every address.
    port = int(agent.url.rsplit(":", 1)[1])
    with pytest.raises(aiohttp.ClientConnectorError):
        await http.get(f"https://127.0.0.1:{port}/healthz", ssl=tls, headers=_auth())
    assert agent.alive() and collector.alive()
