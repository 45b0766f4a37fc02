"""Read an HTTP body whole, up to a cap, from aiohttp's stream."""

from __future__ import annotations

from aiohttp import StreamReader


async def read_capped(stream: StreamReader, limit: int) -> bytes:
    """The whole body, or its first `limit` + 1 bytes when it is longer (so the caller can refuse it).

    `StreamReader.read(n)` returns what has arrived so far, up to n bytes - one network chunk, not the body:
    a reply larger than a chunk came back cut and failed to parse as JSON.
    """
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
