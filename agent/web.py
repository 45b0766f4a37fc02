"""The agent's HTTP face: /metrics, /healthz, /api/v1/summary, /api/v1/miners.

`make_app` receives every dependency; the poller (when given) runs in a cleanup_ctx. The per-miner text
is rendered once per snapshot, in a worker thread (snapshots are immutable, so that is safe), so neither
a scrape nor a second scrape of the same cycle blocks the polling on the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from megawatch.agent.config import AgentConfig
from megawatch.agent.control import add_control_routes
from megawatch.agent.exposition import MinerRenderer
from megawatch.agent.inventory import to_csv
from megawatch.agent.poller import Poller
from megawatch.agent.state import FleetSnapshot, FleetState, MinerState, MinerStatus
from megawatch.common.daemon import health
from megawatch.common.logs import get_logger
from megawatch.common.strictjson import json_response

SUMMARY_VERSION = 1
# What MinerRenderer writes; prometheus_client's CONTENT_TYPE_LATEST now names version 1.0.0 instead.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MINER_STATES = tuple(s.value for s in MinerStatus)

CONFIG = web.AppKey("config", AgentConfig)
STATE = web.AppKey("state", FleetState)
REGISTRY = web.AppKey("registry", CollectorRegistry)
POLLER = web.AppKey("poller", Poller)
POLLER_TASK = web.AppKey("poller_task", asyncio.Task)
WALL_CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("wall_clock")


@dataclass(frozen=True, slots=True)
class _Rendered:
    """Only the gzip form is kept (Prometheus asks for gzip): 1.4 MB instead of 20 MB at 10k miners."""

    snapshot: FleetSnapshot
    gzip_head: bytes  # gzip stream of the text, flushed but not finished
    gzip_state: Any  # zlib compressor after the text; copied per scrape to append the registry part
    text_bytes: int  # length of the plain text

    def text_pieces(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The plain text, `size` bytes at a time: never whole (60 MB at 30,000 miners)."""
        decompressor = zlib.decompressobj(31)
        data = self.gzip_head
        while data:
            piece = decompressor.decompress(data, size)
            data = decompressor.unconsumed_tail
            if piece:
                yield piece


class MetricsCache:
    """The per-miner text of the latest snapshot, plain and gzip, rendered once per cycle."""

    def __init__(self, renderer: MinerRenderer) -> None:
        self._renderer = renderer
        self._latest: _Rendered | None = None
        self._lock = asyncio.Lock()

    async def get(self, snapshot: FleetSnapshot) -> _Rendered:
        async with self._lock:  # one render per snapshot, however many scrapers arrive together
            if self._latest is None or self._latest.snapshot is not snapshot:
                self._latest = await asyncio.to_thread(self._render, snapshot)
            return self._latest

    def _render(self, snapshot: FleetSnapshot) -> _Rendered:
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1: 19 MB in ~0.15 s; wbits 31 = gzip
        # Part by part (render_parts): the whole text and its encoded copy never exist at once (measured at
        # 10,000 miners: ~70 MB less peak RSS than rendering, encoding, then compressing it whole).
        chunks, size = [], 0
        for part in self._renderer.render_parts(snapshot):
            data = part.encode()
            size += len(data)
            chunks.append(compressor.compress(data))
        chunks.append(compressor.flush(zlib.Z_SYNC_FLUSH))
        return _Rendered(snapshot, b"".join(chunks), compressor, size)


METRICS = web.AppKey("metrics", MetricsCache)


