"""The normalised miner reading: base units everywhere, None means unknown (never 0).

Named tuples rather than frozen dataclasses: as immutable, and a poll builds about ten of them for every
miner. A frozen dataclass sets each field through object.__setattr__ (a reading took 2.3 us to build, a
board 0.7); a named tuple is one tuple. Boards, fans and pools hold only numbers and strings, so once the
cyclic GC has seen one it stops walking it (a reading itself stays tracked: PowerSource is an object).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class PowerSource(StrEnum):
    """Where a power figure came from."""

    FIRMWARE = "firmware"  # the miner measures (or its firmware computes) its own draw
    ESTIMATE = "estimate"  # derived by us from the model's nominal J/TH and the reported hashrate


class Board(NamedTuple):
    """One hash board (chain). Temperatures in °C, hashrate in H/s."""

    # Shadows tuple.index(), which nothing calls on a reading; the slot number keeps the name every dialect uses.
    index: int  # type: ignore[assignment]
    chip_temp_c: float | None = None
    board_temp_c: float | None = None
    hashrate_hs: float | None = None
    chips: int | None = None


class Fan(NamedTuple):
    index: int  # type: ignore[assignment]  # as Board.index
    rpm: float | None = None


class Pool(NamedTuple):
    index: int  # type: ignore[assignment]  # as Board.index
    url: str
    user: str | None = None
    status: str | None = None  # as the firmware says it, normalised: "alive", "dead", "disabled", ...
    active: bool | None = None
    priority: int | None = None


class MinerReading(NamedTuple):
    """One poll's worth of what a miner said, in base units.

    Contract: every quantity is `None` when the miner did not report it (or reported a sentinel such as
    -1 W or -273 °C); nothing unknown is ever 0. `problems` lists what looked wrong in the reply
    (a malformed field, a missing section) without failing the whole reading.
    """

    dialect: str
    model: str | None = None
    firmware: str | None = None  # firmware family as the miner names it, e.g. "bmminer", "BOSminer+"
    firmware_version: str | None = None
    hashrate_hs: float | None = None  # short window as reported (5 s, 20 s or 30 s by firmware)
    hashrate_avg_hs: float | None = None  # average since start
    shares_accepted: int | None = None
    shares_rejected: int | None = None
    shares_stale: int | None = None
    hardware_errors: int | None = None
    uptime_s: float | None = None
    boards: tuple[Board, ...] = ()
    fans: tuple[Fan, ...] = ()
    pools: tuple[Pool, ...] = ()
    power_w: float | None = None
    power_source: PowerSource | None = None
    power_limit_w: float | None = None
    problems: tuple[str, ...] = ()
