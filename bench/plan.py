"""What every peer sends: each miner's requests of one steady-state megawatch cycle, and how a cycle went.

The plan is recorded from the megawatch poller itself (bench/poller_peer.py), so the raw loop and pyasic
send exactly the requests the poller sent - joins where the firmware joins, one command per connection
where it does not - to the same miners, in the same order, with the same number in flight.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class MinerPlan:
    host: str
    port: int
    requests: tuple[str, ...]  # command strings as sent, e.g. "version+summary+pools" or "stats"


def save_plan(plan: Sequence[MinerPlan], path: Path) -> None:
    path.write_text(json.dumps([[m.host, m.port, list(m.requests)] for m in plan]))


def load_plan(path: Path) -> list[MinerPlan]:
    return [MinerPlan(host, port, tuple(requests)) for host, port, requests in json.loads(path.read_text())]


@dataclass(slots=True)
class CycleResult:
    """One pass over the fleet by one peer. `cpu_s` is the peer process's CPU time (user + system)."""

    duration_s: float
    miners: int
    miners_ok: int
    requests: int
    reply_bytes: int
    cpu_s: float
    errors: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(slots=True)
class Tally:
    """What a plain client (raw loop, pyasic) counts while it polls; one per cycle."""

    miners_ok: int = 0
    requests: int = 0
    reply_bytes: int = 0
    errors: Counter[str] = field(default_factory=Counter)


PollOne = Callable[[MinerPlan, Tally], Awaitable[None]]


async def run_pool(plan: Sequence[MinerPlan], concurrency: int, poll_one: PollOne) -> CycleResult:
    """Poll every miner once with `concurrency` workers pulling from one queue (as the megawatch poller does)."""
    tally = Tally()
    due: Iterator[MinerPlan] = iter(plan)

    async def work() -> None:
        for miner in due:  # one shared iterator: safe, only one coroutine runs between awaits
            await poll_one(miner, tally)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(work() for _ in range(min(concurrency, len(plan)))))
    duration, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return CycleResult(duration, len(plan), tally.miners_ok, tally.requests, tally.reply_bytes, cpu,
                       dict(tally.errors))
