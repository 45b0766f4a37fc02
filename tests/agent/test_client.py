"""client: every fault over real loopback sockets (asyncio.start_server on 127.0.0.1:0), on both event loops.

Each fault scenario runs against its own misbehaving server and is followed by a normal query to a second,
healthy server; every scenario also checks that no task and no file descriptor outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megawatch.agent.protocol.client import (
    PRIVILEGED_COMMANDS,
    READ_COMMANDS,
    Deadlines,
    QueryResult,
    query,
    request_raw,
)
from megawatch.agent.protocol.errors import (
    BadReply,
    CommandRejected,
    ConnectFailed,
    EmptyReply,
    ErrorKind,
    MinerError,
    PollTimeout,
    PrivilegedCommandRefused,
    ReplyTooLarge,
)

LOCALHOST = "127.0.0.1"
SUMMARY = (
    b'{"STATUS":[{"STATUS":"S","When":1700000000,"Code":11,"Msg":"Summary","Description":"cgminer 4.11.1"}],'
    b'"SUMMARY":[{"Elapsed":5,"MHS av":13500000.12}],"id":1}'
)
POOLS = b'{"STATUS":[{"STATUS":"S","When":1700000000,"Code":7,"Msg":"1 Pool(s)"}],"POOLS":[{"POOL":0}],"id":1}'
INVALID_COMMAND = b'{"STATUS":[{"STATUS":"E","When":1700000000,"Code":14,"Msg":"Invalid command"}],"id":1}'
ACCESS_DENIED = (
    b'{"STATUS":[{"STATUS":"E","When":1700000000,"Code":45,"Msg":"Access denied to \'estats\' command",'
    b'"Description":"cgminer 4.9.0"}],"id":1}'
)
# A real capture kept in the repo (provenance in tests/golden/captures/SOURCES.md).
D3_BLISSZ = Path(__file__).resolve().parents[1] / "golden" / "captures" / "antminer-d3-blissz-cgminer4.10_stats.txt"
SHORT = Deadlines(connect_s=0.3, request_s=0.5)
# Scheduling slack on a shared 2-core machine; a deadline miss is a bug of whole seconds, not of this margin.
SLACK_S = 0.35
LINGER_RESET = struct.pack("ii", 1, 0)

Behaviour = Callable[["Server", bytes, asyncio.StreamWriter], Awaitable[None]]


# --- loopback servers and leak checks ------------------------------------------------------------------


@dataclass
class Server:
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set at teardown: behaviours end
    reader: asyncio.StreamReader | None = None  # of the latest connection

    async def pause(self, seconds: float) -> bool:
        """Wait `seconds` (the scenario's timing), or less when the test is over; True while it is not."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return not self.stop.is_set()


@contextlib.asynccontextmanager
async def serve(behaviour: Behaviour) -> AsyncIterator[Server]:
    """Run `behaviour` for each connection, after reading the request the way cgminer does (one recv)."""
    srv = Server()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        srv.connections += 1
        srv.reader = reader
        try:
            request = await reader.read(4095)
            srv.requests.append(request)
            await behaviour(srv, request, writer)
        except OSError as exc:  # the client reset us: recorded for the tests that expect it
            srv.errors.append(exc)
        finally:
            writer.close()
            srv.finished.set()

    # Backlog above the concurrency of any test here: a dropped SYN costs a 1 s retransmit.
    server = await asyncio.start_server(handle, LOCALHOST, 0, backlog=1024)
    srv.port = server.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        server.close()
        srv.stop.set()
        # Handlers end on `stop`; cancelling them instead trips a 3.11 streams callback bug (noisy log).
        await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 5.0)
        await server.wait_closed()


