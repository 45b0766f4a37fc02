"""Energy accounts: the collector's power figures integrated into joules, per site and for the fleet.

Integration is left-Riemann (sample and hold): the figures of one cycle hold until the next cycle, which is
what the collector's figure means between cycles, so the interval (t_prev, t_now] is counted at the
figures sampled at t_prev. The same rule on both sides of a restart: the state file keeps the last sample
and its time, so the first cycle after a restart counts the interval since that sample exactly once.

The allocation is integrated in steps of whole POSIX minutes: schedules change on whole local minutes, and
every time zone in use is offset from UTC by whole minutes, so a schedule window is billed at its own
allocation to the second; the power held over each such step is judged against that step's allocation
for energy and time over.

An interval longer than `max_gap_s` (the collector was down, or its clock jumped) is not counted as 0 J,
nor at the figure before it as if measured: its length goes to `unknown_s` and its energy to `unknown_j`,
at the larger of the last judged figure and the allocation in force (a site nobody has heard from is taken
to draw its allocation, as the allowance does). The judged energy (`judged_j`) then holds what was seen;
`judged_j + unknown_j` is the most the site may have used.

Pure: the caller passes its clock and the allocation; `load_accounts`/`save_accounts` keep them on disk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from megawatch.collector.alertstate import write_atomically
from megawatch.common.logs import get_logger

STATE_VERSION = 1
STEP_S = 60.0  # allocation steps: schedules change on whole minutes


@dataclass(frozen=True, slots=True)
class PowerSample:
    """The figures of one cycle, in watts and hashes per second; None = unknown (never counted as 0)."""

    judged_w: float | None  # the figure against the allocation: a trusted meter, else the upper bound
    measured_w: float | None
    allowance_w: float | None
    estimated_w: float | None  # part of measured: miners' power estimated from hashrate and J/TH
    hashrate_hs: float | None  # measured: fresh agents only
    btc_per_hash: float | None = None  # expected reward per hash at the difficulty in force (production.py)


@dataclass(frozen=True, slots=True)
class EnergyTotals:
    """Running totals since the account began: joules, seconds, hashes and expected BTC."""

    judged_j: float = 0.0
    measured_j: float = 0.0
    allowance_j: float = 0.0
    estimated_j: float = 0.0
    unknown_j: float = 0.0  # gaps: at the larger of the last judged figure and the allocation
    unknown_s: float = 0.0
    allocated_j: float = 0.0  # allocation x time, gaps included (the allocation is known throughout)
    over_j: float = 0.0  # energy above the allocation in force
    over_s: float = 0.0  # time above it
    hashes: float = 0.0
    expected_btc: float = 0.0  # expected from hashrate and difficulty, not mined: pool payouts are not read


@dataclass(frozen=True, slots=True)
class Account:
    totals: EnergyTotals = EnergyTotals()
    last_at: float | None = None
    last: PowerSample | None = None


Allocation = Callable[[float], float] | float


@dataclass(frozen=True, slots=True)
class Step:
    """What one cycle did to an account: a gap (seconds) counted as unknown, or a clock that went back."""

    account: Account
    gap_s: float = 0.0
    clock_back_s: float = 0.0


def allocation_steps(t0: float, t1: float, allocation: Allocation) -> list[tuple[float, float]]:
    """(seconds, allocation W) covering (t0, t1]: one piece per whole POSIX minute the interval touches."""
    if not callable(allocation):
        return [(t1 - t0, allocation)] if t1 > t0 else []
    pieces: list[tuple[float, float]] = []
    start = t0
    while start < t1:
        end = min(t1, (math.floor(start / STEP_S) + 1) * STEP_S)
        w = allocation(start)
        if pieces and pieces[-1][1] == w:
            pieces[-1] = (pieces[-1][0] + end - start, w)
        else:
            pieces.append((end - start, w))
        start = end
    return pieces


def advance(account: Account, sample: PowerSample, now: float, allocation: Allocation, max_gap_s: float) -> Step:
    """Count (last_at, now] at the last sample (left-Riemann) and keep `sample` for the next interval."""
    held, since = account.last, account.last_at
    if held is None or since is None:
        return Step(replace(account, last=sample, last_at=now))
    if now < since:  # the clock went back: count nothing twice, start again from now
        return Step(replace(account, last=sample, last_at=now), clock_back_s=since - now)
    t = account.totals
    dt = now - since
    steps = allocation_steps(since, now, allocation)
    allocated = t.allocated_j + sum(s * w for s, w in steps)
    if dt > max_gap_s:
        floor_w = held.judged_w or 0.0
        unknown = sum(s * max(floor_w, w) for s, w in steps)
        totals = replace(t, unknown_j=t.unknown_j + unknown, unknown_s=t.unknown_s + dt, allocated_j=allocated)
        return Step(Account(totals, now, sample), gap_s=dt)
    judged = held.judged_w
    if judged is None:  # a cycle with no figure at all: as unknown as a gap, at the allocation
        totals = replace(t, unknown_j=t.unknown_j + sum(s * w for s, w in steps), unknown_s=t.unknown_s + dt,
                         allocated_j=allocated)
        return Step(Account(totals, now, sample))
    over = [(s, judged - w) for s, w in steps if judged > w]
    hashes = (held.hashrate_hs or 0.0) * dt
    totals = replace(
        t,
        judged_j=t.judged_j + judged * dt,
        measured_j=t.measured_j + (held.measured_w or 0.0) * dt,
        allowance_j=t.allowance_j + (held.allowance_w or 0.0) * dt,
        estimated_j=t.estimated_j + (held.estimated_w or 0.0) * dt,
        allocated_j=allocated,
        over_j=t.over_j + sum(s * excess for s, excess in over),
        over_s=t.over_s + sum(s for s, _ in over),
        hashes=t.hashes + hashes,
        expected_btc=t.expected_btc + hashes * (held.btc_per_hash or 0.0),
    )
    return Step(Account(totals, now, sample))


class EnergyBook:
    """The collector's accounts, keyed ("site", id) or ("fleet", name); persisted when it has a path."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.accounts: dict[tuple[str, str], Account] = load_accounts(path) if path is not None else {}
        self._log = get_logger()
        self._write_failed = False

    def record(self, samples: Mapping[tuple[str, str], tuple[PowerSample, Allocation]], now: float,
               max_gap_s: float) -> None:
        for key, (sample, allocation) in samples.items():
            step = advance(self.accounts.get(key, Account()), sample, now, allocation, max_gap_s)
            self.accounts[key] = step.account
            if step.gap_s:
                self._log.warning("energy_gap_counted_unknown", kind=key[0], name=key[1], gap_s=round(step.gap_s, 3),
                                  max_gap_s=max_gap_s)
            if step.clock_back_s:
                self._log.warning("energy_clock_went_back", kind=key[0], name=key[1],
                                  back_s=round(step.clock_back_s, 3))
        # Accounts of sites no longer configured stay in the file: a site removed by mistake and put back
        # continues its counters rather than starting at 0.
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        try:
            save_accounts(self.path, self.accounts)
        except OSError as exc:
            if not self._write_failed:
                self._log.error("energy_state_write_failed", path=str(self.path), error=str(exc))
            self._write_failed = True
            return
        if self._write_failed:
            self._log.info("energy_state_write_recovered", path=str(self.path))
        self._write_failed = False


