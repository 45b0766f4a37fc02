"""Bounds on what HTTP clients can hold of a daemon: connections, idle time, file descriptors.

Every open connection is a file descriptor, and the agent needs descriptors for its polls. Without bounds a
loopback slow-loris (connections opened, a header never finished) took the whole `nofile` limit, and polls
then failed with "Too many open files". So:

- at most MAX_CONNECTIONS connections per server. When one more arrives, the oldest connection without a
  request in progress is closed (an idle keep-alive or a request still not sent); when every connection is
  busy, the new one is closed at once. A scraper's request in progress is never cut;
- FIRST_REQUEST_S: a new connection must have sent a complete request within that time (however slowly it
  trickles bytes), or it is closed;
- KEEPALIVE_S: a connection is closed after that long idle between requests (longer than the usual 15-60 s
  scrape interval, so Prometheus and the collector reuse their connections rather than race its close);
- TLS_HANDSHAKE_S for a TLS handshake (connections in the handshake are not yet counted above).

`check_fd_limit` says at start-up whether RLIMIT_NOFILE covers polls + HTTP + a reserve, raising the soft
limit toward the hard one when it does not.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from megawatch.common.logs import get_logger

MAX_CONNECTIONS = 64  # Prometheus, a federation, a few browsers: far fewer are ever needed
# Connections waiting in the kernel to be accepted. Accepted ones over the cap are closed an event-loop turn
# later, so a burst can hold this many descriptors beyond MAX_CONNECTIONS for a moment.
ACCEPT_BACKLOG = 32
HTTP_DESCRIPTORS = MAX_CONNECTIONS + ACCEPT_BACKLOG
FIRST_REQUEST_S = 10.0
KEEPALIVE_S = 75.0
TLS_HANDSHAKE_S = 10.0
# Descriptors besides polls and HTTP: log files, the event loop, thread pool wake-ups, client sessions.
FD_RESERVE = 64


class ConnectionCap:
    """The protocol factory of one aiohttp server, with MAX_CONNECTIONS enforced at accept time."""

    def __init__(self, limit: int = MAX_CONNECTIONS) -> None:
        self.server: web.Server | None = None  # the runner's, once it is set up (the app is frozen by then)
        self._limit = limit
        self._busy: set[object] = set()  # handlers (connections) with a request in progress
        self._served: set[object] = set()  # new handlers that have started a request (until their check)
        self.evicted = 0  # idle connections closed to make room
        self.refused = 0  # new connections closed because every one was busy
        self.timed_out = 0  # new connections closed for sending no complete request in FIRST_REQUEST_S

    @web.middleware
    async def track(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Middleware: marks the connection busy while its request is handled."""
        protocol = request.protocol
        self._busy.add(protocol)
        self._served.add(protocol)
        try:
            return await handler(request)
        finally:
            self._busy.discard(protocol)

    def __call__(self) -> asyncio.BaseProtocol:
        server = self.server
        assert server is not None, "ConnectionCap.server is set after the runner's setup"
        connections = server.connections  # oldest first (accept order)
        if len(connections) >= self._limit:
            idle = next((h for h in connections if h not in self._busy), None)
            if idle is None:
                self.refused += 1
                return _Closed()
            self.evicted += 1
            idle.force_close()
        handler = server()
        asyncio.get_running_loop().call_later(FIRST_REQUEST_S, self._first_request_due, handler)
        return handler

    def _first_request_due(self, handler: RequestHandler) -> None:
        if handler in self._served:
            self._served.discard(handler)
        elif handler not in self._busy and handler.transport is not None:
            self.timed_out += 1
            handler.force_close()


class _Closed(asyncio.Protocol):
    """A connection over the limit: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def check_fd_limit(daemon: str, polls: int, http: int = HTTP_DESCRIPTORS) -> int:
    """Make sure RLIMIT_NOFILE covers `polls` concurrent polls + `http` connections (with the accept
    backlog) + FD_RESERVE.

    Raises the soft limit toward the hard one when short (as Go programs do on start); logs fd_limit_raised,
    or fd_limit_too_low with the numbers when even the hard limit is short (one event either way). Returns
    the soft limit in force.
    """
    log = get_logger()
    needed = polls + http + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    previous = soft
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
        else:
            soft = target
    if soft < needed:
        log.warning("fd_limit_too_low", daemon=daemon, limit=soft, previous_limit=previous, hard_limit=hard,
                    needed=needed, polls=polls, http=http, reserve=FD_RESERVE,
                    fix="raise LimitNOFILE (systemd) or ulimit -n, or lower poll.concurrency")
    elif soft != previous:
        log.info("fd_limit_raised", daemon=daemon, previous_limit=previous, limit=soft, needed=needed)
    return soft
