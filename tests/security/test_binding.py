"""Where things listen: the simulator's control endpoint only on loopback; the shipped configs only on loopback."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from megawatch.agent.config import load_agent_config
from megawatch.collector.config import load_collector_config
from megawatch.common.configfile import ConfigError
from megawatch.simulator.config import load_fleet_config
from megawatch.simulator.control import start_control

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*") if p.suffix in (".yaml", ".yml"))


def _params() -> list[Any]:
    return [pytest.param(p, id=str(p.relative_to(ROOT))) for p in CONFIGS]
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    return ipaddress.ip_address(host).is_loopback


def _looks_like_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return text == "localhost" or ("." in text and any(c.isalpha() for c in text))
    return True


def _hosts(value: Any) -> list[str]:
    """Every host named by a string in a YAML document: bare IPs, host:port, and URLs."""
    found: list[str] = []
    if isinstance(value, dict):
        for v in value.values():
            found += _hosts(v)
    elif isinstance(value, list):
        for v in value:
            found += _hosts(v)
    elif isinstance(value, str):
        text = value.strip()
        if "://" in text:
            host = urlsplit(text).hostname
            if host:
                found.append(host)
        elif (m := _HOST_PORT.match(text)) is not None:
            host = m.group("host")
            if _looks_like_host(host):  # not a time such as "17:00"
                found.append(host)
        elif text == "localhost":
            found.append(text)
        else:
            try:
                ipaddress.ip_address(text)
            except ValueError:
                pass
            else:
                found.append(text)
    return found


@pytest.mark.parametrize("path", _params())
def test_every_address_in_the_shipped_configs_is_loopback(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    hosts = [h for doc in docs for h in _hosts(doc)]
    outside = [h for h in hosts if not _is_loopback(h)]
    assert not outside, f"{path.relative_to(ROOT)} names non-loopback hosts: {outside}"


def test_the_walker_sees_addresses() -> None:
    doc = {"a": "0.0.0.0", "b": ["http://10.0.0.1:9093/x"], "c": {"d": "192.168.1.2:9100"}, "e": "127.0.0.1"}
    assert sorted(_hosts(doc)) == ["0.0.0.0", "10.0.0.1", "127.0.0.1", "192.168.1.2"]


def test_shipped_servers_listen_on_loopback() -> None:
    checked = 0
    for path in CONFIGS:
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict):
            continue
        if "miners" in doc and "site" in doc:
            agent = load_agent_config(path)
            assert _is_loopback(agent.http.listen), path
        elif "fleet" in doc and "sites" in doc:
            collector = load_collector_config(path)
            assert _is_loopback(collector.listen_address), path
            assert all(_is_loopback(urlsplit(u).hostname or "") for s in collector.sites for u in s.agents)
        elif "sites" in doc and "seed" in doc:
            fleet = load_fleet_config(path)
            assert _is_loopback(fleet.control.host), path
        else:
            continue
        checked += 1
    assert checked >= 5, "expected agent, collector and simulator configs under configs/"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.com"])
async def test_simulator_control_endpoint_refuses_a_non_loopback_address(sim_fleet: Any, host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await start_control(sim_fleet.backend, host, 0)


def test_simulator_config_refuses_a_non_loopback_control_host(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("seed: 1\ncontrol: {host: 0.0.0.0, port: 9400}\n"
                    "sites:\n  - id: a\n    address: 127.1.0.1\n    groups: [{count: 1, model: Antminer S19, "
                    "dialect: cgminer}]\n")
    with pytest.raises(ConfigError) as info:
        load_fleet_config(path)
    assert str(info.value) == f"{path}:2: control.host: expected a loopback address (127.0.0.0/8, ::1 or " \
                              f"localhost), got '0.0.0.0'"
