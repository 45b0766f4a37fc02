"""A site's feeder meter in the sites file (`sites[].meter`): where it answers and how its registers read.

  meter:
    host: 10.20.0.5            # the meter, or the TCP-to-RS-485 gateway in front of it
    port: 502
    unit_id: 1                 # the RS-485 address behind a gateway; what the device wants otherwise
    map: sunspec               # sunspec | sdm630 | pm5100 | generic
    timeout_s: 2               # one deadline over a whole reading (connect and every request)
    stale_after_s: 60          # registers (power, import counter) that have not moved this long: not trusted
    non_miner_load_mw: 0.5     # load on the same allocation that no miner reports (a GPU hall)
    invert: false              # true when the meter counts the site's draw as negative
    registers:                 # map: generic only
      power: {table: holding, address: 0, type: float32, word_order: big, scale: 1, unit: kW}
      energy_import: {table: holding, address: 10, type: uint32, unit: kWh, scale: 0.1}

Loaded once into frozen dataclasses; every MW, kW and kWh is converted to W and Wh here.
"""

from __future__ import annotations

from dataclasses import dataclass

from megawatch.common.configfile import Section

MAPS = ("sunspec", "sdm630", "pm5100", "generic")
# type -> registers it takes. Bytes inside a register are always big-endian on Modbus; only the order of the
# registers (words) of a wide value differs between vendors.
TYPES: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4,
                         "float64": 4}
TABLES = {"holding": 3, "input": 4}  # the register table -> the Modbus function code that reads it
POWER_UNITS = {"W": 1.0, "kW": 1e3, "MW": 1e6}
ENERGY_UNITS = {"Wh": 1.0, "kWh": 1e3, "MWh": 1e6}
MAX_READ = 125  # registers one Modbus read may return


@dataclass(frozen=True, slots=True)
class RegisterPoint:
    """One figure in a generic map: value = raw x scale x 10^(scale factor register, if any) x unit."""

    function: int  # 3: holding registers, 4: input registers
    address: int  # 0-based protocol address, as sent on the wire (register 40001 / 30001 is 0)
    type: str
    word_order: str  # big: high word first; little: low word first
    factor: float  # scale x unit (to W or Wh)
    scale_factor_address: int | None = None  # a signed int16 power of ten, read in the same request

    @property
    def span(self) -> tuple[int, int]:
        """First address and register count of the one request that reads the value and its scale factor."""
        end = self.address + TYPES[self.type]
        if self.scale_factor_address is None:
            return self.address, end - self.address
        first = min(self.address, self.scale_factor_address)
        return first, max(end, self.scale_factor_address + 1) - first


@dataclass(frozen=True, slots=True)
class MeterConfig:
    host: str
    port: int = 502
    unit_id: int = 1
    map: str = "sunspec"
    timeout_s: float = 2.0
    stale_after_s: float = 60.0
    non_miner_load_w: float = 0.0
    invert: bool = False
    power: RegisterPoint | None = None  # generic map only
    energy_import: RegisterPoint | None = None  # generic map only; optional there

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _point(sec: Section, units: dict[str, float]) -> RegisterPoint | None:
    table = sec.choice("table", tuple(TABLES), "holding")
    address = sec.integer("address", minimum=0, maximum=65535)
    kind = sec.choice("type", tuple(TYPES), "float32")
    order = sec.choice("word_order", ("big", "little"), "big")
    scale = sec.number("scale", 1.0)
    unit = sec.choice("unit", tuple(units))
    sf_address = sec.integer("scale_factor_address", None, minimum=0, maximum=65535)
    sec.done()
    if scale is not None and scale == 0:
        sec.error("scale", "expected a number other than 0")
        return None
    if None in (table, address, kind, order, scale, unit):
        return None
    assert address is not None and kind is not None and unit is not None and scale is not None
    point = RegisterPoint(TABLES[table], address, kind, order, scale * units[unit], sf_address)
    first, count = point.span
    if first + count > 65536:
        sec.error("address", f"a {kind} at {address} runs past address 65535")
        return None
    if count > MAX_READ:
        sec.error("scale_factor_address", f"must lie within {MAX_READ} registers of the value (one read)")
        return None
    if sf_address is not None and address <= sf_address < address + TYPES[kind]:
        sec.error("scale_factor_address", f"overlaps the value's registers {address}-{address + TYPES[kind] - 1}")
        return None
    return point


def load_meter(sec: Section) -> MeterConfig | None:
    """Read a site's `meter:` section; None (problems recorded) when it is not usable."""
    d = MeterConfig(host="")
    host = sec.string("host", expected="a host name or IP address of the meter or its gateway")
    port = sec.integer("port", d.port, minimum=1, maximum=65535)
    # 0 is the Modbus TCP broadcast/"this device" id, 1-247 RS-485 addresses, 255 what many TCP devices want.
    unit_id = sec.integer("unit_id", d.unit_id, minimum=0, maximum=255)
    kind = sec.choice("map", MAPS)
    timeout = sec.number("timeout_s", d.timeout_s, exclusive_minimum=0)
    stale = sec.number("stale_after_s", d.stale_after_s, exclusive_minimum=0)
    non_miner_mw = sec.number("non_miner_load_mw", 0.0, minimum=0)
    invert = sec.boolean("invert", d.invert)
    power = energy = None
    if sec.has("registers") and kind not in (None, "generic"):
        sec.raw("registers")
        sec.error("registers", f"only map: generic takes registers (the {kind} map knows its own)")
    elif sec.has("registers"):
        regs = sec.section("registers")
        if regs.has("power"):
            power = _point(regs.section("power"), POWER_UNITS)
        else:
            regs.raw("power")  # records "required key is missing"
        if regs.has("energy_import"):
            energy = _point(regs.section("energy_import"), ENERGY_UNITS)
        regs.done()
    elif kind == "generic":
        sec.error("map", "map: generic needs registers: {power: {...}} (and optionally energy_import)")
    sec.done()
    if host is None or kind is None or (kind == "generic" and power is None):
        return None
    return MeterConfig(host=host, port=port, unit_id=unit_id, map=kind, timeout_s=timeout, stale_after_s=stale,
                       non_miner_load_w=non_miner_mw * 1e6, invert=invert, power=power, energy_import=energy)


def check_meter_timeouts(top: Section, poll_interval_s: float | None) -> None:
    """Every meter's timeout_s within the poll interval: a reading ends in the cycle that started it, so the
    next cycle's reading never stacks on a late one (checked once poll: is read, after the sites)."""
    if poll_interval_s is None or not isinstance(top.data.get("sites"), list):
        return
    for item in top.sections("sites"):
        if not item.valid or not isinstance(item.data.get("meter"), dict):
            continue
        meter = item.section("meter")
        timeout = meter.data.get("timeout_s", MeterConfig(host="").timeout_s)
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > poll_interval_s:
            meter.error("timeout_s", f"expected a number <= poll.interval_s ({poll_interval_s:g}), got {timeout:g}")
