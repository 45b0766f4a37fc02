"""What a simulated miner truly draws at the wall: its own electrical model, not the agent's J/TH table.

The agent estimates power for firmware that does not measure it as J/TH x hashrate. If the simulator drew
power the same way, that estimate would be exact by construction and no test could see its error. So each
unit here is built from the maker's nominal figure and then made physical:

- Chips: dynamic power follows C·V²·f. Tuning firmware lowers the voltage with the frequency, so the chip
  voltage is taken to track the load as V/V0 = 1 + 0.4·(f/f0 - 1), clamped to 0.75-1.25 (a chip cannot go
  below its threshold voltage, nor far above stock). That puts 80 % frequency at ~68 % of the chip power and
  120 % at ~140 %, in line with the efficiency curves tuning firmwares publish for S19-class units.
- Leakage: a share of the chip power at stock (larger on smaller process nodes) that scales with V and
  doubles every 30 °C of chip temperature, so a hot hall or an overheating unit draws more.
- Fans: power goes with the cube of speed; speed follows the chip temperature as the firmware's fan loop
  does (the same curve the simulated replies report), at full speed when overheating.
- Control board: a few watts, always on.
- PSU: loss = L0 + L1·P + L2·P² of the DC output P, with constants for an 80 Plus Platinum-class server
  supply: ~88 % at a tenth of its rating, ~93.5 % at half, ~92.5 % at full.
- Unit to unit: the average unit of a model draws `spec_bias` x the maker's nominal at the reference point
  (stock frequency, 25 °C air: makers quote ±5-10 % and fielded units sit above their sheet more often than
  below), and each unit's chips differ by up to ±3 % from that (fixed per unit by the seed).

Power by fault (what the ground truth counts): `offline` is a power cut (0 W); `reboot` is a restarting
unit, chips idle, fans at full (control board + fans through the PSU); `hang` and every other wire fault
leave the unit hashing at its full draw (a hung API does not stop the hashing); `overheat` adds 30 °C to the
chips (more leakage, fans at full); `hashrate_drop` loses that share of the chips' power (fans and control
board keep running); `power_surge` multiplies the wall draw by its factor.

Firmware that measures power reports the true draw through its own sensor, off by a fixed error per unit
within ±`MEASURE_ERROR[dialect]` (a PSU's metering chip, or Braiins' estimate from its tuner); firmware that
does not measure reports nothing and the agent must estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import exp, log, sqrt

from megawatch.agent.modeltable import ModelSpec

REFERENCE_AMBIENT_C = 25.0
CHIP_RISE_C = 38.0  # chips run this much above the air at stock load (the replies' temperatures agree)
HOT_EXTRA_C = 30.0  # the overheat fault
LEAK_DOUBLING_C = 30.0
LEAK_PER_C = log(2.0) / LEAK_DOUBLING_C
VOLTAGE_SLOPE = 0.4
VOLTAGE_LOW, VOLTAGE_HIGH = 0.75, 1.25
REFERENCE_CHIP_C = REFERENCE_AMBIENT_C + CHIP_RISE_C
MAX_FAN_RPM = 6000
# PSU loss constants as fractions of its rating: no-load (L0), linear (L1) and I²R (L2) parts.
PSU_L0, PSU_L1, PSU_L2 = 0.01, 0.03, 0.04
# Sensor error bound of firmware that reports power, as a fraction of the reading.
MEASURE_ERROR: dict[str, float] = {"btminer": 0.01, "luxos": 0.02, "avalon": 0.02, "bosminer": 0.03}


@dataclass(frozen=True, slots=True)
class Electrical:
    """A model's electrical make-up, at the reference point (stock frequency, 25 °C air)."""

    spec_bias: float  # the average unit's wall draw / the maker's nominal wall power
    psu_rating_w: float  # PSU DC output rating
    fans: int
    fan_max_w: float  # one fan at full speed
    leakage: float  # static share of the chip power at the reference chip temperature
    control_w: float = 12.0


