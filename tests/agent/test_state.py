"""FleetState: status rules (up / stale within grace / down), totals that never turn unknown into 0."""

from __future__ import annotations

import asyncio

import pytest

from megawatch.agent.config import AccountingSettings, MinerTarget
from megawatch.agent.model import MinerReading, PowerSource
from megawatch.agent.modeltable import load_model_table
from megawatch.agent.protocol.errors import ErrorKind
from megawatch.agent.state import (
    AllowanceBasis,
    FleetSnapshot,
    FleetState,
    MinerState,
    MinerStatus,
    allowance,
    classify,
    summarise,
)

READING = MinerReading(dialect="btminer", model="M30S", hashrate_hs=88e12, power_w=3300.0,
                       power_source=PowerSource.FIRMWARE)
ESTIMATED = MinerReading(dialect="bmminer", model="S19", hashrate_hs=95e12, power_w=3277.5,
                         power_source=PowerSource.ESTIMATE)
NO_POWER = MinerReading(dialect="cgminer", model="Mystery", hashrate_hs=1e12)


def _state(n: int, status: MinerStatus, reading: MinerReading | None) -> MinerState:
    return MinerState(MinerTarget(f"127.1.0.{n}"), status, reading, last_success_s=1000.0)


def test_classify_walks_up_stale_down() -> None:
    assert classify(True, READING, 1000.0, 1000.0, 60) == (MinerStatus.UP, None)
    assert classify(False, READING, 1000.0, 1030.0, 60) == (MinerStatus.STALE, 30.0)
    assert classify(False, READING, 1000.0, 1060.0, 60) == (MinerStatus.STALE, 60.0)
    assert classify(False, READING, 1000.0, 1060.5, 60) == (MinerStatus.DOWN, None)
    # Never read: nothing to keep, down at once.
    assert classify(False, None, None, 1000.0, 60) == (MinerStatus.DOWN, None)


def test_down_miner_has_unknown_power_not_zero() -> None:
    down = _state(1, MinerStatus.DOWN, READING)
    assert down.current is None
    assert down.power_w is None
    stale = _state(2, MinerStatus.STALE, READING)
    assert stale.power_w == 3300.0


def test_totals_measure_fresh_readings_and_allow_for_the_rest() -> None:
    miners = [
        _state(1, MinerStatus.UP, READING),
        _state(2, MinerStatus.UP, ESTIMATED),
        _state(3, MinerStatus.STALE, READING),  # stale: its 3300 W is allowance, its hashrate still counts
        _state(4, MinerStatus.DOWN, READING),  # past grace, within the horizon: last known 3300 W
        _state(5, MinerStatus.UP, NO_POWER),  # unknown model: hashrate counts, power at the default
    ]
    totals = summarise(miners, configured=7, now_s=1100.0)  # two miners not polled yet
    assert (totals.up, totals.stale, totals.down, totals.configured) == (3, 1, 1, 7)
    assert totals.hashrate_hs == pytest.approx(88e12 + 95e12 + 88e12 + 1e12)
    assert totals.power_firmware_w == 3300.0
    assert totals.power_estimate_w == 3277.5
    assert totals.power_w == 3300.0 + 3277.5
    # The estimated miner's draw is measured as estimated; the default 10% margin on it is allowance.
    assert totals.power_allowance_w == pytest.approx(3300.0 + 3300.0 + 3 * 3500.0 + 0.10 * 3277.5)
    assert totals.power_upper_bound_w == totals.power_w + totals.power_allowance_w
    # stale + down + no model + never polled (2); the margin makes no miner unknown
    assert totals.power_unknown_miners == 5
    assert dict(totals.allowance_miners) == {"last_known": 2, "nameplate": 0, "default": 3,
                                             "estimate_margin": 1, "firmware_margin": 0}
    assert totals.allowance_w["estimate_margin"] == pytest.approx(327.75)
    assert sum(totals.allowance_w.values()) == pytest.approx(totals.power_allowance_w)


