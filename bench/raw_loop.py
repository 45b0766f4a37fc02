"""The floor: a minimal raw asyncio poll loop, sending the plan's requests and nothing else.

Per miner, under one deadline (a loop without one stalls on the first hung miner): for each request, a
new connection (cgminer answers one request per connection), one write, read until the miner closes,
cut at the NUL, json.loads. No repairs, no dialect parsing, no state, no metrics: what is left of the
megawatch poller's cycle time above this loop's is the price of everything the agent adds.
asyncio streams, as most hand-written pollers use them.
"""

from __future__ import annotations

import asyncio
import json

from bench.plan import CycleResult, MinerPlan, Tally, run_pool


class RawLoop:
    def __init__(self, plan: list[MinerPlan], concurrency: int, deadline_s: float) -> None:
        self._plan = plan
        self._concurrency = concurrency
        self._deadline_s = deadline_s
        # Encoded once, as the poller caches its requests (agent/protocol/client.py _encode_request).
        self._payloads = {r: json.dumps({"command": r}, separators=(",", ":")).encode()
                          for m in plan for r in m.requests}

    async def cycle(self) -> CycleResult:
        return await run_pool(self._plan, self._concurrency, self._poll)

    async def _poll(self, miner: MinerPlan, tally: Tally) -> None:
        try:
            async with asyncio.timeout(self._deadline_s):
                for request in miner.requests:
                    reader, writer = await asyncio.open_connection(miner.host, miner.port)
                    try:
                        writer.write(self._payloads[request])
                        data = await reader.read()  # the miner closes after its reply
                    finally:
                        writer.close()
                    body = data.partition(b"\0")[0]
                    json.loads(body)
                    tally.requests += 1
                    tally.reply_bytes += len(body)
        except TimeoutError:
            tally.errors["timeout"] += 1
        except OSError:
            tally.errors["connect"] += 1
        except ValueError:  # undecodable JSON: this loop does not repair
            tally.errors["bad_json"] += 1
        else:
            tally.miners_ok += 1
