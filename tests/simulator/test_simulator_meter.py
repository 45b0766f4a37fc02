"""Simulated site meters over real Modbus TCP on loopback: every map decodes to the site's true facility power,
the energy counter counts, and each meter fault does what the control endpoint says."""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from conftest import make_config
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from megawatch.simulator.config import GenericLayout, MeterConfig
from megawatch.simulator.control import start_control
from megawatch.simulator.workers import start_backend

GENERIC = GenericLayout(function=4, power_address=500, energy_address=510, type="int32", word_order="little",
                        power_scale=0.1, energy_scale=10.0)
METERS = {
    "site-a": MeterConfig("127.0.0.1", 0, 1, "sunspec", pue=1.08, aux_w=4000.0, extra_load_w=2500.0),
    "site-b": MeterConfig("127.0.0.1", 0, 7, "sdm630", pue=1.02),
    "site-c": MeterConfig("127.0.0.1", 0, 255, "pm5100", pue=1.0, aux_w=1000.0),
    "site-d": MeterConfig("127.0.0.1", 0, 1, "generic", pue=1.1, generic=GENERIC),
}


@dataclasses.dataclass
class Metered:
    backend: Any
    control_url: str
    http: aiohttp.ClientSession

    def meter(self, site: str) -> Any:
        return self.backend.meters.meters[site]

    async def truth(self) -> dict[str, Any]:
        async with self.http.get(self.control_url + "/api/v1/truth") as resp:
            assert resp.status == 200
            return await resp.json()

    async def post(self, path: str, body: dict[str, Any] | None = None, method: str = "POST") -> tuple[int, Any]:
        async with self.http.request(method, self.control_url + path, json=body) as resp:
            return resp.status, await resp.json()

    @contextlib.asynccontextmanager
    async def client(self, site: str) -> AsyncIterator[AsyncModbusTcpClient]:
        meter = self.meter(site)
        client = AsyncModbusTcpClient(meter.config.host, port=meter.port, timeout=0.5, retries=0)
        assert await client.connect()
        try:
            yield client
        finally:
            client.close()


@pytest.fixture
async def metered() -> AsyncIterator[Metered]:
    groups = (("bmminer", "Antminer S19 Pro"), ("btminer", "Whatsminer M30S++"), ("bosminer", "Antminer S19j Pro"))
    pair = make_config(groups=groups, sites=2, per_group=2)
    # Four sites: the second pair copies the first on other addresses (every miner on an ephemeral port).
    first, second = pair.sites
    base = first.address.rsplit(".", 1)[0]
    sites = tuple(
        dataclasses.replace(site, id=f"site-{letter}", address=f"{base}.{1 + 50 * n}", meter=METERS[f"site-{letter}"])
        for n, (letter, site) in enumerate(zip("abcd", (first, second, first, second), strict=True)))
    config = dataclasses.replace(pair, sites=sites)
    backend = await start_backend(config)
    await backend.clock(True, 0)
    runner, port = await start_control(backend, "127.0.0.1", 0)
    async with aiohttp.ClientSession() as http:
        yield Metered(backend, f"http://127.0.0.1:{port}", http)
    await runner.cleanup()
    await backend.close()


def sf(register: int) -> int:
    return register - 0x10000 if register & 0x8000 else register


async def read_sunspec(client: AsyncModbusTcpClient, unit: int) -> tuple[float, float]:
    """Walk the SunSpec models as a reader must (no hard-coded lengths) and decode model 203's W and TotWhImp."""
    head = await client.read_holding_registers(40000, count=2, device_id=unit)
    assert head.registers == [0x5375, 0x6E53]  # "SunS"
    address = 40002
    for _ in range(10):
        model_id, length = (await client.read_holding_registers(address, count=2, device_id=unit)).registers
        assert model_id != 0xFFFF, "no meter model"
        if model_id == 203:
            r = (await client.read_holding_registers(address, count=length + 2, device_id=unit)).registers
            energy = (r[46] << 16 | r[47]) * 10.0 ** sf(r[54])
            return sf(r[18]) * 10.0 ** sf(r[22]), energy
        address += length + 2
    raise AssertionError("model 203 not found")


def floats(registers: list[int]) -> list[float]:
    return [struct.unpack(">f", struct.pack(">HH", *registers[i:i + 2]))[0] for i in range(0, len(registers), 2)]