def open_sockets() -> int:
    """Sockets among this process's descriptors (uvloop keeps a /dev/null descriptor for the loop's life)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used is gone by now
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@contextlib.asynccontextmanager
async def no_leaks() -> AsyncIterator[None]:
    """Fail if a task or a socket opened inside the block is still there shortly after it."""
    tasks_before = asyncio.all_tasks()
    fds_before = open_sockets()
    yield
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 2.0
    # Closed transports release their socket on a later loop iteration: wait for it, bounded.
    while (open_sockets() > fds_before or asyncio.all_tasks() - tasks_before) and loop.time() < give_up:
        await asyncio.sleep(0.01)
    assert asyncio.all_tasks() - tasks_before == set()
    assert open_sockets() <= fds_before


async def healthy(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(SUMMARY + b"\x00")
    await writer.drain()


async def assert_next_query_succeeds(port: int) -> None:
    result = await query(LOCALHOST, ["summary"], port=port, deadlines=SHORT)
    assert result.replies["summary"]["SUMMARY"][0]["Elapsed"] == 5


def reply_with(body: bytes) -> Behaviour:
    async def behaviour(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(body)
        await writer.drain()

    return behaviour


def reset(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    writer.transport.abort()


# --- fault table: one server behaviour, the error query must raise, and what else must hold -------------


async def hang(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
    await srv.stop.wait()  # accept, read, never answer (a stuck cgminer API thread)


async def drip(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
    for byte in SUMMARY:  # 1 byte / 50 ms: ~7 s for the whole reply, far past the deadline
        writer.write(bytes([byte]))
        await writer.drain()
        if not await srv.pause(0.05):
            return


async def flood(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
    chunk = b"x" * 65536
    for _ in range(10_000):  # bounded: 640 MiB, never reached when the client keeps its cap
        writer.write(chunk)
        await writer.drain()


async def close_silently(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
    return  # cgminer's answer to a source outside --api-allow


async def reset_before_data(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
    reset(writer)


async def reset_mid_reply(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(SUMMARY[:40])
    await writer.drain()
    if await srv.pause(0.1):  # the scenario: the miner dies 100 ms into its reply
        reset(writer)


@dataclass(frozen=True)
class Fault:
    name: str
    behaviour: Behaviour
    expected: type[MinerError]
    kind: ErrorKind
    max_elapsed_s: float = SLACK_S
    phase: str | None = None
    message: str | None = None


FAULTS = (
    Fault("accept_and_hang", hang, PollTimeout, ErrorKind.TIMEOUT, SHORT.request_s + SLACK_S, phase="reply"),
    Fault("drip_feed", drip, PollTimeout, ErrorKind.TIMEOUT, SHORT.request_s + SLACK_S, phase="reply"),
    Fault("flood", flood, ReplyTooLarge, ErrorKind.TOO_LARGE),
    Fault("zero_byte_close", close_silently, EmptyReply, ErrorKind.EMPTY),
    Fault("reset_before_data", reset_before_data, ConnectFailed, ErrorKind.UNREACHABLE),
    Fault("reset_mid_reply", reset_mid_reply, BadReply, ErrorKind.MALFORMED, message="truncated"),
    Fault("plain_text", reply_with(b"Socket connect failed: Connection refused\n"), BadReply, ErrorKind.MALFORMED),
    Fault("truncated_without_nul", reply_with(SUMMARY[:60]), BadReply, ErrorKind.MALFORMED),
    Fault("status_e", reply_with(INVALID_COMMAND + b"\x00"), CommandRejected, ErrorKind.API_ERROR),
)


async def run_fault(fault: Fault) -> None:
    async with no_leaks(), serve(fault.behaviour) as bad, serve(healthy) as good:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(fault.expected) as info:
            await query(LOCALHOST, ["summary"], port=bad.port, deadlines=SHORT, max_reply_bytes=256 * 1024)
        elapsed = loop.time() - start
        assert elapsed < fault.max_elapsed_s, f"{fault.name} took {elapsed:.3f}s"
        assert info.value.kind is fault.kind
        if fault.phase is not None:
            assert info.value.phase == fault.phase  # type: ignore[attr-defined]
        if fault.message is not None:
            assert fault.message in info.value.message
        if fault.expected is ReplyTooLarge:
            # The cap aborts the connection: the flooding server's next write fails instead of going on.
            await asyncio.wait_for(bad.finished.wait(), 2.0)
            assert bad.errors and isinstance(bad.errors[0], ConnectionError)
        await assert_next_query_succeeds(good.port)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_fault_default_loop(fault: Fault) -> None:
    await run_fault(fault)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_uvloop(fault: Fault) -> None:
    uvloop.run(run_fault(fault))


# --- normal replies ------------------------------------------------------------------------------------


async def test_reply_with_nul_is_parsed_and_request_goes_in_one_segment() -> None:
    async with no_leaks(), serve(healthy) as srv:
        result = await query(LOCALHOST, ["summary"], port=srv.port)
    assert srv.requests == [b'{"command":"summary"}']
    assert result.replies["summary"]["SUMMARY"][0]["MHS av"] == 13500000.12
    assert result.rejected == {}
    assert result.reply_bytes == len(SUMMARY)


async def test_reply_without_nul_ends_at_eof() -> None:
    async with no_leaks(), serve(reply_with(SUMMARY)) as srv:
        result = await query(LOCALHOST, ["summary"], port=srv.port)
    assert result.replies["summary"]["STATUS"][0]["Msg"] == "Summary"


async def test_bytes_after_the_nul_are_not_part_of_the_reply() -> None:
    async with no_leaks(), serve(reply_with(SUMMARY + b"\x00\ngarbage")) as srv:
        assert await request_raw(LOCALHOST, srv.port, b'{"command":"summary"}') == SUMMARY


async def test_reply_is_returned_at_the_nul_even_if_the_miner_keeps_the_connection_open() -> None:
    # asic-rs claims some firmware ends with NUL but keeps the socket: return at once, reset at the deadline.
    async def reply_and_stay(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(SUMMARY + b"\x00")
        await writer.drain()
        assert srv.reader is not None
        await srv.reader.read()  # until the client drops the connection

    async with no_leaks(), serve(reply_and_stay) as srv:
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await query(LOCALHOST, ["summary"], port=srv.port, deadlines=SHORT)
        assert loop.time() - start < SHORT.request_s / 2
        assert result.replies["summary"]["SUMMARY"][0]["Elapsed"] == 5
        await asyncio.wait_for(srv.finished.wait(), SHORT.request_s + SLACK_S)
        assert SHORT.request_s - 0.05 < loop.time() - start
        assert srv.errors and isinstance(srv.errors[0], ConnectionResetError)


async def test_bmminer_reply_with_missing_comma_is_repaired() -> None:
    async with no_leaks(), serve(reply_with(D3_BLISSZ.read_bytes() + b"\x00")) as srv:
        result = await query(LOCALHOST, ["stats"], port=srv.port)
    assert [entry.get("ID") for entry in result.replies["stats"]["STATS"]] == [None, "D10"]


async def test_parameter_is_sent_with_a_single_command() -> None:
    async with no_leaks(), serve(reply_with(SUMMARY + b"\x00")) as srv:
        await query(LOCALHOST, ["asc"], port=srv.port, parameter=0)
    assert json.loads(srv.requests[0]) == {"command": "asc", "parameter": 0}


async def test_status_e_carries_code_and_message() -> None:
    async with no_leaks(), serve(reply_with(INVALID_COMMAND + b"\x00")) as srv:
        with pytest.raises(CommandRejected) as info:
            await query(LOCALHOST, ["summary"], port=srv.port)
    assert (info.value.code, info.value.message, info.value.status) == (14, "Invalid command", "E")


async def test_many_concurrent_queries_each_get_their_own_reply() -> None:
    async def echo_command(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
        command = json.loads(request)["parameter"]
        writer.write(b'{"STATUS":[{"STATUS":"S"}],"ECHO":[{"n":%d}],"id":1}\x00' % command)
        await writer.drain()

    async with no_leaks(), serve(echo_command) as srv:
        results = await asyncio.gather(*(query(LOCALHOST, ["asc"], port=srv.port, parameter=n) for n in range(200)))
    assert [r.replies["asc"]["ECHO"][0]["n"] for r in results] == list(range(200))


def time_wait_towards(port: int) -> int:
    """TIME_WAIT sockets whose peer is `port`: the client side of connections to that server."""
    if shutil.which("ss"):  # filtered in the kernel: /proc/net/tcp takes ~0.4 s beside a 10k-miner simulator
        out = subprocess.run(
            ["ss", "-Htan", "state", "time-wait", "dport", "=", f":{port}"], capture_output=True, text=True, check=True
        ).stdout
        return len(out.splitlines())
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        count += fields[3] == "06" and int(fields[2].rsplit(":", 1)[1], 16) == port
    return count


async def many_polls_leave_no_time_wait_on_the_poller() -> None:
    # Real miners close after replying; TIME_WAIT must land there, never on the poller. This
    # miner closes 50 ms after its NUL, so a client that closed politely at the NUL would close first.
    async def reply_then_close_late(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(SUMMARY + b"\x00")
        await writer.drain()
        await srv.pause(0.05)

    async with serve(reply_then_close_late) as srv:
        async with no_leaks():
            await asyncio.gather(*(query(LOCALHOST, ["summary"], port=srv.port) for _ in range(50)))
        assert time_wait_towards(srv.port) == 0


async def test_no_time_wait_on_the_poller_default_loop() -> None:
    await many_polls_leave_no_time_wait_on_the_poller()


def test_no_time_wait_on_the_poller_uvloop() -> None:
    uvloop.run(many_polls_leave_no_time_wait_on_the_poller())


# --- joins ---------------------------------------------------------------------------------------------


def joined(sections: dict[str, bytes]) -> bytes:
    parts = b",".join(b'"%s":[%s]' % (name.encode(), body) for name, body in sections.items())
    return b"{" + parts + b',"id":1}\x00'


async def test_join_is_one_request_and_is_split_per_command() -> None:
    reply = joined({"summary": SUMMARY, "pools": POOLS, "estats": ACCESS_DENIED})
    async with no_leaks(), serve(reply_with(reply)) as srv:
        result = await query(LOCALHOST, ["summary", "pools", "estats"], port=srv.port)
    assert srv.requests == [b'{"command":"summary+pools+estats"}']
    assert set(result.replies) == {"summary", "pools"}
    assert result.replies["pools"]["POOLS"] == [{"POOL": 0}]
    assert result.rejected["estats"].code == 45


async def test_join_refused_at_top_level_raises_so_the_poller_can_fall_back() -> None:
    async with no_leaks(), serve(reply_with(INVALID_COMMAND + b"\x00")) as srv:
        with pytest.raises(CommandRejected) as info:
            await query(LOCALHOST, ["summary", "pools"], port=srv.port)
    assert info.value.code == 14


async def test_join_with_every_section_rejected_raises() -> None:
    reply = joined({"summary": INVALID_COMMAND, "estats": ACCESS_DENIED})
    async with no_leaks(), serve(reply_with(reply)) as srv:
        with pytest.raises(CommandRejected) as info:
            await query(LOCALHOST, ["summary", "estats"], port=srv.port)
    assert info.value.code == 14
    assert "estats" in info.value.message


async def test_join_answered_as_a_single_reply_raises() -> None:
    # Firmware that ignores `+` and answers only the first command: no section is there.
    async with no_leaks(), serve(reply_with(SUMMARY + b"\x00")) as srv:
        with pytest.raises(CommandRejected, match="missing"):
            await query(LOCALHOST, ["summary", "pools"], port=srv.port)


async def test_parameter_on_a_join_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        await query(LOCALHOST, ["summary", "pools"], port=1, parameter=0)


# --- read-only by construction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "commands", [["restart"], ["summary", "addpool"], ["summary+quit"], ["frobnicate"], ["curtail"]],
)
async def test_write_or_unknown_command_is_refused_before_connecting(commands: list[str]) -> None:
    async with no_leaks(), serve(healthy) as srv:
        with pytest.raises(PrivilegedCommandRefused):
            await query(LOCALHOST, commands, port=srv.port)
    assert srv.connections == 0


async def test_write_command_goes_out_when_control_is_enabled() -> None:
    async with no_leaks(), serve(reply_with(b'{"STATUS":"RESTART","id":1}\x00')) as srv:
        result = await query(LOCALHOST, ["restart"], port=srv.port, allow_control=True)
    assert srv.requests == [b'{"command":"restart"}']
    assert result.replies["restart"]["STATUS"] == "RESTART"


def test_no_command_is_both_read_only_and_privileged() -> None:
    assert READ_COMMANDS & PRIVILEGED_COMMANDS == frozenset()
    assert {"summary", "stats", "version", "pools", "devs", "tunerstatus", "power"} <= READ_COMMANDS


# --- connect phase -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


async def connect_refused() -> None:
    async with no_leaks(), serve(healthy) as good:
        with pytest.raises(ConnectFailed, match="refused"):
            await query(LOCALHOST, ["summary"], port=free_port(), deadlines=SHORT)
        await assert_next_query_succeeds(good.port)


@contextlib.contextmanager
def full_backlog() -> socket.socket:  # type: ignore[misc]
    """A listener that never accepts, its backlog filled, so a further SYN is dropped and connect hangs."""
    listener = socket.socket()
    fillers = [socket.socket() for _ in range(3)]
    try:
        listener.bind((LOCALHOST, 0))
        listener.listen(0)
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        yield listener
    finally:
        for sock in (*fillers, listener):
            sock.close()


async def connect_hangs() -> None:
    with full_backlog() as listener:
        async with no_leaks(), serve(healthy) as good:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(PollTimeout) as info:
                await query(LOCALHOST, ["summary"], port=listener.getsockname()[1], deadlines=SHORT)
            elapsed = loop.time() - start
            assert info.value.phase == "connect"
            assert SHORT.connect_s - 0.05 < elapsed < SHORT.connect_s + SLACK_S
            await assert_next_query_succeeds(good.port)


async def cancelled_while_connecting_propagates() -> None:
    with full_backlog() as listener:
        async with no_leaks():
            task = asyncio.ensure_future(query(LOCALHOST, ["summary"], port=listener.getsockname()[1]))
            await asyncio.sleep(0.05)  # aim at the connect phase; cancelling earlier must propagate too
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def cancelled_while_reading_propagates() -> None:
    async with no_leaks(), serve(hang) as srv:
        task = asyncio.ensure_future(query(LOCALHOST, ["summary"], port=srv.port))
        await asyncio.wait_for(_until(lambda: srv.requests), 2.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _until(condition: Callable[[], object]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


CONNECT_SCENARIOS = (
    connect_refused, connect_hangs, cancelled_while_connecting_propagates, cancelled_while_reading_propagates,
)


@pytest.mark.parametrize("scenario", CONNECT_SCENARIOS, ids=[s.__name__ for s in CONNECT_SCENARIOS])
async def test_connect_default_loop(scenario: Callable[[], Awaitable[None]]) -> None:
    await scenario()


@pytest.mark.parametrize("scenario", CONNECT_SCENARIOS, ids=[s.__name__ for s in CONNECT_SCENARIOS])
def test_connect_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(scenario())


# --- arbitrary server behaviour ------------------------------------------------------------------------

HYPOTHESIS_DEADLINES = Deadlines(connect_s=0.3, request_s=0.5)

_chunks = st.lists(
    st.tuples(st.binary(max_size=16 * 1024), st.floats(min_value=0.0, max_value=0.3)), max_size=4
)  # up to 64 KiB in all, NULs included, each chunk after a 0-0.3 s pause


async def arbitrary_exchange(chunks: list[tuple[bytes, float]], ending: str, cap: int) -> None:
    async def behaviour(srv: Server, request: bytes, writer: asyncio.StreamWriter) -> None:
        for data, pause in chunks:
            if not await srv.pause(pause):
                return
            writer.write(data)
            await writer.drain()
        if ending == "hang":
            await srv.stop.wait()
        elif ending == "reset":
            reset(writer)

    async with no_leaks(), serve(behaviour) as srv:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            result = await query(
                LOCALHOST, ["summary", "pools"], port=srv.port, deadlines=HYPOTHESIS_DEADLINES, max_reply_bytes=cap
            )
        except MinerError:
            pass
        else:
            assert isinstance(result, QueryResult)
        assert loop.time() - start < HYPOTHESIS_DEADLINES.request_s + SLACK_S


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(chunks=_chunks, ending=st.sampled_from(["close", "hang", "reset"]), cap=st.sampled_from([1 << 20, 4096]))
def test_arbitrary_replies_give_a_result_or_a_miner_error_within_the_deadline(
    chunks: list[tuple[bytes, float]], ending: str, cap: int
) -> None:
    asyncio.run(arbitrary_exchange(chunks, ending, cap))
