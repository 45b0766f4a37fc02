"""sites.yaml loading: every bad file gives one line naming file:line:key and the problem."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from megawatch.collector.config import MW, load_collector_config, public_url
from megawatch.common.configfile import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).parent / "config_cases"

# case -> (line, the dotted key and problem expected in the single error line)
BAD = {
    "oversubscribed": (3, "fleet.allocation_mw: site allocations add up to 11 MW, more than the fleet's 10 MW"),
    "allocation_string": (6, "sites[1].allocation_mw: expected a number > 0, got '12MW'"),
    "unknown_key": (7, "poll.intervl: unknown key (did you mean 'interval_s'?)"),
    "duplicate_site": (6, "sites[1].id: duplicate site id 'a'"),
    "shared_agent": (8, "sites[1].agents: 'http://127.0.0.1:9101' is already an agent of site 'a'"),
    "bad_agent_url": (5, "sites[0].agents: expected http(s) URLs"),
    "no_agents": (5, "sites[0].agents: expected at least one agent URL"),
    "bad_timezone": (10, "sites[0].schedule[0].timezone: expected an IANA time zone"),
    "bad_hour": (8, "sites[0].schedule[0].from: expected a time 'HH:MM'"),
    "bad_day": (7, "sites[0].schedule[0].days: expected a list of days from mon"),
    "pue_below_one": (5, "sites[0].pue: expected a number >= 1"),
    "near_ratio_over_one": (7, "thresholds.near_ratio: expected a number > 0 <= 1, got 1.5"),
    "unknown_hold_alert": (8, "thresholds.hold_overrides_s.SiteOverAlloc: unknown alert"),
    "timeout_over_interval": (8, "poll.timeout_s: expected a number <= interval_s (1), got 5"),
    "missing_fleet": (1, "fleet: required key is missing"),
    "duplicate_key": (5, "invalid YAML: duplicate key 'allocation_mw'"),
    "bad_site_id": (3, "sites[0].id: expected a site id"),
    "bad_alertmanager_url": (7, "alerting.alertmanager_urls: expected a list of http(s) URLs"),
    "shutdown_timeout_zero": (7, "alerting.shutdown_timeout_s: expected a number > 0, got 0"),
    # Counting an agent never heard from at 0 W would be the optimism the allowance exists to prevent.
    "unknown_agent_allowance_zero": (5, "sites[0].unknown_agent_allowance_mw: expected a number > 0, got 0"),
    "unknown_share_over_one": (7, "thresholds.unknown_share_ratio: expected a number > 0 <= 1, got 1.5"),
}


def test_every_case_file_is_in_the_table() -> None:
    assert {p.stem for p in CASES.glob("*.yaml")} == set(BAD)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_gives_one_line_naming_file_line_and_key(case: str) -> None:
    line, expected = BAD[case]
    path = CASES / f"{case}.yaml"
    with pytest.raises(ConfigError) as info:
        load_collector_config(path)
    problems = [str(p) for p in info.value.problems]
    if case == "allocation_string":  # two problems in one file: both are reported at once
        assert len(problems) == 2
        problems = problems[1:]
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:{line}: {expected}"), problems[0]


def test_shipped_sites_yaml_loads_in_watts() -> None:
    config = load_collector_config(ROOT / "configs" / "sites.yaml")
    a = config.site("site-a")
    assert a is not None
    assert config.fleet_allocation_w == 2 * MW
    assert a.allocation_w == 1 * MW and a.aux_w == pytest.approx(0.02 * MW)
    assert a.facility_power_w(100_000.0) == pytest.approx(100_000 * 1.05 + 20_000)
    assert config.listen_address == "127.0.0.1"


def test_oversubscription_is_allowed_when_asked(tmp_path: Path) -> None:
    text = (CASES / "oversubscribed.yaml").read_text().replace("allocation_mw: 10", "allocation_mw: 10\n  "
                                                                "allow_oversubscription: true")
    path = tmp_path / "sites.yaml"
    path.write_text(text)
    assert sum(s.allocation_w for s in load_collector_config(path).sites) == 11 * MW


def _epoch(text: str, zone: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


SCHEDULED = """
fleet: {name: f, allocation_mw: 100}
sites:
  - id: a
    allocation_mw: 10
    agents: [http://127.0.0.1:9101]
    timezone: America/Chicago
    schedule:
      - {days: [mon, tue, wed, thu, fri], from: "17:00", to: "21:00", allocation_mw: 6}
      - {days: [fri], from: "22:00", to: "06:00", allocation_mw: 8, timezone: UTC}
      - {days: [fri], from: "18:00", to: "19:00", allocation_mw: 4}
"""


@pytest.mark.parametrize(("local", "zone", "expected_mw"), [
    ("2026-11-23 16:59", "America/Chicago", 10),   # Monday, just before the evening peak
    ("2026-11-23 17:00", "America/Chicago", 6),    # peak window starts
    ("2026-11-23 20:59", "America/Chicago", 6),
    ("2026-11-23 21:00", "America/Chicago", 10),   # end is exclusive
    ("2026-11-28 18:00", "America/Chicago", 10),   # Saturday: no peak window
    ("2026-11-27 18:30", "America/Chicago", 4),    # Friday: two windows apply, the strictest wins
    ("2026-11-27 22:30", "UTC", 8),                # Friday-night window in UTC, before midnight
    ("2026-11-28 05:59", "UTC", 8),                # ... and after it, on Saturday morning
    ("2026-11-28 06:00", "UTC", 10),
    ("2026-11-29 23:00", "UTC", 10),               # Sunday night: the window belongs to Fridays only
])
def test_allocation_in_force_follows_the_schedule(tmp_path: Path, local: str, zone: str,
                                                  expected_mw: float) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(SCHEDULED)
    site = load_collector_config(path).sites[0]
    assert site.allocation_at(_epoch(local, zone)) == expected_mw * MW


def test_check_config_exits_2_with_one_line_and_no_traceback() -> None:
    path = CASES / "allocation_string.yaml"
    proc = subprocess.run([sys.executable, "-m", "megawatch.cli", "collector", "--check-config", str(path)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}:6: sites[1].allocation_mw: expected a number > 0, got '12MW'" in proc.stderr


def test_check_config_accepts_the_shipped_file() -> None:
    proc = subprocess.run([sys.executable, "-m", "megawatch.cli", "collector", "--check-config",
                           str(ROOT / "configs" / "sites.yaml")], capture_output=True, text=True, timeout=30,
                          check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_credentials_in_alerting_urls_stay_out_of_repr(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text((CASES / "unknown_key.yaml").read_text().replace(
        "poll:\n  intervl: 5", "alerting:\n  alertmanager_urls: [http://am:hunter2@127.0.0.1:9093]\n"
        "  webhook_url: http://127.0.0.1:8080/hook?token=s3cr3t-token"))
    config = load_collector_config(path)
    assert config.alerting.webhook_url == "http://127.0.0.1:8080/hook?token=s3cr3t-token"
    dumped = repr(config)
    assert "s3cr3t-token" not in dumped and "hunter2" not in dumped
    assert public_url(config.alerting.alertmanager_urls[0]) == "http://127.0.0.1:9093"
    assert public_url(config.alerting.webhook_url) == "http://127.0.0.1:8080/hook"
