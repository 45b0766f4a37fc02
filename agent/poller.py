"""The poll loop: every miner once per interval, bounded concurrency, one snapshot per cycle.

A fixed pool of worker tasks (sized to the concurrency limit) pulls miners from one shared iterator:
one task per miner would grow memory with the fleet (measured: RSS 28 -> 100 MB at 30k miners).
Every miner's whole poll (detection, a join or its per-command fallback) runs under one deadline, so a
hung miner costs only its own `request_timeout_s`. State changes are logged once; single polls only at
debug level.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType, ModuleType
from typing import Any, Protocol

from megawatch.agent import dialects as dialect_table
from megawatch.agent import plausibility
from megawatch.agent.config import AgentConfig, MinerTarget
from megawatch.agent.discovery import Outcome, Probe, fetch_replies, probe, sweep
from megawatch.agent.identity import FirmwareIdentity
from megawatch.agent.inventory import Inventory, identity_of
from megawatch.agent.model import MinerReading
from megawatch.agent.modeltable import estimate_power, replace_reading
from megawatch.agent.protocol.errors import CommandRejected, ErrorKind, LocalShortage, MinerError
from megawatch.agent.protocol.framing import reply_notes
from megawatch.agent.resources import Shortage
from megawatch.agent.state import (
    OK,
    OUTCOMES,
    AgentCounters,
    FleetSnapshot,
    FleetState,
    MinerState,
    MinerStatus,
    classify,
    summarise,
)
from megawatch.common.logs import get_logger

# Failures that mean "nobody answers": retrying them every cycle only burns deadlines.
_BACKOFF_KINDS = frozenset({ErrorKind.UNREACHABLE, ErrorKind.TIMEOUT})


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock unix seconds (timestamps in readings and metrics)."""

    def monotonic(self) -> float:
        """Seconds for durations and scheduling."""


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


Query = Callable[..., Awaitable[Any]]  # agent.protocol.client.query's signature


@dataclass(slots=True)
class _Track:
    """The poller's private, mutable memory of one miner (never shared: snapshots copy out of it)."""

    target: MinerTarget
    dialect: str | None
    needs_detect: bool
    joins_fail: bool = False
    ok: bool | None = None  # outcome of the latest poll; None before the first
    failures: int = 0
    skip_until: int = 0  # first cycle in which to poll again (backoff)
    reading: MinerReading | None = None
    firmware_version: str | None = None
    last_success_s: float | None = None
    last_poll_s: float | None = None
    poll_duration_s: float | None = None
    last_error: ErrorKind | None = None
    bug_logged: bool = False  # an internal error was logged; the next is logged only after a success
    implausible: tuple[str, ...] = ()  # fields dropped from the latest reading, logged when they change
    missed: bool = False  # the latest poll never left the agent (no descriptor): the reading is not fresh
    identity: FirmwareIdentity = field(default_factory=FirmwareIdentity)  # firmware labels, held steady
    discovered: bool = False  # found in a scan range (not listed): forgotten after discovery.forget_after_s down
    seen_s: float | None = None  # wall clock of the last answer, this run or (from the inventory) an earlier one
    seen_key: tuple[Any, ...] | None = None  # model, firmware version, dialect last given to the inventory