def test_the_estimate_margin_is_ten_percent_by_default_and_firmware_none() -> None:
    assert AccountingSettings().estimate_margin_ratio == 0.10
    assert AccountingSettings().firmware_margin_ratio == 0.0


def test_the_margin_goes_into_the_allowance_for_estimated_power_only() -> None:
    estimated = [_state(n, MinerStatus.UP, ESTIMATED) for n in range(1, 11)]
    firmware = [_state(n, MinerStatus.UP, READING) for n in range(11, 21)]
    totals = summarise(estimated + firmware, 20, now_s=1000.0)
    # Measured stays what was read or estimated; the margin is allowance, so the upper bound covers it.
    assert totals.power_estimate_w == pytest.approx(10 * 3277.5)
    assert totals.power_firmware_w == 10 * 3300.0
    assert totals.power_allowance_w == pytest.approx(0.10 * 10 * 3277.5)
    assert totals.power_upper_bound_w == pytest.approx(10 * 3277.5 * 1.10 + 10 * 3300.0)
    assert totals.power_unknown_miners == 0
    assert totals.allowance_miners["estimate_margin"] == 10 and totals.allowance_miners["firmware_margin"] == 0
    assert dict(totals.allowance_w) == pytest.approx(
        {"last_known": 0.0, "nameplate": 0.0, "default": 0.0, "estimate_margin": 3277.5, "firmware_margin": 0.0})


def test_configured_margins_and_an_estimated_last_known_draw() -> None:
    settings = AccountingSettings(estimate_margin_ratio=0.2, firmware_margin_ratio=0.05)
    miners = [_state(1, MinerStatus.UP, ESTIMATED), _state(2, MinerStatus.UP, READING),
              _state(3, MinerStatus.DOWN, ESTIMATED)]  # hung: its last estimate is still an estimate
    totals = summarise(miners, 3, now_s=1100.0, settings=settings, models=MODELS)
    assert totals.allowance_w["last_known"] == 3277.5
    assert totals.allowance_w["estimate_margin"] == pytest.approx(0.2 * 2 * 3277.5)
    assert totals.allowance_w["firmware_margin"] == pytest.approx(0.05 * 3300.0)
    assert totals.allowance_miners["estimate_margin"] == 2 and totals.allowance_miners["firmware_margin"] == 1
    assert totals.power_upper_bound_w == pytest.approx(3277.5 * 1.2 * 2 + 3300.0 * 1.05)
    assert totals.power_unknown_miners == 1
    # A miner at the configured default is not an estimate: no margin on a figure chosen to be generous.
    down = summarise([_state(1, MinerStatus.DOWN, None)], 1, now_s=1100.0, settings=settings, models=MODELS)
    assert down.power_allowance_w == 3500.0 and down.allowance_miners["estimate_margin"] == 0


MODELS = load_model_table()
S19_NAMEPLATE = MODELS.lookup("S19").nominal_power_w  # type: ignore[union-attr]