def _antminer(psu: float, bias: float, leakage: float) -> Electrical:
    return Electrical(bias, psu, 4, 32.0, leakage)


def _whatsminer(psu: float, bias: float, leakage: float) -> Electrical:
    return Electrical(bias, psu, 2, 70.0, leakage, control_w=15.0)


def _avalon(psu: float, bias: float, leakage: float) -> Electrical:
    return Electrical(bias, psu, 2, 55.0, leakage, control_w=10.0)


# Our own figures, not the agent's: PSU ratings of the supplies these models ship with, leakage by process node
# (16 nm ~6 %, 7 nm ~10-12 %, 5 nm ~15 %), and how far the average fielded unit sits from its sheet.
ELECTRICAL: dict[str, Electrical] = {
    "Antminer S9": Electrical(0.04, 1600.0, 2, 30.0, 0.06, control_w=8.0),
    "Antminer S9k": Electrical(0.02, 1600.0, 2, 30.0, 0.06, control_w=8.0),
    "Antminer S17": _antminer(3000.0, 0.05, 0.10),
    "Antminer S19": _antminer(3600.0, 0.02, 0.12),
    "Antminer S19 Pro": _antminer(3600.0, 0.01, 0.12),
    "Antminer S19j Pro": _antminer(3600.0, 0.03, 0.12),
    "Antminer S19 XP": _antminer(3600.0, -0.01, 0.15),
    "Antminer S19k Pro": _antminer(3600.0, 0.02, 0.14),
    "Antminer S21": _antminer(4000.0, 0.02, 0.15),
    "Antminer S21 Pro": _antminer(4000.0, 0.015, 0.15),
    "Antminer S21 XP": _antminer(4000.0, 0.0, 0.16),
    "Whatsminer M20S": _whatsminer(3600.0, 0.03, 0.08),
    "Whatsminer M30S": _whatsminer(3800.0, 0.02, 0.10),
    "Whatsminer M30S+": _whatsminer(3800.0, 0.02, 0.10),
    "Whatsminer M30S++": _whatsminer(3800.0, 0.025, 0.10),
    "Whatsminer M50": _whatsminer(3800.0, 0.01, 0.12),
    "Whatsminer M50S": _whatsminer(3800.0, 0.01, 0.12),
    "Whatsminer M60": _whatsminer(4000.0, 0.0, 0.15),
    "Whatsminer M60S": _whatsminer(4000.0, 0.0, 0.15),
    "Avalon A1047": _avalon(2800.0, 0.04, 0.08),
    "Avalon A1066": _avalon(3600.0, 0.04, 0.08),
    "Avalon A1246": _avalon(3800.0, 0.03, 0.10),
    "Avalon A1366": _avalon(3800.0, 0.02, 0.12),
    "Avalon A1466": _avalon(3800.0, 0.01, 0.15),
    "Avalon A1566": _avalon(4000.0, 0.01, 0.15),
}
_FAMILY = {"Antminer": (4, 32.0, 12.0), "Whatsminer": (2, 70.0, 15.0), "Avalon": (2, 55.0, 10.0)}


def electrical_for(spec: ModelSpec) -> Electrical:
    """The model's entry, or one made from its vendor's usual build for a model we have no figures for."""
    known = ELECTRICAL.get(spec.name)
    if known is not None:
        return known
    fans, fan_w, control_w = _FAMILY.get(spec.name.split(" ")[0], (4, 32.0, 12.0))
    # A PSU sized ~15 % over the nominal draw, a modern node's leakage, the sheet's figure on average.
    return Electrical(0.02, spec.nominal_power_w * 1.15, fans, fan_w, 0.14, control_w)


