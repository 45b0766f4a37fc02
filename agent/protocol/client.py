"""One request per TCP connection to a miner's CGMiner-style API (port 4028): deadlines, byte cap, errors.

Contract: `query` and `request_raw` raise nothing but MinerError subclasses (and PrivilegedCommandRefused,
before any connection is opened, and LocalShortage when the agent has no descriptor left for the socket:
our failure, not the miner's); CancelledError propagates. Every failure is mapped to the MinerError tree
in this module only:
- refused, unreachable, reset before any reply byte -> ConnectFailed
- connect not done within `connect_s` (or the whole deadline) -> PollTimeout(phase="connect")
- no complete reply within `request_s` of the start, connect included -> PollTimeout(phase="reply")
- EOF before any byte -> EmptyReply; more than `max_reply_bytes` -> ReplyTooLarge
- reset after some bytes -> BadReply ("truncated"): the miner did answer, and a cut reply is a malformed
  one, not an unreachable miner; the bytes are kept on the exception for diagnostics
- undecodable bytes -> BadReply; STATUS E/F -> CommandRejected (see framing).
A reply ends at the first NUL (cgminer's send_result) or at EOF, whichever comes first.

Sockets: the miner closes first. After a complete reply the call returns at the NUL and the connection
closes passively when the miner's FIN arrives (or is reset at the request deadline if it never does); on
every other path - timeout, byte cap, error, cancellation - it is reset at once (SO_LINGER 0, abort). So
TIME_WAIT never piles up on the poller (a poller that closed first would run out of local ports to
one miner within seconds on a real network).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from megawatch.agent.protocol.errors import (
    BadReply,
    CommandRejected,
    ConnectFailed,
    EmptyReply,
    LocalShortage,
    MinerError,
    PollTimeout,
    PrivilegedCommandRefused,
    ReplyTooLarge,
)
from megawatch.agent.protocol.framing import check_status, decode_reply, split_joined

DEFAULT_PORT = 4028
# Whatsminer M3 `stats` is 67 KB and Avalon `estats` ~8 KB per module (real replies): 1 MiB leaves room.
DEFAULT_MAX_REPLY_BYTES = 1 << 20
# cgminer reads the request with one recv() of at most 4095 bytes (api.c api(); see docs/protocol.md).
MAX_REQUEST_BYTES = 4095


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds allowed to connect, and for the whole exchange (connect included)."""

    connect_s: float = 3.0
    request_s: float = 10.0


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Per-command reply objects, commands the miner rejected inside a join, and the reply size.

    `reply_bytes` counts the body up to (not including) the terminating NUL.
    """

    replies: dict[str, dict[str, Any]]
    rejected: dict[str, CommandRejected]
    reply_bytes: int


# Commands that change a miner. Sent only with allow_control=True; anything not in READ_COMMANDS is refused
# too (default deny), so this list documents intent and is what the refusal message names.
PRIVILEGED_COMMANDS: frozenset[str] = frozenset(
    {
        # cgminer iswritemode commands (api.c cmds[])
        "pgaenable", "pgadisable", "pgaidentify", "switchpool", "addpool", "poolpriority", "poolquota",
        "enablepool", "disablepool", "removepool", "save", "quit", "privileged", "restart", "failover-only",
        "debug", "setconfig", "pgaset", "zero", "hotplug", "ascenable", "ascdisable", "ascidentify", "ascset",
        "lockstats",
        # older cgminer GPU writes
        "gpuenable", "gpudisable", "gpurestart", "gpuintensity", "gpumem", "gpuengine", "gpufan", "gpuvddc",
        # BFGMiner (README.RPC): per-processor writes, device rescans
        "procenable", "procdisable", "procidentify", "procset", "devscan",
        # Braiins OS
        "pause", "resume",
        # LuxOS (docs.luxor.tech; sessions and every setter)
        "logon", "logoff", "kill", "session", "curtail", "sleep", "wakeup", "fanset", "frequencyset",
        "frequencystop", "healthchipset", "healthctrlset", "ledset", "profileset", "reboot", "rebootdevice",
        "resetminer", "tempctrlset", "voltageset", "atmset", "addgroup", "removegroup", "groupquota",
        "updaterun", "updateset", "poolopts",
        # Whatsminer native writes (API v2.0.5) and the token step that precedes them
        "get_token", "update_pools", "restart_btminer", "power_off", "power_on", "manage_led", "set_led",
        "set_low_power", "set_normal_power", "set_high_power", "update_firmware", "factory_reset",
        "update_pwd", "set_target_freq", "enable_btminer_fast_boot", "disable_btminer_fast_boot",
        "enable_web_pools", "disable_web_pools", "set_hostname", "set_zone", "load_log", "set_power_pct",
        "set_power_pct_v2", "pre_power_on", "set_temp_offset", "adjust_power_limit", "adjust_upfreq_speed",
        "set_poweroff_cool", "set_fan_zero_speed", "net_config",
    }
)  # fmt: skip

# Commands known to only read. The poller and detection need nothing else.
READ_COMMANDS: frozenset[str] = frozenset(
    {
        # cgminer / bmminer / BFGMiner reports (see docs/protocol.md)
        "version", "config", "summary", "pools", "devs", "edevs", "devdetails", "stats", "estats",
        "dbgstats", "coin", "lcd", "notify", "usbstats", "asccount", "pgacount", "gpucount", "asc", "pga",
        "gpu", "check", "procs", "proc", "proccount",
        # Braiins OS
        "fans", "temps", "tempctrl", "tunerstatus",
        # LuxOS
        "power", "groups", "profiles", "limits", "frequencyget", "voltageget", "healthchipget", "healthctrl",
        "psuget", "atm",
        # Whatsminer native reads
        "status", "get_version", "get_psu", "get_miner_info", "get_error_code",
        # Avalon
        "litestats",
    }
)  # fmt: skip

_LINGER_RESET = struct.pack("ii", 1, 0)


class _Exchange(asyncio.Protocol):
    """One request/reply: write on connect, collect until the first NUL or EOF, resolve `done`.

    One timer serves both deadlines (a second timer or an asyncio.timeout block cost ~5-10 µs per poll,
    measured): it first fires at the connect deadline and, when the connection is already up, re-arms
    itself for the request deadline.
    """

    __slots__ = (
        "_chunks", "_deadline", "_limit", "_loop", "_payload", "_request_s", "_size", "_task", "_transport",
        "connect_expired", "done", "eof", "timer",
    )  # fmt: skip

    def __init__(self, payload: bytes, limit: int, deadlines: Deadlines) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._payload = payload
        self._limit = limit
        start = loop.time()
        self._deadline = start + deadlines.request_s
        self._request_s = deadlines.request_s
        self.done: asyncio.Future[bytes] = loop.create_future()
        self._chunks: list[bytes] = []
        self._size = 0
        self._transport: asyncio.Transport | None = None
        self.eof = False
        self.connect_expired = False
        self.timer = loop.call_at(min(self._deadline, start + deadlines.connect_s), self._on_timer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = tcp = cast(asyncio.Transport, transport)  # a stream connection's transport
        tcp.write(self._payload)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        nul = data.find(0)
        if nul >= 0:
            data = data[:nul]
        self._size += len(data)
        if self._size > self._limit:
            self._fail(ReplyTooLarge(f"reply passed {self._limit} bytes", self._limit))
            return
        self._chunks.append(data)
        if nul >= 0:
            self.done.set_result(b"".join(self._chunks))

    def eof_received(self) -> bool:
        self.eof = True
        self.timer.cancel()
        self._complete()
        return False  # the miner closed first: the transport closes politely, no TIME_WAIT on our side

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        if self.done.done():
            return
        if exc is None:
            self._complete()
        elif self._size == 0:
            self.done.set_exception(ConnectFailed(f"connection reset before any reply byte: {exc}"))
        else:
            self.done.set_exception(
                BadReply(f"reply truncated: connection reset after {self._size} bytes ({exc})", self._joined())
            )

    def _on_timer(self) -> None:
        if self._transport is None:
            # Still inside create_connection: only cancelling the task stops it; request_raw turns our
            # own cancellation (and only ours) into PollTimeout(phase="connect").
            self.connect_expired = True
            if self._task is not None:
                self._task.cancel()
        elif self._loop.time() < self._deadline:
            self.timer = self._loop.call_at(self._deadline, self._on_timer)
        else:
            # No reply by the deadline - or a reply but no close from the miner after its NUL.
            self._fail(PollTimeout(f"no complete reply within {self._request_s:g}s ({self._size} bytes came)", "reply"))

    def release(self) -> None:
        """End the exchange for the caller. Idempotent.

        After a complete reply the connection is left for the miner to close (cgminer closes right after
        its NUL): the close is then passive, with no TIME_WAIT here and no RST to build - measured ~20 µs
        of CPU per poll cheaper than resetting. The timer still resets it at the deadline should the miner
        keep it open. On every other path the connection is reset now.
        """
        # A failed exchange is kept alive by a reference cycle (its exception's traceback holds the frame that
        # holds us), which the agent's rare collections reach late: let go of the reply (up to the byte cap,
        # 1 MiB) now, or every oversize reply stays in memory until then (~1 MiB a poll, measured).
        self._chunks = []
        done = self.done
        if self.eof or self._transport is None:
            self.timer.cancel()
        elif not (done.done() and not done.cancelled() and done.exception() is None):
            self.timer.cancel()
            self.reset()

    def reset(self) -> None:
        """Drop the connection with an RST (no TIME_WAIT on our side)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass  # already dead: abort() below still releases the descriptor
        transport.abort()

    def _complete(self) -> None:
        if self.done.done():
            return
        if self._size == 0:
            self.done.set_exception(EmptyReply("miner closed the connection without sending a byte"))
        else:
            self.done.set_result(self._joined())

    def _fail(self, exc: MinerError) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        self.reset()

    def _joined(self) -> bytes:
        return b"".join(self._chunks)


