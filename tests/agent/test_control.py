"""The agent's control API: refused without control_enabled or without basic auth; with both, each dialect's
write commands reach the simulated miner, which stops hashing; uncurtailable firmware says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from megawatch.agent.config import load_agent_config
from megawatch.agent.poller import Poller
from megawatch.agent.state import FleetState
from megawatch.agent.web import make_app
from megawatch.common.webconfig import protect
from tests.security.tls import bcrypt_hash

GROUPS = (("cgminer", "Antminer S19"), ("bfgminer", "Antminer S9"), ("bosminer", "Antminer S19j Pro"),
          ("luxos", "Antminer S19 XP"), ("avalon", "Avalon A1366"), ("bmminer", "Antminer S19 Pro"))
AUTH = {"Authorization": aiohttp.BasicAuth("operator", "s3cret").encode()}


def agent_config(tmp_path: Path, miners: list[Any], *, control: bool, auth: bool) -> Any:
    entries = "".join(f"  - {{address: {m.host}, port: {m.port}}}\n" for m in miners)
    text = f"site: site-a\ncontrol_enabled: {str(control).lower()}\nminers:\n{entries}"
    if auth:
        (tmp_path / "web.yaml").write_text(f"basic_auth_users:\n  operator: '{bcrypt_hash('s3cret')}'\n")
        text += "web_config_file: web.yaml\n"
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return load_agent_config(path)


async def client_for(config: Any) -> tuple[TestClient, Poller]:
    state = FleetState(config.site, len(config.miners))
    poller = Poller(config, state)
    await poller.poll_once()
    app = make_app(config, state, CollectorRegistry())
    protect(app, config.web)  # as the daemon does
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, poller


async def test_control_refused_when_disabled_even_with_auth(tmp_path, make_sim_fleet):
    fleet = await make_sim_fleet(groups=GROUPS[:1], sites=1, allow_control=True)
    client, _ = await client_for(agent_config(tmp_path, fleet.miners, control=False, auth=True))
    async with client:
        m = fleet.miners[0]
        resp = await client.post(f"/api/v1/control/{m.host}:{m.port}/curtail", headers=AUTH)
        assert resp.status == 403 and "control_enabled" in (await resp.json())["error"]
    assert (await fleet.truth())["fleet"]["privileged_commands"] == 0


async def test_control_refused_without_basic_auth_configured(tmp_path, make_sim_fleet):
    fleet = await make_sim_fleet(groups=GROUPS[:1], sites=1, allow_control=True)
    client, _ = await client_for(agent_config(tmp_path, fleet.miners, control=True, auth=False))
    async with client:
        m = fleet.miners[0]
        resp = await client.post(f"/api/v1/control/{m.host}:{m.port}/curtail")
        assert resp.status == 403 and "basic auth" in (await resp.json())["error"]
    assert (await fleet.truth())["fleet"]["privileged_commands"] == 0


async def test_control_refused_without_credentials(tmp_path, make_sim_fleet):
    fleet = await make_sim_fleet(groups=GROUPS[:1], sites=1, allow_control=True)
    client, _ = await client_for(agent_config(tmp_path, fleet.miners, control=True, auth=True))
    async with client:
        m = fleet.miners[0]
        for headers in ({}, {"Authorization": aiohttp.BasicAuth("operator", "wrong").encode()}):
            resp = await client.post(f"/api/v1/control/{m.host}:{m.port}/curtail", headers=headers)
            assert resp.status == 401
    assert (await fleet.truth())["fleet"]["privileged_commands"] == 0


async def test_each_dialect_stops_and_restarts_and_the_next_poll_sees_it(tmp_path, make_sim_fleet):
    fleet = await make_sim_fleet(groups=GROUPS, sites=1, allow_control=True)
    client, poller = await client_for(agent_config(tmp_path, fleet.miners, control=True, auth=True))
    async with client:
        for m in fleet.miners:
            resp = await client.post(f"/api/v1/control/{m.host}:{m.port}/curtail", headers=AUTH)
            body = await resp.json()
            if m.dialect == "bmminer":
                assert resp.status == 409 and body["error"] == "not curtailable over this API"
                continue
            assert resp.status == 200 and body["ok"], body
        rows = {r["address"]: r for r in fleet.fleet.miner_rows()}
        assert [rows[f"{m.host}:{m.port}"]["stopped"] for m in fleet.miners] == [1.0] * 5 + [0.0]
        snap = await poller.poll_once()
        hashing = {m.name: (m.current.hashrate_hs if m.current else None) for m in snap.miners}
        assert [hashing[f"{m.host}:{m.port}"] == 0 for m in fleet.miners] == [True] * 5 + [False]
        for m in fleet.miners[:5]:
            resp = await client.post(f"/api/v1/control/{m.host}:{m.port}/restore", headers=AUTH)
            assert resp.status == 200, await resp.json()
        assert all(r["stopped"] == 0 for r in fleet.fleet.miner_rows())


async def test_a_miner_refusing_is_reported(tmp_path, make_sim_fleet):
    fleet = await make_sim_fleet(groups=GROUPS[:1], sites=1, allow_control=False)  # no api-allow W
    client, _ = await client_for(agent_config(tmp_path, fleet.miners, control=True, auth=True))
    async with client:
        m = fleet.miners[0]
        resp = await client.post(f"/api/v1/control/{m.host}:{m.port}/curtail", headers=AUTH)
        body = await resp.json()
        assert resp.status == 502 and "Access denied" in body["error"] and body["ok"] is False
