"""Process-wide settings the agent runs with; bench/ applies them too, so it measures the agent as it runs."""

from __future__ import annotations

import asyncio
import gc

# Each poll decodes a reply into a few hundred dicts and lists that reference counting frees at once, while
# the fleet's latest readings stay alive. With CPython's default thresholds (700, 10, 10) a young
# collection ran every ~3 polls and the older generations, which hold the whole fleet, were walked again
# and again: ~13% of the poller's CPU at 2,000 miners and ~25% at 10,000 (measured, 162 -> 139 and
# 198 -> 143 us per poll). Nothing on the poll path makes reference cycles in steady state (a failed poll's exception
# may); collections still run, 70x less often, and a full one still follows every 100 young ones.
GC_THRESHOLDS = (50_000, 10, 10)


def tune_gc() -> None:
    """Collect less often, and never walk what start-up built (modules, config): it is never garbage."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# With the thresholds above a young collection waits for 50,000 net new objects, and what only a collection
# frees - reference cycles, such as a failed request's exception and the frames its traceback holds - piled
# up meanwhile (measured under malformed HTTP requests: ~100 KiB of RSS a poll cycle, growing for minutes).
# A young collection every few seconds bounds that to seconds' worth; it walks only what is new since the
# last one (a few ms at 10,000 miners).
YOUNG_COLLECTION_S = 5.0


async def collect_young(every_s: float = YOUNG_COLLECTION_S) -> None:
    """Collect the two young generations every `every_s` seconds, forever."""
    while True:
        await asyncio.sleep(every_s)
        gc.collect(1)