async def request_raw(
    host: str,
    port: int,
    payload: bytes,
    *,
    deadlines: Deadlines = Deadlines(),
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
) -> bytes:
    """Send `payload` in one write on a new connection; return the reply body (without the NUL).

    Raises only MinerError subclasses (module docstring); CancelledError propagates.
    """
    exchange = _Exchange(payload, max_reply_bytes, deadlines)
    try:
        try:
            await exchange._loop.create_connection(lambda: exchange, host, port)
        except asyncio.CancelledError:
            task = exchange._task
            if exchange.connect_expired and task is not None and task.uncancel() == 0:
                raise PollTimeout(
                    f"connect to {host}:{port} not done within {min(deadlines.connect_s, deadlines.request_s):g}s",
                    "connect",
                ) from None
            raise
        except TimeoutError:  # the kernel's own connect timeout (ETIMEDOUT maps to TimeoutError)
            raise PollTimeout(f"connect to {host}:{port} timed out in the kernel", "connect") from None
        except OSError as exc:
            if exc.errno in _SHORTAGES:
                raise LocalShortage(f"no socket for {host}:{port}: {_reason(exc)}", exc.errno) from None
            raise ConnectFailed(f"connect to {host}:{port} failed: {_reason(exc)}") from None
        return await exchange.done
    finally:
        exchange.release()


