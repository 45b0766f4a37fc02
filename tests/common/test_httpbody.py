"""read_capped: a body sent in several chunks comes back whole; a longer one is cut at the cap + 1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from megawatch.common.httpbody import read_capped

CHUNK = b'{"miners": [' + b'"x",' * 4000 + b'"y"]}'  # ~16 KB, written in pieces


async def chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    for start in range(0, len(CHUNK), 1000):
        await resp.write(CHUNK[start:start + 1000])
        await asyncio.sleep(0)  # let each piece reach the socket on its own
    await resp.write_eof()
    return resp


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/", chunked)
    async with TestServer(app, host="127.0.0.1") as srv:
        yield srv


async def test_a_body_in_many_chunks_is_read_whole(server: TestServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/")) as resp:
        body = await read_capped(resp.content, 1 << 20)
    assert body == CHUNK


async def test_a_longer_body_comes_back_one_byte_over_the_cap(server: TestServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/")) as resp:
        body = await read_capped(resp.content, 5000)
    assert body == CHUNK[:5001]
