"""The simulator's control endpoint refuses what a web page in the operator's browser could send it.

A page on any site can make the browser send a "simple" request (text/plain or a form, no preflight) to a
loopback port, or reach it under its own name through DNS rebinding. Every such request is refused before
it can touch the fleet; a JSON request naming a loopback Host (and the token, when one is set) still works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from megawatch.common.configfile import ConfigError
from megawatch.simulator.config import load_fleet_config
from megawatch.simulator.control import make_app

FAULT = b'{"site": "site-a", "fault": "hang", "fraction": 1.0}'
JSON = "application/json"
TOKEN = "t0ken-for-the-control-endpoint"

# (method, path, Host, Content-Type, body, status): every refusal leaves the fleet's faults as they were.
CASES: list[tuple[str, str, str | None, str | None, bytes | None, int]] = [
    ("POST", "/api/v1/faults", "evil.example", "text/plain", FAULT, 421),  # cross-origin, rebound name
    ("POST", "/api/v1/faults", "evil.example", JSON, FAULT, 421),
    ("POST", "/api/v1/faults", "127.0.0.1.evil.example", JSON, FAULT, 421),
    ("GET", "/api/v1/truth", "evil.example:9400", None, None, 421),  # the truth is not for other sites either
    ("POST", "/api/v1/faults", "127.0.0.1", "text/plain", FAULT, 415),  # a simple cross-origin request
    ("POST", "/api/v1/faults", "127.0.0.1", "application/x-www-form-urlencoded", FAULT, 415),
    ("POST", "/api/v1/faults", "127.0.0.1", "multipart/form-data; boundary=x", FAULT, 415),
    ("POST", "/api/v1/faults", "127.0.0.1", None, FAULT, 415),
    ("POST", "/api/v1/clock", "127.0.0.1", None, None, 415),
    ("DELETE", "/api/v1/faults", "127.0.0.1", "text/plain", b"{}", 415),
    ("POST", "/api/v1/sites/site-a/load", "127.0.0.1", "text/plain", b'{"factor": 2}', 415),
]
ALLOWED = [
    ("POST", "/api/v1/faults", "127.0.0.1:9400", JSON, FAULT, 200),
    ("POST", "/api/v1/faults", "localhost", JSON + "; charset=utf-8", FAULT, 200),
    ("POST", "/api/v1/faults", "[::1]:9400", JSON, FAULT, 200),
    ("DELETE", "/api/v1/faults", "127.8.9.10", None, None, 200),  # no body: a browser would ask first
]


async def _send(client: TestClient[Any, Any], method: str, path: str, host: str | None, content_type: str | None,
                body: bytes | None, **extra: str) -> int:
    headers = {k: v for k, v in (("Host", host), ("Content-Type", content_type)) if v is not None}
    async with client.request(method, path, data=body, headers=headers | extra) as resp:
        return resp.status


@pytest.mark.parametrize(("method", "path", "host", "content_type", "body", "status"), CASES + ALLOWED)
async def test_control_refuses_what_a_browser_page_could_send(sim_fleet: Any, method: str, path: str,
                                                              host: str | None, content_type: str | None,
                                                              body: bytes | None, status: int) -> None:
    async with TestClient(TestServer(make_app(sim_fleet.backend), host="127.0.0.1")) as client:
        assert await _send(client, method, path, host, content_type, body) == status
        truth = await sim_fleet.truth()
    load = truth["sites"]["site-a"].get("load_factor", 1.0)
    if status >= 400:
        assert truth["fleet"]["faults"] == {} and load == 1.0, truth["fleet"]


async def test_token_is_required_on_every_request_when_set(sim_fleet: Any) -> None:
    async with TestClient(TestServer(make_app(sim_fleet.backend, TOKEN), host="127.0.0.1")) as client:
        for auth, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                             ({"Authorization": f"Basic {TOKEN}"}, 401), ({"Authorization": f"Bearer {TOKEN}"}, 200)):
            assert await _send(client, "GET", "/api/v1/truth", "127.0.0.1", None, None, **auth) == status
            assert await _send(client, "POST", "/api/v1/faults", "127.0.0.1", JSON, FAULT, **auth) == status
        assert await _send(client, "POST", "/api/v1/faults", "evil.example", JSON, FAULT,
                           Authorization=f"Bearer {TOKEN}") == 421  # the token does not make a rebound page safe


def test_token_from_the_fleet_file_never_echoed(tmp_path: Path) -> None:
    fleet = "sites: [{id: a, address: 127.0.0.5, groups: [{count: 1, model: S19, dialect: cgminer}]}]\n"
    good = tmp_path / "good.yaml"
    good.write_text(f"control: {{token: {TOKEN}}}\n{fleet}")
    config = load_fleet_config(good)
    assert config.control.token == TOKEN and TOKEN not in repr(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"control: {{token: short-secret}}\n{fleet}")
    with pytest.raises(ConfigError) as err:
        load_fleet_config(bad)
    assert "control.token" in str(err.value) and "short-secret" not in str(err.value)
