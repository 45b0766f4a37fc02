"""Optional TLS and basic auth for every HTTP server we run, from a Prometheus-style web-config file.

The file has the shape of Prometheus's exporter-toolkit web config, so operators (and Prometheus's own
`scrape_config` with `scheme: https`, `tls_config` and `basic_auth`) use what they already know:

    tls_server_config:
      cert_file: agent.crt          # relative paths are read from beside this file
      key_file: agent.key
      min_version: TLS12            # TLS12 (default) or TLS13
    basic_auth_users:
      prometheus: $2b$10$...        # bcrypt hash: `python -c 'import bcrypt; print(bcrypt.hashpw(...))'`

Either part may be left out. A bad file is a ConfigError, one line per problem, naming file, line and key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Middleware

from megawatch.common.configfile import Section
from megawatch.common.yamlfile import file_problem

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# $2a$/$2b$/$2y$ (htpasswd -B writes 2y), cost, 53 characters of salt and hash.
_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
REALM = "megawatch"
# Successful checks are remembered (by a SHA-256 of user and password, never the password itself): bcrypt
# costs ~0.15 s of CPU at cost 10, and Prometheus sends the same credentials on every scrape.
_CACHE_SIZE = 256
# Concurrent bcrypt checks: a flood of wrong passwords may take this many threads, never the event loop.
_CHECKS_IN_FLIGHT = 2
# Per client address: bcrypt checks waiting or running, and a budget of failed checks (a burst, refilled one
# every few seconds). Past either, the request gets 429 without a check: a flood from one address queues at
# most two checks, so another client's first login waits for a few checks at most, not for the whole flood.
_PER_SOURCE_IN_FLIGHT = 2
_FAILURE_BURST = 10
_FAILURE_REFILL_S = 6.0
_SOURCES_KEPT = 4096


@dataclass(frozen=True, slots=True)
class WebConfig:
    """TLS (when `ssl_context` is set) and basic-auth users (when `users` is not empty)."""

    path: str
    cert_file: Path | None = None
    key_file: Path | None = None
    min_version: str | None = None
    users: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check a web-config file, loading the certificate and key; raise ConfigError on any problem."""
    top = Section.of_file(path, "web config file")
    base = Path(path).parent
    tls = top.section("tls_server_config")
    cert_file = key_file = min_version = None
    context = None
    if top.has("tls_server_config"):
        cert_file = tls.string("cert_file")
        key_file = tls.string("key_file")
        min_version = tls.choice("min_version", tuple(TLS_VERSIONS), "TLS12")
        tls.done()
    users_section = top.section("basic_auth_users")
    users: dict[str, bytes] = {}
    for user in list(users_section.data):
        hashed = users_section.string(str(user), check=lambda v: bool(_BCRYPT.match(v)), secret=True,
                                      expected="a bcrypt hash such as '$2b$10$...' (not the password itself)")
        if not isinstance(user, str) or not user or ":" in user:
            users_section.error(str(user), "expected a user name without ':'")
        elif hashed is not None:
            users[user] = hashed.encode()
    users_section.done()
    top.done()
    top.problems.raise_if_any()
    if cert_file is not None and key_file is not None:
        cert_path, key_path = base / cert_file, base / key_file
        context = _server_context(tls, cert_path, key_path, min_version or "TLS12")
        top.problems.raise_if_any()
        return WebConfig(str(path), cert_path, key_path, min_version, MappingProxyType(users), context)
    return WebConfig(str(path), users=MappingProxyType(users))


def _server_context(tls: Section, cert: Path, key: Path, min_version: str) -> ssl.SSLContext | None:
    for name, file in (("cert_file", cert), ("key_file", key)):
        problem = file_problem(file)
        if problem is not None:
            tls.error(name, f"{problem}: {str(file)!r}")
    if tls.problems.items:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = TLS_VERSIONS[min_version]
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        tls.error("cert_file", f"cannot load the certificate and key pair ({str(cert)!r}, {str(key)!r}): "
                               f"{exc.reason or exc}")
        return None
    except OSError as exc:
        tls.error("cert_file", f"cannot read the certificate or key ({str(cert)!r}, {str(key)!r}): "
                               f"{exc.strerror or exc}")
        return None
    return context


@dataclass(slots=True)
class _Source:
    """One client address's share of the bcrypt work."""

    tokens: float
    at: float  # monotonic time `tokens` was last refilled
    in_flight: int = 0


class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes, off the event loop, with a bounded cache.

    `allows` answers True, False (401) or None: too many checks from that address (429, no check made).
    """

    def __init__(self, users: Mapping[str, bytes], clock: Callable[[], float] = time.monotonic) -> None:
        self._users = users
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._slots = asyncio.Semaphore(_CHECKS_IN_FLIGHT)
        # Unknown users are checked against a real hash too, so "no such user" takes as long as "wrong password".
        self._decoy = next(iter(users.values()), None)
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._clock = clock

    async def allows(self, header: str | None, source: str = "") -> bool | None:
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        digest = hashlib.sha256(user.encode() + b"\0" + password).digest()
        if digest in self._ok:
            self._ok.move_to_end(digest)
            return True
        hashed = self._users.get(user)
        against = hashed if hashed is not None else self._decoy
        if against is None:
            return False
        src = self._source(source)
        if src.in_flight >= _PER_SOURCE_IN_FLIGHT or src.tokens < 1:
            return None
        src.in_flight += 1
        try:
            async with self._slots:
                ok = await asyncio.to_thread(_checkpw, password, against)
        finally:
            src.in_flight -= 1
        if not ok or hashed is None:
            src.tokens -= 1
            return False
        self._ok[digest] = None
        if len(self._ok) > _CACHE_SIZE:
            self._ok.popitem(last=False)
        return True


    def _source(self, address: str) -> _Source:
        now = self._clock()
        src = self._sources.get(address)
        if src is None:
            src = self._sources[address] = _Source(float(_FAILURE_BURST), now)
            if len(self._sources) > _SOURCES_KEPT:  # bounded: forget the address seen longest ago
                self._sources.popitem(last=False)
        else:
            src.tokens = min(float(_FAILURE_BURST), src.tokens + (now - src.at) / _FAILURE_REFILL_S)
            src.at = now
            self._sources.move_to_end(address)
        return src


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # well-formed but not a usable salt: nobody gets in with it
        return False


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded or len(encoded) > 1024:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_auth_middleware(users: Mapping[str, bytes]) -> Middleware:
    """An aiohttp middleware answering 401 to any request without valid credentials (every path)."""
    auth = BasicAuth(users)

    @web.middleware
    async def require_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        allowed = await auth.allows(request.headers.get("Authorization"), request.remote or "")
        if allowed is None:
            raise web.HTTPTooManyRequests(text="429 Too Many Requests: too many failed logins from this address\n",
                                          headers={"Retry-After": str(int(_FAILURE_REFILL_S))})
        if not allowed:
            raise web.HTTPUnauthorized(text="401 Unauthorized\n",
                                       headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
        return await handler(request)

    return require_auth


def protect(app: web.Application, config: WebConfig | None) -> None:
    """Put basic auth in front of every route of `app` when `config` has users (call before the app starts)."""
    if config is not None and config.users:
        app.middlewares.insert(0, make_auth_middleware(config.users))
