"""What a simulated miner measures at each tick: hashrate, power, temperatures, fans, shares, uptime.

Everything is a pure function of (seed, miner index, tick, load, fault, boot tick), so two fleets with the
same seed report the same numbers in the same tick. The hashrate the ground truth sums is exactly what the
miners reply; the power it sums is what each unit truly draws (power.py), which firmware that measures power
reports through its sensor and the agent's J/TH table only approximates. State changes only at tick
boundaries: an agent polling within one tick sees one value.
"""

from __future__ import annotations

from dataclasses import dataclass

from megawatch.agent.modeltable import ModelSpec
from megawatch.simulator.faults import Fault
from megawatch.simulator.power import (
    CHIP_RISE_C,
    HOT_EXTRA_C,
    MAX_FAN_RPM,
    UnitPower,
    make_unit_power,
    wall_power_w,
)

BOARDS = 3
# Share difficulty the simulated pools hand out; sets how fast Accepted grows (~300-600 per hour).
SHARE_DIFFICULTY = 262144.0
TWO_32 = 4294967296.0


def unit(*key: int) -> float:
    """A deterministic uniform number in [0, 1) from integers (tuple hashing of ints is not salted)."""
    return (hash(key) & 0xFFFFFFFF) / 4294967296.0


def units4(*key: int) -> tuple[float, float, float, float]:
    """Four uniforms in [0, 1) from one hash: the per-tick draws are on every reply's path."""
    h = hash(key) & 0xFFFFFFFFFFFFFFFF
    return ((h & 0xFFFF) / 65536.0, ((h >> 16) & 0xFFFF) / 65536.0, ((h >> 32) & 0xFFFF) / 65536.0,
            ((h >> 48) & 0xFFFF) / 65536.0)


@dataclass(frozen=True, slots=True)
class Identity:
    """What does not change while the simulator runs: where a miner listens and what it is."""

    index: int  # position in the whole fleet; seeds every random draw for this miner
    host: str
    port: int
    site: str
    dialect: str
    model: ModelSpec
    ambient_c: float
    fans: int
    allow_control: bool
    serial: str
    mac: str
    quality: float  # this unit's steady hashrate relative to the model's nominal (0.97-1.03)
    initial_uptime_s: int
    board_shares: tuple[float, ...]  # each board's part of the hashrate (sums to 1)
    board_offsets_c: tuple[float, ...]  # each board runs a little hotter or cooler than the others
    reject_ratio: float
    hw_errors_per_s: float
    best_share: int
    power: UnitPower  # this unit's electrical constants: its true draw is worked out from these
    joins: bool = True
    hostname: str = ""
    unit: int = 0  # which physical unit stands at this address: a swap puts the next one there

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


# Firmware default hostnames, made unique by the MAC's last two bytes as operators usually do.
_HOSTNAMES = {"btminer": "WhatsMiner", "luxos": "luxos", "bosminer": "bos", "avalon": "avalon"}


