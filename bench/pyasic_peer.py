"""The peer: pyasic's low-level RPC client sending the plan's requests (a bench-only extra, never a runtime dep).

One `pyasic.rpc.cgminer.CGMinerRPCAPI` per miner, made once and kept (as a pyasic user keeps a miner
object); each request goes through its `send_command`, which opens a connection, writes, reads to EOF,
repairs and decodes the reply and checks STATUS. A joined request is sent as its `a+b+c` command string,
which is what pyasic's own `multicommand` puts on the wire (without re-checking the command list on
every call). The same worker pool and concurrency as the megawatch poller and the raw loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.plan import CycleResult, MinerPlan, Tally, run_pool


def pyasic_version() -> str:
    """pyasic's version; raises ImportError (with pip's advice) when the bench extra is not installed."""
    from importlib import import_module
    from importlib.metadata import PackageNotFoundError, version

    import_module("pyasic.rpc.cgminer")  # the import the bench needs, so it fails here and not mid-run
    try:
        return version("pyasic")
    except PackageNotFoundError:
        return "unknown"


class PyasicRPC:
    def __init__(self, plan: list[MinerPlan], concurrency: int, deadline_s: float) -> None:
        from pyasic.rpc.cgminer import CGMinerRPCAPI

        self._plan = plan
        self._concurrency = concurrency
        self._deadline_s = deadline_s
        self._apis: dict[tuple[str, int], Any] = {(m.host, m.port): CGMinerRPCAPI(m.host, m.port) for m in plan}

    async def cycle(self) -> CycleResult:
        return await run_pool(self._plan, self._concurrency, self._poll)

    async def _poll(self, miner: MinerPlan, tally: Tally) -> None:
        api = self._apis[miner.host, miner.port]
        try:
            # pyasic's own read timeout is 100 s; the same per-miner deadline as the other peers keeps
            # a stuck run bounded.
            async with asyncio.timeout(self._deadline_s):
                for request in miner.requests:
                    await api.send_command(request)
                    tally.requests += 1
        except TimeoutError:
            tally.errors["timeout"] += 1
        # pyasic raises its APIError (and lets other exceptions through) for a failed command: each is
        # counted under its class name rather than hidden.
        except Exception as exc:
            tally.errors[type(exc).__name__] += 1
        else:
            tally.miners_ok += 1