class Poller:
    """Polls the configured miners and publishes one FleetSnapshot per cycle to `state`."""

    def __init__(
        self,
        config: AgentConfig,
        state: FleetState,
        *,
        query: Query | None = None,
        deadlines: Any = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        dialects: Mapping[str, ModuleType] | None = None,
        detect: Callable[[Mapping[str, Mapping[str, Any]]], str] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        own_deadlines = deadlines is None
        if query is None or deadlines is None:
            # Imported here so the config and state modules load without the wire client.
            from megawatch.agent.protocol import client

            query = query or client.query
            deadlines = deadlines or client.Deadlines(
                connect_s=config.poll.connect_timeout_s, request_s=config.poll.request_timeout_s
            )
        self._config = config
        self._settings = config.poll
        self._state = state
        self._query = query
        self._deadlines = deadlines
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._dialects = dialects if dialects is not None else dialect_table.DIALECTS
        self._detect = detect or dialect_table.detect
        self._sleep = sleep
        self._log = get_logger(site=config.site)
        self.inventory = Inventory(config.discovery.state_file, config.site, models=config.models)
        self.inventory.load()
        self._found: list[Probe] = []  # what the latest rescan found, taken at the start of the next cycle
        self._sweeps = 0
        self._tracks = self._tracks_for(config, {})
        self._pending: AgentConfig | None = None  # a reloaded config, taken at the start of the next cycle
        self._own_deadlines = own_deadlines
        self._cycle = 0
        self._overrunning = False
        self._cycles = 0
        self._overruns = 0
        self._polls = dict.fromkeys(OUTCOMES, 0)
        self._implausible = dict.fromkeys(plausibility.FIELDS, 0)
        self.shortage = Shortage(self._log)

    @property
    def cycle(self) -> int:
        return self._cycle

    @property
    def config(self) -> AgentConfig:
        """The config the poller runs with now: a reloaded one from the first cycle after the reload."""
        return self._config

    async def run(self) -> None:
        """Poll forever, one cycle per interval, until cancelled. Cycles never overlap."""
        discovery = None
        if self._discovers():
            first = asyncio.Event()
            discovery = asyncio.create_task(self._discover_forever(first), name="discovery")
            # The first cycle waits (bounded) for the first sweep, so a scan range's miners are in it.
            try:
                async with asyncio.timeout(self._settings.interval_s):
                    await first.wait()
            except TimeoutError:
                pass
        try:
            next_start = self._clock.monotonic()
            while True:
                delay = next_start + self._rng.uniform(0, self._settings.jitter_s) - self._clock.monotonic()
                if delay > 0:
                    await self._sleep(delay)
                await self.poll_once()
                next_start += self._settings.interval_s  # read each cycle: a reload may change it
                # After an overrun, start at once rather than queue up missed cycles.
                next_start = max(next_start, self._clock.monotonic())
        finally:
            if discovery is not None:
                discovery.cancel()
                await asyncio.gather(discovery, return_exceptions=True)

    def _discovers(self) -> bool:
        """Rescans run for scan ranges, and for the inventory's serials and MACs when it is kept in a file."""
        config = self._config
        return config.discovery.state_file is not None or any(not t.expected for t in config.miners)

    async def _discover_forever(self, first: asyncio.Event) -> None:
        while True:
            t0 = self._clock.monotonic()
            try:
                await self.rescan()
            except Exception as exc:  # noqa: BLE001 - a bug of ours must not stop the polling
                self._log.error("discovery_failed", exc_info=exc)
            first.set()
            wait = self._config.discovery.rescan_interval_s - (self._clock.monotonic() - t0)
            await self._sleep(max(1.0, wait))

    async def rescan(self) -> int:
        """Probe every scan-range address not polled yet, and every polled miner for its identity.

        What answers joins at the start of the next cycle; an address where nothing answers is not a miner and is
        not counted at all. Returns how many new miners were found.
        """
        from megawatch.agent.protocol import client

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

    async def poll_once(self) -> FleetSnapshot:
        """Run one cycle: poll every miner that is due, then publish and return the new snapshot."""
        if self._pending is not None:
            self._apply(self._pending)
            self._pending = None
        self._cycle += 1
        cycle = self._cycle
        started_s, t0 = self._clock.time(), self._clock.monotonic()
        self._take_found(started_s)
        due = iter([t for t in self._tracks if t.skip_until <= cycle])
        workers = [
            asyncio.create_task(self._work(due), name=f"poll-worker-{i}")
            for i in range(min(self._settings.concurrency, len(self._tracks)))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
        duration = self._clock.monotonic() - t0
        finished_s = self._clock.time()
        self._cycles += 1
        self._note_overrun(cycle, duration)
        self.shortage.cycle_done(cycle)
        miners = tuple(self._miner_state(t, finished_s) for t in self._tracks)
        miners = self._observe(miners, finished_s)
        snapshot = FleetSnapshot(
            site=self._config.site,
            cycle=cycle,
            started_s=started_s,
            finished_s=finished_s,
            duration_s=duration,
            miners=miners,
            totals=replace(summarise(miners, len(self._tracks), finished_s, self._config.accounting,
                                     self._config.models),
                           discovered=sum(1 for t in self._tracks if t.discovered),
                           missing=sum(1 for t in self._tracks if not t.discovered and t.seen_s is None
                                       and t.target.name not in self.inventory.entries)),
            counters=AgentCounters(self._cycles, self._overruns, MappingProxyType(dict(self._polls)),
                                   MappingProxyType(dict(self._implausible)), self._sweeps,
                                   MappingProxyType(dict(self.inventory.events))),
        )
        self._state.publish(snapshot)
        t = snapshot.totals
        self._log.debug("cycle_finished", cycle=cycle, duration_s=round(duration, 3), up=t.up, stale=t.stale,
                        down=t.down)
        return snapshot

    def reconfigure(self, config: AgentConfig) -> None:
        """Take `config` at the start of the next cycle (never mid-cycle), keeping what is known per miner.

        A miner still listed keeps its reading, dialect, failure count and backoff (a changed hint is
        applied); new miners start unknown; dropped miners leave the next snapshot.
        """
        self._pending = config

    def _tracks_for(self, config: AgentConfig, known: dict[str, _Track]) -> list[_Track]:
        """Listed miners, and scan-range ones found before (now or in an earlier run, from the inventory)."""
        remembered = set(self.inventory.present())
        tracks = []
        for target in config.miners:
            track = known.get(target.name)
            if track is None:
                if not target.expected and target.name not in remembered:
                    continue  # not seen yet: rescans look for it; an empty address is no miner
                track = _Track(target, target.dialect, needs_detect=target.dialect is None,
                               discovered=not target.expected)
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
                track = _Track(target, result.dialect, needs_detect=result.dialect is None, discovered=True)
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
        for i, (track, m) in enumerate(zip(self._tracks, miners)):
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
        if inventory.dirty:
            self._save_inventory(now_s)
        return miners

    def _save_inventory(self, now_s: float) -> None:
        try:
            self.inventory.save()
        except OSError as exc:
            self._log.warning("inventory_save_failed", path=str(self.inventory.path), error=str(exc))

    def _apply(self, config: AgentConfig) -> None:
        tracks = self._tracks_for(config, {t.target.name: t for t in self._tracks})
        self._tracks, self._config, self._settings = tracks, config, config.poll
        if self._own_deadlines:
            from megawatch.agent.protocol import client

            self._deadlines = client.Deadlines(connect_s=config.poll.connect_timeout_s,
                                               request_s=config.poll.request_timeout_s)

    def _note_overrun(self, cycle: int, duration: float) -> None:
        overran = duration > self._settings.interval_s
        if overran:
            self._overruns += 1
            if not self._overrunning:  # logged once per run of overruns, counted every time
                self._log.warning("cycle_overrun", cycle=cycle, duration_s=round(duration, 3),
                                  interval_s=self._settings.interval_s, miners=len(self._tracks))
        elif self._overrunning:
            self._log.info("cycle_overrun_ended", cycle=cycle, duration_s=round(duration, 3))
        self._overrunning = overran

    def _miner_state(self, track: _Track, now_s: float) -> MinerState:
        status, age = classify(bool(track.ok) and not track.missed, track.reading, track.last_success_s, now_s,
                               self._settings.stale_grace_s)
        return MinerState(
            target=track.target, status=status, reading=track.reading, last_success_s=track.last_success_s,
            last_poll_s=track.last_poll_s, poll_duration_s=track.poll_duration_s,
            consecutive_failures=track.failures, last_error=track.last_error, dialect=track.dialect,
            stale_age_s=age,
        )

    async def _work(self, due: Any) -> None:
        # Iterating a shared iterator is safe: only one coroutine runs at a time between awaits.
        for track in due:
            t0 = self._clock.monotonic()
            try:
                await self._poll_miner(track)
            # A bug of ours (client, parser, refused command) must cost one miner's poll, not the whole
            # cycle: it is logged with its traceback, once per miner, and the miner counts as failed.
            except Exception as exc:  # noqa: BLE001
                self._note_bug(track, "poll_crashed", exc)
                self._record_failure(track, ErrorKind.MALFORMED, t0, f"internal error: {exc!r}")

    async def _poll_miner(self, track: _Track) -> None:
        t0 = self._clock.monotonic()
        # The whole-poll deadline is one timer that cancels this task, as asyncio.timeout does, without its
        # context manager and state machine: those were a quarter of the poller's own per-miner CPU (measured).
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(self._settings.request_timeout_s, expire)
        try:
            if track.needs_detect or track.dialect is None:
                await self._detect_dialect(track)
            assert track.dialect is not None
            module = self._dialects[track.dialect]
            replies = await self._fetch(track, module.COMMANDS, module.JOINABLE)
        except asyncio.CancelledError:
            ours = expired and task.uncancel() == 0
            expired = False  # our cancel request is withdrawn either way
            if not ours:
                raise  # cancelled from outside (shutdown), not (only) by our deadline
            self._record_failure(track, ErrorKind.TIMEOUT, t0, "whole-poll deadline passed")
            return
        except MinerError as exc:
            self._record_failure(track, exc.kind, t0, exc.message)
            return
        except LocalShortage as exc:
            # Our failure, not the miner's: no miner_down, no failure count, no backoff.
            track.missed = True
            self.shortage.missed(track.target.name, exc.message)
            return
        except TimeoutError:
            self._record_failure(track, ErrorKind.TIMEOUT, t0, "whole-poll deadline passed")
            return
        finally:
            timer.cancel()
            if expired:  # the deadline fired but the poll ended otherwise: withdraw our cancel request
                task.uncancel()
        reading = self._parse(track, module, replies)
        if reading is None:
            self._record_failure(track, ErrorKind.MALFORMED, t0, "parser failed")
            return
        self._record_success(track, reading, t0)

    async def _fetch(self, track: _Track, commands: Sequence[str], joinable: bool) -> dict[str, dict[str, Any]]:
        """Send `commands` as one join, or one per connection where joins fail; at least one must answer."""
        target = track.target
        kwargs = {"port": target.port, "deadlines": self._deadlines,
                  "max_reply_bytes": self._settings.max_reply_bytes, "allow_control": self._config.control_enabled}

        def refused(exc: CommandRejected) -> None:
            # Some firmware (stock S19) cannot join: remember it and ask one command at a time from now on.
            track.joins_fail = True
            self._log.debug("join_refused", miner=target.name, code=exc.code, message=exc.message)

        return await fetch_replies(self._query, target.address, commands, joinable and not track.joins_fail, kwargs,
                                   refused)

    async def _detect_dialect(self, track: _Track) -> None:
        replies = await self._fetch(track, dialect_table.DETECT_COMMANDS, True)
        name = self._detect(replies)
        previous = track.dialect
        track.dialect, track.needs_detect = name, False
        if previous is None:
            self._log.info("dialect_detected", miner=track.target.name, dialect=name)
        elif previous != name:
            self._log.info("dialect_changed", miner=track.target.name, dialect=name, previous=previous)

    def _note_bug(self, track: _Track, event: str, exc: Exception) -> None:
        if not track.bug_logged:
            self._log.error(event, miner=track.target.name, dialect=track.dialect, exc_info=exc)
        track.bug_logged = True

    def _parse(self, track: _Track, module: ModuleType, replies: dict[str, dict[str, Any]]) -> MinerReading | None:
        try:
            reading: MinerReading = module.parse(replies)
        except Exception as exc:  # noqa: BLE001 - parse never raises on miner content: this is our bug
            self._note_bug(track, "parse_failed", exc)
            return None
        if track.target.model is not None:
            reading = replace_reading(reading, model=track.target.model)
        # Bounds before the estimate: an absurd hashrate must not become an absurd estimated draw.
        models = self._config.models
        reading, dropped = plausibility.check(reading, models.lookup(reading.model), reply_notes(replies.values()))
        if dropped or track.implausible:
            self._note_implausible(track, dropped)
        return estimate_power(reading, models)

    def _note_implausible(self, track: _Track, dropped: tuple[str, ...]) -> None:
        for name in dropped:
            self._implausible[name] += 1
        fields = tuple(sorted(set(dropped)))
        if fields != track.implausible:
            if fields:
                self._log.warning("miner_implausible_values", miner=track.target.name, fields=list(fields))
            else:
                self._log.info("miner_implausible_values_ended", miner=track.target.name)
            track.implausible = fields

    def _record_success(self, track: _Track, reading: MinerReading, t0: float) -> None:
        now = self._clock.time()
        if track.ok is False:
            self._log.info("miner_up", miner=track.target.name, after_failures=track.failures)
        version = reading.firmware_version
        # New firmware may speak another dialect: check on the next poll. Not for a version that changes every
        # poll: detection has said the same three times by then.
        if version is not None and track.firmware_version not in (None, version) and track.target.dialect is None \
                and not track.identity.unstable:
            track.needs_detect = True
            track.joins_fail = False
        if version is not None:
            track.firmware_version = version
        reading = track.identity.settle(reading, track.dialect, self._log, track.target.name)
        track.ok, track.failures, track.last_error, track.skip_until = True, 0, None, 0
        track.missed = False
        track.bug_logged = False
        track.reading, track.last_success_s, track.last_poll_s = reading, now, now
        track.poll_duration_s = self._clock.monotonic() - t0
        self._polls[OK] += 1

    def _record_failure(self, track: _Track, kind: ErrorKind, t0: float, message: str) -> None:
        if track.ok is not False or track.last_error != kind:
            event = "miner_down" if track.ok is not False else "miner_failure_changed"
            self._log.warning(event, miner=track.target.name, error=kind.value, message=message)
        track.ok, track.last_error, track.missed = False, kind, False
        track.failures += 1
        track.last_poll_s = self._clock.time()
        track.poll_duration_s = self._clock.monotonic() - t0
        self._polls[kind.value] += 1
        if track.failures >= self._settings.redetect_after_failures and track.target.dialect is None:
            track.needs_detect, track.joins_fail = True, False
        if kind in _BACKOFF_KINDS:
            skip = min(2 ** min(track.failures - 1, 16) - 1, self._settings.backoff_max_cycles)
            track.skip_until = self._cycle + 1 + skip