async def query(
    host: str,
    commands: Sequence[str],
    *,
    port: int = DEFAULT_PORT,
    parameter: str | int | float | None = None,
    deadlines: Deadlines = Deadlines(),
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    allow_control: bool = False,
) -> QueryResult:
    """Send `commands` as one request (several are joined `a+b+c`) and return each command's reply object.

    A single command answered with STATUS E/F raises CommandRejected. For a join, sections with E/F land in
    `rejected`; a top-level error (firmware that cannot join: Code 14/23/45) or a join with no section
    answered raises CommandRejected, so the caller can fall back to single commands.
    A command that is not known to be read-only raises PrivilegedCommandRefused unless `allow_control`,
    before any connection is opened. ValueError for caller mistakes: no command, a parameter on a join,
    a request longer than cgminer reads.
    """
    names, payload = _prepare(tuple(commands), parameter, allow_control)
    raw = await request_raw(host, port, payload, deadlines=deadlines, max_reply_bytes=max_reply_bytes)
    obj = decode_reply(raw)
    if len(names) == 1:
        check_status(obj)
        return QueryResult({names[0]: obj}, {}, len(raw))
    replies, rejected = split_joined(obj, names)
    if not replies:
        first = next(iter(rejected.values()))
        detail = "; ".join(f"{name}: {exc.message}" for name, exc in rejected.items())
        raise CommandRejected(f"every command of the join was rejected ({detail})", first.code, first.status)
    return QueryResult(replies, rejected, len(raw))


def _prepare(
    commands: tuple[str, ...], parameter: str | int | float | None, allow_control: bool
) -> tuple[tuple[str, ...], bytes]:
    """The deduplicated command names and the encoded request, checked; the same few requests go to every
    miner every cycle, so the answer is memoised (the refusals and ValueErrors are not, and raise each time)."""
    key = (commands, parameter, type(parameter), allow_control)
    prepared = _PREPARED.get(key)
    if prepared is None:
        names = tuple(dict.fromkeys(commands))
        if not names:
            raise ValueError("query needs at least one command")
        if not allow_control:
            _refuse_unless_read_only(names)
        prepared = (names, _encode_request(names, parameter))
        if len(_PREPARED) >= 1024:  # parameters can come from callers: keep the memo bounded
            _PREPARED.clear()
        _PREPARED[key] = prepared
    return prepared


_PREPARED: dict[tuple[Any, ...], tuple[tuple[str, ...], bytes]] = {}


def _refuse_unless_read_only(names: tuple[str, ...]) -> None:
    refused = [name for name in names if name not in READ_COMMANDS]
    if refused:
        why = "a write command" if any(name in PRIVILEGED_COMMANDS for name in refused) else "not known to be read-only"
        sending = ", ".join(map(repr, refused))
        raise PrivilegedCommandRefused(f"refusing to send {sending}: {why}, control is not enabled")


def _encode_request(names: tuple[str, ...], parameter: str | int | float | None) -> bytes:
    request: dict[str, Any] = {"command": "+".join(names)}
    if parameter is not None:
        if len(names) > 1:
            raise ValueError("cgminer drops parameters in a joined request; send that command alone")
        request["parameter"] = parameter
    payload = json.dumps(request, separators=(",", ":")).encode()
    if len(payload) > MAX_REQUEST_BYTES:
        raise ValueError(f"request is {len(payload)} bytes; cgminer reads at most {MAX_REQUEST_BYTES}")
    return payload


# Our own process or host ran short (too many open files here or system-wide, no buffer space): not the miner.
_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS})


def _reason(exc: OSError) -> str:
    # The default loop wraps refusals as OSError(errno, "Connect call failed (...)"); name the errno instead.
    return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
