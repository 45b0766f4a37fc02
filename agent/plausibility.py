"""Physical bounds on what a miner says: a value no real miner can have is dropped, named and counted.

The dialects turn replies into numbers; this module decides whether each number could be true. One miner
reporting 1e308 W must not become a 9,000 MW site, so every quantity of a reading is checked against the
bounds below once, after the dialect parse and before the power estimate (poller.py calls `check`). A
value out of bounds becomes None - unknown, never 0 - and its miner's `problems` says which value and
why; the poller counts it (megawatch_agent_implausible_values_total by field). Unknown values are never
summed, so a dropped value never reaches a site total.

Two kinds of bound, both inclusive:
- absolute (`BOUNDS`): what no miner of any model crosses, used for every reading;
- per model, when the model table knows the miner: power and hashrate up to `MODEL_FACTOR` times the
  model's nominal figures (and never above the absolute bound).
NaN and +-inf fail every comparison, so they are out of every bound without a test of their own.

Notes from the reply decoder (duplicate JSON keys, NaN/Infinity in the text; see protocol/framing.py)
arrive with the reading and are named and counted the same way, under their own `field` label.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter

from megawatch.agent.model import Board, Fan, MinerReading
from megawatch.agent.modeltable import ModelSpec, replace_reading
from megawatch.agent.protocol.framing import DUPLICATE_KEY, NON_NUMBER, Note


@dataclass(frozen=True, slots=True)
class Bound:
    low: float
    high: float
    unit: str
    why: str


_MAX_EXACT_COUNT = float(2**53)

# The one table of absolute bounds. Each is far past anything a working miner reports, so only garbage or
# a lie crosses it; tighter judgement (is 4 kW a lot for this unit?) is the per-model bound's job.
BOUNDS: dict[str, Bound] = {
    "power_w": Bound(
        1.0, 20_000.0, "W",
        "the hungriest single units (3U hydro and immersion models) draw about 11 kW; a miner that answers its "
        "API draws at least its control board's few watts, so 0 W is not a reading"),
    "power_limit_w": Bound(1.0, 20_000.0, "W", "a limit is set on the same scale as the draw it limits"),
    "hashrate_hs": Bound(
        0.0, 5e15, "H/s",
        "the fastest units are about 1.2 PH/s (3U hydro); 5 PH/s leaves room for a few generations"),
    "hashrate_avg_hs": Bound(0.0, 5e15, "H/s", "as hashrate_hs"),
    "board_hashrate_hs": Bound(0.0, 5e15, "H/s", "a board cannot hash faster than a whole miner"),
    "chip_temp_c": Bound(
        -40.0, 150.0, "°C",
        "chips shut down near 95-125 °C, and -40 °C is the coldest site electronics is rated for"),
    "board_temp_c": Bound(-40.0, 150.0, "°C", "as chip_temp_c"),
    "fan_rpm": Bound(0.0, 30_000.0, "rpm", "miner fans run below ~9,000 rpm; 1U server fans below ~25,000"),
    "uptime_s": Bound(
        0.0, 30 * 365.25 * 86_400, "s",
        "30 years, older than ASIC mining; beyond it is a clock that jumped (epoch boot, then NTP)"),
    "shares_accepted": Bound(0.0, _MAX_EXACT_COUNT, "shares", "past 2^53 a float no longer holds a count exactly"),
    "shares_rejected": Bound(0.0, _MAX_EXACT_COUNT, "shares", "as shares_accepted"),
    "shares_stale": Bound(0.0, _MAX_EXACT_COUNT, "shares", "as shares_accepted"),
    "hardware_errors": Bound(0.0, _MAX_EXACT_COUNT, "errors", "as shares_accepted"),
    "chips": Bound(0.0, 10_000.0, "chips", "the largest hash boards carry a few hundred chips"),
}

# Overclocked units run at 1.3-1.6x their nominal hashrate and power; 3x is past what their PSU delivers.
MODEL_FACTOR = 3.0

# Labels of megawatch_agent_implausible_values_total: the BOUNDS fields, then what the reply decoder read
# as unknown before any dialect saw it (framing.py's note kinds).
FIELDS: tuple[str, ...] = (*BOUNDS, DUPLICATE_KEY, NON_NUMBER)

# Reading fields checked one for one, in this order; power and hashrate get the per-model bound.
_SCALARS = ("power_w", "power_limit_w", "hashrate_hs", "hashrate_avg_hs", "uptime_s",
            "shares_accepted", "shares_rejected", "shares_stale", "hardware_errors")
_get_scalars = itemgetter(*(MinerReading._fields.index(name) for name in _SCALARS))
# Board values by their BOUNDS name; the fast path unpacks boards and fans whole, so their layout is pinned.
_BOARD = ("chip_temp_c", "board_temp_c", "board_hashrate_hs", "chips")
if Board._fields != ("index", "chip_temp_c", "board_temp_c", "hashrate_hs", "chips") or Fan._fields != ("index", "rpm"):
    raise ImportError("plausibility: Board or Fan changed shape; update _plausible and _BOARD")


@dataclass(frozen=True, slots=True)
class _Limits:
    """The bounds in force for one model (or none), as (low, high) per value; `flat` for the fast path."""

    scalars: tuple[tuple[float, float], ...]  # in _SCALARS order
    board: tuple[tuple[float, float], ...]  # in _BOARD order
    fan: tuple[float, float]
    model: str | None  # named in a problem when a per-model bound was crossed
    flat: tuple[float, ...]


def _limits(spec: ModelSpec | None) -> _Limits:
    def span(name: str, model_high: float | None = None) -> tuple[float, float]:
        bound = BOUNDS[name]
        high = bound.high if model_high is None else min(bound.high, model_high)
        # Counts are ints: an int bound keeps their comparisons int-to-int (a third cheaper than int-to-float).
        return (int(bound.low), int(high)) if bound.unit in ("shares", "errors", "chips") else (bound.low, high)

    power = hashrate = None
    if spec is not None:
        power = spec.nominal_power_w * MODEL_FACTOR
        hashrate = spec.nominal_hashrate_hs * MODEL_FACTOR
    per_model = {"power_w": power, "hashrate_hs": hashrate, "hashrate_avg_hs": hashrate, "board_hashrate_hs": hashrate}
    scalars = tuple(span(name, per_model.get(name)) for name in _SCALARS)
    board = tuple(span(name, per_model.get(name)) for name in _BOARD)
    fan = span("fan_rpm")
    counts = scalars[_SCALARS.index("shares_accepted")]
    if any(scalars[_SCALARS.index(name)] != counts for name in _SCALARS[5:]):
        raise ValueError("the fast path checks every count against one bound")
    flat = (*(x for s in scalars[:5] for x in s), *counts, *(x for s in board for x in s), *fan)
    return _Limits(scalars, board, fan, spec.name if spec is not None else None, flat)


# Per model, by identity (a reloaded table brings new specs; the spec is kept so its id is never reused).
_BY_SPEC: dict[int, tuple[ModelSpec | None, _Limits]] = {}
_NO_MODEL = _limits(None)


def _limits_for(spec: ModelSpec | None) -> _Limits:
    if spec is None:
        return _NO_MODEL
    found = _BY_SPEC.get(id(spec))
    if found is None or found[0] is not spec:
        if len(_BY_SPEC) >= 4096:
            _BY_SPEC.clear()
        found = _BY_SPEC[id(spec)] = (spec, _limits(spec))
    return found[1]


def check(reading: MinerReading, spec: ModelSpec | None,
          notes: Iterable[Note] = ()) -> tuple[MinerReading, tuple[str, ...]]:
    """`reading` with every implausible value dropped and named, and the fields dropped (one per value).

    `spec` is the miner's model from the table, None when unknown (absolute bounds only); `notes` are the
    decoder's findings about the reply. A plausible reading with no notes comes back as the same object.
    """
    limits = _limits_for(spec)
    if not notes and _plausible(reading, limits.flat):
        return reading, ()
    return _repaired(reading, limits, notes)


def _plausible(reading: MinerReading, flat: tuple[float, ...]) -> bool:
    """True when every value is in bounds: the hot path (every miner, every poll), so written out.

    A loop over (value, bound) pairs cost three times as much (measured); NaN and inf fail `low <= v <= high`.
    """
    power, limit, rate, average, uptime, accepted, rejected, stale, errors = _get_scalars(reading)
    (p_lo, p_hi, l_lo, l_hi, r_lo, r_hi, a_lo, a_hi, u_lo, u_hi, c_lo, c_hi,
     ct_lo, ct_hi, bt_lo, bt_hi, br_lo, br_hi, n_lo, n_hi, f_lo, f_hi) = flat
    if power is not None and not p_lo <= power <= p_hi:
        return False
    if limit is not None and not l_lo <= limit <= l_hi:
        return False
    if rate is not None and not r_lo <= rate <= r_hi:
        return False
    if average is not None and not a_lo <= average <= a_hi:
        return False
    if uptime is not None and not u_lo <= uptime <= u_hi:
        return False
    for count in (accepted, rejected, stale, errors):
        if count is not None and not c_lo <= count <= c_hi:
            return False
    for _, chip, temp, board_rate, chips in reading.boards:
        if chip is not None and not ct_lo <= chip <= ct_hi:
            return False
        if temp is not None and not bt_lo <= temp <= bt_hi:
            return False
        if board_rate is not None and not br_lo <= board_rate <= br_hi:
            return False
        if chips is not None and not n_lo <= chips <= n_hi:
            return False
    for _, rpm in reading.fans:
        if rpm is not None and not f_lo <= rpm <= f_hi:
            return False
    return True


def _repaired(reading: MinerReading, limits: _Limits,
              notes: Iterable[Note]) -> tuple[MinerReading, tuple[str, ...]]:
    problems = list(reading.problems)
    dropped: list[str] = []

    def bad(name: str, where: str, value: float | None, span: tuple[float, float]) -> bool:
        low, high = span
        if value is None or low <= value <= high:
            return False
        bound = BOUNDS[name]
        whose = f" for {limits.model}" if limits.model is not None and high < bound.high else ""
        problems.append(f"{where}: {value:.6g} {bound.unit} is implausible (allowed {low:g} to {high:g}"
                        f"{whose}): dropped as unknown")
        dropped.append(name)
        return True

    changes: dict[str, object] = {}
    for name, value, span in zip(_SCALARS, _get_scalars(reading), limits.scalars, strict=True):
        if bad(name, name, value, span):
            changes[name] = None
    if "power_w" in changes:
        changes["power_source"] = None  # no figure, so no source for it
    boards = []
    for board in reading.boards:
        # Board fields 1-4 hold the _BOARD values in order (pinned at import).
        cleared = [bad(name, f"boards[{board.index}].{attribute}", value, span) for name, attribute, value, span
                   in zip(_BOARD, Board._fields[1:], board[1:], limits.board, strict=True)]
        if any(cleared):
            kept = [None if out else value for out, value in zip(cleared, board[1:], strict=True)]
            board = Board(board.index, *kept)  # type: ignore[arg-type]  # same types, position by position
        boards.append(board)
    fans = [fan._replace(rpm=None) if bad("fan_rpm", f"fans[{fan.index}].rpm", fan.rpm, limits.fan) else fan
            for fan in reading.fans]
    for kind, text in notes:
        problems.append(text)
        dropped.append(kind)
    changes.update(boards=tuple(boards), fans=tuple(fans), problems=tuple(problems))
    return replace_reading(reading, **changes), tuple(dropped)
