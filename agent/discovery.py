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
from megawatch.agent.config import AgentConfig, MinerTarget
from megawatch.agent.inventory import IDENTITY_COMMANDS, UNJOINABLE, Inventory, UnitIdentity, identity_of
from megawatch.agent.model import MinerReading
from megawatch.agent.modeltable import ModelTable, estimate_power, replace_reading
from megawatch.agent.protocol import client
from megawatch.agent.protocol.errors import CommandRejected, ConnectFailed, LocalShortage, MinerError, PollTimeout
from megawatch.agent.protocol.framing import reply_notes
from megawatch.agent.state import MinerState, MinerStatus

Query = Callable[..., Awaitable[Any]]
SAVE_EVERY_S = 300.0  # the inventory file's last-seen times lag by at most this much


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
    except Exception:  # parse never raises on miner content: a probe must not die of our bug
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


class ScanRanges:
    """The poller's part in discovery (mixed into Poller): scan-range sweeps beside the polling, found miners
    joining the fleet, the inventory fed from each cycle, and discovered miners forgotten when long gone."""

    _config: AgentConfig
    _tracks: list[Any]  # the poller's _Track objects
    _found: list[Probe]
    _sweeps: int
    _deadlines: Any
    _own_deadlines: bool
    _query: Query
    _clock: Any
    _sleep: Callable[[float], Awaitable[None]]
    _log: Any
    inventory: Inventory
    _inventory_saved_s: float = 0.0

    def _new_track(self, target: MinerTarget, dialect: str | None, *, discovered: bool) -> Any:
        raise NotImplementedError  # the poller's

    def _discovers(self) -> bool:
        """Rescans run for scan ranges, and for the inventory's serials and MACs when it is kept in a file."""
        config = self._config
        return config.discovery.state_file is not None or any(not t.expected for t in config.miners)

    async def _discover_forever(self, first: asyncio.Event) -> None:
        while True:
            t0 = self._clock.monotonic()
            try:
                await self.rescan()
            except Exception as exc:  # a bug of ours must not stop the polling
                self._log.error("discovery_failed", exc_info=exc)
            first.set()
            wait = self._config.discovery.rescan_interval_s - (self._clock.monotonic() - t0)
            await self._sleep(max(1.0, wait))

    async def rescan(self) -> int:
        """Probe every scan-range address not polled yet, and every polled miner for its identity.

        What answers joins at the start of the next cycle; an address where nothing answers is not a miner and is
        not counted at all. Returns how many new miners were found.
        """
        config = self._config
        tracked = {t.target.name for t in self._tracks}
        targets = [*(t.target for t in self._tracks),
                   *(t for t in config.miners if not t.expected and t.name not in tracked)]
        deadlines = self._deadlines if not self._own_deadlines else client.Deadlines(
            connect_s=min(config.discovery.connect_timeout_s, config.poll.request_timeout_s),
            request_s=config.poll.request_timeout_s)
        found: list[Probe] = []

        def note(result: Probe) -> None:
            if result.outcome is Outcome.FOUND:
                found.append(result)

        async def one(target: MinerTarget) -> Probe:
            return await probe(target, query=self._query, deadlines=deadlines, models=config.models,
                               max_reply_bytes=config.poll.max_reply_bytes, deadline_s=config.poll.request_timeout_s)

        t0 = self._clock.monotonic()
        await sweep(targets, one, config.discovery.concurrency, note)
        self._found.extend(found)
        self._sweeps += 1
        new = sum(1 for p in found if p.target.name not in tracked)
        self._log.log(20 if new else 10, "discovery_sweep_finished", addresses=len(targets), found=len(found),
                      new=new, duration_s=round(self._clock.monotonic() - t0, 3))
        return new

    def _tracks_for(self, config: AgentConfig, known: dict[str, Any]) -> list[Any]:
        """Listed miners, and scan-range ones found before (now or in an earlier run, from the inventory)."""
        remembered = set(self.inventory.present())
        tracks = []
        for target in config.miners:
            track = known.get(target.name)
            if track is None:
                if not target.expected and target.name not in remembered:
                    continue  # not seen yet: rescans look for it; an empty address is no miner
                track = self._new_track(target, target.dialect, discovered=not target.expected)
                entry = self.inventory.entries.get(target.name)
                track.seen_s = entry.last_seen_s if entry is not None and entry.present else None
            elif track.target != target:
                hinted = target.dialect is not None and target.dialect != track.dialect
                track.target, track.discovered = target, not target.expected
                if hinted:
                    track.dialect, track.needs_detect, track.joins_fail = target.dialect, False, False
            tracks.append(track)
        return tracks

    def _take_found(self, now_s: float) -> None:
        """Miners the latest rescan found: new ones join this cycle; every answer updates the inventory."""
        found, self._found = self._found, []
        if not found:
            return
        tracked = {t.target.name: t for t in self._tracks}
        wanted = {t.name: t for t in self._config.miners}
        for result in found:
            name = result.target.name
            track = tracked.get(name)
            if track is None:
                target = wanted.get(name)
                if target is None:
                    continue  # dropped by a reload while the sweep ran
                track = self._new_track(target, result.dialect, discovered=True)
                self._tracks.append(track)
                tracked[name] = track
            track.seen_s = now_s
            if result.identity is not None:
                self.inventory.observe(name, result.identity, now_s, announce=track.discovered)

    def _observe(self, miners: tuple[MinerState, ...], now_s: float) -> tuple[MinerState, ...]:
        """Give the inventory what this cycle's answers say (model, firmware) and forget discovered miners down
        for longer than discovery.forget_after_s. Cheap per miner: the inventory hears only of changes."""
        inventory, models = self.inventory, self._config.models
        forget_s = self._config.discovery.forget_after_s
        gone: set[int] = set()
        for i, (track, m) in enumerate(zip(self._tracks, miners, strict=True)):
            reading = m.reading
            if m.status is MinerStatus.UP and reading is not None:
                track.seen_s = now_s
                key = (reading.model, reading.firmware_version, m.dialect)
                entry = inventory.entries.get(track.target.name)
                if key != track.seen_key or entry is None or not entry.present:
                    track.seen_key = key
                    inventory.observe(track.target.name, identity_of(m.dialect or reading.dialect, {}, reading, models),
                                      now_s, announce=track.discovered)
                else:
                    entry.last_seen_s = now_s
            elif track.discovered and m.status is MinerStatus.DOWN and track.seen_s is not None \
                    and now_s - track.seen_s > forget_s:
                gone.add(i)
                inventory.vanish(track.target.name, now_s)
        if gone:
            self._tracks = [t for i, t in enumerate(self._tracks) if i not in gone]
            miners = tuple(m for i, m in enumerate(miners) if i not in gone)
        # Changes at once; last-seen times at least every few minutes, so a restart forgets nobody early.
        if inventory.dirty or now_s - self._inventory_saved_s >= SAVE_EVERY_S:
            self._save_inventory(now_s)
        return miners

    def _save_inventory(self, now_s: float) -> None:
        self._inventory_saved_s = now_s
        try:
            self.inventory.save()
        except OSError as exc:
            self._log.warning("inventory_save_failed", path=str(self.inventory.path), error=str(exc))
