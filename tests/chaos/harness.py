"""What the chaos tests share: a real agent process against the in-process simulator, and a switching proxy.

The agent runs as its own process (`megawatch agent`), so its cycle timing, RSS and metrics are the real
ones; the simulator runs in the test's event loop, so the test reads each miner's ground truth directly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.processes import Proc, Procs, get_json, megawatch, wait_until

INTERVAL_S = 2.0
REQUEST_TIMEOUT_S = 1.0


def write_agent_config(path: Path, site: str, targets: Sequence[tuple[str, int]], **poll: Any) -> Path:
    """An agent config without dialect hints (every miner is detected), logging JSON."""
    settings = {"interval_s": INTERVAL_S, "connect_timeout_s": 0.5, "request_timeout_s": REQUEST_TIMEOUT_S,
                "jitter_s": 0, "stale_grace_s": 30, "concurrency": 256, **poll}
    entries = "".join(f"  - {{address: {host}, port: {port}}}\n" for host, port in targets)
    body = "".join(f"  {k}: {v}\n" for k, v in settings.items())
    path.write_text(f"site: {site}\nagent_id: chaos\nminers:\n{entries}poll:\n{body}"
                    "http: {listen: 127.0.0.1, port: 0}\nlog: {format: json, level: info}\n")
    return path


async def start_agent(procs: Procs, config: Path, http: aiohttp.ClientSession) -> Proc:
    proc = megawatch(procs, "agent", "agent", "--config", str(config))

    async def started() -> str | None:
        assert proc.alive(), proc.output()
        with proc.log.open(errors="replace") as log:  # the whole log: output() keeps only its tail
            lines = [log.readline() for _ in range(50)]
        for line in lines:
            if '"agent_started"' in line:
                host, port = json.loads(line)["listen"][0]
                return f"http://{host}:{port}"
        return None

    proc.url = await wait_until(started, 15, "the agent to start")
    return proc


async def cycle_number(http: aiohttp.ClientSession, agent: Proc) -> int:
    body = await get_json(http, agent.url + "/api/v1/summary")
    return int(body["cycle"]["number"]) if body else 0


async def wait_for_cycle(http: aiohttp.ClientSession, agent: Proc, number: int, timeout_s: float) -> int:
    """Wait until the agent has published cycle `number` (checked every 20 ms); return the cycle seen."""
    async def reached() -> int | None:
        assert agent.alive(), agent.output()
        n = await cycle_number(http, agent)
        return n if n >= number else None

    return await wait_until(reached, timeout_s, f"agent cycle {number}", every_s=0.02)


@dataclass
class Scrape:
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float | None:
        for n, lbl, v in self.samples:
            if n == name and all(lbl.get(k) == x for k, x in labels.items()):
                return v
        return None

    def by_miner(self, name: str) -> dict[str, float]:
        return {lbl["miner"]: v for n, lbl, v in self.samples if n == name and "miner" in lbl}


async def scrape(http: aiohttp.ClientSession, agent: Proc) -> Scrape:
    async with http.get(agent.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return Scrape([(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples])


async def miners(http: aiohttp.ClientSession, agent: Proc) -> dict[str, dict[str, Any]]:
    body = await get_json(http, agent.url + "/api/v1/miners")
    return {m["miner"]: m for m in body["miners"]}


@dataclass
class SwitchProxy:
    """One address whose answers come from one of several simulated miners: `use(i)` swaps which.

    How a dialect flip looks to the agent (a miner re-flashed with other firmware, or a DHCP lease handed
    to another machine): the simulator cannot change a miner's dialect while it runs, so the proxy swaps
    the miner behind the address instead. Each connection is relayed whole to the miner chosen when it opened.
    """

    targets: list[tuple[str, int]]
    current: int = 0
    server: asyncio.Server | None = None
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> SwitchProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def use(self, index: int) -> None:
        self.current = index

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._relay(reader, writer, self.targets[self.current]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     target: tuple[str, int]) -> None:
        try:
            async with asyncio.timeout(10):  # bounded: a relay never outlives the agent's deadline by much
                up_reader, up_writer = await asyncio.open_connection(*target)
                try:
                    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
                finally:
                    up_writer.close()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        # The miner closes after its reply: pass that on, so the agent sees the end of the reply.
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError:
                pass