@pytest.mark.parametrize(("status", "reading", "age_s", "target_model", "expected"), [
    # Fresh with a figure: measured, no allowance.
    (MinerStatus.UP, READING, 0.0, None, None),
    # A hung miner keeps its last draw for the horizon (3600 s by default), however long the stale grace.
    (MinerStatus.STALE, READING, 30.0, None, (3300.0, AllowanceBasis.LAST_KNOWN)),
    (MinerStatus.DOWN, READING, 3600.0, None, (3300.0, AllowanceBasis.LAST_KNOWN)),
    # Past the horizon: the model's nameplate, or the last draw if that was higher (never optimistic).
    (MinerStatus.DOWN, ESTIMATED, 3601.0, None, (max(S19_NAMEPLATE, 3277.5), AllowanceBasis.NAMEPLATE)),
    (MinerStatus.DOWN, ESTIMATED._replace(power_w=9000.0), 7200.0, None, (9000.0, AllowanceBasis.NAMEPLATE)),
    # Past the horizon with no model in the table: the default, or the last draw if higher.
    (MinerStatus.DOWN, READING._replace(model="Mystery"), 3601.0, None, (3500.0, AllowanceBasis.DEFAULT)),
    (MinerStatus.DOWN, READING._replace(model="Mystery", power_w=5000.0), 3601.0, None,
     (5000.0, AllowanceBasis.DEFAULT)),
    # Never read: the configured model's nameplate, else the default.
    (MinerStatus.DOWN, None, None, "Antminer S19", (S19_NAMEPLATE, AllowanceBasis.NAMEPLATE)),
    (MinerStatus.DOWN, None, None, None, (3500.0, AllowanceBasis.DEFAULT)),
    # Answers, but its power is unknown (no model, or hashing nothing): never 0 W.
    (MinerStatus.UP, NO_POWER, 0.0, None, (3500.0, AllowanceBasis.DEFAULT)),
    (MinerStatus.UP, ESTIMATED._replace(power_w=None, hashrate_hs=0.0), 0.0, None,
     (S19_NAMEPLATE, AllowanceBasis.NAMEPLATE)),
])
def test_allowance_for_a_miner_whose_draw_is_not_known_now(
        status: MinerStatus, reading: MinerReading | None, age_s: float | None, target_model: str | None,
        expected: tuple[float, AllowanceBasis] | None) -> None:
    last = None if age_s is None else 1000.0
    m = MinerState(MinerTarget("127.1.0.1", model=target_model), status, reading, last_success_s=last)
    got = allowance(m, 1000.0 + (age_s or 0.0), AccountingSettings(), MODELS)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got[1] is expected[1] and got[0] == pytest.approx(expected[0])


def test_allowance_follows_the_configured_horizon_and_default() -> None:
    settings = AccountingSettings(last_known_horizon_s=120.0, unknown_miner_w=5000.0)
    hung = MinerState(MinerTarget("127.1.0.1"), MinerStatus.DOWN, READING._replace(model="Mystery"),
                      last_success_s=1000.0)
    assert allowance(hung, 1120.0, settings, MODELS) == (3300.0, AllowanceBasis.LAST_KNOWN)
    assert allowance(hung, 1121.0, settings, MODELS) == (5000.0, AllowanceBasis.DEFAULT)
    assert summarise((), 3, settings=settings).power_allowance_w == 15000.0


def test_a_site_gone_dark_keeps_its_draw_as_allowance() -> None:
    up = [_state(n, MinerStatus.UP, READING) for n in range(1, 21)]
    before = summarise(up, 20, now_s=1000.0)
    hung = [MinerState(m.target, MinerStatus.DOWN, m.reading, last_success_s=1000.0) for m in up]
    after = summarise(hung, 20, now_s=1300.0)
    assert before.power_w == 66000.0 and before.power_allowance_w == 0.0
    assert after.power_w == 0.0 and after.power_allowance_w == 66000.0
    assert after.power_upper_bound_w == before.power_upper_bound_w


def test_empty_snapshot_reports_every_configured_miner_as_unknown_power() -> None:
    snap = FleetSnapshot.empty("s1", 10)
    assert snap.cycle == 0 and snap.miners == ()
    assert snap.totals.power_unknown_miners == 10
    assert snap.totals.power_w == 0.0 and snap.totals.up == 0
    assert snap.totals.power_allowance_w == 10 * 3500.0


async def test_publish_swaps_whole_snapshot_and_wakes_waiters() -> None:
    state = FleetState("s1", 1)
    first = state.snapshot
    miners = (MinerState(MinerTarget("127.1.0.1"), MinerStatus.DOWN, last_error=ErrorKind.TIMEOUT),)
    nxt = FleetSnapshot("s1", 1, 1.0, 2.0, 1.0, miners, summarise(miners, 1), first.counters)

    waiter = asyncio.create_task(state.wait_for_cycle(1))
    await asyncio.sleep(0)  # let the waiter park
    assert not waiter.done()
    state.publish(nxt)
    async with asyncio.timeout(1):
        got = await waiter
    assert got is nxt and state.snapshot is nxt
    # The old snapshot a reader may still hold is untouched.
    assert first.cycle == 0 and first.miners == ()
    with pytest.raises(ValueError):
        state.publish(first)