def make_identity(*, seed: int, index: int, host: str, port: int, site: str, dialect: str,
                  model: ModelSpec, ambient_c: float, allow_control: bool, joins: bool = True,
                  swaps: int = 0) -> Identity:
    fans = {"btminer": 2, "avalon": 2}.get(dialect, 4)

    def own(*key: int) -> float:
        # The unit's own numbers: a swapped-in unit (swaps > 0) has another serial and MAC; the first keeps
        # the numbers it always had.
        return unit(seed, index, *key, swaps) if swaps else unit(seed, index, *key)

    mac_bytes = [int(own(900 + i) * 256) for i in range(5)]
    mac = "C4:" + ":".join(f"{b:02X}" for b in mac_bytes)
    weights = [1.0 + 0.04 * (unit(seed, index, b, 20) - 0.5) for b in range(BOARDS)]
    return Identity(
        index=index, host=host, port=port, site=site, dialect=dialect, model=model,
        ambient_c=ambient_c, fans=fans, allow_control=allow_control, joins=joins, unit=swaps,
        serial=f"{int(own(1) * 2**32):08x}{int(own(2) * 2**32):08x}",
        mac=mac, hostname=_HOSTNAMES.get(dialect, "antminer") + "-" + mac[-5:].replace(":", ""),
        quality=0.97 + 0.06 * unit(seed, index, 3),
        # Between 10 minutes and 20 days: a fleet where nobody rebooted at the same moment.
        initial_uptime_s=600 + int(unit(seed, index, 4) * 20 * 86400),
        board_shares=tuple(w / sum(weights) for w in weights),
        board_offsets_c=tuple(4.0 * (unit(seed, index, b, 30) - 0.5) for b in range(BOARDS)),
        reject_ratio=0.002 * (0.5 + unit(seed, index, 50)),
        hw_errors_per_s=0.02 * (0.5 + unit(seed, index, 51)),
        best_share=int(SHARE_DIFFICULTY * (2.0 + 40.0 * unit(seed, index, 52))),
        power=make_unit_power(model, dialect=dialect, spread=unit(seed, index, 60), sensor=unit(seed, index, 61)),
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One tick of one miner, in base units (H/s, W, °C, RPM, s). Firmware renders these."""

    tick: int
    uptime_s: int
    hashrate_hs: float  # short window (5 s / 20 s / 30 s by firmware); the one ground truth sums
    hashrate_avg_hs: float
    hashrate_1m_hs: float
    hashrate_5m_hs: float
    hashrate_15m_hs: float
    nominal_hs: float  # what this unit should do at the current load (Target MHS, rate ideal)
    board_hashrate_hs: tuple[float, ...]
    chip_temp_c: tuple[float, ...]
    board_temp_c: tuple[float, ...]
    fan_rpm: tuple[int, ...]
    power_w: int  # what firmware that measures power reports: the true draw through this unit's sensor
    true_power_w: float  # what the unit draws at the wall (the ground truth)
    power_limit_w: int
    accepted: int
    rejected: int
    hardware_errors: int
    difficulty_accepted: float
    best_share: int
    frequency_mhz: int


def snapshot(ident: Identity, *, seed: int, tick: int, tick_s: float, load: float, boot_tick: int,
             booted_fresh: bool, fault: Fault | None, stopped: float = 0.0) -> Snapshot:
    """Compute what `ident` reports in `tick`.

    `boot_tick` is the tick the miner (re)started in; `booted_fresh` is False until its first reboot,
    while it keeps the uptime it had when the simulator started.
    """
    i = ident.index
    spec = ident.model
    # Runs once per miner per tick, for 10,000 miners: plain locals and list comprehensions (no generator
    # frames), with the same arithmetic in the same order as ever, so every value is bit-for-bit unchanged.
    drop = 0.0
    surge = 1.0
    hot = False
    if fault is not None:
        kind = fault.kind
        if kind == "hashrate_drop":
            drop = fault.drop
        elif kind == "power_surge":
            surge = fault.factor
        elif kind == "overheat":
            hot = True

    if stopped:  # boards stopped by a write command: idle, like a fault that took them all
        drop = 1.0 - (1.0 - drop) * (1.0 - stopped)
    nominal = spec.nominal_hashrate_hs
    steady = nominal * load * ident.quality * (1.0 - drop)
    # ±1 % tick-to-tick noise on the short window; longer windows wander less.
    r_short, r_1m, r_5m, r_15m = units4(seed, i, tick, 10)
    short = steady * (1.0 + 0.02 * (r_short - 0.5))
    one_m = steady * (1.0 + 0.01 * (r_1m - 0.5))
    five_m = steady * (1.0 + 0.006 * (r_5m - 0.5))
    fifteen_m = steady * (1.0 + 0.004 * (r_15m - 0.5))
    # Boards differ a little; their rates add up to the miner's short-window rate.
    boards = tuple([short * share for share in ident.board_shares])

    limit = round(spec.nominal_power_w * 1.1)

    warm = ident.ambient_c + CHIP_RISE_C * short / nominal + (HOT_EXTRA_C if hot else 0.0)
    board_noise = units4(seed, i, tick, 31)
    # The draw follows the steady state (PSU output does not flicker with the share count), with ±0.2 % ripple
    # from the board-noise draw no board uses (there are three boards and four draws).
    chip_c = ident.ambient_c + CHIP_RISE_C * steady / nominal + (HOT_EXTRA_C if hot else 0.0)
    true_power = wall_power_w(ident.power, load, chip_c, 1.0 - drop, hot, surge)
    true_power *= 1.0 + 0.004 * (board_noise[3] - 0.5)
    power = round(true_power * ident.power.reported_gain)
    chip = tuple([round(warm + offset + noise - 0.5, 1)
                  for offset, noise in zip(ident.board_offsets_c, board_noise, strict=False)])
    board_t = tuple([round(c - 12.0, 1) for c in chip])
    if hot:
        fans = (MAX_FAN_RPM,) * ident.fans
    else:
        base_rpm = 2400 + 70.0 * (max(chip) - 60.0)
        fans = tuple([int(round(max(1200.0, min(MAX_FAN_RPM, base_rpm + 120.0 * (noise - 0.5))) / 10.0) * 10)
                      for noise in units4(seed, i, tick, 40)[:ident.fans]])

    uptime = (tick - boot_tick) * tick_s + (0 if booted_fresh else ident.initial_uptime_s)
    uptime_s = max(0, int(uptime))
    # Counters grow with uptime at this unit's steady rate: monotonic within a boot, 0 after a reboot.
    shares_per_s = steady / (SHARE_DIFFICULTY * TWO_32)
    accepted = int(uptime_s * shares_per_s)
    rejected = int(accepted * ident.reject_ratio)
    hw_errors = int(uptime_s * ident.hw_errors_per_s)
    best = ident.best_share if accepted else 0
    freq = int(round((500 + 150 * load) / 5.0) * 5)
    return Snapshot(
        tick=tick, uptime_s=uptime_s, hashrate_hs=short, hashrate_avg_hs=steady,
        hashrate_1m_hs=one_m, hashrate_5m_hs=five_m, hashrate_15m_hs=fifteen_m,
        nominal_hs=spec.nominal_hashrate_hs * load, board_hashrate_hs=boards,
        chip_temp_c=chip, board_temp_c=board_t, fan_rpm=fans,
        power_w=power, true_power_w=true_power, power_limit_w=limit, accepted=accepted, rejected=rejected,
        hardware_errors=hw_errors, difficulty_accepted=accepted * SHARE_DIFFICULTY,
        best_share=best, frequency_mhz=freq,
    )