async def read_meter(client: AsyncModbusTcpClient, site: str) -> tuple[float, float]:
    """(power W, energy imported Wh) decoded by the site's register map."""
    unit = METERS[site].unit_id
    if site == "site-a":
        return await read_sunspec(client, unit)
    if site == "site-b":
        r = (await client.read_input_registers(0, count=76, device_id=unit)).registers
        return floats(r[52:54])[0], floats(r[72:74])[0] * 1000.0
    if site == "site-c":
        kw = floats((await client.read_holding_registers(3059, count=2, device_id=unit)).registers)[0]
        wh = (await client.read_holding_registers(3203, count=4, device_id=unit)).registers
        return kw * 1000.0, float(int.from_bytes(struct.pack(">4H", *wh), "big", signed=True))
    r = (await client.read_input_registers(500, count=12, device_id=unit)).registers
    power = int.from_bytes(struct.pack(">HH", r[1], r[0]), "big", signed=True) * GENERIC.power_scale
    energy = int.from_bytes(struct.pack(">HH", r[11], r[10]), "big", signed=True) * GENERIC.energy_scale
    return power, energy


# Each map's rounding: SunSpec's int16 with a scale factor keeps ~4 digits, float32 ~7, the generic int32 0.1 W.
PRECISION = {"site-a": 2e-4, "site-b": 1e-6, "site-c": 1e-6, "site-d": 1e-5}


@pytest.mark.parametrize("site", sorted(METERS))
async def test_each_map_reads_miners_true_draw_times_pue_plus_aux_and_extra_load(metered, site):
    truth = (await metered.truth())["sites"][site]
    config = METERS[site]
    expected = truth["power_w"] * config.pue + config.aux_w + config.extra_load_w
    assert truth["meter"]["truth_w"] == pytest.approx(expected, rel=1e-12)
    assert truth["meter"]["reported_w"] == pytest.approx(expected, rel=1e-12)
    async with metered.client(site) as client:
        power, energy = await read_meter(client, site)
        assert power == pytest.approx(expected, rel=PRECISION[site])
        assert energy == pytest.approx(truth["meter"]["truth_energy_wh"], rel=1e-6, abs=10.0)
        # Miners hang: their API goes quiet, their draw does not - the meter reads the same.
        await metered.post("/api/v1/faults", {"site": site, "fault": "hang", "fraction": 0.5})
        assert (await read_meter(client, site))[0] == power


async def test_meter_follows_load_and_counts_energy_over_simulated_time(metered):
    async with metered.client("site-b") as client:
        power, energy = await read_meter(client, "site-b")
        status, _ = await metered.post("/api/v1/sites/site-b/load", {"factor": 1.1})
        assert status == 200
        raised, same_energy = await read_meter(client, "site-b")
        assert raised > 1.15 * power and same_energy == energy  # same tick: no time has passed
        await metered.post("/api/v1/clock", {"advance": 12})  # 60 s at 5 s a tick
        _, later = await read_meter(client, "site-b")
        assert later - energy == pytest.approx(raised * 60 / 3600, abs=1.0)  # a float32 of kWh: ~0.5 Wh steps


async def test_non_miner_load_switched_on_at_run_time_shows_on_the_meter_only(metered):
    async with metered.client("site-c") as client:
        power, _ = await read_meter(client, "site-c")
        before = (await metered.truth())["sites"]["site-c"]
        status, reply = await metered.post("/api/v1/meters/site-c/extra_load", {"kw": 150})
        assert (status, reply["extra_load_w"]) == (200, 150000.0)
        after = (await metered.truth())["sites"]["site-c"]
        assert after["power_w"] == before["power_w"]  # the miners draw what they drew
        assert after["meter"]["extra_load_w"] == 150000.0
        assert (await read_meter(client, "site-c"))[0] == pytest.approx(power + 150000.0, rel=1e-6)
    for body in ({"kw": -1}, {"kw": "x"}, {"kw": 1, "mw": 1}):
        status, reply = await metered.post("/api/v1/meters/site-c/extra_load", body)
        assert status == 400 and isinstance(reply["error"], str), body


async def test_unknown_unit_id_and_writes_are_refused(metered):
    async with metered.client("site-a") as client:
        other = await client.read_holding_registers(40000, count=2, device_id=9)
        assert other.isError() and other.exception_code == 0x0B  # gateway: target device failed to respond
        write = await client.write_register(40072, 1, device_id=1)
        assert write.isError()
        wrong_table = await client.read_input_registers(40000, count=2, device_id=1)
        assert wrong_table.isError()


