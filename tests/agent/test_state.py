"""FleetState: status rules (up / stale within grace / down), totals that never turn unknown into 0."""

from __future__ import annotations

import asyncio

import pytest

from megawatch.agent.config import MinerTarget
from megawatch.agent.model import MinerReading, PowerSource
from megawatch.agent.protocol.errors import ErrorKind
from megawatch.agent.state import (
    FleetSnapshot,
    FleetState,
    MinerState,
    MinerStatus,
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


def test_totals_count_stale_readings_and_unknown_power() -> None:
    miners = [
        _state(1, MinerStatus.UP, READING),
        _state(2, MinerStatus.UP, ESTIMATED),
        _state(3, MinerStatus.STALE, READING),
        _state(4, MinerStatus.DOWN, READING),  # past grace: its old 3300 W must not count
        _state(5, MinerStatus.UP, NO_POWER),  # unknown model: hashrate counts, power unknown
    ]
    totals = summarise(miners, configured=7)  # two miners not polled yet
    assert (totals.up, totals.stale, totals.down, totals.configured) == (3, 1, 1, 7)
    assert totals.hashrate_hs == pytest.approx(88e12 + 95e12 + 88e12 + 1e12)
    assert totals.power_firmware_w == 6600.0
    assert totals.power_estimate_w == 3277.5
    assert totals.power_w == 6600.0 + 3277.5
    # down (1) + no model (1) + never polled (2)
    assert totals.power_unknown_miners == 4


def test_empty_snapshot_reports_every_configured_miner_as_unknown_power() -> None:
    snap = FleetSnapshot.empty("s1", 10)
    assert snap.cycle == 0 and snap.miners == ()
    assert snap.totals.power_unknown_miners == 10
    assert snap.totals.power_w == 0.0 and snap.totals.up == 0


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
