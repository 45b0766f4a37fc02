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
from megawatch.agent.discovery import Probe, ScanRanges, fetch_replies
from megawatch.agent.identity import FirmwareIdentity
from megawatch.agent.inventory import Inventory
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


class Poller(ScanRanges):
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
        if len(self._tracks) != len(config.miners):
            # Scan ranges: before the first cycle the site counts the miners it expects, not every address.
            state.publish(FleetSnapshot.empty(config.site, len(self._tracks), config.accounting))
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

    def _new_track(self, target: MinerTarget, dialect: str | None, *, discovered: bool) -> _Track:
        return _Track(target, dialect, needs_detect=dialect is None, discovered=discovered)

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
            except Exception as exc:
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
        except Exception as exc:  # parse never raises on miner content: this is our bug
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
