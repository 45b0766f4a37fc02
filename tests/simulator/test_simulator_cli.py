"""`megawatch simulate`: help, one-line config errors with exit 2, start-up lines, clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from megawatch.common.configfile import ConfigError
from megawatch.simulator.config import load_fleet_config

CLI = [sys.executable, "-m", "megawatch.cli", "simulate"]


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_help_exits_zero():
    result = run_cli("--help")
    assert result.returncode == 0 and "--config" in result.stdout


GOOD_SITE = """\
seed: 1
sites:
  - id: a
    address: 127.0.240.1
    groups:
      - {count: 2, model: Antminer S19, dialect: cgminer}
"""

BAD_CASES = [
    (GOOD_SITE.replace("seed: 1", "sed: 1"), 1, "sed: unknown key (did you mean 'seed'?)"),
    (GOOD_SITE.replace("dialect: cgminer", "dialect: cgminr"), 6, "sites[0].groups[0].dialect: expected one of"),
    (GOOD_SITE.replace("Antminer S19", "Antminer S99"), 6, "sites[0].groups[0].model: 'Antminer S99' is not in"),
    (GOOD_SITE.replace("127.0.240.1", "10.0.0.1"), 4, "sites[0].address: expected an IPv4 address in 127.0.0.0/8"),
    (GOOD_SITE.replace("dialect: cgminer", "dialect: btminer"), 6,
     "sites[0].groups[0].model: 'Antminer S19' does not run btminer"),
    (GOOD_SITE + "control: {host: 0.0.0.0}\n", 7, "control.host: expected a loopback address"),
    (GOOD_SITE + "    faults:\n      - {fault: hang, fraction: 0.1, miners: [127.0.240.1]}\n", 8,
     "sites[0].faults[0].fault: give exactly one of fraction"),
    (GOOD_SITE + "    faults:\n      - {fault: slow, miners: [127.0.241.1]}\n", 8,
     "sites[0].faults[0].miners: '127.0.241.1' not a miner of site 'a'"),
    (GOOD_SITE + "    faults:\n      - {fault: slow, fraction: 0.5, delay_s: -2}\n", 8,
     "sites[0].faults[0].delay_s: expected a number"),
    ("seed: [\n", 2, "invalid YAML"),
    (GOOD_SITE + "    meter: {port: 15020, map: dlms}\n", 7, "sites[0].meter.map: expected one of sunspec, sdm630"),
    (GOOD_SITE + "    meter: {port: 15020, map: sunspec, host: 10.1.1.1}\n", 7,
     "sites[0].meter.host: expected a loopback address"),
    (GOOD_SITE + "    meter: {port: 15020, map: sunspec, pue: 0.9}\n", 7,
     "sites[0].meter.pue: expected a number >= 1"),
    (GOOD_SITE + "    meter: {port: 15020, map: sunspec, unit_id: 300}\n", 7,
     "sites[0].meter.unit_id: expected an integer"),
    (GOOD_SITE + "    meter: {port: 15020, map: sunspec, aux: 3}\n", 7,
     "sites[0].meter.aux: unknown key (did you mean 'aux_kw'?)"),
    (GOOD_SITE + "    meter: {port: 15020, map: sunspec, generic: {type: float32}}\n", 7,
     "sites[0].meter.generic: only a meter with map: generic takes a register layout"),
    (GOOD_SITE + "    meter:\n      map: generic\n"
     "      generic: {power_address: 10, energy_address: 11, type: int32}\n", 9,
     "sites[0].meter.generic.energy_address: registers 11-12 overlap the power registers 10-11"),
    (GOOD_SITE + "    meter:\n      map: generic\n      generic: {type: int128}\n", 9,
     "sites[0].meter.generic.type: expected one of int16"),
    ("control: {port: 9400}\n" + GOOD_SITE + "    meter: {port: 9400, map: sunspec}\n", 8,
     "sites[0].meter.port: 127.0.0.1:9400 is already taken by the control endpoint"),
    (GOOD_SITE + "    meter: {port: 15020, map: sdm630}\n  - id: b\n    address: 127.0.241.1\n    groups:\n"
     "      - {count: 2, model: Antminer S19, dialect: cgminer}\n    meter: {port: 15020, map: sunspec}\n", 12,
     "sites[1].meter.port: 127.0.0.1:15020 is already taken by the meter of site 'a'"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_CASES)
def test_bad_config_names_file_line_and_key(tmp_path: Path, text: str, line: int, message: str):
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_fleet_config(path)
    lines = str(caught.value).splitlines()
    assert any(entry.startswith(f"{path}:{line}: ") and message in entry for entry in lines), lines


def test_cli_bad_config_exits_2_with_one_line_per_problem(tmp_path: Path):
    path = tmp_path / "fleet.yaml"
    path.write_text(GOOD_SITE.replace("seed: 1", "sed: 1").replace("cgminer", "cgminr"))
    result = run_cli("--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{path}:") for line in lines), result.stderr
    assert "Traceback" not in result.stderr
    missing = run_cli("--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "cannot read file" in missing.stderr


def test_check_config_validates_only(tmp_path: Path):
    path = tmp_path / "fleet.yaml"
    path.write_text(GOOD_SITE)
    ok = run_cli("--check-config", str(path))
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "ok: 2 miners in 1 sites\n", "")
    path.write_text(GOOD_SITE.replace("seed: 1", "sed: 1"))
    bad = run_cli("--check-config", str(path))
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == f"{path}:1: sed: unknown key (did you mean 'seed'?)\n"
    neither = run_cli()
    assert neither.returncode == 2 and "one of the arguments --config --check-config is required" in neither.stderr


def test_shipped_configs_load():
    for path in sorted(Path("configs/sim").glob("*.yaml")):
        assert load_fleet_config(path).count > 0, path


def serve(path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `megawatch simulate`; return it and what it printed up to the control endpoint line."""
    process = subprocess.Popen([*CLI, "--config", str(path), "--log-format", "json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if line.startswith("control endpoint:"):
            break
    return process, lines


def three_miner_fleet(tmp_path: Path, first: int, extra: str = "") -> tuple[Path, int]:
    """A one-site fleet file of three S19 Pro from 127.0.<octet>.<first>; `extra` is more of the site's keys."""
    octet = 100 + os.getpid() % 100
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(f"""\
        seed: 3
        control: {{host: 127.0.0.1, port: 0}}
        sites:
          - id: a
            address: 127.0.{octet}.{first}
            port: 0
            groups:
              - {{count: 3, model: Antminer S19 Pro, dialect: bmminer}}
    """) + extra)
    return path, octet


def test_cli_serves_prints_where_and_stops_on_sigterm(tmp_path: Path):
    path, octet = three_miner_fleet(tmp_path, 1)
    process, lines = serve(path)
    try:
        assert lines[0].startswith(f"site a: 3 miners on 127.0.{octet}.1 - 127.0.{octet}.3"), lines
        assert "3 miners listening" in lines[1]
        assert lines[-1].startswith("control endpoint: http://127.0.0.1:")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "simulator_stopping" in process.stderr.read()  # type: ignore[union-attr]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_serves_a_site_meter_that_reads_the_truth(tmp_path: Path):
    path, _ = three_miner_fleet(tmp_path, 11, "    meter: {port: 0, unit_id: 3, map: sdm630, pue: 1.1, aux_kw: 2}\n")
    process, lines = serve(path)
    try:
        meter = re.match(r"site a: sdm630 meter on 127\.0\.0\.1:(\d+) unit 3$", lines[0].strip())
        assert meter, lines
        control = re.search(r"http://127\.0\.0\.1:\d+/", lines[-1]).group(0)  # type: ignore[union-attr]
        client = ModbusTcpClient("127.0.0.1", port=int(meter.group(1)), timeout=2, retries=0)
        assert client.connect()
        try:
            # The clock runs: read the truth on both sides of the meter read until one tick holds all three.
            for _ in range(5):
                before = json.load(urllib.request.urlopen(control + "api/v1/truth", timeout=5))
                registers = client.read_input_registers(52, count=2, device_id=3).registers
                after = json.load(urllib.request.urlopen(control + "api/v1/truth", timeout=5))
                if before["tick"] == after["tick"]:
                    break
            power = client.convert_from_registers(registers, client.DATATYPE.FLOAT32)
        finally:
            client.close()
        expected = after["sites"]["a"]["power_w"] * 1.1 + 2000
        assert power == pytest.approx(expected, rel=1e-6)
        assert after["sites"]["a"]["meter"]["truth_w"] == pytest.approx(expected, rel=1e-12)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
