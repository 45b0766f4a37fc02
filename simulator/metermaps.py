"""Register layouts of the simulated site meters: what a reader finds where, and how to decode it.

Each map fills one register table (holding, FC03, or input, FC04) from a `Published` reading. Addresses are
0-based protocol addresses, as a Modbus client sends them. Bytes in a register are big-endian, as Modbus
defines; word order is per map. Power is import-positive (the site draws from the grid).

- sunspec: holding registers from 40000: "SunS" (0x5375 0x6E53), Common model 1 (ID 1, L 66), the wye meter
  model 203 (ID 203, L 105) at 40070, the end marker (0xFFFF, 0) at 40177. In model 203, counted from its ID
  register: W (int16) at 18, WphA/B/C 19-21, W_SF (sunssf) 22, Hz 16 and Hz_SF 17, A 2 and A_SF 6, PhV 7 and
  V_SF 15, TotWhImp (acc32) 46-47, TotWh_SF 54. W_SF moves with the reading so W fits an int16 (a reader
  must take each scale factor from the same read as its value); TotWh_SF is fixed when the meter starts so a
  year of its energy fits (the counter rolls over at 2^32, as accumulators do). Points the simulator does not
  measure hold SunSpec's "not implemented" values (int16/sunssf 0x8000, acc32 0).
- sdm630 (Eastron SDM630-style): input registers, float32, high word first. Total system power (W) at 52
  (0x0034, the manual's 30053), frequency (Hz) at 70 (0x0046), import energy (kWh) at 72 (0x0048), export
  (kWh) at 74; phase voltages at 0/2/4, currents 6/8/10, phase powers 12/14/16.
- pm5100 (Schneider PowerLogic PM5100/PM5300-style): holding registers, float32 high word first; total active
  power in **kW** at 3059 (the manual's register 3060), frequency at 3109, energy delivered (import) as int64
  Wh at 3203-3206, received at 3207-3210.
- generic: the site's `meter.generic` layout: one register table, power (W = raw x power_scale) and energy
  imported (Wh = raw x energy_scale) each as one configured type and word order.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from megawatch.simulator.config import REGISTER_TYPES, GenericLayout

NOT_IMPLEMENTED_INT16 = 0x8000
VOLTS = 230.0
HERTZ = 50.0


@dataclass(frozen=True, slots=True)
class Published:
    """What the meter's registers say now, before they are cut to registers."""

    power_w: float
    energy_wh: float
    scale_exponent: int = 0  # the wrong_scale fault: the power reads off by 10^this


def words(value: float, kind: str, word_order: str = "big") -> list[int]:
    """`value` as registers of `kind` (integers rounded and held to the type's range)."""
    width = REGISTER_TYPES[kind]
    if kind == "float32":
        raw = struct.pack(">f", value)
    else:
        bits = 16 * width
        signed = kind.startswith("int")
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        raw = max(low, min(high, round(value))).to_bytes(2 * width, "big", signed=signed)
    out = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    return out if word_order == "big" else out[::-1]


def text(value: str, registers: int) -> list[int]:
    """A SunSpec string: two ASCII characters per register, NUL-padded."""
    raw = value.encode("ascii")[: 2 * registers].ljust(2 * registers, b"\0")
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def _int16(value: int) -> int:
    return value & 0xFFFF


def scale_factor(value: float, lowest: int = -2) -> int:
    """The smallest SunSpec scale factor (>= `lowest`) that puts `value` in an int16."""
    sf = lowest
    while abs(value) / 10.0 ** sf > 32767 and sf < 10:
        sf += 1
    return sf


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """One table of registers, `count` long from `start`; `render` fills it in place from a reading."""

    name: str
    function: int  # 3: holding registers, 4: input registers
    start: int
    count: int
    render: Callable[[list[int], int, Published], None]  # (registers, offset of `start` in them, reading)


SUNSPEC_BASE = 40000
SUNSPEC_METER = SUNSPEC_BASE + 70  # model 203's ID register
SUNSPEC_END = SUNSPEC_METER + 2 + 105


