"""One simulated miner: its listener, its per-tick values and the tiny protocol that answers a request.

Cheap on purpose, because one process serves 10,000 of these: a listening socket handed to
loop.create_server, one small asyncio.Protocol per connection (no streams), a snapshot cached per tick.
Like cgminer, a connection gets one read, one reply ending in NUL, then the miner closes (so TIME_WAIT
lands here, as with real miners).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from megawatch.simulator import faults
from megawatch.simulator.behaviour import Identity, Snapshot, snapshot
from megawatch.simulator.faults import Fault
from megawatch.simulator.replies import firmware_for
from megawatch.simulator.requests import reply_to
from megawatch.simulator.writes import ControlState

if TYPE_CHECKING:
    from megawatch.simulator.fleet import Fleet, SiteState

LISTEN_BACKLOG = 100  # cgminer's QUEUE
MAX_REQUEST_BYTES = 4095  # cgminer's single recv() of TMPBUFSIZ/2-1 bytes
# A client that connects and never sends would hold a descriptor forever (cgminer's API thread would
# block on it); with 10,000 listeners in one process we cannot afford that, so we give up after a minute.
IDLE_CLOSE_S = 60.0
_LINGER_RST = struct.pack("ii", 1, 0)


class Miner:
    """A miner's mutable state. The fleet owns it; connections read it."""

    __slots__ = (
        "_cache",
        "_cache_key",
        "_reopen",
        "boot_tick",
        "booted_fresh",
        "control",
        "fault",
        "firmware",
        "fleet",
        "identity",
        "privileged",
        "rebooting",
        "server",
        "site",
    )

    def __init__(self, identity: Identity, fleet: Fleet, site: SiteState) -> None:
        self.identity = identity
        self.firmware = firmware_for(identity)
        self.fleet = fleet
        self.site = site
        self.fault: Fault | None = None
        self.privileged = 0
        self.control = ControlState()  # what write commands changed (simulator/writes.py)
        self.boot_tick = 0
        self.booted_fresh = False
        self.server: asyncio.AbstractServer | None = None
        self.rebooting = False
        self._cache_key: tuple[int, int] | None = None
        self._cache: Snapshot | None = None
        self._reopen: asyncio.TimerHandle | None = None

    # -- what it reports ---------------------------------------------------------------------------
    def snapshot(self, tick: int | None = None) -> Snapshot:
        """This tick's values (cached: every reply within a tick reports the same numbers)."""
        if tick is None:
            tick = self.fleet.clock.tick()
        key = (tick, self.fleet.generation)
        if key != self._cache_key or self._cache is None:
            self._cache = snapshot(
                self.identity, seed=self.fleet.seed, tick=tick, tick_s=self.fleet.clock.tick_s,
                load=self.site.load, boot_tick=self.boot_tick, booted_fresh=self.booted_fresh,
                fault=self.fault, stopped=self.control.stopped,
            )
            self._cache_key = key
        return self._cache

    def when(self, now: int) -> int:
        # Avalon has no RTC: its When counts seconds since boot.
        return self.snapshot().uptime_s if self.firmware.when_is_uptime else now

    @property
    def listening(self) -> bool:
        return self.server is not None

    @property
    def serving(self) -> bool:
        """Listening and answering with a complete, correct reply (maybe late): what a poll can read."""
        return self.server is not None and not self.rebooting and (self.fault is None or not self.fault.hides_reply)

    @property
    def hashing(self) -> bool:
        """Drawing power and hashing: everything except a miner that is off or restarting."""
        kind = self.fault.kind if self.fault is not None else None
        return not self.rebooting and kind != "offline"

    def reply(self, request: bytes, now: int) -> bytes:
        """The reply to `request` (body + NUL), from the fleet's per-tick cache when it has it."""
        fleet = self.fleet
        key = (self.identity.index, request, fleet.clock.tick(), fleet.generation)
        when = self.when(now)
        cached = fleet.replies.get(key, when)
        if cached is not None:
            return cached
        privileged = self.privileged
        body = reply_to(self, request, now)
        if self.privileged == privileged:  # a privileged request must be seen (and counted) every time
            fleet.replies.put(key, body, when)
        return body

    def count_privileged(self, name: str) -> None:
        self.privileged += 1
        self.fleet.privileged_seen(self, name)

    def request_restart(self) -> None:
        # Reply first ("RESTART"), then go down like the firmware does.
        asyncio.get_running_loop().call_soon(self.fleet.reboot_miner, self, faults.PARAMETERS["reboot"]["duration_s"])

    # -- listener --------------------------------------------------------------------------------------
    async def listen(self, sock: socket.socket | None = None) -> None:
        """Start accepting; `sock` is a socket already bound by the fleet (fast path at start-up)."""
        if self.server is not None:
            return
        if sock is None:
            sock = bind_listener(self.identity.host, self.identity.port)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: MinerConnection(self), sock=sock)

    def close_listener(self) -> None:
        """Stop accepting: new connections are refused (RST), as when the miner is off."""
        if self.server is not None:
            self.server.close()
            self.server = None

    def cancel_reopen(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None

    def schedule_reopen(self, delay_s: float, callback: Callable[[], object]) -> None:
        self.cancel_reopen()
        self._reopen = asyncio.get_running_loop().call_later(delay_s, callback)


def bind_listener(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket; raises OSError (EMFILE, EADDRINUSE, ...) so the caller can count."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class MinerConnection(asyncio.Protocol):
    """One accepted connection: read once, answer (through the miner's fault, if any), close."""

    __slots__ = ("answered", "miner", "pending", "sent", "timer", "transport")

    def __init__(self, miner: Miner) -> None:
        self.miner = miner
        self.transport: asyncio.Transport | None = None
        self.answered = False
        self.timer: asyncio.TimerHandle | None = None
        self.pending = b""
        self.sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP server's transports are always Transports
        fault = self.miner.fault
        # A hung miner never answers but still lets go of the socket after max_s.
        wait = fault.max_s if fault is not None and fault.kind == "hang" else IDLE_CLOSE_S
        self.timer = asyncio.get_running_loop().call_later(wait, transport.close)

    def data_received(self, data: bytes) -> None:
        # cgminer does a single recv(): later segments of the request are ignored.
        if self.answered or self.transport is None:
            return
        self.answered = True
        miner = self.miner
        fault = miner.fault
        if self.timer is not None and (fault is None or fault.kind != "hang"):
            self.timer.cancel()
            self.timer = None
        data = data[:MAX_REQUEST_BYTES]
        kind = fault.kind if fault is not None and fault.on_wire else None
        transport = self.transport
        if kind == "hang":
            return
        if kind == "empty":
            transport.close()  # request read, so this is a clean FIN with zero bytes, not a reset
            return
        if kind == "garbage":
            transport.write(faults.garbage(miner.fleet.seed, miner.identity.index, miner.fleet.clock.tick()))
            transport.close()
            return
        reply = miner.reply(data, int(time.time()))
        if kind is None:
            transport.write(reply)
            transport.close()
        elif kind == "slow":
            assert fault is not None  # kind comes from it
            self.timer = asyncio.get_running_loop().call_later(fault.delay_s, self._send_all, reply)
        elif kind == "drip":
            self.pending = reply
            self._drip()
        elif kind == "quirky":
            transport.write(faults.quirk(reply[:-1]) + b"\0")
            transport.close()
        elif kind == "lie":
            assert fault is not None  # kind comes from it
            transport.write(faults.lie(reply[:-1], fault.power_w, fault.duplicate >= 0.5) + b"\0")
            transport.close()
        elif kind == "malformed":
            transport.write(faults.malform(reply[:-1]) + b"\0")
            transport.close()
        elif kind == "truncated":
            transport.write(faults.truncate(reply))
            transport.close()
        elif kind == "reset":
            transport.write(faults.truncate(reply))
            self._reset()
        elif kind == "oversize":
            assert fault is not None  # kind comes from it
            transport.write(faults.oversize(reply[:-1], fault.size_bytes) + b"\0")
            transport.close()
        else:  # offline/reboot while a connection was already accepted: answer it
            transport.write(reply)
            transport.close()

    def _send_all(self, reply: bytes) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)
            self.transport.close()

    def _drip(self) -> None:
        self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.sent >= len(self.pending):
            transport.close()
            return
        transport.write(self.pending[self.sent:self.sent + 1])
        self.sent += 1
        interval = self.miner.fault.interval_ms if self.miner.fault is not None else 100.0
        self.timer = asyncio.get_running_loop().call_later(interval / 1000.0, self._drip)

    def _reset(self) -> None:
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER 0 turns close() into an RST: the peer sees ECONNRESET mid-reply.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        transport.abort()

    def eof_received(self) -> bool:
        # A client that half-closes after its request still gets the answer (slow/drip): keep our side
        # open. EOF before any request means there is nothing to answer: let the transport close.
        return self.answered

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None