@dataclass(frozen=True, slots=True)
class UnitPower:
    """One unit's electrical constants, worked out once when the miner is made (DC watts unless named)."""

    dynamic_w: float  # chips' switching power at stock frequency
    leakage_w: float  # chips' static power at the reference chip temperature
    fan_max_w: float  # all fans at full speed
    control_w: float
    psu_l0_w: float
    psu_l1: float
    psu_l2_per_w: float
    reported_gain: float  # what this unit's firmware reports / its true draw (1.0 when it reports nothing)


def fan_rpm(chip_c: float) -> float:
    """Fan speed the firmware's loop settles at for the hottest chip (the replies use the same curve)."""
    return max(1200.0, min(float(MAX_FAN_RPM), 2400.0 + 70.0 * (chip_c - 60.0)))


def psu_wall_w(unit: UnitPower, dc_w: float) -> float:
    """What the PSU takes from the wall to give `dc_w` (its loss curve; wall_power_w inlines the same)."""
    return dc_w + unit.psu_l0_w + unit.psu_l1 * dc_w + unit.psu_l2_per_w * dc_w * dc_w


def make_unit_power(spec: ModelSpec, *, dialect: str, spread: float, sensor: float) -> UnitPower:
    """A unit's constants; `spread` and `sensor` are this unit's seeded uniforms in [0, 1)."""
    model = electrical_for(spec)
    rating = model.psu_rating_w
    l0, l1, l2 = PSU_L0 * rating, PSU_L1, PSU_L2 / rating
    wall_ref = spec.nominal_power_w * (1.0 + model.spec_bias)
    # DC output at the reference point: solve dc + l0 + l1·dc + l2·dc² = wall_ref.
    b = 1.0 + l1
    dc_ref = (-b + sqrt(b * b - 4.0 * l2 * (l0 - wall_ref))) / (2.0 * l2)
    fan_max = model.fans * model.fan_max_w
    # Fans follow the hottest board, up to 2 °C over the mean chip temperature.
    fans_ref = fan_max * (fan_rpm(REFERENCE_CHIP_C + 2.0) / MAX_FAN_RPM) ** 3
    chips = max(0.0, dc_ref - fans_ref - model.control_w) * (1.0 + 0.06 * (spread - 0.5))
    error = MEASURE_ERROR.get(dialect, 0.0)
    return UnitPower(
        dynamic_w=chips * (1.0 - model.leakage), leakage_w=chips * model.leakage, fan_max_w=fan_max,
        control_w=model.control_w, psu_l0_w=l0, psu_l1=l1, psu_l2_per_w=l2,
        reported_gain=1.0 + error * (2.0 * sensor - 1.0),
    )


def wall_power_w(unit: UnitPower, load: float, chip_c: float, boards: float, hot: bool, surge: float) -> float:
    """True wall draw of a hashing unit.

    `load` is the frequency relative to stock, `chip_c` the mean chip temperature (overheat included),
    `boards` the share of hash boards still hashing. Runs once per miner per tick: positional, inlined.
    """
    volts = 1.0 + VOLTAGE_SLOPE * (load - 1.0)
    if volts < VOLTAGE_LOW:
        volts = VOLTAGE_LOW
    elif volts > VOLTAGE_HIGH:
        volts = VOLTAGE_HIGH
    leak = unit.leakage_w * exp((chip_c - REFERENCE_CHIP_C) * LEAK_PER_C)
    dc = (unit.dynamic_w * load * volts + leak) * volts * boards + unit.control_w
    if hot:
        dc += unit.fan_max_w
    else:
        speed = fan_rpm(chip_c + 2.0) * (1.0 / MAX_FAN_RPM)
        dc += unit.fan_max_w * speed * speed * speed
    return (dc + unit.psu_l0_w + unit.psu_l1 * dc + unit.psu_l2_per_w * dc * dc) * surge


def idle_power_w(unit: UnitPower) -> float:
    """A restarting unit: chips idle, control board up, fans at full as they are while booting."""
    return psu_wall_w(unit, unit.fan_max_w + unit.control_w)