def sunspec_map(serial: str, energy_sf: int) -> RegisterMap:
    """SunSpec: header, Common model 1, meter model 203, end marker (module docstring)."""
    fixed = [0] * (SUNSPEC_END + 2 - SUNSPEC_BASE)
    fixed[0:2] = [0x5375, 0x6E53]
    common = [1, 66, *text("megawatch", 16), *text("simulated site meter", 16), *text("", 8),
              *text("1.0", 8), *text(serial, 16), 1, NOT_IMPLEMENTED_INT16]
    fixed[2:2 + len(common)] = common
    meter = SUNSPEC_METER - SUNSPEC_BASE
    fixed[meter:meter + 2] = [203, 105]
    for offset in (*range(2, 38), 71, 104):  # int16 and sunssf points: not implemented until set below
        fixed[meter + offset] = NOT_IMPLEMENTED_INT16
    fixed[meter + 105:meter + 107] = [0, 0]  # Evt: no events
    fixed[SUNSPEC_END - SUNSPEC_BASE:SUNSPEC_END - SUNSPEC_BASE + 2] = [0xFFFF, 0]

    def render(regs: list[int], at: int, reading: Published) -> None:
        regs[at:at + len(fixed)] = fixed
        m = at + meter
        power = reading.power_w
        w_sf = scale_factor(power)
        phase = power / 3.0
        amps = phase / VOLTS
        a_sf = scale_factor(amps * 3.0)
        regs[m + 2] = _int16(round(amps * 3.0 / 10.0 ** a_sf))
        regs[m + 3:m + 6] = [_int16(round(amps / 10.0 ** a_sf))] * 3
        regs[m + 6] = _int16(a_sf)
        regs[m + 7:m + 11] = [round(VOLTS * 10)] * 4
        regs[m + 15] = _int16(-1)
        regs[m + 16:m + 18] = [round(HERTZ * 100), _int16(-2)]
        regs[m + 18] = _int16(round(power / 10.0 ** w_sf))
        regs[m + 19:m + 22] = [_int16(round(phase / 10.0 ** w_sf))] * 3
        # The wrong_scale fault: the raw value stays, its scale factor is off.
        regs[m + 22] = _int16(w_sf + reading.scale_exponent)
        regs[m + 46:m + 48] = words(reading.energy_wh / 10.0 ** energy_sf % 2**32, "uint32")
        regs[m + 54] = _int16(energy_sf)

    return RegisterMap("sunspec", 3, SUNSPEC_BASE, len(fixed), render)


def sdm630_map() -> RegisterMap:
    def render(regs: list[int], at: int, reading: Published) -> None:
        power = reading.power_w * 10.0 ** reading.scale_exponent
        phase = power / 3.0
        values = [0.0] * 40  # 40 float32 = registers 0-79
        values[0:3] = [VOLTS] * 3
        values[3:6] = [phase / VOLTS] * 3
        values[6:9] = [phase] * 3
        values[26] = power  # 0x0034
        values[35] = HERTZ  # 0x0046
        values[36] = reading.energy_wh / 1000.0  # 0x0048, kWh
        for i, value in enumerate(values):
            regs[at + 2 * i:at + 2 * i + 2] = words(value, "float32")

    return RegisterMap("sdm630", 4, 0, 80, render)


PM5100_START = 3000


def pm5100_map() -> RegisterMap:
    def render(regs: list[int], at: int, reading: Published) -> None:
        kw = reading.power_w * 10.0 ** reading.scale_exponent / 1000.0
        base = at - PM5100_START
        regs[base + 3059:base + 3061] = words(kw, "float32")
        regs[base + 3109:base + 3111] = words(HERTZ, "float32")
        regs[base + 3203:base + 3207] = words(reading.energy_wh, "int64")
        regs[base + 3207:base + 3211] = words(0, "int64")

    return RegisterMap("pm5100", 3, PM5100_START, 220, render)


def generic_map(layout: GenericLayout) -> RegisterMap:
    width = REGISTER_TYPES[layout.type]
    start = min(layout.power_address, layout.energy_address)
    count = max(layout.power_address, layout.energy_address) + width - start

    def render(regs: list[int], at: int, reading: Published) -> None:
        raw_power = reading.power_w * 10.0 ** reading.scale_exponent / layout.power_scale
        p = at + layout.power_address - start
        e = at + layout.energy_address - start
        regs[p:p + width] = words(raw_power, layout.type, layout.word_order)
        regs[e:e + width] = words(reading.energy_wh / layout.energy_scale, layout.type, layout.word_order)

    return RegisterMap("generic", layout.function, start, count, render)


def energy_scale_factor(facility_w: float) -> int:
    """TotWh_SF that lets a year at `facility_w` fit the acc32 counter with room to spare."""
    year_wh = max(facility_w, 1.0) * 8760.0
    sf = 0
    while year_wh / 10.0 ** sf >= 2**31:
        sf += 1
    return sf
