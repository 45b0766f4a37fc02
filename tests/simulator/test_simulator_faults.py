"""Each simulator fault is visible on the wire within its deadline and leaves the next miner alone."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from megawatch.simulator.behaviour import MAX_FAN_RPM

SUMMARY = b'{"command":"summary"}'


def summary_of(raw: bytes) -> dict:
    assert raw.endswith(b"\0"), raw[-40:]
    return json.loads(raw[:-1])["SUMMARY"][0]


@pytest.fixture
async def pair(make_sim_fleet):
    """Two stock cgminer miners side by side on one site: the faulty one and its neighbour."""
    fleet = await make_sim_fleet(groups=(("cgminer", "Antminer S19"),), sites=1, per_group=2)
    return fleet, fleet.miners[0], fleet.miners[1]


async def assert_neighbour_fine(raw_request, neighbour) -> None:
    reply = summary_of(await raw_request(neighbour.host, neighbour.port, SUMMARY, timeout=2.0))
    assert float(reply["MHS 5s"]) > 0


async def read_all(host: str, port: int, payload: bytes, timeout: float) -> tuple[bytes, BaseException | None]:
    """Everything the miner sent before EOF, a reset or the timeout, and which of those ended it."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(payload)
    got = bytearray()
    ended: BaseException | None = None
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                got += chunk
    except (TimeoutError, ConnectionResetError) as exc:
        ended = exc
    finally:
        writer.close()
    return bytes(got), ended


async def test_offline_refuses_and_comes_back_when_cleared(pair, raw_request):
    fleet, m, neighbour = pair
    fleet.set_fault([m], "offline")
    with pytest.raises(ConnectionRefusedError):
        await raw_request(m.host, m.port, SUMMARY)
    await assert_neighbour_fine(raw_request, neighbour)
    assert await fleet.backend.clear_faults() == 1
    async with asyncio.timeout(2):
        while not fleet.miner(m.index).listening:
            await asyncio.sleep(0.01)
    summary_of(await raw_request(m.host, m.port, SUMMARY))


async def test_hang_accepts_and_never_answers(pair, raw_request):
    fleet, m, neighbour = pair
    fleet.set_fault([m], "hang")
    reader, writer = await asyncio.open_connection(m.host, m.port)
    writer.write(SUMMARY)
    read = asyncio.ensure_future(reader.read(1))
    # The neighbour answers while the hung connection is open (one process, no serial API thread).
    await assert_neighbour_fine(raw_request, neighbour)
    done, _ = await asyncio.wait([read], timeout=0.3)
    assert not done, "a hung miner sent something"
    read.cancel()
    writer.close()


async def test_slow_answers_completely_after_the_delay(pair, raw_request):
    fleet, m, neighbour = pair
    fleet.set_fault([m], "slow", delay_s=0.3)
    started = time.monotonic()
    task = asyncio.ensure_future(raw_request(m.host, m.port, SUMMARY, timeout=3.0))
    await assert_neighbour_fine(raw_request, neighbour)
    reply = summary_of(await task)
    assert time.monotonic() - started >= 0.3
    assert float(reply["MHS 5s"]) > 0


async def test_drip_sends_one_byte_at_a_time(pair, raw_request):
    fleet, m, neighbour = pair
    fleet.set_fault([m], "drip", interval_ms=20)
    got, ended = await read_all(m.host, m.port, SUMMARY, timeout=0.3)
    assert isinstance(ended, TimeoutError)
    assert 3 <= len(got) <= 30, len(got)  # ~15 bytes in 0.3 s, never the whole reply
    assert got == b'{"STATUS":[{"STATUS":"S"'[: len(got)]
    await assert_neighbour_fine(raw_request, neighbour)


async def test_malformed_is_broken_json_with_the_nul(pair, raw_request):
    fleet, m, neighbour = pair
    fleet.set_fault([m], "malformed")
    raw = await raw_request(m.host, m.port, SUMMARY)
    assert raw.endswith(b"\0") and len(raw) > 100
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw[:-1])
    await assert_neighbour_fine(raw_request, neighbour)


async def test_truncated_stops_mid_reply_with_a_clean_close(pair, raw_request):
    fleet, m, neighbour = pair
    full = await raw_request(neighbour.host, neighbour.port, SUMMARY)
    fleet.set_fault([m], "truncated")
    got, ended = await read_all(m.host, m.port, SUMMARY, timeout=2.0)
    assert ended is None  # FIN, not a reset
    assert 0 < len(got) < len(full) - 50 and b"\0" not in got
    assert got.startswith(b'{"STATUS":[{"STATUS":"S"')
    await assert_neighbour_fine(raw_request, neighbour)


