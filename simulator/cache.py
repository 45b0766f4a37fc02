"""Replies already rendered in this tick, so a miner polled twice within a tick answers cheaply.

A poll cycle shorter than the tick (tests, the e2e run, an agent's detection pass followed by its first
poll) asks the same miner the same thing several times per tick; rendering costs a few hundred µs per
reply and runs on the event loop every miner shares. Only `When` (the wall clock) is brought up to date
on a hit; requests with a privileged command are never cached, so each one is counted.
"""

from __future__ import annotations

from collections import OrderedDict

# Bounded (~5 KB a reply): every reply of a 1,000-miner test fleet, ~20 MB at most in a worker.
DEFAULT_ENTRIES = 4096
# How When sits in a reply: JSON compact/sorted (`"When":N,` / `"When":N}`), Python-spaced, legacy text.
_WHEN_FORMS = ((b":", b","), (b":", b"}"), (b": ", b","), (b": ", b"}"), (b"=", b","))


class ReplyCache:
    __slots__ = ("_entries", "_limit", "hits", "misses")

    def __init__(self, limit: int = DEFAULT_ENTRIES) -> None:
        self._entries: OrderedDict[tuple[int, bytes, int, int], tuple[bytes, int]] = OrderedDict()
        self._limit = limit
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[int, bytes, int, int], when: int) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        body, rendered_when = entry
        if rendered_when == when:
            return body
        old, new = str(rendered_when).encode(), str(when).encode()
        for before, after in _WHEN_FORMS:
            body = body.replace(before + old + after, before + new + after)
        return body

    def put(self, key: tuple[int, bytes, int, int], body: bytes, when: int) -> None:
        self._entries[key] = (body, when)
        self._entries.move_to_end(key)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
