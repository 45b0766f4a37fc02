"""megawatch's own poller (agent/poller.py) as the agent runs it, plus the /metrics render of its snapshot.

Set-up records the plan: a first Poller detects every miner's dialect, then one steady-state cycle is
recorded through a wrapper around the wire client's `query`. The Poller that is measured afterwards is
a fresh one with nothing wrapped (the harness warms it up with one unmeasured cycle).
"""

from __future__ import annotations

import dataclasses
import gzip
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.plan import CycleResult, MinerPlan, save_plan
from bench.series import count_series
from megawatch.agent.config import AgentConfig, load_agent_config
from megawatch.agent.exposition import FleetCollector, MinerRenderer
from megawatch.agent.poller import Poller
from megawatch.agent.protocol import client
from megawatch.agent.state import FleetState

RENDER_REPEATS = 3


class MegawatchPoller:
    def __init__(self, config_path: Path) -> None:
        self.config: AgentConfig = load_agent_config(config_path)
        self.state = FleetState(self.config.site, len(self.config.miners))
        self.poller: Poller | None = None  # made once the plan is recorded
        self.requests_per_cycle = 0

    async def record_plan(self, path: Path) -> dict[str, Any]:
        """Detect every dialect, record one steady cycle's requests to `path`, make the poller to measure.

        The measured poller is given the detected dialects as config hints (as a user may write them), so
        it does not spend a second detection cycle; from its second cycle on it sends what was recorded.
        """
        sent: dict[tuple[str, int], list[str]] = {}

        async def recording_query(host: str, commands: tuple[str, ...], **kwargs: Any) -> client.QueryResult:
            sent.setdefault((host, kwargs["port"]), []).append("+".join(commands))
            return await client.query(host, commands, **kwargs)

        recorder = Poller(self.config, FleetState(self.config.site, len(self.config.miners)), query=recording_query)
        first = await recorder.poll_once()
        sent.clear()
        steady = await recorder.poll_once()
        plan = [MinerPlan(t.address, t.port, tuple(sent.get((t.address, t.port), ()))) for t in self.config.miners]
        save_plan(plan, path)
        self.requests_per_cycle = sum(len(m.requests) for m in plan)
        hinted = tuple(dataclasses.replace(m.target, dialect=m.dialect) for m in steady.miners)
        self.poller = Poller(dataclasses.replace(self.config, miners=hinted), self.state)
        return {
            "detect_cycle_s": first.duration_s,
            "recorded_cycle_s": steady.duration_s,
            "recorded_miners_up": steady.totals.up,
            "requests_per_cycle": self.requests_per_cycle,
            "dialects": dict(Counter(m.dialect for m in steady.miners)),
            "concurrency": self.config.poll.concurrency,
            "request_timeout_s": self.config.poll.request_timeout_s,
        }

    async def cycle(self) -> CycleResult:
        assert self.poller is not None, "record_plan first"
        before = self.state.snapshot.counters.polls
        cpu0, t0 = time.process_time(), time.perf_counter()
        snap = await self.poller.poll_once()
        duration, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = snap.counters.polls
        failed = {k: after[k] - before.get(k, 0) for k in after if k != "ok" and after[k] - before.get(k, 0)}
        # The poller does not count requests: a steady cycle sends the recorded plan's.
        return CycleResult(duration, len(snap.miners), snap.totals.up, self.requests_per_cycle, 0, cpu, failed)
    def render(self) -> dict[str, Any]:
        """Render /metrics for the latest snapshot as the agent does: per-miner text, then the registry tail."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.process_collector import ProcessCollector

        snapshot = self.state.snapshot
        renderer = MinerRenderer(self.config.exposition)  # one per process in the agent, label cache kept
        registry = CollectorRegistry()
        registry.register(FleetCollector(self.state))
        ProcessCollector(registry=registry)

        def once() -> tuple[float, float, bytes]:
            cpu0, t0 = time.process_time(), time.perf_counter()
            body = renderer.render(snapshot).encode() + generate_latest(registry)
            return time.perf_counter() - t0, time.process_time() - cpu0, body

        cold_s, _, body = once()
        runs = [once() for _ in range(RENDER_REPEATS)]
        warm = [wall for wall, _, _ in runs]
        t0 = time.perf_counter()
        packed = gzip.compress(body, compresslevel=1)  # the level agent/web.py serves gzip at
        gzip_s = time.perf_counter() - t0
        return {
            "render_s": warm,
            "render_median_s": statistics.median(warm),
            "render_cold_s": cold_s,
            "render_cpu_s": [cpu for _, cpu, _ in runs],
            "gzip_s": gzip_s,
            "bytes": len(body),
            "gzip_bytes": len(packed),
            "series": count_series(body.decode(), len(self.config.miners)),
        }