async def test_reset_cuts_the_reply_with_an_rst(pair, raw_request):
    fleet, m, neighbour = pair
    fleet.set_fault([m], "reset")
    got, ended = await read_all(m.host, m.port, SUMMARY, timeout=2.0)
    assert isinstance(ended, ConnectionResetError)
    assert b"\0" not in got
    await assert_neighbour_fine(raw_request, neighbour)


async def test_oversize_is_a_multi_megabyte_reply(pair, raw_request):
    fleet, m, neighbour = pair
    fleet.set_fault([m], "oversize", size_bytes=2 * 1024 * 1024)
    raw = await raw_request(m.host, m.port, SUMMARY)
    assert len(raw) >= 2 * 1024 * 1024 and raw.endswith(b"\0")
    assert json.loads(raw[:-1])["STATUS"][0]["STATUS"] == "S"  # huge, not broken
    await assert_neighbour_fine(raw_request, neighbour)


async def test_garbage_is_random_bytes(pair, raw_request):
    fleet, m, neighbour = pair
    fleet.set_fault([m], "garbage")
    raw = await raw_request(m.host, m.port, SUMMARY)
    assert len(raw) == 512 and not raw.startswith(b"{") and b"\0" not in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    await assert_neighbour_fine(raw_request, neighbour)


async def test_empty_closes_without_a_byte(pair, raw_request):
    fleet, m, neighbour = pair
    fleet.set_fault([m], "empty")
    got, ended = await read_all(m.host, m.port, SUMMARY, timeout=2.0)
    assert (got, ended) == (b"", None)
    await assert_neighbour_fine(raw_request, neighbour)


async def test_reboot_refuses_then_resets_uptime_and_counters(pair, raw_request):
    fleet, m, neighbour = pair
    fleet.fleet.clock.advance(100)  # 500 s in: the counters have something to lose
    before = summary_of(await raw_request(m.host, m.port, SUMMARY))
    assert before["Elapsed"] > 500 and before["Accepted"] > 0
    fleet.set_fault([m], "reboot", duration_s=0.3)
    with pytest.raises(ConnectionRefusedError):
        await raw_request(m.host, m.port, SUMMARY)
    assert (await fleet.truth())["sites"][m.site]["faults"] == {"reboot": 1}
    await assert_neighbour_fine(raw_request, neighbour)
    async with asyncio.timeout(3):
        while not fleet.miner(m.index).listening:
            await asyncio.sleep(0.02)
    fleet.fleet.clock.advance(2)
    after = summary_of(await raw_request(m.host, m.port, SUMMARY))
    assert after["Elapsed"] == 10  # two ticks of 5 s since it came back
    assert after["Accepted"] < before["Accepted"]
    assert fleet.miner(m.index).fault is None  # a reboot is an event, not a state


async def test_behaviour_faults_change_what_the_miner_measures(make_sim_fleet, raw_request):
    fleet = await make_sim_fleet(groups=(("btminer", "Whatsminer M30S++"),), sites=1, per_group=4)
    hot, dropped, surged, normal = fleet.miners

    async def summary(m):
        return summary_of(await raw_request(m.host, m.port, SUMMARY))

    base = {m.index: await summary(m) for m in fleet.miners}
    fleet.set_fault([hot], "overheat")
    fleet.set_fault([dropped], "hashrate_drop", drop=0.4)
    fleet.set_fault([surged], "power_surge", factor=1.5)
    now = {m.index: await summary(m) for m in fleet.miners}

    assert float(now[hot.index]["Chip Temp Avg"]) >= float(base[hot.index]["Chip Temp Avg"]) + 25
    assert now[hot.index]["Fan Speed In"] == now[hot.index]["Fan Speed Out"] == MAX_FAN_RPM
    ratio = now[dropped.index]["MHS av"] / base[dropped.index]["MHS av"]
    assert ratio == pytest.approx(0.6, rel=1e-3)
    assert now[surged.index]["Power"] == pytest.approx(base[surged.index]["Power"] * 1.5, rel=1e-3)
    assert now[surged.index]["MHS 5s"] == base[surged.index]["MHS 5s"]
    assert now[normal.index] == base[normal.index]
    truth = (await fleet.truth())["sites"][normal.site]
    assert truth["faults"] == {"overheat": 1, "hashrate_drop": 1, "power_surge": 1}
    assert truth["miners_serving"] == 4  # they still answer normally
