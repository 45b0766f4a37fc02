"""Every meter map read over real Modbus TCP on loopback (a pymodbus server answering from a register image),
and the reader's failures: refused, silent, exception replies, wrong layout. No sleeps; every read bounded."""

from __future__ import annotations

import logging
import math
import time

import pytest

from megawatch.collector.meterclient import MeterClient, MeterReader
from megawatch.collector.meterconfig import MeterConfig, RegisterPoint
from megawatch.collector.meters import MeterReading, decode, plausible
from megawatch.simulator.config import GenericLayout
from megawatch.simulator.metermaps import Published, generic_map, pm5100_map, sdm630_map, sunspec_map
from tests.collector.modbus_fake import FakeDevice, fake_device, sunspec_image, words
from tests.e2e.processes import free_port


def meter(device: FakeDevice, kind: str, **kw: object) -> MeterClient:
    return MeterClient("a", MeterConfig("127.0.0.1", device.port, map=kind, **{"timeout_s": 1.0, **kw}))  # type: ignore[arg-type]


async def read(client: MeterClient) -> MeterReading:
    result = await client.read()
    assert result.error is None, result.error
    assert result.reading is not None
    return result.reading


# ---- SunSpec -----------------------------------------------------------------------------------------

async def test_sunspec_int_model_with_scale_factors_and_an_odd_common_length() -> None:
    async with fake_device() as dev:
        # Common reports 65 (not 66) and an inverter model sits before the meter: only a walk finds it.
        at = sunspec_image(dev, w=12345, w_sf=1, wh=987654, wh_sf=2, common_length=65, before=((101, 50),))
        client = meter(dev, "sunspec")
        got = await read(client)
        assert got == MeterReading(123450.0, 98765400.0)
        # The vendor moves the scale factor with the reading: each read takes the one in its own request.
        dev.put(3, at + 18, [-3210 & 0xFFFF])
        dev.put(3, at + 22, [2])
        assert (await read(client)).power_w == -321000.0  # signed; plausibility judges it later
        dev.put(3, at + 18, [3210])
        assert (await read(client)).power_w == 321000.0
        # The second and later reads ask for the meter block only, in one request with its scale factors.
        assert dev.requests[-1] == (3, at, 55)
        client.close()


@pytest.mark.parametrize("base", [0, 50000])
async def test_sunspec_marker_found_at_the_other_bases(base: int) -> None:
    async with fake_device() as dev:
        sunspec_image(dev, base=base, w=500, w_sf=3)
        client = meter(dev, "sunspec")
        assert (await read(client)).power_w == 500_000.0
        client.close()


async def test_sunspec_not_implemented_values_are_unknown_never_zero() -> None:
    async with fake_device() as dev:
        at = sunspec_image(dev, w=0x8000, w_sf=0, wh=0, wh_sf=0)
        client = meter(dev, "sunspec")
        got = await read(client)
        assert got.power_w is None and got.energy_import_wh is None
        assert got.problems == ("power_not_implemented",)
        dev.put(3, at + 18, [1000])
        dev.put(3, at + 22, [0x8000])  # the scale factor itself not implemented
        got = await read(client)
        assert got.power_w is None and got.problems == ("power_scale_factor_invalid",)
        client.close()


async def test_sunspec_float_model() -> None:
    async with fake_device() as dev:
        at = sunspec_image(dev, model=213, w=456789.5, wh=1.5e9)
        client = meter(dev, "sunspec")
        assert await read(client) == MeterReading(456789.5, 1.5e9)
        dev.put(3, at + 28, [0x7FC0, 0])  # NaN: not implemented
        got = await read(client)
        assert got.power_w is None and got.problems == ("power_not_implemented",)
        client.close()


async def test_sunspec_without_marker_or_meter_model_is_a_layout_error() -> None:
    async with fake_device() as dev:
        dev.put(3, 40000, [1, 2])
        result = await meter(dev, "sunspec").read()
        assert result.reading is None and result.error is not None and result.error.startswith("layout:")
        assert "no SunSpec marker" in result.error
    async with fake_device() as dev:
        dev.put(3, 40000, [0x5375, 0x6E53, 1, 4, 0, 0, 0, 0, 101, 2, 0, 0, 0xFFFF, 0])
        result = await meter(dev, "sunspec").read()
        assert result.error is not None and "models found: 1, 101" in result.error


