"""A fleet (or one worker's slice of it): miners, the tick clock, site load, faults and ground truth.

The ground truth is what the miners do in the current tick: the hashrate they put in their replies, and
the power they truly draw (the simulator's own electrical model, power.py), split by what an agent could
see: the figure firmware that measures power reports (and the true draw behind it), the J/TH estimate an
agent can make for firmware that does not (and the true draw behind that), and the draw of miners that do
not answer - hung or restarting ones still draw, an `offline` one (power cut) draws nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import resource
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from megawatch.agent.modeltable import ModelSpec
from megawatch.common.logs import get_logger
from megawatch.simulator.behaviour import make_identity
from megawatch.simulator.cache import ReplyCache
from megawatch.simulator.config import FleetConfig, GroupConfig, SiteConfig
from megawatch.simulator.faults import Fault, select_fraction
from megawatch.simulator.miner import Miner, bind_listener
from megawatch.simulator.power import idle_power_w
from megawatch.simulator.replies import firmware_for
from megawatch.simulator.writes import reboot_control

FD_RESERVE = 512  # descriptors kept free for accepted connections, logs and the control endpoint
SUM_KEYS = (
    "miners", "miners_serving", "miners_hashing", "hashrate_hs", "hashrate_hs_all", "power_w",
    "power_w_reported", "power_w_reported_true", "power_w_estimable", "power_w_unmeasured", "power_w_unobserved",
    "privileged_commands",
)


class FleetStartError(Exception):
    """The fleet could not bind every listener; the message says how many and why."""


class Clock:
    """Discrete ticks of `tick_s`. Frozen, the tick only moves when advanced (tests, the control API)."""

    def __init__(self, tick_s: float, epoch: float | None = None) -> None:
        self.tick_s = tick_s
        # CLOCK_MONOTONIC is system-wide on Linux, so worker processes given the same epoch agree.
        self.epoch = time.monotonic() if epoch is None else epoch
        self.offset = 0
        self.frozen: int | None = None

    def _running(self) -> int:
        return int((time.monotonic() - self.epoch) / self.tick_s) + self.offset

    def tick(self) -> int:
        return self.frozen if self.frozen is not None else self._running()

    def freeze(self, at: int | None = None) -> int:
        self.frozen = self.tick() if at is None else at
        return self.frozen

    def unfreeze(self) -> int:
        if self.frozen is not None:
            self.offset += self.frozen - self._running()
            self.frozen = None
        return self.tick()

    def advance(self, ticks: int = 1) -> int:
        if self.frozen is not None:
            self.frozen += ticks
        else:
            self.offset += ticks
        return self.tick()

    def apply(self, freeze: bool | None, advance: int) -> dict[str, object]:
        """One control request: freeze/unfreeze, then advance; returns the state it leaves."""
        if freeze is True:
            self.freeze()
        elif freeze is False:
            self.unfreeze()
        if advance:
            self.advance(advance)
        return {"tick": self.tick(), "frozen": self.frozen is not None, "tick_s": self.tick_s}


@dataclass(frozen=True, slots=True)
class Planned:
    """One miner of the whole fleet before it listens: where it goes and what it is."""

    index: int
    site: str
    host: str
    port: int
    group: GroupConfig
    ambient_c: float

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


def plan_fleet(config: FleetConfig) -> list[Planned]:
    plan: list[Planned] = []
    for site in config.sites:
        endpoints = iter(site.endpoints())
        for group in site.groups:
            for _ in range(group.count):
                host, port = next(endpoints)
                plan.append(Planned(len(plan), site.id, host, port, group, site.ambient_c))
    return plan


def resolve_names(plan: Iterable[Planned], names: Iterable[str]) -> tuple[list[int], list[str]]:
    """Indices of the miners named "host" or "host:port"; also the names that matched nobody."""
    by_name: dict[str, list[int]] = {}
    for p in plan:
        by_name.setdefault(p.name, []).append(p.index)
        by_name.setdefault(p.host, []).append(p.index)
    found: list[int] = []
    unknown: list[str] = []
    for name in names:
        hits = by_name.get(name)
        if hits is None:
            unknown.append(name)
        else:
            found.extend(hits)
    return sorted(set(found)), unknown


def select_site_fraction(plan: Iterable[Planned], seed: int, site: str, kind: str, fraction: float) -> list[int]:
    members = [p.index for p in plan if p.site == site]
    chosen = select_fraction(seed, f"{site}|{kind}", [str(i) for i in members], fraction)
    return sorted(int(i) for i in chosen)


def initial_faults(config: FleetConfig, plan: list[Planned]) -> dict[int, Fault]:
    """The faults the YAML asks for, per miner index (later entries win on the same miner)."""
    out: dict[int, Fault] = {}
    site_plan: dict[str, list[Planned]] = {}
    for p in plan:
        site_plan.setdefault(p.site, []).append(p)
    for site in config.sites:
        for fc in site.faults:
            if fc.fraction is not None:
                targets = select_site_fraction(site_plan.get(site.id, []), config.seed, site.id, fc.fault.kind,
                                               fc.fraction)
            else:
                targets, _ = resolve_names(site_plan.get(site.id, []), fc.miners)
            for index in targets:
                out[index] = fc.fault
    return out


class SiteState:
    __slots__ = ("config", "load")

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.load = 1.0


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one (root cannot go past it here: 20,000)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


class Fleet:
    """Serves the miners of `plan` (the whole fleet, or one worker's slice of it)."""

    def __init__(self, config: FleetConfig, plan: list[Planned], *, clock: Clock | None = None,
                 faults: dict[int, Fault] | None = None) -> None:
        self.config = config
        self.seed = config.seed
        self.clock = clock if clock is not None else Clock(config.tick_s)
        self.generation = 0  # bumped on every change that alters what miners report within a tick
        self.sites = {site.id: SiteState(site) for site in config.sites}
        self.miners: list[Miner] = []
        self.by_index: dict[int, Miner] = {}
        self._plan = plan
        self._initial_faults = faults or {}
        self._log = get_logger()
        self.replies = ReplyCache()
        self.startup_s: float | None = None

    # -- start / stop ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener or none: a partial fleet would make every later number wrong."""
        started = time.perf_counter()
        limit = raise_fd_limit()
        needed = len(self._plan) + FD_RESERVE
        if needed > limit:
            raise FleetStartError(
                f"{len(self._plan)} listeners need about {needed} open files but the limit is {limit}; "
                f"lower miners_per_worker so each worker process holds fewer miners")
        socks = []
        try:
            for planned in self._plan:
                try:
                    socks.append(bind_listener(planned.host, planned.port))
                except OSError as exc:
                    raise FleetStartError(
                        f"bound {len(socks)} of {len(self._plan)} listeners; {planned.name}: {exc.strerror or exc}"
                    ) from None
            for slot, (planned, sock) in enumerate(zip(self._plan, socks, strict=True)):
                port = sock.getsockname()[1]  # the real one when the config asked for port 0
                if port != planned.port:
                    # Shared with the control endpoint: it must name and find miners by their real port.
                    self._plan[slot] = dataclasses.replace(planned, port=port)
                ident = make_identity(
                    seed=self.seed, index=planned.index, host=planned.host, port=port, site=planned.site,
                    dialect=planned.group.dialect, model=planned.group.model, ambient_c=planned.ambient_c,
                    allow_control=planned.group.allow_control, joins=planned.group.joins,
                )
                miner = Miner(ident, self, self.sites[planned.site])
                self.miners.append(miner)
                self.by_index[planned.index] = miner
            for miner, sock in zip(self.miners, socks, strict=False):
                await miner.listen(sock)
        except BaseException:
            for miner in self.miners:
                miner.close_listener()
            for sock in socks:
                sock.close()
            raise
        listening = sum(1 for m in self.miners if m.listening)
        if listening != len(self._plan):
            # create_server can come back without serving, and without raising, when descriptors run out.
            await self.stop()
            raise FleetStartError(f"only {listening} of {len(self._plan)} listeners are serving")
        for index, fault in self._initial_faults.items():
            if index in self.by_index:
                self.set_fault(self.by_index[index], fault)
        self.startup_s = time.perf_counter() - started

    async def stop(self) -> None:
        # Not Server.wait_closed(): since 3.12 it waits for every open connection, and a miner with the
        # hang fault keeps its clients' connections open on purpose.
        for miner in self.miners:
            miner.cancel_reopen()
            miner.close_listener()

    # -- control ----------------------------------------------------------------------------------
    def set_load(self, site: str, factor: float) -> None:
        self.sites[site].load = factor
        self.generation += 1

    def set_fault(self, miner: Miner, fault: Fault | None) -> None:
        """Give `miner` this fault (None clears it); the listener follows (offline closes it)."""
        self.generation += 1
        previous = miner.fault
        miner.fault = fault
        if fault is not None and fault.kind == "reboot":
            self.reboot_miner(miner, fault.duration_s)
            return
        if fault is not None and fault.kind == "offline":
            miner.cancel_reopen()
            miner.rebooting = False
            miner.close_listener()
            return
        if (previous is not None and previous.kind in ("offline", "reboot")) or miner.rebooting:
            self._come_back(miner)

    def clear_faults(self) -> int:
        cleared = 0
        for miner in self.miners:
            if miner.fault is not None or miner.rebooting:
                cleared += 1
                self.set_fault(miner, None)
        return cleared

    def reboot_miner(self, miner: Miner, duration_s: float) -> None:
        """Refuse connections for `duration_s`, then come back with uptime and counters reset."""
        self.generation += 1
        miner.rebooting = True
        miner.close_listener()
        miner.schedule_reopen(duration_s, lambda: self._come_back(miner))
        self._log.info("miner_rebooting", miner=miner.identity.address, duration_s=duration_s)

    def _come_back(self, miner: Miner) -> None:
        miner.cancel_reopen()
        if miner.rebooting:
            miner.rebooting = False
            miner.boot_tick = self.clock.tick()
            miner.booted_fresh = True
            if miner.fault is not None and miner.fault.kind == "reboot":
                miner.fault = None
            miner.control = reboot_control(miner)  # what survives a reboot (simulator/writes.py)
        self.generation += 1
        if miner.fault is not None and miner.fault.kind == "offline":
            return
        asyncio.get_running_loop().create_task(self._relisten(miner))

    async def _relisten(self, miner: Miner) -> None:
        try:
            await miner.listen()
        except OSError as exc:
            self._log.error("miner_listen_failed", miner=miner.identity.address, error=str(exc))

    def swap_miner(self, miner: Miner, model: ModelSpec | None = None) -> None:
        """Put another unit at `miner`'s address: a new serial, MAC and hostname (and model, when given),
        freshly booted, as when a technician swaps a unit and it takes the old one's DHCP lease."""
        old = miner.identity
        miner.identity = make_identity(
            seed=self.seed, index=old.index, host=old.host, port=old.port, site=old.site, dialect=old.dialect,
            model=model or old.model, ambient_c=old.ambient_c, allow_control=old.allow_control, joins=old.joins,
            swaps=old.unit + 1)
        miner.firmware = firmware_for(miner.identity)
        miner.boot_tick = self.clock.tick()
        miner.booted_fresh = True
        self.generation += 1
        self._log.info("miner_swapped", miner=old.address, serial=miner.identity.serial,
                       model=miner.identity.model.name)

    def control_changed(self, miner: Miner) -> None:
        """A write command stopped or restarted boards: every cached reply and snapshot is out of date."""
        self.generation += 1
        self._log.info("miner_control_changed", miner=miner.identity.address, stopped=miner.control.stopped)

    def privileged_seen(self, miner: Miner, name: str) -> None:
        self._log.warning("privileged_command", miner=miner.identity.address, command=name)

    # -- ground truth -----------------------------------------------------------------------------
    def site_sums(self) -> dict[str, dict[str, Any]]:
        """Per site: what the miners report this tick, summed, and who is faulty."""
        tick = self.clock.tick()
        sums: dict[str, dict[str, Any]] = {
            site_id: {**{key: 0 for key in SUM_KEYS}, "faults": Counter(), "load": state.load}
            for site_id, state in self.sites.items()
        }
        for miner in self.miners:
            site = sums[miner.identity.site]
            site["miners"] += 1
            site["privileged_commands"] += miner.privileged
            if miner.rebooting:
                site["faults"]["reboot"] += 1
            elif miner.fault is not None:
                site["faults"][miner.fault.kind] += 1
            if not miner.hashing:
                idle = true_draw_w(miner, tick)  # restarting: no hashing, no answer, but the PSU is on
                site["power_w"] += idle
                site["power_w_unobserved"] += idle
                continue
            snap = miner.snapshot(tick)
            site["miners_hashing"] += 1
            site["hashrate_hs_all"] += snap.hashrate_hs
            site["power_w"] += snap.true_power_w
            if miner.serving:
                site["miners_serving"] += 1
                site["hashrate_hs"] += snap.hashrate_hs
                if miner.firmware.reports_power:
                    site["power_w_reported"] += snap.power_w
                    site["power_w_reported_true"] += snap.true_power_w
                else:
                    # What an agent's J/TH table gives for the hashrate this miner reports, beside what it
                    # truly draws: the difference is the estimate's error, which no test can see otherwise.
                    site["power_w_estimable"] += snap.hashrate_hs * miner.identity.model.joules_per_hash
                    site["power_w_unmeasured"] += snap.true_power_w
            else:
                site["power_w_unobserved"] += snap.true_power_w
        for site in sums.values():
            site["faults"] = dict(site["faults"])
        return sums

    def miner_rows(self) -> list[dict[str, Any]]:
        rows = []
        tick = self.clock.tick()
        for miner in self.miners:
            ident = miner.identity
            fault = {"kind": "reboot"} if miner.rebooting else (miner.fault.describe() if miner.fault else None)
            rows.append({
                "index": ident.index, "address": ident.address, "host": ident.host, "port": ident.port,
                "site": ident.site, "dialect": ident.dialect, "model": ident.model.name, "fault": fault,
                "serial": ident.serial, "mac": ident.mac, "hostname": ident.hostname, "unit": ident.unit,
                "listening": miner.listening, "serving": miner.serving,
                "reports_power": miner.firmware.reports_power, "allow_control": ident.allow_control,
                "joins": ident.joins,
                "privileged_commands": miner.privileged, "stopped": miner.control.stopped,
                "true_power_w": true_draw_w(miner, tick),
            })
        return rows


def true_draw_w(miner: Miner, tick: int) -> float:
    """What `miner` draws at the wall in `tick`: 0 without power, idle while restarting, else its snapshot's."""
    if miner.hashing:
        return miner.snapshot(tick).true_power_w
    return idle_power_w(miner.identity.power) if miner.rebooting else 0.0


def finish_truth(site_sums: dict[str, dict[str, Any]], tick: int) -> dict[str, Any]:
    """Add fleet totals to per-site sums (shared by the single-process and the multi-worker paths)."""
    fleet: dict[str, Any] = {key: 0 for key in SUM_KEYS}
    fault_totals: Counter[str] = Counter()
    for site in site_sums.values():
        for key in SUM_KEYS:
            fleet[key] += site[key]
        fault_totals.update(site["faults"])
    fleet["faults"] = dict(fault_totals)
    return {"tick": tick, "sites": site_sums, "fleet": fleet}


def merge_site_sums(parts: Iterable[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        for site_id, site in part.items():
            into = merged.setdefault(site_id, {**{key: 0 for key in SUM_KEYS}, "faults": {}, "load": site["load"]})
            for key in SUM_KEYS:
                into[key] += site[key]
            for kind, count in site["faults"].items():
                into["faults"][kind] = into["faults"].get(kind, 0) + count
    return merged


def worker_slices(total: int, per_worker: int) -> list[range]:
    workers = max(1, math.ceil(total / per_worker))
    size = math.ceil(total / workers)
    return [range(start, min(total, start + size)) for start in range(0, total, size)]