def energy_path(state_file: Path) -> Path:
    """Where the energy accounts are kept: beside the alert state file (state.json -> state.energy.json)."""
    return state_file.with_name(f"{state_file.stem}.energy.json")


def save_accounts(path: Path, accounts: Mapping[tuple[str, str], Account]) -> None:
    body = {"version": STATE_VERSION, "accounts": [
        {"kind": kind, "name": name, "last_at": a.last_at, "totals": asdict(a.totals),
         "last": asdict(a.last) if a.last is not None else None}
        for (kind, name), a in sorted(accounts.items())]}
    write_atomically(path, json.dumps(body, indent=1).encode())


def load_accounts(path: Path) -> dict[tuple[str, str], Account]:
    """The accounts kept in `path`; {} when there are none. An unreadable file is logged and moved aside
    (path.bad), never overwritten: the totals in it may still be recovered by hand."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        return _unreadable(path, str(exc))
    try:
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {STATE_VERSION}")
        accounts = {}
        for r in doc["accounts"]:
            totals = EnergyTotals(**{f.name: _number(r["totals"][f.name]) for f in fields(EnergyTotals)})
            last = r["last"]
            sample = PowerSample(**{f.name: _optional(last.get(f.name)) for f in fields(PowerSample)}) \
                if last is not None else None
            accounts[(str(r["kind"]), str(r["name"]))] = Account(totals, _optional(r["last_at"]), sample)
        return accounts
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return _unreadable(path, f"{type(exc).__name__}: {exc}")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a finite number >= 0, got {value!r}")
    return float(value)


def _optional(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _unreadable(path: Path, error: str) -> dict[tuple[str, str], Account]:
    aside = path.with_name(path.name + ".bad")
    try:
        path.replace(aside)
    except OSError:
        aside = path
    get_logger().error("energy_state_unreadable", path=str(path), kept_as=str(aside), error=error)
    return {}