# ---- vendor maps -------------------------------------------------------------------------------------

async def test_sdm630_float32_input_registers_in_one_request() -> None:
    async with fake_device() as dev:
        dev.put(4, 52, words(301234.5, "float32") + [0] * 18 + words(4321.5, "float32"))
        client = meter(dev, "sdm630")
        assert await read(client) == MeterReading(301234.5, 4321500.0)
        assert dev.requests == [(4, 52, 22)]
        dev.put(4, 52, words(math.nan, "float32"))
        got = await read(client)
        assert got.power_w is None and got.problems == ("power_not_a_number",)
        client.close()


async def test_pm5100_kilowatts_and_int64_watt_hours() -> None:
    async with fake_device() as dev:
        dev.put(3, 3059, words(1234.5, "float32"))
        dev.put(3, 3203, words(9_876_543_210, "int64"))
        client = meter(dev, "pm5100")
        assert await read(client) == MeterReading(1_234_500.0, 9_876_543_210.0)
        client.close()


# ---- generic -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "order", "raw", "scale", "unit", "watts"), [
    ("int16", "big", -1200, 1.0, "W", -1200.0),
    ("uint16", "big", 60000, 10.0, "W", 600000.0),
    ("int32", "little", 2_500_000, 0.1, "kW", 250_000_000.0),
    ("uint32", "big", 3_000_000_000, 0.001, "W", 3_000_000.0),
    ("float32", "little", 1.25, 1.0, "MW", 1_250_000.0),
    ("int64", "little", 123_456_789, 0.01, "kW", 1_234_567_890.0),
    ("float64", "big", 98765.4321, 1.0, "W", 98765.4321),
])
async def test_generic_types_word_orders_scales_and_units(kind: str, order: str, raw: float, scale: float,
                                                          unit: str, watts: float) -> None:
    factor = scale * {"W": 1.0, "kW": 1e3, "MW": 1e6}[unit]
    async with fake_device() as dev:
        dev.put(4, 1000, words(raw, kind, order))
        client = meter(dev, "generic", power=RegisterPoint(4, 1000, kind, order, factor))
        assert (await read(client)).power_w == pytest.approx(watts, rel=1e-6)
        client.close()


async def test_generic_scale_factor_register_comes_in_the_same_request() -> None:
    async with fake_device() as dev:
        dev.put(3, 200, [*words(4321, "int16"), 0, -1 & 0xFFFF])
        dev.put(3, 300, words(777, "uint32") + words(3, "int16"))
        client = meter(dev, "generic", power=RegisterPoint(3, 200, "int16", "big", 1e3, 202),
                       energy_import=RegisterPoint(3, 300, "uint32", "big", 1.0, 302))
        assert await read(client) == MeterReading(432100.0, 777000.0)
        assert dev.requests == [(3, 200, 3), (3, 300, 3)]
        client.close()


# ---- the simulator's meters read by the collector's maps (the two must not drift apart) ---------------

@pytest.mark.parametrize("name", ["sunspec", "sdm630", "pm5100", "generic"])
async def test_simulated_meter_maps_decode_to_what_they_publish(name: str) -> None:
    layout = GenericLayout(function=4, power_address=500, energy_address=510, type="int32", word_order="little",
                           power_scale=0.1, energy_scale=10.0)
    regmap = {"sunspec": lambda: sunspec_map("x", 1), "sdm630": sdm630_map, "pm5100": pm5100_map,
              "generic": lambda: generic_map(layout)}[name]()
    published = Published(power_w=712_345.6, energy_wh=3_456_789_000.0)
    regs = [0] * regmap.count
    regmap.render(regs, 0, published)
    kw = {}
    if name == "generic":
        kw = {"power": RegisterPoint(4, 500, "int32", "little", 0.1),
              "energy_import": RegisterPoint(4, 510, "int32", "little", 10.0)}
    async with fake_device() as dev:
        dev.put(regmap.function, regmap.start, regs)
        client = meter(dev, name, **kw)
        got = await read(client)
        client.close()
    # The map's own resolution: SunSpec int16 with a scale factor, the PM5100's float32 kW.
    assert got.power_w == pytest.approx(published.power_w, rel=2e-4)
    assert got.energy_import_wh == pytest.approx(published.energy_wh, rel=1e-6)


