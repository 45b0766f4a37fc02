"""Finding miners: probe one address (does a miner API answer, which dialect, what unit), sweep many.

Shared by `megawatch scan` and the agent's scan ranges, so both find and identify a miner the same way as the
poller reads it: the same wire client and read-only allow-list, the same detection and parsers. A probe is
`version+devdetails` (detection), then the dialect's own poll commands plus the read-only ones that carry
identity (agent/inventory.py). Nothing answering is not an error: refused or silent addresses are `EMPTY`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from megawatch.agent import dialects as dialect_table
from megawatch.agent import plausibility
from megawatch.agent.config import MinerTarget
from megawatch.agent.inventory import IDENTITY_COMMANDS, UNJOINABLE, UnitIdentity, identity_of
from megawatch.agent.model import MinerReading
from megawatch.agent.modeltable import ModelTable, estimate_power, replace_reading
from megawatch.agent.protocol.errors import CommandRejected, ConnectFailed, LocalShortage, MinerError, PollTimeout
from megawatch.agent.protocol.framing import reply_notes

Query = Callable[..., Awaitable[Any]]


class Outcome(StrEnum):
    FOUND = "found"  # a miner API answered and was identified
    EMPTY = "empty"  # nothing listens: refused, or no answer to the connect (a silent address)
    NOT_MINER = "not_miner"  # something accepted the connection but did not answer as a miner API
    UNSCANNED = "unscanned"  # our own shortage (no file descriptor): the address was never reached


@dataclass(frozen=True, slots=True)
class Probe:
    target: MinerTarget
    outcome: Outcome
    dialect: str | None = None
    reading: MinerReading | None = None
    identity: UnitIdentity | None = None
    detail: str = ""
    duration_s: float = 0.0


async def fetch_replies(query: Query, address: str, commands: Sequence[str], joinable: bool, kwargs: dict[str, Any],
                        on_join_refused: Callable[[CommandRejected], None] | None = None) -> dict[str, dict[str, Any]]:
    """`commands` as one join, or one per connection where the join is refused; at least one must answer."""
    if joinable and len(commands) > 1:
        try:
            result = await query(address, tuple(commands), **kwargs)
        except CommandRejected as exc:
            # Some firmware (stock S19) cannot join: the caller remembers it and we ask one command at a time.
            if on_join_refused is not None:
                on_join_refused(exc)
        else:
            if result.replies:
                return dict(result.replies)
            raise CommandRejected("every command was refused: " + ", ".join(sorted(result.rejected)))
    replies: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    for command in commands:
        try:
            result = await query(address, (command,), **kwargs)
        except CommandRejected:
            refused.append(command)  # e.g. Code 45 for devdetails on a stock Antminer allow-list
            continue
        replies.update(result.replies)
        refused.extend(result.rejected)
    if not replies:
        raise CommandRejected("every command was refused: " + ", ".join(refused))
    return replies


def read(dialect: str, replies: dict[str, dict[str, Any]], models: ModelTable | None,
         model_hint: str | None = None) -> MinerReading | None:
    """Parse, bound and estimate as the poller does; None when the parser failed (our bug, not the miner's)."""
    try:
        reading: MinerReading = dialect_table.DIALECTS[dialect].parse(replies)
    except Exception:  # noqa: BLE001 - parse never raises on miner content; a probe must not die of our bug
        return None
    if model_hint is not None:
        reading = replace_reading(reading, model=model_hint)
    if models is None:
        return reading
    reading, _ = plausibility.check(reading, models.lookup(reading.model), reply_notes(replies.values()))
    return estimate_power(reading, models)


async def probe(target: MinerTarget, *, query: Query, deadlines: Any, models: ModelTable | None,
                max_reply_bytes: int = 1 << 20, deadline_s: float = 10.0) -> Probe:
    """Whether a miner answers at `target`, and what it is. Raises nothing but CancelledError."""
    t0 = time.monotonic()
    kwargs = {"port": target.port, "deadlines": deadlines, "max_reply_bytes": max_reply_bytes,
              "allow_control": False}  # a scan never sends anything but reads, whatever the agent allows
    try:
        async with asyncio.timeout(deadline_s):
            return await _probe(target, query, kwargs, models, t0)
    except ConnectFailed as exc:
        return Probe(target, Outcome.EMPTY, detail=exc.message, duration_s=time.monotonic() - t0)
    except PollTimeout as exc:
        outcome = Outcome.EMPTY if exc.phase == "connect" else Outcome.NOT_MINER
        return Probe(target, outcome, detail=exc.message, duration_s=time.monotonic() - t0)
    except TimeoutError:
        return Probe(target, Outcome.NOT_MINER, detail=f"no answer within {deadline_s:g}s",
                     duration_s=time.monotonic() - t0)
    except MinerError as exc:
        return Probe(target, Outcome.NOT_MINER, detail=exc.message, duration_s=time.monotonic() - t0)
    except LocalShortage as exc:
        return Probe(target, Outcome.UNSCANNED, detail=exc.message, duration_s=time.monotonic() - t0)


async def _probe(target: MinerTarget, query: Query, kwargs: dict[str, Any], models: ModelTable | None,
                 t0: float) -> Probe:
    dialect = target.dialect
    if dialect is None:
        found = await fetch_replies(query, target.address, dialect_table.DETECT_COMMANDS, True, kwargs)
        dialect = dialect_table.detect(found)
    module = dialect_table.DIALECTS[dialect]
    extras = IDENTITY_COMMANDS.get(dialect, ())
    joined = tuple(dict.fromkeys((*module.COMMANDS, *(c for c in extras if c not in UNJOINABLE))))
    replies = await fetch_replies(query, target.address, joined, module.JOINABLE, kwargs)
    for command in extras:
        if command in UNJOINABLE:
            try:
                replies.update((await query(target.address, (command,), **kwargs)).replies)
            except MinerError:
                pass  # identity is a bonus: a miner that refuses it is still found
    reading = read(dialect, replies, models, target.model)
    return Probe(target, Outcome.FOUND, dialect, reading, identity_of(dialect, replies, reading, models),
                 duration_s=time.monotonic() - t0)


async def sweep(targets: Iterable[MinerTarget], run: Callable[[MinerTarget], Awaitable[Probe]], concurrency: int,
                on_result: Callable[[Probe], None]) -> None:
    """Probe every target with at most `concurrency` in flight: a fixed pool of workers on one iterator, so
    memory does not grow with the number of addresses (a /16 is 65,534 of them)."""
    todo = iter(targets)

    async def work() -> None:
        for target in todo:  # a shared iterator: one coroutine runs at a time between awaits
            on_result(await run(target))

    workers = [asyncio.create_task(work()) for _ in range(max(1, concurrency))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
