"""Agent config: typed result for good files, one `file:line: key: problem` line per mistake for bad ones."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from megawatch.agent.config import AgentConfig, MinerTarget, load_agent_config
from megawatch.agent.modeltable import DEFAULT_MODELS_PATH
from megawatch.common.configfile import ConfigError

CASES = Path(__file__).resolve().parent.parent / "config_cases"
REPO = Path(__file__).resolve().parents[2]


def _expected(case: Path) -> list[str]:
    lines = [ln.removeprefix("# expect: ") for ln in case.read_text().splitlines() if ln.startswith("# expect: ")]
    return [ln.replace("{path}", str(case)).replace("{dir}", str(case.parent)) for ln in lines]


@pytest.mark.parametrize("case", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_config_reports_every_problem_on_its_own_line(case: Path) -> None:
    expected = _expected(case)
    assert expected, f"{case.name} has no '# expect:' line"
    with pytest.raises(ConfigError) as info:
        load_agent_config(case)
    assert str(info.value).splitlines() == expected


def test_shipped_configs_load() -> None:
    for path in sorted((REPO / "configs").glob("agent*.yaml")):
        config = load_agent_config(path)
        assert isinstance(config, AgentConfig)
        assert config.miners


def test_entries_expand_in_order_with_hints(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "site: karachi-1\n"
        "miners:\n"
        "  - cidr: 127.1.0.0/30\n"          # hosts .1 and .2 only
        "    model: Antminer S19\n"
        "  - range: 127.1.0.250-127.1.1.2\n"  # crosses an octet boundary
        "    dialect: btminer\n"
        "    port: 4029\n"
        "  - address: 127.1.0.1\n"
        "    port: 5000\n"                    # same address, other port: a different miner
    )
    config = load_agent_config(path)
    assert config.site == "karachi-1"
    assert config.agent_id == f"karachi-1@{socket.gethostname()}:9540"  # the port tells shards on one host apart
    assert [m.name for m in config.miners] == [
        "127.1.0.1:4028", "127.1.0.2:4028",
        "127.1.0.250:4029", "127.1.0.251:4029", "127.1.0.252:4029", "127.1.0.253:4029",
        "127.1.0.254:4029", "127.1.0.255:4029", "127.1.1.0:4029", "127.1.1.1:4029", "127.1.1.2:4029",
        "127.1.0.1:5000",
    ]
    # A cidr block is a scan range (miners may be here); ranges and addresses list expected miners.
    assert config.miners[0] == MinerTarget("127.1.0.1", 4028, "Antminer S19", None, expected=False)
    assert all(m.expected for m in config.miners[2:])
    assert config.miners[2].dialect == "btminer"
    # Defaults a user relies on: read-only, loopback HTTP, 15 s cycles, the shipped model table.
    assert config.control_enabled is False
    assert config.http.listen == "127.0.0.1"
    assert config.poll.interval_s == 15.0
    assert config.models_path == DEFAULT_MODELS_PATH
    assert config.models.lookup("S19") is not None


def test_config_is_frozen(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("site: s\nminers: [{address: 127.1.0.1}]\n")
    config = load_agent_config(path)
    with pytest.raises(AttributeError):
        config.site = "other"  # type: ignore[misc]


def test_large_block_expands_quickly(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("site: s\nminers:\n  - cidr: 127.2.0.0/16\n")
    config = load_agent_config(path)
    assert len(config.miners) == 65_534
    assert ipaddress.ip_address(config.miners[-1].address) == ipaddress.ip_address("127.2.255.254")


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_agent_config(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read file: No such file or directory"


def test_web_config_file_is_read_from_beside_the_agent_config(tmp_path: Path) -> None:
    # One file describes a deployment: TLS and basic auth come with the agent config, as for the collector.
    import bcrypt

    (tmp_path / "web.yml").write_text(
        f"basic_auth_users:\n  prometheus: '{bcrypt.hashpw(b'secret', bcrypt.gensalt(4)).decode()}'\n")
    path = tmp_path / "agent.yaml"
    path.write_text("site: s1\nminers:\n  - address: 127.1.0.1\nweb_config_file: web.yml\n")
    config = load_agent_config(path)
    assert config.web is not None and set(config.web.users) == {"prometheus"}
    path.write_text("site: s1\nminers:\n  - address: 127.1.0.1\n")
    assert load_agent_config(path).web is None
