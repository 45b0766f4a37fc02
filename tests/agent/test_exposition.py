"""Exposition: the fast per-miner text equals prometheus_client's, passes promtool, and omits unknowns."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from types import MappingProxyType

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from megawatch.agent.config import ExpositionSettings, MinerTarget
from megawatch.agent.exposition import (
    MINER_FAMILIES,
    FleetCollector,
    MinerCollector,
    MinerRenderer,
    render_miners,
)
from megawatch.agent.model import Board, Fan, MinerReading, Pool, PowerSource
from megawatch.agent.protocol.errors import ErrorKind
from megawatch.agent.state import (
    OUTCOMES,
    AgentCounters,
    FleetSnapshot,
    FleetState,
    MinerState,
    MinerStatus,
    summarise,
)

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "metrics"
UPDATE = os.environ.get("MEGAWATCH_UPDATE_GOLDEN") == "1"  # rewrite the .prom files; review the diff
DEFAULTS = ExpositionSettings()

FULL = MinerReading(
    dialect="btminer", model="Whatsminer M30S", firmware="btminer", firmware_version="20200512.13.REL",
    hashrate_hs=88.5e12, hashrate_avg_hs=87.25e12, shares_accepted=12345, shares_rejected=12, shares_stale=3,
    hardware_errors=7, uptime_s=29600.0,
    boards=tuple(Board(i, chip_temp_c=75.5 + i, board_temp_c=60.0 + i, hashrate_hs=29.5e12) for i in range(3)),
    fans=(Fan(0, 4200.0), Fan(1, 4260.0), Fan(2, 4230.0), Fan(3, None)),
    pools=(Pool(0, "stratum+tcp://pool.example:3333", 'acct."w\\1"', "alive", True, 0),
           Pool(1, "stratum+tcp://backup.example:3333", "acct.w1", "alive", False, 1)),
    power_w=3230.0, power_source=PowerSource.FIRMWARE, power_limit_w=3600.0,
)
ESTIMATED = MinerReading(dialect="bmminer", model="Antminer S19", firmware="bmminer", firmware_version="1.0.0",
                         hashrate_hs=95e12, power_w=3277.5, power_source=PowerSource.ESTIMATE)
UNKNOWN_MODEL = MinerReading(dialect="cgminer", model=None, hashrate_hs=1.5e12)
T0 = 1_700_000_000.0


def _m(n: int, status: MinerStatus, reading: MinerReading | None, **kw: object) -> MinerState:
    return MinerState(MinerTarget(f"127.1.0.{n}"), status, reading, **kw)  # type: ignore[arg-type]


def fixed_snapshot() -> FleetSnapshot:
    miners = (
        _m(1, MinerStatus.UP, FULL, last_success_s=T0, last_poll_s=T0, poll_duration_s=0.012, dialect="btminer"),
        _m(2, MinerStatus.UP, ESTIMATED, last_success_s=T0, last_poll_s=T0, poll_duration_s=0.004, dialect="bmminer"),
        _m(3, MinerStatus.STALE, ESTIMATED, last_success_s=T0 - 30, last_poll_s=T0, poll_duration_s=3.0,
           consecutive_failures=2, last_error=ErrorKind.TIMEOUT, dialect="bmminer", stale_age_s=30.0),
        _m(4, MinerStatus.DOWN, FULL, last_success_s=T0 - 600, last_poll_s=T0, poll_duration_s=0.001,
           consecutive_failures=40, last_error=ErrorKind.UNREACHABLE, dialect="btminer"),
        _m(5, MinerStatus.DOWN, None, last_poll_s=T0, poll_duration_s=0.002, consecutive_failures=1,
           last_error=ErrorKind.EMPTY),
        _m(6, MinerStatus.UP, UNKNOWN_MODEL, last_success_s=T0, last_poll_s=T0, poll_duration_s=0.003,
           dialect="cgminer"),
    )
    polls = dict.fromkeys(OUTCOMES, 0) | {"ok": 40, "timeout": 2, "unreachable": 40, "empty": 1}
    return FleetSnapshot("karachi-1", 7, T0 - 1.5, T0, 1.5, miners, summarise(miners, 7, T0),
                         AgentCounters(7, 1, MappingProxyType(polls)))


def _state(snapshot: FleetSnapshot) -> FleetState:
    state = FleetState(snapshot.site, snapshot.totals.configured)
    state.publish(snapshot)
    return state


def _exposition(snapshot: FleetSnapshot, settings: ExpositionSettings = DEFAULTS) -> str:
    registry = CollectorRegistry()
    registry.register(FleetCollector(_state(snapshot)))
    return render_miners(snapshot, settings) + generate_latest(registry).decode()


def _samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    out = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.add((s.name, tuple(sorted(s.labels.items())), s.value))
    return out


def test_golden_exposition() -> None:
    text = _exposition(fixed_snapshot())
    golden = GOLDEN / "fixed_fleet.prom"
    if UPDATE:
        golden.write_text(text)
    assert text == golden.read_text(), "exposition changed: rerun with MEGAWATCH_UPDATE_GOLDEN=1, review the diff"


@pytest.mark.parametrize("settings", [DEFAULTS, ExpositionSettings(board_temperatures=True, all_pools=True)])
def test_fast_text_parses_to_the_same_samples_as_prometheus_client(settings: ExpositionSettings) -> None:
    snapshot = fixed_snapshot()
    registry = CollectorRegistry()
    registry.register(MinerCollector(_state(snapshot), settings))
    reference = generate_latest(registry).decode()
    fast = render_miners(snapshot, settings)
    assert _samples(fast) == _samples(reference)
    ref_families = {(f.name, f.type, f.documentation) for f in text_string_to_metric_families(reference)}
    assert {(f.name, f.type, f.documentation) for f in text_string_to_metric_families(fast)} == ref_families


@pytest.mark.parametrize("block", [1, 2, 4])
def test_rendered_in_blocks_of_miners_the_text_is_the_same(block: int) -> None:
    # Parts bounded by miners, not by family: the render never holds a whole family's text (~12 MB at 10k).
    snapshot = fixed_snapshot()
    settings = ExpositionSettings(board_temperatures=True, all_pools=True)
    renderer = MinerRenderer(settings)
    parts = list(renderer.render_parts(snapshot, block=block))
    assert "".join(parts) == render_miners(snapshot, settings)
    for part in parts:
        assert len({line.split('miner="')[1].split('"')[0] for line in part.splitlines()
                    if not line.startswith("#")}) <= block


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics_is_clean() -> None:
    text = _exposition(fixed_snapshot(), ExpositionSettings(board_temperatures=True, all_pools=True))
    proc = subprocess.run(["promtool", "check", "metrics"], check=False, input=text, capture_output=True, text=True,
                          timeout=30)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_unknown_is_absent_never_zero() -> None:
    registry = CollectorRegistry()
    registry.register(MinerCollector(_state(fixed_snapshot()), DEFAULTS))
    get = registry.get_sample_value

    def labels(n: int, **more: str) -> dict[str, str]:
        return {"site": "karachi-1", "miner": f"127.1.0.{n}:4028", **more}

    # Down past grace: its old 3230 W and hashrate are gone, power flagged unknown.
    assert get("megawatch_miner_power_watts", labels(4, source="firmware")) is None
    assert get("megawatch_miner_hashrate_hashes_per_second", labels(4)) is None
    assert get("megawatch_miner_power_unknown", labels(4)) == 1.0
    assert get("megawatch_miner_up", labels(4)) == 0.0
    # Unknown model: hashrate known, power absent (no estimate), not 0.
    assert get("megawatch_miner_hashrate_hashes_per_second", labels(6)) == 1.5e12
    assert get("megawatch_miner_power_watts", labels(6, source="estimate")) is None
    assert get("megawatch_miner_power_unknown", labels(6)) == 1.0
    # A fan without a reading, a limit the firmware did not report: no series.
    assert get("megawatch_miner_fan_rpm", labels(1, fan="3")) is None
    assert get("megawatch_miner_power_limit_watts", labels(2)) is None
    # Stale: last reading still counted, age given.
    assert get("megawatch_miner_power_watts", labels(3, source="estimate")) == 3277.5
    assert get("megawatch_miner_stale_age_seconds", labels(3)) == 30.0
    assert get("megawatch_miner_stale_age_seconds", labels(2)) is None
    # Never read: no timestamp of a success that never happened.
    assert get("megawatch_miner_last_success_timestamp_seconds", labels(5)) is None


def test_site_totals_before_first_cycle_are_absent() -> None:
    registry = CollectorRegistry()
    registry.register(FleetCollector(FleetState("s1", 10)))
    assert registry.get_sample_value("megawatch_site_power_watts", {"site": "s1", "source": "firmware"}) is None
    assert registry.get_sample_value("megawatch_site_miners_configured", {"site": "s1"}) == 10.0
    assert registry.get_sample_value("megawatch_site_power_unknown_miners", {"site": "s1"}) == 10.0


def test_at_most_25_series_per_miner_at_default_settings() -> None:
    snapshot = fixed_snapshot()
    # The richest miner we model: 3 boards, 4 fans, firmware power and limit, 2 pools; also while stale.
    rich_stale = _m(9, MinerStatus.STALE, FULL, last_success_s=T0, poll_duration_s=1.0, dialect="btminer",
                    stale_age_s=10.0)
    snapshot = FleetSnapshot("s", 1, T0, T0, 1.0, (*snapshot.miners, rich_stale), snapshot.totals,
                             snapshot.counters)
    per_miner = Counter(dict(s[1])["miner"] for s in _samples(render_miners(snapshot, DEFAULTS)))
    assert max(per_miner.values()) <= 25, per_miner
    assert per_miner["127.1.0.9:4028"] >= 20  # the rich one is really rich: the bound is not vacuous


def test_collectors_describe_without_collecting_and_names_do_not_collide() -> None:
    registry = CollectorRegistry()
    state = FleetState("s1", 1)
    registry.register(FleetCollector(state))
    registry.register(MinerCollector(state, DEFAULTS))  # raises on a duplicate name
    with pytest.raises(ValueError):
        registry.register(FleetCollector(state))
    names = [f.name for f in MINER_FAMILIES]
    assert len(names) == len(set(names))
    for f in MINER_FAMILIES:
        assert f.help.endswith(".") and f.name.startswith("megawatch_")


def test_render_10k_miners_quickly() -> None:
    base = fixed_snapshot().miners
    miners = tuple(
        MinerState(MinerTarget(f"127.{2 + i // 65536}.{i // 256 % 256}.{i % 256}"), base[i % 3].status,
                   base[i % 3].reading, last_success_s=T0, poll_duration_s=0.01, stale_age_s=base[i % 3].stale_age_s,
                   dialect=base[i % 3].dialect)
        for i in range(10_000)
    )
    snapshot = FleetSnapshot("s", 1, T0, T0, 1.0, miners, summarise(miners, 10_000), AgentCounters())
    t0 = time.perf_counter()
    text = render_miners(snapshot, DEFAULTS)
    elapsed = time.perf_counter() - t0
    assert text.count("\n") > 120_000
    # The bench's target is 250 ms on an idle core; this box is shared (load 4+ on 2 cores seen), so the bound
    # only catches a fall back to prometheus_client's speed (~7 s for these samples here).
    assert elapsed < 2.5, elapsed
