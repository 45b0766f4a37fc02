"""Counting what an exposition text holds, cheaply (10,000 miners x ~20 lines; no full parse needed)."""

from __future__ import annotations

from collections import Counter
from typing import Any

_MINER = 'miner="'


def count_series(text: str, configured: int) -> dict[str, Any]:
    """Series per miner: every sample line carrying a `miner` label, grouped by its value.

    `max` is the budget figure (the heaviest miner); `mean` is over the configured miners.
    """
    per_miner: Counter[str] = Counter()
    families: Counter[str] = Counter()
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        at = line.find(_MINER)
        if at < 0:
            continue
        start = at + len(_MINER)
        per_miner[line[start:line.index('"', start)]] += 1
        families[line[: line.find("{")]] += 1
    total = sum(per_miner.values())
    return {
        "max": max(per_miner.values(), default=0),
        "mean": total / configured if configured else 0.0,
        "miners_seen": len(per_miner),
        "total": total,
        "by_family": dict(sorted(families.items())),
    }


def sample_value(text: str, name: str) -> float | None:
    """The value of the first sample named exactly `name` (any labels), or None when there is none."""
    for line in text.splitlines():
        if line.startswith(name) and line[len(name): len(name) + 1] in ("{", " "):
            return float(line.rsplit(" ", 1)[1])
    return None