async def test_stale_meter_holds_power_and_energy_and_the_truth_says_so(metered):
    async with metered.client("site-a") as client:
        power, energy = await read_meter(client, "site-a")
        status, reply = await metered.post("/api/v1/meters/site-a/fault", {"fault": "stale"})
        assert (status, reply["fault"]) == (200, {"kind": "stale"})
        await metered.post("/api/v1/sites/site-a/load", {"factor": 0.8})
        await metered.post("/api/v1/clock", {"advance": 10})
        assert await read_meter(client, "site-a") == (power, energy)  # answers, but nothing moves
        row = (await metered.truth())["sites"]["site-a"]["meter"]
        assert row["fault"] == {"kind": "stale"}
        assert row["truth_w"] < 0.8 * power and row["reported_w"] == pytest.approx(power, rel=2e-4)
        assert row["truth_energy_wh"] > row["reported_energy_wh"]
        status, _ = await metered.post("/api/v1/meters/site-a/fault", method="DELETE")
        assert status == 200
        now, counted = await read_meter(client, "site-a")
        assert now == pytest.approx(row["truth_w"], rel=2e-4) and counted > energy


async def test_frozen_power_sticks_while_energy_keeps_counting(metered):
    async with metered.client("site-d") as client:
        status, _ = await metered.post("/api/v1/meters/site-d/fault", {"fault": "frozen", "value_kw": 12.5})
        assert status == 200
        power, energy = await read_meter(client, "site-d")
        assert power == pytest.approx(12500.0)
        truth_w = (await metered.truth())["sites"]["site-d"]["meter"]["truth_w"]
        await metered.post("/api/v1/clock", {"advance": 36})  # 180 s
        power_later, energy_later = await read_meter(client, "site-d")
        assert power_later == power
        assert energy_later - energy == pytest.approx(truth_w * 180 / 3600, rel=1e-3, abs=GENERIC.energy_scale)


async def test_wrong_scale_reads_a_thousand_times_off(metered):
    for site in ("site-a", "site-c"):
        async with metered.client(site) as client:
            power, _ = await read_meter(client, site)
            status, _ = await metered.post(f"/api/v1/meters/{site}/fault", {"fault": "wrong_scale"})
            assert status == 200
            assert (await read_meter(client, site))[0] == pytest.approx(power * 1000, rel=PRECISION[site])
            await metered.post(f"/api/v1/meters/{site}/fault", {"fault": "wrong_scale", "exponent": -3})
            assert (await read_meter(client, site))[0] == pytest.approx(power / 1000, rel=PRECISION[site])


async def test_offline_refuses_connections_and_comes_back_on_the_same_port(metered):
    meter = metered.meter("site-b")
    port = meter.port
    status, _ = await metered.post("/api/v1/meters/site-b/fault", {"fault": "offline"})
    assert status == 200
    refused = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
    assert not await refused.connect()
    refused.close()
    row = (await metered.truth())["sites"]["site-b"]["meter"]
    assert row["reported_w"] is None and row["truth_w"] > 0
    await metered.post("/api/v1/meters/site-b/fault", method="DELETE")
    assert meter.port == port
    async with metered.client("site-b") as client:
        assert (await read_meter(client, "site-b"))[0] == pytest.approx(row["truth_w"], rel=1e-6)


async def test_silent_meter_accepts_but_never_answers(metered):
    async with metered.client("site-c") as client:
        await metered.post("/api/v1/meters/site-c/fault", {"fault": "silent"})
        with pytest.raises(ModbusIOException):
            await read_meter(client, "site-c")  # bounded by the client's 0.5 s timeout
    await metered.post("/api/v1/meters/site-c/fault", method="DELETE")
    async with metered.client("site-c") as client:
        power, _ = await read_meter(client, "site-c")
        assert power == pytest.approx((await metered.truth())["sites"]["site-c"]["meter"]["truth_w"], rel=1e-6)


async def test_meter_fault_requests_are_checked(metered):
    bad = [
        ("/api/v1/meters/nowhere/fault", {"fault": "stale"}, 404),
        ("/api/v1/meters/site-a/fault", {"fault": "melted"}, 400),
        ("/api/v1/meters/site-a/fault", {"fault": "stale", "exponent": 3}, 400),
        ("/api/v1/meters/site-a/fault", {"fault": "wrong_scale", "exponent": 0}, 400),
        ("/api/v1/meters/site-a/fault", {"fault": "wrong_scale", "exponent": 1.5}, 400),
        ("/api/v1/meters/site-a/fault", {"fault": "frozen", "value_kw": -1}, 400),
        ("/api/v1/meters/site-a/fault", {}, 400),
    ]
    for path, body, expected in bad:
        status, reply = await metered.post(path, body)
        assert status == expected and isinstance(reply["error"], str), (path, body, reply)
    assert all(meter.fault is None for meter in metered.backend.meters.meters.values())
