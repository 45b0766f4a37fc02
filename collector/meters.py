"""Pure: a site meter's registers -> facility power (W, import positive) and imported energy (Wh).

Sign: a site feeder meter counts power the site draws from the grid as positive (import); a meter mounted or
set up the other way round is corrected with `invert: true`, never guessed. Units: W and Wh, whatever the map.

Maps (addresses are 0-based protocol addresses, as a Modbus request carries them):
- sunspec: SunSpec meter models 201-204 (integers with scale factors) and 211-214 (float32). The "SunS"
  marker is looked for at 40000, then 0, then 50000; the models after it are walked by their own length
  registers until the meter model (never by assumed lengths: vendors' Common blocks differ). Each value
  is read in the same request as its scale factor (vendors change scale factors at run time). SunSpec's
  "not implemented" values (int16 0x8000, a scale factor 0x8000, an acc32 of 0, float NaN) are unknown.
- sdm630 (Eastron SDM630 family): input registers, float32 high word first; total system power W at 52,
  total import kWh at 72, in one request.
- pm5100 (Schneider PowerLogic PM5100/PM5300): holding registers; total active power float32 **kW** at
  3059, energy delivered (import) int64 Wh at 3203.
- generic: the sites file gives each figure's table, address, type, word order, scale and unit.

A value that cannot be a site's draw (NaN, infinite, negative beyond a small tolerance, above the site's
plausible maximum) becomes unknown with a named problem; it is never 0 and never used.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from megawatch.collector.meterconfig import MAX_READ, TYPES, MeterConfig, RegisterPoint

# (function code, address, count) -> the registers read; raises MeterError
Read = Callable[[int, int, int], Awaitable[list[int]]]

SUNSPEC_BASES = (40000, 0, 50000)
SUNS = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_END = 0xFFFF
MAX_MODELS = 64  # a device lists a handful of models; a walk longer than this is not a SunSpec map
INT_MODELS = range(201, 205)  # single phase, split phase, wye, delta: same offsets
FLOAT_MODELS = range(211, 215)
SF_LIMIT = 10  # SunSpec scale factors are -10..10


class MeterErrorKind(StrEnum):
    CONNECT = "connect_failed"  # no TCP connection to the meter or its gateway
    TIMEOUT = "timeout"  # no answer within the meter's timeout_s
    DEVICE = "device_error"  # a Modbus exception reply (illegal address, gateway: no answer from the meter)
    LAYOUT = "layout"  # the device does not hold the map's registers where the map says


class MeterError(Exception):
    def __init__(self, kind: MeterErrorKind, detail: str) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One reading; None = unknown, with why in `problems` (snake_case names)."""

    power_w: float | None
    energy_import_wh: float | None = None
    problems: tuple[str, ...] = ()


# ---- register decoding ------------------------------------------------------------------------------

def decode(words: list[int], kind: str, word_order: str = "big") -> float:
    """Registers -> the number of `kind` they hold (float NaN/inf come back as they are)."""
    width = TYPES[kind]
    if len(words) != width:
        raise ValueError(f"a {kind} takes {width} registers, got {len(words)}")
    ordered = words if word_order == "big" else words[::-1]
    raw = b"".join((w & 0xFFFF).to_bytes(2, "big") for w in ordered)
    if kind == "float32":
        return float(struct.unpack(">f", raw)[0])
    if kind == "float64":
        return float(struct.unpack(">d", raw)[0])
    return float(int.from_bytes(raw, "big", signed=kind.startswith("int")))


def _sunssf(word: int) -> int | None:
    """A SunSpec scale factor (signed int16), None when not implemented or out of SunSpec's range."""
    if word == 0x8000:
        return None
    sf = word - 0x10000 if word & 0x8000 else word
    return sf if -SF_LIMIT <= sf <= SF_LIMIT else None


def decode_sunspec(block: list[int]) -> MeterReading:
    """A meter model block read from its ID register on -> power and imported energy."""
    model = block[0]
    problems: list[str] = []
    power = energy = None
    if model in FLOAT_MODELS:
        power = decode(block[28:30], "float32")
        energy = decode(block[68:70], "float32")
        if math.isnan(power):
            power = None
            problems.append("power_not_implemented")
        if math.isnan(energy) or energy == 0:
            energy = None
    elif model in INT_MODELS:
        w_sf, wh_sf = _sunssf(block[22]), _sunssf(block[54])
        raw_w, raw_wh = block[18], (block[46] << 16) | block[47]
        if raw_w == 0x8000:
            problems.append("power_not_implemented")
        elif w_sf is None:
            problems.append("power_scale_factor_invalid")
        else:
            power = (raw_w - 0x10000 if raw_w & 0x8000 else raw_w) * 10.0 ** w_sf
        if raw_wh != 0 and wh_sf is not None:  # an acc32 of 0 is "not implemented"
            energy = raw_wh * 10.0 ** wh_sf
    else:
        raise MeterError(MeterErrorKind.LAYOUT, f"SunSpec model {model} is not a meter model")
    return MeterReading(power, energy, tuple(problems))


def decode_point(words: list[int], point: RegisterPoint, first: int) -> tuple[float | None, str | None]:
    """A generic point from the registers of its span (read from `first`) -> (value in W or Wh, problem)."""
    at = point.address - first
    raw = decode(words[at:at + TYPES[point.type]], point.type, point.word_order)
    if not math.isfinite(raw):
        return None, "not_a_number"
    exponent = 0
    if point.scale_factor_address is not None:
        sf = _sunssf(words[point.scale_factor_address - first])
        if sf is None:
            return None, "scale_factor_invalid"
        exponent = sf
    return raw * point.factor * 10.0 ** exponent, None