# ---- failures ------------------------------------------------------------------------------------------

async def test_refused_connection_is_connect_failed() -> None:
    client = MeterClient("a", MeterConfig("127.0.0.1", free_port(), map="sdm630", timeout_s=1.0))
    result = await client.read()
    assert result.reading is None and result.error is not None and result.error.startswith("connect_failed:")


def test_pymodbus_own_log_lines_do_not_reach_the_application() -> None:
    """pymodbus logs each refused connect, every cycle; the reader's one event per change says it instead."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root, keep = logging.getLogger(), Keep()
    root.addHandler(keep)
    try:
        MeterClient("a", MeterConfig("127.0.0.1", map="sdm630"))
        logging.getLogger("pymodbus.logging").error("Failed to connect [Errno 111]")
    finally:
        root.removeHandler(keep)
    assert not seen


async def test_silent_meter_times_out_within_its_deadline() -> None:
    async with fake_device() as dev:
        dev.silent.set()
        client = meter(dev, "sunspec", timeout_s=0.3)
        started = time.monotonic()
        result = await client.read()
        took = time.monotonic() - started
        assert result.error is not None and result.error.startswith("timeout:"), result.error
        assert took < 0.3 + 0.25, f"a 0.3 s deadline took {took:.2f} s"
        dev.silent.clear()
        # The next cycle reconnects on its own and reads.
        sunspec_image(dev, w=100, w_sf=0)
        assert (await read(client)).power_w == 100.0
        client.close()


async def test_wrong_unit_id_and_missing_registers_are_device_errors() -> None:
    async with fake_device(unit_id=7) as dev:
        dev.put(4, 52, [0] * 22)
        result = await meter(dev, "sdm630", unit_id=1).read()
        assert result.reading is None and result.error is not None
        assert result.error.startswith("device_error:"), result.error
        assert (await meter(dev, "sdm630", unit_id=7).read()).error is None
        result = await meter(dev, "pm5100", unit_id=7).read()  # nothing at 3059
        assert result.error is not None and result.error.startswith("device_error:")


async def test_reader_logs_failure_and_recovery_once_each() -> None:
    from structlog.testing import capture_logs

    async with fake_device() as dev:
        reader = MeterReader()
        reader.configure({"a": MeterConfig("127.0.0.1", dev.port, map="sdm630", timeout_s=1.0)})
        with capture_logs() as logs:
            for _ in range(2):
                assert (await reader.read_all())["a"].error is not None
            dev.put(4, 52, words(1000.0, "float32") + [0] * 20)
            for _ in range(2):
                assert (await reader.read_all())["a"].error is None
        reader.close()
    assert [e["event"] for e in logs] == ["meter_read_failed", "meter_recovered"]


# ---- pure decoding and plausibility --------------------------------------------------------------------

def test_decode_word_orders() -> None:
    assert decode([0x0001, 0x0002], "uint32", "big") == 0x00010002
    assert decode([0x0001, 0x0002], "uint32", "little") == 0x00020001
    assert decode([0xFFFF], "int16") == -1
    assert decode(words(-5, "int64", "little"), "int64", "little") == -5
    with pytest.raises(ValueError):
        decode([1], "float32")


@pytest.mark.parametrize(("power", "invert", "expected", "problem"), [
    (1e6, False, 1e6, None),
    (-1e6, True, 1e6, None),
    (-5e3, False, -5e3, None),  # within 1% of a 1 MW allocation: an idle feeder's noise
    (-5e4, False, None, "power_negative"),
    (2e7, False, None, "power_above_plausible_maximum"),
    (math.inf, False, None, "power_not_a_number"),
    (math.nan, False, None, "power_not_a_number"),
])
def test_plausibility(power: float, invert: bool, expected: float | None, problem: str | None) -> None:
    got = plausible(MeterReading(power, 5.0), invert=invert, max_w=1e7, tolerance_w=1e4)
    assert got.power_w == expected
    assert got.problems == ((problem,) if problem else ())
