"""Energy accounts: left-Riemann integration, schedules billed at their own allocation, restarts and gaps."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import UTC, datetime, time
from pathlib import Path

import pytest

from megawatch.collector.config import ScheduleWindow
from megawatch.collector.energy import (
    Account,
    EnergyBook,
    PowerSample,
    advance,
    allocation_steps,
    energy_path,
    load_accounts,
)
from megawatch.collector.production import Production
from tests.collector.helpers import MW, make_site

HOUR = 3600.0
MONDAY = datetime(2026, 11, 30, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC


def sample(w: float | None, measured: float | None = None, allowance: float = 0.0, estimated: float = 0.0,
           hashrate: float | None = None, per_hash: float | None = None) -> PowerSample:
    return PowerSample(w, measured if measured is not None else w, allowance, estimated, hashrate, per_hash)


def run(samples: list[tuple[float, PowerSample]], allocation: object = 1 * MW, max_gap_s: float = 60.0,
        account: Account | None = None) -> Account:
    a = account or Account()
    for at, s in samples:
        a = advance(a, s, at, allocation, max_gap_s).account  # type: ignore[arg-type]
    return a


def test_each_interval_is_counted_at_the_figure_that_began_it() -> None:
    # 1 MW for 30 s, then 2 MW for 15 s: the change at t=30 is counted from t=30, not before it.
    a = run([(0, sample(1 * MW)), (15, sample(1 * MW)), (30, sample(2 * MW)), (45, sample(2 * MW))])
    assert a.totals.judged_j == pytest.approx(1 * MW * 30 + 2 * MW * 15)
    assert a.totals.over_j == pytest.approx(1 * MW * 15)  # above 1 MW only during (30, 45]
    assert a.totals.over_s == pytest.approx(15)
    assert a.totals.allocated_j == pytest.approx(1 * MW * 45)
    assert a.totals.unknown_j == 0 and a.totals.unknown_s == 0


def test_parts_are_integrated_beside_the_judged_figure() -> None:
    s = PowerSample(judged_w=1.2 * MW, measured_w=0.9 * MW, allowance_w=0.3 * MW, estimated_w=0.1 * MW,
                    hashrate_hs=1e17, btc_per_hash=None)
    a = run([(0, s), (10, s)])
    t = a.totals
    assert (t.judged_j, t.measured_j, t.allowance_j, t.estimated_j) == pytest.approx(
        (12e6, 9e6, 3e6, 1e6))
    assert t.hashes == pytest.approx(1e18)
    assert t.expected_btc == 0  # no production settings: nothing expected, but the hashes are counted


def test_a_schedule_window_is_billed_at_its_own_allocation() -> None:
    # 17:00-21:00 UTC on weekdays the site gets 0.8 MW instead of 1 MW; it draws 0.9 MW all day.
    window = ScheduleWindow(days=frozenset(range(5)), start=time(17), end=time(21), end_of_day=False,
                            timezone="UTC", allocation_w=0.8 * MW)
    site = replace(make_site(allocation_mw=1.0), schedule=(window,))
    start = MONDAY + 7  # cycles 7 s off the minute: pieces must still split at 17:00:00 and 21:00:00
    a = run([(start + 15 * i, sample(0.9 * MW)) for i in range(5761)], site.allocation_at)
    t = a.totals
    assert t.allocated_j == pytest.approx((20 * 1 * MW + 4 * 0.8 * MW) * HOUR, rel=1e-12)
    assert t.over_s == pytest.approx(4 * HOUR, rel=1e-12)
    assert t.over_j == pytest.approx(4 * HOUR * 0.1 * MW, rel=1e-9)
    assert t.judged_j == pytest.approx(0.9 * MW * 24 * HOUR, rel=1e-12)


def test_allocation_steps_split_on_whole_minutes_only_when_the_allocation_changes() -> None:
    def alloc(t: float) -> float:
        return 1.0 if t < 120 else 2.0
    assert allocation_steps(100, 130, alloc) == [(20, 1.0), (10, 2.0)]
    assert allocation_steps(0, 100, alloc) == [(100, 1.0)]
    assert allocation_steps(5, 5, alloc) == []


def test_a_gap_is_unknown_energy_never_zero_and_never_measured() -> None:
    # The collector is away for 10 minutes (limit 60 s) while the site last drew 0.5 MW of its 1 MW.
    a = run([(0, sample(0.5 * MW)), (15, sample(0.5 * MW)), (615, sample(0.5 * MW)), (630, sample(0.5 * MW))])
    t = a.totals
    assert t.judged_j == pytest.approx(0.5 * MW * 30)  # only the intervals that were seen
    assert t.unknown_s == pytest.approx(600)
    # At the allocation, the larger of the two: nobody saw the site, so it may have drawn all of it.
    assert t.unknown_j == pytest.approx(1 * MW * 600)
    assert t.allocated_j == pytest.approx(1 * MW * 630)
    # Over the allocation before the gap, the gap is counted at the last figure, which is larger.
    b = run([(0, sample(1.5 * MW)), (600, sample(1.5 * MW))])
    assert b.totals.unknown_j == pytest.approx(1.5 * MW * 600) and b.totals.over_j == 0


def test_a_cycle_without_a_figure_is_unknown_at_the_allocation() -> None:
    a = run([(0, sample(None)), (15, sample(0.5 * MW)), (30, sample(0.5 * MW))])
    assert a.totals.unknown_j == pytest.approx(1 * MW * 15) and a.totals.unknown_s == pytest.approx(15)
    assert a.totals.judged_j == pytest.approx(0.5 * MW * 15)


def test_a_clock_going_back_counts_nothing_twice() -> None:
    a = run([(100, sample(1 * MW)), (115, sample(1 * MW)), (50, sample(1 * MW)), (65, sample(1 * MW))])
    assert a.totals.judged_j == pytest.approx(1 * MW * 30)


def test_a_restart_within_the_limit_neither_double_counts_nor_drops(tmp_path: Path) -> None:
    path = energy_path(tmp_path / "state.json")
    key = ("site", "a")
    times = [0.0, 15.0, 30.0, 45.0, 70.0, 85.0, 100.0]  # the collector restarts between 45 and 70
    figures = [1e6, 1.1e6, 0.9e6, 1.2e6, 1.0e6, 0.8e6, 0.8e6]
    continuous = run(list(zip(times, map(sample, figures), strict=True)))
    book = EnergyBook(path)
    for at, w in list(zip(times, figures, strict=True))[:4]:
        book.record({key: (sample(w), 1 * MW)}, at, 60.0)
    restarted = EnergyBook(path)  # a new process reading the same file
    assert restarted.accounts[key] == book.accounts[key]
    for at, w in list(zip(times, figures, strict=True))[4:]:
        restarted.record({key: (sample(w), 1 * MW)}, at, 60.0)
    assert asdict(restarted.accounts[key].totals) == pytest.approx(asdict(continuous.totals), rel=1e-12)
    assert restarted.accounts[key].totals.unknown_s == 0


def test_a_restart_after_a_long_outage_reports_the_gap_as_unknown(tmp_path: Path) -> None:
    path = energy_path(tmp_path / "state.json")
    key = ("fleet", "f")
    book = EnergyBook(path)
    book.record({key: (sample(2 * MW), 3 * MW)}, 0.0, 60.0)
    book.record({key: (sample(2 * MW), 3 * MW)}, 15.0, 60.0)
    later = EnergyBook(path)
    later.record({key: (sample(2 * MW), 3 * MW)}, 15.0 + 3600, 60.0)
    t = later.accounts[key].totals
    assert t.judged_j == pytest.approx(2 * MW * 15)
    assert t.unknown_s == pytest.approx(3600) and t.unknown_j == pytest.approx(3 * MW * 3600)


def test_an_unreadable_state_file_is_kept_aside_not_overwritten(tmp_path: Path) -> None:
    path = energy_path(tmp_path / "state.json")
    path.write_text('{"version": 1, "accounts": [{"kind": "site", "name": "a", "last_at": 1, '
                    '"totals": {"judged_j": -5}, "last": null}]}')
    assert load_accounts(path) == {}
    assert not path.exists() and path.with_name(path.name + ".bad").exists()


def test_the_state_file_holds_the_totals_and_the_last_sample(tmp_path: Path) -> None:
    path = energy_path(tmp_path / "state.json")
    assert path.name == "state.energy.json"
    book = EnergyBook(path)
    book.record({("site", "a"): (sample(1 * MW, hashrate=1e15), 1 * MW)}, 10.0, 60.0)
    book.record({("site", "a"): (sample(1 * MW, hashrate=1e15), 1 * MW)}, 20.0, 60.0)
    doc = json.loads(path.read_text())
    (row,) = doc["accounts"]
    assert row["last_at"] == 20.0 and row["totals"]["judged_j"] == 1e7 and row["last"]["hashrate_hs"] == 1e15


def test_expected_btc_matches_a_hand_computation() -> None:
    # 100 PH/s for one hour at difficulty 1.1e14, reward 3.125 + 0.1 BTC per block:
    # a hash wins a block with probability 1 / (1.1e14 x 2^32).
    production = Production(difficulty=1.1e14, block_subsidy_btc=3.125, fees_per_block_btc=0.1)
    by_hand = 1e17 * 3600 * 3.225 / (1.1e14 * 4294967296)
    assert by_hand == pytest.approx(0.0024574, rel=1e-4)
    s = sample(3 * MW, hashrate=1e17, per_hash=production.btc_per_hash)
    a = run([(i * 15.0, s) for i in range(241)])
    assert a.totals.expected_btc == pytest.approx(by_hand, rel=1e-12)
    assert production.expected_btc_per_s(1e17) * 3600 == pytest.approx(by_hand, rel=1e-12)


def test_production_settings_are_validated_with_one_line_each(tmp_path: Path) -> None:
    from megawatch.collector.config import load_collector_config
    from megawatch.common.configfile import ConfigError

    path = tmp_path / "sites.yaml"
    path.write_text("fleet: {name: f, allocation_mw: 1}\n"
                    "sites:\n  - {id: a, allocation_mw: 1, agents: ['http://127.0.0.1:9100']}\n"
                    "production:\n  difficulty: -3\n  block_subsidy_btc: 3.125\n  fees: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_collector_config(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:5: production.difficulty: expected a number > 0, got -3",
        f"{path}:7: production.fees: unknown key; known keys: block_subsidy_btc, difficulty, fees_per_block_btc"]
    path.write_text(path.read_text().replace("-3", "100000000000000").replace("  fees: 1\n", ""))
    assert load_collector_config(path).production == Production(difficulty=1e14)
