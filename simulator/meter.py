"""Simulated site meters: a pymodbus TCP server per site, reading the site's true facility power.

A site's meter reads what the feeder really carries: the true wall draw of its miners (hung ones included,
ground truth) x the site's PUE + its auxiliary load + any non-miner load on the same feeder, and counts the
energy imported, in one of the register maps of metermaps.py. Registers are filled on every request (a
pymodbus SimDevice action), so a reader always sees the current tick, and nothing runs between requests.

Faults (POST /api/v1/meters/{site}/fault): `stale` - the whole register image stops updating but still
answers (a gateway answering from its cache after losing the meter behind it: power and energy both
hold); `frozen` - the power reading sticks (at `value_kw`, or where it was) while the energy counter keeps
counting; `offline` - the listener closes: connection refused; `silent` - connections are accepted, requests
never answered; `wrong_scale` - the power reads off by 10^`exponent` (a scale factor or unit set wrong).

The energy counter integrates the facility power over simulated time (ticks x tick_s), each figure held until
the next one is worked out (on a read or a truth request); it starts from a seeded few MWh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from megawatch.simulator.behaviour import unit
from megawatch.simulator.config import FleetConfig, MeterConfig, SiteConfig
from megawatch.simulator.metermaps import (
    Published,
    RegisterMap,
    energy_scale_factor,
    generic_map,
    pm5100_map,
    sdm630_map,
    sunspec_map,
)

# Fault -> its parameters with defaults and allowed range.
METER_FAULTS: dict[str, dict[str, tuple[float | None, float, float]]] = {
    "stale": {}, "frozen": {"value_kw": (None, 0.0, 1e7)}, "offline": {}, "silent": {},
    "wrong_scale": {"exponent": (3, -6, 6)},
}


@dataclass(frozen=True, slots=True)
class MeterFault:
    kind: str
    value_kw: float | None = None
    exponent: int = 3

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for name in METER_FAULTS[self.kind]:
            out[name] = getattr(self, name)
        return out


def make_meter_fault(kind: str, params: dict[str, Any]) -> MeterFault:
    """Build a MeterFault; raises ValueError naming the bad kind or parameter (the endpoint answers 400)."""
    if kind not in METER_FAULTS:
        raise ValueError(f"unknown meter fault {kind!r} (known: {', '.join(METER_FAULTS)})")
    allowed = METER_FAULTS[kind]
    values: dict[str, Any] = {}
    for name, value in params.items():
        if name not in allowed:
            takes = ", ".join(allowed) or "none"
            raise ValueError(f"meter fault {kind!r} takes no parameter {name!r} (takes: {takes})")
        _, low, high = allowed[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name}: expected a number from {low:g} to {high:g}, got {value!r}")
        values[name] = value
    if kind == "wrong_scale":
        exponent = values.get("exponent", 3)
        if exponent != int(exponent) or exponent == 0:
            raise ValueError(f"exponent: expected a whole number other than 0, got {exponent!r}")
        values["exponent"] = int(exponent)
    return MeterFault(kind, **values)


TruthSource = Callable[[], Awaitable[tuple[int, float]]]  # -> (tick, true wall draw of the site's miners)


class SiteMeter:
    """One site's meter: its server, its energy counter and its fault."""

    def __init__(self, site: SiteConfig, config: MeterConfig, *, seed: int, tick_s: float,
                 miners_w: TruthSource) -> None:
        self.site = site.id
        self.config = config
        self.tick_s = tick_s
        self.port = config.port
        self.fault: MeterFault | None = None
        # Non-miner load can change at run time (a GPU hall switching on): the control endpoint sets it.
        self.extra_load_w = config.extra_load_w
        self._miners_w = miners_w
        self._energy_wh = 1e6 * (1.0 + 9.0 * unit(seed, len(site.id), 77, sum(site.id.encode())))
        self._last: tuple[int, float] | None = None  # (tick, facility W) of the last update
        self._held: Published | None = None  # what a stale or frozen meter keeps showing
        self._map: RegisterMap | None = None
        self._server: ModbusTcpServer | None = None
        self._unsilenced = asyncio.Event()
        self._unsilenced.set()

    # -- what it should read and what it reads -------------------------------------------------------
    def facility_w(self, miners_w: float) -> float:
        return miners_w * self.config.pue + self.config.aux_w + self.extra_load_w

    def _advance(self, tick: int, facility_w: float) -> None:
        if self._last is not None and tick > self._last[0]:
            self._energy_wh += self._last[1] * (tick - self._last[0]) * self.tick_s / 3600.0
        self._last = (tick, facility_w)

    def published(self) -> Published:
        """What the registers carry now (call after an update)."""
        assert self._last is not None
        true = Published(self._last[1], self._energy_wh)
        fault = self.fault
        if fault is None or fault.kind in ("offline", "silent"):
            return true
        if fault.kind == "stale" and self._held is not None:
            return self._held
        if fault.kind == "frozen" and self._held is not None:
            return Published(self._held.power_w, true.energy_wh)
        if fault.kind == "wrong_scale":
            return Published(true.power_w, true.energy_wh, fault.exponent)
        return true

    async def update(self) -> Published:
        tick, miners_w = await self._miners_w()
        self._advance(tick, self.facility_w(miners_w))
        return self.published()

    def truth_row(self, tick: int, miners_w: float) -> dict[str, Any]:
        """What the meter should read beside what it reports (for /api/v1/truth)."""
        facility = self.facility_w(miners_w)
        self._advance(tick, facility)
        shown = self.published()
        answers = self.fault is None or self.fault.kind not in ("offline", "silent")
        return {
            "map": self.config.map, "host": self.config.host, "port": self.port, "unit_id": self.config.unit_id,
            "pue": self.config.pue, "aux_w": self.config.aux_w, "extra_load_w": self.extra_load_w,
            "fault": self.fault.describe() if self.fault is not None else None,
            "truth_w": facility, "truth_energy_wh": self._energy_wh,
            # Before the map cuts it to registers: decoded, a reading is this within the map's rounding.
            "reported_w": shown.power_w * 10.0 ** shown.scale_exponent if answers else None,
            "reported_energy_wh": shown.energy_wh if answers else None,
        }

    async def set_extra_load(self, watts: float) -> None:
        """Change the non-miner load from now on (energy so far is counted at the old figure)."""
        await self.update()
        self.extra_load_w = watts

    # -- faults -------------------------------------------------------------------------------------
    async def set_fault(self, fault: MeterFault | None) -> None:
        if self.fault is not None and self.fault.kind == "offline" and (fault is None or fault.kind != "offline"):
            await self._listen()
        self.fault = None  # so the update below is the true reading the fault starts from
        current = await self.update()
        self._held = None
        if fault is not None and fault.kind == "stale":
            self._held = current
        elif fault is not None and fault.kind == "frozen":
            power = current.power_w if fault.value_kw is None else fault.value_kw * 1000.0
            self._held = Published(power, current.energy_wh)
        self.fault = fault
        if fault is not None and fault.kind == "silent":
            self._unsilenced.clear()
        else:
            self._unsilenced.set()
        if fault is not None and fault.kind == "offline":
            await self._close()

    # -- the server ---------------------------------------------------------------------------------
    async def start(self) -> None:
        published = await self.update()
        self._map = self._make_map(published.power_w)
        await self._listen()

    def _make_map(self, facility_w: float) -> RegisterMap:
        kind = self.config.map
        if kind == "sunspec":
            return sunspec_map(f"{self.site}", energy_scale_factor(facility_w))
        if kind == "sdm630":
            return sdm630_map()
        if kind == "pm5100":
            return pm5100_map()
        assert self.config.generic is not None
        return generic_map(self.config.generic)

    def _device(self) -> SimDevice:
        regmap = self._map
        assert regmap is not None
        data = SimData(regmap.start, count=regmap.count, values=0, datatype=DataType.REGISTERS, readonly=True)
        # Nothing at the other table's addresses: a reader using the wrong function code gets an exception.
        nothing = SimData(regmap.start, count=1, datatype=DataType.INVALID)
        holding, inputs = ([data], [nothing]) if regmap.function == 3 else ([nothing], [data])
        bits = [SimData(0, count=16, values=[False] * 16, datatype=DataType.BITS, readonly=True)]
        return SimDevice(self.config.unit_id, simdata=(bits, list(bits), holding, inputs), action=self._on_request)

    def _devices(self) -> list[SimDevice]:
        devices = [self._device()]
        if self.config.unit_id != 0:
            # Any other unit id: what a TCP-to-RS-485 gateway answers for an address nobody has (pymodbus
            # itself would log a traceback and answer "device failure").
            async def absent(*_: Any) -> ExcCodes:
                return ExcCodes.GATEWAY_NO_RESPONSE
            assert self._map is not None
            nothing = SimData(self._map.start, count=self._map.count, values=0, datatype=DataType.REGISTERS)
            devices.append(SimDevice(0, simdata=[nothing], action=absent))
        return devices

    async def _on_request(self, function_code: int, start_address: int, address: int, count: int,
                          registers: list[int], set_values: Any) -> ExcCodes | None:
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # a meter takes no writes
        if not self._unsilenced.is_set():
            await self._unsilenced.wait()  # the silent fault: the request waits until the fault is cleared
            return ExcCodes.DEVICE_BUSY
        assert self._map is not None
        published = await self.update()
        self._map.render(registers, self._map.start - start_address, published)
        return None

    async def _listen(self) -> None:
        server = ModbusTcpServer(self._devices(), address=(self.config.host, self.port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError:  # pymodbus's word for a failed bind; it has logged the OSError already
            raise OSError(f"site {self.site}'s meter cannot listen on {self.config.host}:{self.port}") from None
        listener = server.transport
        sockets = getattr(listener, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]  # the real one when the config asked for port 0
        self._server = server

    async def _close(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
            self._server = None

    async def stop(self) -> None:
        self._unsilenced.set()
        await self._close()


class MeterSet:
    """Every site meter of a fleet, fed from one truth per tick and fleet change (a 10,000-miner truth costs
    tens of milliseconds; several meters read every second must not each work it out)."""

    def __init__(self, config: FleetConfig, truth: Callable[[], Awaitable[dict[str, Any]]],
                 truth_key: Callable[[], object]) -> None:
        self._truth = truth
        self._truth_key = truth_key
        self._cached: tuple[object, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        self.meters: dict[str, SiteMeter] = {}
        for site in config.sites:
            if site.meter is not None:
                self.meters[site.id] = SiteMeter(site, site.meter, seed=config.seed, tick_s=config.tick_s,
                                                 miners_w=self._source(site.id))

    def _source(self, site: str) -> TruthSource:
        async def miners_w() -> tuple[int, float]:
            truth = await self.truth()
            return truth["tick"], truth["sites"][site]["power_w"]
        return miners_w

    async def truth(self) -> dict[str, Any]:
        async with self._lock:
            key = self._truth_key()
            if self._cached is None or self._cached[0] != key:
                self._cached = (key, await self._truth())
            return self._cached[1]

    def add_rows(self, truth: dict[str, Any]) -> dict[str, Any]:
        """Put each metered site's meter row into a truth answer."""
        for site, meter in self.meters.items():
            truth["sites"][site]["meter"] = meter.truth_row(truth["tick"], truth["sites"][site]["power_w"])
        return truth

    async def start(self) -> None:
        started: list[SiteMeter] = []
        try:
            for meter in self.meters.values():
                await meter.start()
                started.append(meter)
        except BaseException:
            for meter in started:
                await meter.stop()
            raise

    async def stop(self) -> None:
        for meter in self.meters.values():
            await meter.stop()

    def describe(self) -> list[str]:
        return [f"site {site}: {m.config.map} meter on {m.config.host}:{m.port} unit {m.config.unit_id}"
                for site, m in self.meters.items()]
