"""Run the fleet in this process, or spread it over worker processes when it is too big for one.

One process holds at most ~19,900 listeners (with an open-file limit of 20,000) and needs descriptors
for accepted connections too, so each process serves at most `miners_per_worker` miners (10,000 by
default). Each worker serves its slice and a private control endpoint on 127.0.0.1:<free port>; the
parent's endpoint fans out to them. Fault fractions are resolved in the parent over the whole site, so
the choice does not depend on how the fleet was split; all processes share one tick epoch
(CLOCK_MONOTONIC is system-wide), so they agree on the tick.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from megawatch.common.logs import configure_logging, get_logger
from megawatch.simulator.config import FleetConfig
from megawatch.simulator.control import LocalBackend, start_control
from megawatch.simulator.faults import Fault
from megawatch.simulator.fleet import (
    Clock,
    Fleet,
    FleetStartError,
    Planned,
    finish_truth,
    initial_faults,
    merge_site_sums,
    plan_fleet,
    worker_slices,
)
from megawatch.simulator.meter import MeterSet

WORKER_START_TIMEOUT_S = 120.0
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)


class InProcess(LocalBackend):
    """The whole fleet in this process."""

    workers = 1

    def __init__(self, fleet: Fleet, plan: list[Planned], startup_s: float) -> None:
        super().__init__(fleet, plan)
        self.startup_s = startup_s

    def describe(self) -> list[str]:
        return describe_sites(self.fleet.config, self.plan, self.startup_s, 1, self.meters)

    async def close(self) -> None:
        if self.meters is not None:
            await self.meters.stop()
        await self.fleet.stop()


class WorkerPool:
    """The fleet spread over worker processes; the same operations as LocalBackend, fanned out."""

    def __init__(self, config: FleetConfig, plan: list[Planned], slices: list[range]) -> None:
        self.config = config
        self.plan = plan
        self.seed = config.seed
        self.site_ids = tuple(site.id for site in config.sites)
        self.slices = slices
        self.workers = len(slices)
        self._clock = Clock(config.tick_s)
        self.startup_s = 0.0
        self.worker_startup_s: list[float] = []
        self._processes: list[Any] = []
        self._urls: list[str] = []
        self._session: aiohttp.ClientSession | None = None
        self.meters: MeterSet | None = None
        self._version = 0  # bumped by every change made through us: with the tick, it keys the meters' truth

    def truth_key(self) -> object:
        return (self._clock.tick(), self._version)

    async def start(self) -> None:
        started = time.perf_counter()
        context = multiprocessing.get_context("spawn")  # no fork of a process that runs an event loop
        faults = initial_faults(self.config, self.plan)
        pipes = []
        for span in self.slices:
            parent_end, child_end = context.Pipe()
            slice_faults = {i: f for i, f in faults.items() if i in span}
            process = context.Process(
                target=_worker_main, name=f"megawatch-sim-{span.start}",
                args=(self.config, span.start, span.stop, self._clock.epoch, slice_faults, child_end),
                daemon=True,
            )
            process.start()
            child_end.close()
            self._processes.append(process)
            pipes.append(parent_end)
        loop = asyncio.get_running_loop()
        problems = []
        for span, pipe in zip(self.slices, pipes, strict=True):
            ready = await loop.run_in_executor(None, pipe.poll, WORKER_START_TIMEOUT_S)
            message: Any = pipe.recv() if ready else ("error", f"no answer within {WORKER_START_TIMEOUT_S:g} s")
            if message[0] == "ready":
                self._urls.append(f"http://127.0.0.1:{message[1]}")
                self.worker_startup_s.append(message[2])
            else:
                problems.append(f"worker for miners {span.start}-{span.stop - 1}: {message[1]}")
        self._pipes = pipes  # kept open: a worker exits when its pipe closes (parent gone)
        if problems:
            await self.close()
            raise FleetStartError("; ".join(problems))
        token = self.config.control.token  # the workers' own endpoints ask for it too
        self._session = aiohttp.ClientSession(
            timeout=_HTTP_TIMEOUT, headers={"Authorization": f"Bearer {token}"} if token is not None else None)
        for row in await self.miners():
            # Learn the real ports of miners configured with port 0.
            planned = self.plan[row["index"]]
            if planned.port != row["port"]:
                self.plan[row["index"]] = dataclasses.replace(planned, port=row["port"])
        self.startup_s = time.perf_counter() - started

    def describe(self) -> list[str]:
        lines = describe_sites(self.config, self.plan, self.startup_s, self.workers, self.meters)
        slowest = max(self.worker_startup_s, default=0.0)
        return [*lines, f"slowest worker bound its {max(map(len, self.slices))} listeners in {slowest:.2f} s"]

    async def close(self) -> None:
        if self.meters is not None:
            await self.meters.stop()
        if self._session is not None:
            await self._session.close()
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        loop = asyncio.get_running_loop()
        for process in self._processes:
            await loop.run_in_executor(None, process.join, 10)
            if process.is_alive():
                process.kill()
        for pipe in getattr(self, "_pipes", []):
            pipe.close()

    async def _each(self, method: str, path: str, body: dict[str, Any] | None = None,
                    urls: list[str] | None = None) -> list[Any]:
        session = self._session
        assert session is not None

        async def one(url: str) -> Any:
            async with session.request(method, url + path, json=body) as response:
                payload = await response.json()
                if response.status >= 400:
                    raise RuntimeError(f"worker {url}{path}: {response.status} {payload}")
                return payload

        return list(await asyncio.gather(*(one(url) for url in (urls if urls is not None else self._urls))))

    async def truth(self) -> dict[str, Any]:
        parts = await self._each("GET", "/api/v1/truth")
        return finish_truth(merge_site_sums(part["sites"] for part in parts), max(p["tick"] for p in parts))

    async def miners(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for part in await self._each("GET", "/api/v1/miners"):
            rows.extend(part["miners"])
        return rows

    async def set_load(self, site: str, factor: float) -> None:
        self._version += 1
        await self._each("POST", f"/api/v1/sites/{site}/load", {"factor": factor})

    async def set_fault(self, indices: list[int], fault: Fault | None) -> int:
        self._version += 1
        assert fault is not None
        applied = 0
        for span, url in zip(self.slices, self._urls, strict=False):
            mine = [i for i in indices if i in span]
            if mine:
                body = {**fault.describe(), "indices": mine}
                body["fault"] = body.pop("kind")
                (reply,) = await self._each("POST", "/api/v1/faults", body, [url])
                applied += reply["applied"]
        return applied

    async def swap(self, indices: list[int], model: str | None) -> int:
        self._version += 1
        swapped = 0
        for span, url in zip(self.slices, self._urls, strict=False):
            mine = [i for i in indices if i in span]
            if mine:
                body: dict[str, Any] = {"indices": mine} if model is None else {"indices": mine, "model": model}
                (reply,) = await self._each("POST", "/api/v1/swaps", body, [url])
                swapped += reply["swapped"]
        return swapped

    async def clear_faults(self) -> int:
        self._version += 1
        return sum(part["cleared"] for part in await self._each("DELETE", "/api/v1/faults"))

    async def clock(self, freeze: bool | None, advance: int) -> dict[str, Any]:
        self._version += 1
        # Apply to our own clock first, then give every worker the same absolute tick.
        clock = self._clock
        clock.apply(freeze, advance)
        body: dict[str, Any] = {"at": clock.tick()} if clock.frozen is not None else {"offset": clock.offset}
        parts = await self._each("POST", "/api/v1/clock", body)
        first: dict[str, Any] = parts[0]  # every worker now reads the same clock
        return first


def describe_sites(config: FleetConfig, plan: list[Planned], startup_s: float, workers: int,
                   meters: MeterSet | None = None) -> list[str]:
    lines = [] if meters is None else meters.describe()
    for site in config.sites:
        members = [p for p in plan if p.site == site.id]
        if not members:
            continue
        first, last = members[0], members[-1]
        if site.port_base is not None:
            where = f"{first.host} ports {first.port}-{last.port}"
        else:
            where = f"{first.host} - {last.host} port {first.port if first.port else '(any free)'}"
        lines.append(f"site {site.id}: {len(members)} miners on {where}")
    lines.append(f"{len(plan)} miners listening in {workers} process(es), started in {startup_s:.2f} s")
    return lines


async def start_backend(config: FleetConfig) -> InProcess | WorkerPool:
    """Start the whole fleet; raises FleetStartError naming what could not be bound."""
    plan = plan_fleet(config)
    backend: InProcess | WorkerPool
    if len(plan) > config.miners_per_worker:
        backend = WorkerPool(config, plan, worker_slices(len(plan), config.miners_per_worker))
        await backend.start()
    else:
        started = time.perf_counter()
        fleet = Fleet(config, plan, faults=initial_faults(config, plan))
        await fleet.start()
        backend = InProcess(fleet, plan, time.perf_counter() - started)
    if any(site.meter is not None for site in config.sites):
        # Meters live in this process, beside the control endpoint: they read the whole site's truth.
        meters = MeterSet(config, backend.truth, backend.truth_key)
        try:
            await meters.start()
        except OSError as exc:
            await backend.close()
            raise FleetStartError(str(exc)) from None
        backend.meters = meters
    return backend


def _worker_main(config: FleetConfig, start: int, stop: int, epoch: float, faults: dict[int, Fault],
                 pipe: Connection) -> None:
    configure_logging("json", "warning")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    try:
        import uvloop
        uvloop.run(_worker(config, start, stop, epoch, faults, pipe))
    except ImportError:  # pragma: no cover
        asyncio.run(_worker(config, start, stop, epoch, faults, pipe))


async def _worker(config: FleetConfig, start: int, stop: int, epoch: float, faults: dict[int, Fault],
                  pipe: Connection) -> None:
    plan = plan_fleet(config)[start:stop]
    fleet = Fleet(config, plan, clock=Clock(config.tick_s, epoch), faults=faults)
    try:
        await fleet.start()
    except FleetStartError as exc:
        pipe.send(("error", str(exc)))
        return
    runner, port = await start_control(LocalBackend(fleet, plan), "127.0.0.1", 0, config.control.token)
    pipe.send(("ready", port, fleet.startup_s))
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_reader(pipe.fileno(), done.set)  # readable = EOF: the parent has gone
    await done.wait()
    get_logger().info("worker_stopping", first=start, last=stop - 1)
    await runner.cleanup()
    await fleet.stop()