def make_app(
    config: AgentConfig,
    state: FleetState,
    registry: CollectorRegistry,
    *,
    poller: Poller | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> web.Application:
    app = web.Application()
    app[CONFIG] = config
    app[STATE] = state
    app[REGISTRY] = registry
    app[METRICS] = MetricsCache(MinerRenderer(config.exposition))
    app[WALL_CLOCK] = wall_clock
    if poller is not None:
        app[POLLER] = poller
        app.cleanup_ctx.append(_run_poller)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/summary", summary)
    app.router.add_get("/api/v1/miners", miners)
    add_control_routes(app, config, lambda: state.snapshot)  # refuses unless control and auth are on
    app.router.add_get("/api/v1/inventory", inventory)
    return app


async def _prerender(app: web.Application) -> None:
    """Render each new cycle's text as soon as it is published, so scrapes find it ready."""
    state, cache = app[STATE], app[METRICS]
    while True:
        snapshot = await state.wait_for_cycle(state.snapshot.cycle + 1)
        await cache.get(snapshot)


async def _run_poller(app: web.Application) -> AsyncIterator[None]:
    log = get_logger(site=app[CONFIG].site)
    task = asyncio.create_task(app[POLLER].run(), name="poller")
    prerender = asyncio.create_task(_prerender(app), name="prerender")

    def on_done(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("poller_failed", exc_info=t.exception())

    task.add_done_callback(on_done)
    app[POLLER_TASK] = task
    yield
    for t in (prerender, task):
        t.cancel()
        # A poller that failed was logged by on_done; shutting down either way.
        await asyncio.gather(t, return_exceptions=True)


async def metrics(request: web.Request) -> web.StreamResponse:
    app = request.app
    rendered = await app[METRICS].get(app[STATE].snapshot)
    tail = generate_latest(app[REGISTRY])
    headers = {"Content-Type": CONTENT_TYPE}
    parts: Iterable[bytes]
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        compressor = rendered.gzip_state.copy()
        parts = (rendered.gzip_head, compressor.compress(tail) + compressor.flush())
        headers["Content-Encoding"] = "gzip"
        length = sum(map(len, parts))
    else:
        # Rare (Prometheus asks for gzip): decompressed a piece at a time as it is written, so a plain scrape
        # costs ~1 MB of memory, not the whole text (the bench's own plain scrape added 60 MB at 30,000 miners).
        parts = itertools.chain(rendered.text_pieces(), (tail,))
        length = rendered.text_bytes + len(tail)
    # Written in parts: joining would copy the ~20 MB text of a 10k-miner site on every scrape.
    response = web.StreamResponse(headers=headers)
    response.content_length = length
    await response.prepare(request)
    for part in parts:
        await response.write(part)
    await response.write_eof()
    return response


def _poller_failure(app: web.Application) -> str | None:
    task = app.get(POLLER_TASK)
    if task is None or not task.done():
        return None
    if task.cancelled():
        return "poller cancelled"
    return f"poller failed: {task.exception()!r}"


def _running_config(app: web.Application) -> AgentConfig:
    # After a SIGHUP reload the poller runs with the new interval and deadlines; app[CONFIG] is the one
    # the agent started with (its site, agent_id and http settings cannot change without a restart).
    poller = app.get(POLLER)
    return poller.config if poller is not None else app[CONFIG]


async def healthz(request: web.Request) -> web.Response:
    """200 while cycles keep finishing; 503 when the poller died, no cycle ended for 3 intervals, or the
    agent had no file descriptor for some polls in its latest cycle (its own failure, not the miners')."""
    app = request.app
    snap = app[STATE].snapshot
    config = _running_config(app)
    now = app[WALL_CLOCK]()
    limit = 3 * config.poll.interval_s + config.poll.request_timeout_s
    age = None if snap.finished_s is None else max(0.0, now - snap.finished_s)
    problem = _poller_failure(app)
    if problem is None and age is not None and age > limit:
        problem = f"no poll cycle finished for {age:.0f} s (limit {limit:.0f} s)"
    poller = app.get(POLLER)
    if problem is None and poller is not None:
        problem = poller.shortage.problem()
    return health(problem, cycle=snap.cycle, last_cycle_age_s=age, poll_interval_s=config.poll.interval_s,
                  stall_limit_s=limit)


async def summary(request: web.Request) -> web.Response:
    app = request.app
    return json_response(make_summary(_running_config(app), app[STATE].snapshot, app[WALL_CLOCK]()))


def make_summary(config: AgentConfig, snap: FleetSnapshot, now_s: float) -> dict[str, Any]:
    """The versioned JSON the collector reads (collector/sources.py SUMMARY_FIELDS). Unknown is null."""
    t = snap.totals
    known = snap.cycle > 0
    stale_ages = [m.stale_age_s for m in snap.miners if m.stale_age_s is not None]
    return {
        "version": SUMMARY_VERSION,
        "agent": config.agent_id,
        "site": snap.site,
        "cycle": {"number": snap.cycle, "started_s": snap.started_s, "finished_s": snap.finished_s,
                  "duration_s": snap.duration_s},
        "staleness": {
            "age_s": None if snap.finished_s is None else max(0.0, now_s - snap.finished_s),
            "stale_miners": t.stale,
            "max_stale_age_s": max(stale_ages) if stale_ages else None,
            "grace_s": config.poll.stale_grace_s,
        },
        "totals": {
            "hashrate_hs": t.hashrate_hs if known else None,
            # Measured: fresh readings only. Added in place (still version 1): a collector that predates the
            # allowance reads this as before and ignores the new keys.
            "power_w": {"firmware": t.power_firmware_w, "estimate": t.power_estimate_w} if known else None,
            "power_unknown_miners": t.power_unknown_miners,
            "power_allowance_w": t.power_allowance_w if known else None,
            "power_upper_bound_w": t.power_upper_bound_w if known else None,
            "allowance_miners": dict(t.allowance_miners) if known else None,
            # The same parts in W; estimate_margin and firmware_margin are no miner's unknown draw but the margin
            # on figures that are known, so a collector need not count them as unknown (docs/accounting.md).
            "allowance_w": dict(t.allowance_w) if known else None,
        },
        # configured: every miner counted, listed or found in a scan range (what a collector takes as the total).
        "miners": {"configured": t.configured, "up": t.up if known else None,
                   "down": t.down if known else None, "stale": t.stale if known else None,
                   "discovered": t.discovered, "missing": t.missing if known else None},
    }


async def inventory(request: web.Request) -> web.StreamResponse:
    """Every miner seen, with what it is (docs/discovery.md); `?format=csv` for a spreadsheet."""
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise web.HTTPBadRequest(text=f"format: expected json or csv, got {fmt!r}\n")
    poller = request.app.get(POLLER)
    rows = poller.inventory.rows() if poller is not None else []
    if fmt == "csv":
        return web.Response(text=to_csv(rows), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": 'attachment; filename="inventory.csv"'})
    return json_response({"version": SUMMARY_VERSION, "site": request.app[STATE].snapshot.site, "count": len(rows),
                          "miners": rows})


async def miners(request: web.Request) -> web.Response:
    wanted = request.query.get("state")
    if wanted is not None and wanted not in MINER_STATES:
        raise web.HTTPBadRequest(text=f"state: expected one of {', '.join(MINER_STATES)}, got {wanted!r}\n")
    snap = request.app[STATE].snapshot
    rows = [_miner_json(m) for m in snap.miners if wanted is None or m.status.value == wanted]
    return json_response({"version": SUMMARY_VERSION, "site": snap.site, "cycle": snap.cycle,
                              "count": len(rows), "miners": rows})


def _miner_json(m: MinerState) -> dict[str, Any]:
    r = m.reading
    current = m.current
    return {
        "miner": m.name,
        "address": m.target.address,
        "port": m.target.port,
        "state": m.status.value,
        "dialect": m.dialect,
        "model": r.model if r is not None else None,
        "firmware": r.firmware if r is not None else None,
        "firmware_version": r.firmware_version if r is not None else None,
        "hashrate_hs": current.hashrate_hs if current is not None else None,
        "power_w": current.power_w if current is not None else None,
        "power_source": current.power_source.value if current is not None and current.power_source else None,
        "last_success_s": m.last_success_s,
        "last_poll_s": m.last_poll_s,
        "poll_duration_s": m.poll_duration_s,
        "consecutive_failures": m.consecutive_failures,
        "last_error": m.last_error.value if m.last_error is not None else None,
        "stale_age_s": m.stale_age_s,
        "problems": list(current.problems) if current is not None else [],
        # The hottest chip, so a status page can list hot miners without reading /metrics.
        "chip_temp_max_c": max((b.chip_temp_c for b in current.boards if b.chip_temp_c is not None), default=None)
        if current is not None else None,
    }
