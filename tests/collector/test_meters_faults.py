"""The collector's reader and judgment against the simulator's own meters and their faults, in process over
real Modbus TCP on loopback: a healthy meter is trusted within 0.1% of the truth in every map; stale,
frozen, wrong scale, offline and silent meters are never trusted for a figure below what the site draws.

The simulator's clock is frozen and advanced a tick at a time, so what each read sees is exact; the
collector's clock is the `now` given to observe_meter, so staleness needs no waiting."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import make_config

from megawatch.collector.meterclient import MeterClient
from megawatch.collector.meterconfig import MeterConfig, RegisterPoint
from megawatch.collector.sitemeter import MeterObservation, MeterState, SiteMeter, judge_meter, observe_meter
from megawatch.simulator import config as simconfig
from megawatch.simulator.meter import make_meter_fault
from megawatch.simulator.workers import start_backend

GENERIC = simconfig.GenericLayout(function=4, power_address=500, energy_address=510, type="int32",
                                  word_order="little", power_scale=0.1, energy_scale=10.0)
SIM_METERS = {
    "s0": simconfig.MeterConfig("127.0.0.1", 0, 1, "sunspec", pue=1.05, aux_w=2000.0),
    "s1": simconfig.MeterConfig("127.0.0.1", 0, 3, "sdm630", pue=1.02),
    "s2": simconfig.MeterConfig("127.0.0.1", 0, 255, "pm5100", pue=1.1, aux_w=500.0),
    "s3": simconfig.MeterConfig("127.0.0.1", 0, 1, "generic", generic=GENERIC),
}
READERS: dict[str, dict[str, Any]] = {
    "s0": {"map": "sunspec"}, "s1": {"map": "sdm630", "unit_id": 3}, "s2": {"map": "pm5100", "unit_id": 255},
    "s3": {"map": "generic", "power": RegisterPoint(4, 500, "int32", "little", 0.1),
           "energy_import": RegisterPoint(4, 510, "int32", "little", 10.0)},
}
STALE_S = 30.0
TOLERANCE = 0.05


@dataclasses.dataclass
class Rig:
    backend: Any

    async def truth_w(self, site: str) -> float:
        truth = self.backend.meters.add_rows(await self.backend.meters.truth())
        return float(truth["sites"][site]["meter"]["truth_w"])

    def client(self, site: str, timeout_s: float = 1.0) -> MeterClient:
        port = self.backend.meters.meters[site].port
        return MeterClient(site, MeterConfig("127.0.0.1", port, timeout_s=timeout_s, stale_after_s=STALE_S,
                                             **READERS[site]))

    async def fault(self, site: str, kind: str | None, **params: float) -> None:
        fault = make_meter_fault(kind, params) if kind is not None else None
        await self.backend.meters.meters[site].set_fault(fault)

    async def tick(self) -> None:
        await self.backend.clock(True, 1)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    groups = (("bmminer", "Antminer S19 Pro"), ("btminer", "Whatsminer M30S++"))
    base = make_config(groups=groups, sites=1, per_group=2)
    prefix = base.sites[0].address.rsplit(".", 1)[0]
    sites = tuple(dataclasses.replace(base.sites[0], id=f"s{i}", address=f"{prefix}.{1 + 50 * i}",
                                      meter=SIM_METERS[f"s{i}"]) for i in range(4))
    backend = await start_backend(dataclasses.replace(base, sites=sites))
    await backend.clock(True, 0)
    try:
        yield Rig(backend)
    finally:
        await backend.close()


async def judged(rig: Rig, client: MeterClient, site: str, reads: int = 2) -> tuple[SiteMeter, float]:
    """Read `reads` times, a tick and STALE_S/2 + 1 s of collector time apart; judge against a perfect miners'
    figure (the truth at the last read, without the meter's own faults), the floor at TOLERANCE under it."""
    obs: MeterObservation | None = None
    now, truth = 0.0, 0.0
    for i in range(reads):
        if i:
            await rig.tick()
            now += STALE_S / 2 + 1
        truth = await rig.truth_w(site)
        obs = observe_meter(obs, await client.read(), now, client.config, allocation_w=truth * 1.2)
    return judge_meter(obs, client.config, truth, now, truth * (1 - TOLERANCE)), truth


@pytest.mark.parametrize("site", list(SIM_METERS))
async def test_a_healthy_meter_is_trusted_in_every_map(rig: Rig, site: str) -> None:
    client = rig.client(site)
    meter, truth = await judged(rig, client, site, reads=3)  # 32 s: the power may repeat, the counter moves
    client.close()
    assert meter.state is MeterState.OK, meter
    assert meter.power_w == pytest.approx(truth, rel=1e-3)


@pytest.mark.parametrize(("kind", "params", "state", "problem"), [
    ("stale", {}, MeterState.STALE, None),  # the whole image holds: a gateway answering from its cache
    ("wrong_scale", {"exponent": 3}, MeterState.REJECTED, "power_above_plausible_maximum"),
    ("wrong_scale", {"exponent": -3}, MeterState.REJECTED, "power_below_miners_measured"),
    ("frozen", {"value_kw": 1.0}, MeterState.REJECTED, "power_below_miners_measured"),
])
async def test_a_faulty_meter_that_answers_is_never_trusted_low(rig: Rig, kind: str, params: dict[str, float],
                                                                 state: MeterState, problem: str | None) -> None:
    await rig.fault("s0", kind, **params)
    client = rig.client("s0")
    meter, _ = await judged(rig, client, "s0", reads=3)
    client.close()
    assert meter.state is state, meter
    if problem is not None:
        assert problem in meter.problems


async def test_a_meter_frozen_high_is_believed_and_reconciled(rig: Rig) -> None:
    truth = await rig.truth_w("s0")
    await rig.fault("s0", "frozen", value_kw=truth * 1.2 / 1000)
    client = rig.client("s0")
    meter, _ = await judged(rig, client, "s0")
    client.close()
    # Above what the miners account for: conservative to judge on, and the 20% shows as reconciliation.
    assert meter.state is MeterState.OK and meter.reconciliation_ratio == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize(("kind", "error"), [("offline", "connect_failed:"), ("silent", "timeout:")])
async def test_a_meter_that_does_not_answer_is_down_within_its_deadline(rig: Rig, kind: str, error: str) -> None:
    client = rig.client("s1", timeout_s=0.3)
    first = await client.read()
    assert first.error is None
    await rig.fault("s1", kind)
    # The connection already open may just go quiet (a timeout); the next cycle reconnects and finds out.
    result = await client.read()
    if not result.error or not result.error.startswith(error):
        assert result.error is not None and result.error.startswith("timeout:"), result.error
        result = await client.read()
    assert result.reading is None and result.error is not None and result.error.startswith(error), result.error
    assert result.duration_s < 0.3 + 0.2
    obs = observe_meter(observe_meter(None, first, 0.0, client.config, 1e9), result, 1.0, client.config, 1e9)
    meter = judge_meter(obs, client.config, first.reading.power_w if first.reading else None, 1.0)
    assert meter.state is MeterState.DOWN and meter.error == result.error
    await rig.fault("s1", None)
    assert (await client.read()).error is None  # back: the reader reconnects on its own
    client.close()