# ---- maps ---------------------------------------------------------------------------------------------

async def _read(read: Read, function: int, address: int, count: int) -> list[int]:
    words = await read(function, address, count)
    if len(words) != count:
        raise MeterError(MeterErrorKind.LAYOUT, f"asked for {count} registers at {address}, got {len(words)}")
    return words


class SunSpecMap:
    """Finds the meter model once (again after any failure) and reads its block each time."""

    name = "sunspec"

    def __init__(self) -> None:
        self.found: tuple[int, int, int] | None = None  # (model address, model id, registers to read)

    def forget(self) -> None:
        self.found = None

    async def discover(self, read: Read) -> tuple[int, int, int]:
        base = None
        for candidate in SUNSPEC_BASES:
            try:
                if tuple(await _read(read, 3, candidate, 2)) == SUNS:
                    base = candidate
                    break
            except MeterError as exc:
                if exc.kind is not MeterErrorKind.DEVICE:  # illegal address: try the next base
                    raise
        if base is None:
            raise MeterError(MeterErrorKind.LAYOUT, "no SunSpec marker 'SunS' at 40000, 0 or 50000")
        address, seen = base + 2, []
        for _ in range(MAX_MODELS):
            if address + 2 > 65536:
                break
            model, length = await _read(read, 3, address, 2)
            if model == SUNSPEC_END:
                break
            seen.append(model)
            if model in INT_MODELS or model in FLOAT_MODELS:
                need = 55 if model in INT_MODELS else 70  # up to TotWh_SF / TotWhImp
                if length + 2 < need:
                    raise MeterError(MeterErrorKind.LAYOUT, f"model {model} at {address} is {length} long, "
                                     f"shorter than a meter model ({need - 2})")
                return address, model, need
            address += length + 2
        raise MeterError(MeterErrorKind.LAYOUT, f"no meter model (201-204, 211-214) after 'SunS' at {base}; "
                         f"models found: {', '.join(map(str, seen)) or 'none'}")

    async def sample(self, read: Read) -> MeterReading:
        if self.found is None:
            self.found = await self.discover(read)
        address, model, count = self.found
        block = await _read(read, 3, address, count)
        if block[0] != model:
            self.found = None
            raise MeterError(MeterErrorKind.LAYOUT, f"model {model} no longer at {address} (found {block[0]})")
        return decode_sunspec(block)


class PointsMap:
    """A fixed map: power and (optionally) imported energy, each a RegisterPoint read in one request."""

    def __init__(self, name: str, power: RegisterPoint, energy: RegisterPoint | None) -> None:
        self.name = name
        self.power = power
        self.energy = energy

    def forget(self) -> None:
        pass

    async def _value(self, read: Read, point: RegisterPoint) -> tuple[float | None, str | None]:
        first, count = point.span
        return decode_point(await _read(read, point.function, first, count), point, first)

    async def sample(self, read: Read) -> MeterReading:
        problems: list[str] = []
        power, problem = await self._value(read, self.power)
        if problem is not None:
            problems.append(f"power_{problem}")
        energy = None
        if self.energy is not None:
            energy, problem = await self._value(read, self.energy)
            if problem is not None:
                energy = None
        return MeterReading(power, energy, tuple(problems))


class SpanMap(PointsMap):
    """Power and energy close enough to come in one request (the SDM630's 22 registers)."""

    async def sample(self, read: Read) -> MeterReading:
        assert self.energy is not None
        first = min(self.power.address, self.energy.address)
        end = max(self.power.address + TYPES[self.power.type], self.energy.address + TYPES[self.energy.type])
        words = await _read(read, self.power.function, first, end - first)
        power, problem = decode_point(words, self.power, first)
        energy, _ = decode_point(words, self.energy, first)
        return MeterReading(power, energy, (f"power_{problem}",) if problem else ())


MeterMap = SunSpecMap | PointsMap

SDM630_POWER = RegisterPoint(4, 0x0034, "float32", "big", 1.0)
SDM630_IMPORT = RegisterPoint(4, 0x0048, "float32", "big", 1e3)  # kWh
PM5100_POWER = RegisterPoint(3, 3059, "float32", "big", 1e3)  # kW
PM5100_IMPORT = RegisterPoint(3, 3203, "int64", "big", 1.0)  # Wh


def make_map(config: MeterConfig) -> MeterMap:
    if config.map == "sunspec":
        return SunSpecMap()
    if config.map == "sdm630":
        return SpanMap("sdm630", SDM630_POWER, SDM630_IMPORT)
    if config.map == "pm5100":
        return PointsMap("pm5100", PM5100_POWER, PM5100_IMPORT)
    assert config.power is not None, "the config loader requires registers.power for map: generic"
    assert config.power.span[1] <= MAX_READ
    return PointsMap("generic", config.power, config.energy_import)


# ---- plausibility -------------------------------------------------------------------------------------

def plausible(reading: MeterReading, *, invert: bool, max_w: float, tolerance_w: float) -> MeterReading:
    """Sign-correct a reading and drop a power no site can draw: unknown, with the problem named."""
    power, problems = reading.power_w, list(reading.problems)
    if power is not None and invert:
        power = -power
    if power is not None:
        if not math.isfinite(power):
            power, problems = None, [*problems, "power_not_a_number"]
        elif power < -tolerance_w:
            power, problems = None, [*problems, "power_negative"]
        elif power > max_w:
            power, problems = None, [*problems, "power_above_plausible_maximum"]
    energy = reading.energy_import_wh
    if energy is not None and (not math.isfinite(energy) or energy < 0):
        energy = None
    return MeterReading(power, energy, tuple(problems))
