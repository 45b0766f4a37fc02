"""What a hostile miner or client leaves in the agent's memory once its request is over: nothing big.

A reply past the byte cap used to stay in memory (up to the cap, 1 MiB) for as long as its failed exchange
lived, and a reference cycle keeps a failed exchange alive until a garbage collection - which the agent's
tuned thresholds make rare. The soak test (tests/soak) shows the effect over minutes; this shows the cause
in a second: with collections off, twenty oversize replies may not hold twenty buffers.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from megawatch.agent.protocol.client import Deadlines, request_raw
from megawatch.agent.protocol.errors import ReplyTooLarge
from megawatch.agent.runtime import collect_young

CAP = 256 * 1024
REPLIES = 20


@pytest.fixture
async def flooding_miner() -> AsyncIterator[int]:
    """A 'miner' that answers every request with 4 x CAP bytes and no NUL."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1024)
            writer.write(b"x" * (4 * CAP))
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_an_oversize_reply_is_not_kept_after_its_request(flooding_miner: int) -> None:
    gc.collect()
    gc.disable()  # as between the agent's rare collections
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(REPLIES):
            with pytest.raises(ReplyTooLarge):
                await request_raw("127.0.0.1", flooding_miner, b'{"command":"summary"}',
                                  deadlines=Deadlines(connect_s=2, request_s=5), max_reply_bytes=CAP)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gc.enable()
    assert held < 2 * CAP, f"{held / 1024:.0f} KiB still held after {REPLIES} oversize replies"


async def test_young_collections_run_on_their_own() -> None:
    collections = gc.get_stats()[1]["collections"]
    task = asyncio.create_task(collect_young(every_s=0.01))
    try:
        async def collected() -> None:
            while gc.get_stats()[1]["collections"] <= collections:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(collected(), 5)
    finally:
        task.cancel()
