"""The shape every megawatch daemon shares: its flags, --check-config, logging, serving, SIGHUP reload, /healthz.

A daemon (agent, collector) describes itself with a `Program`: how to load and summarise its config, where
the shared settings (listen address, web config, log) live in it, which of its own settings need a restart,
and `open()`, which builds what runs (a `Daemon`). Everything else is written here once:

  --config FILE | --check-config FILE   run, or validate only ("ok: ..." on stdout, exit 0; every problem as
                                        file:line: key: problem on stderr, exit 2)
  --listen HOST:PORT                    override the config's address and port (":PORT" keeps the address)
  --web.config.file FILE                TLS and basic auth (overrides web_config_file in the config)
  --log-format, --log-level             override log.format and log.level in the config

SIGTERM and SIGINT stop the daemon; SIGHUP re-reads its config atomically (a bad file keeps the running
config, logs config_reload_failed and sets megawatch_<daemon>_config_last_reload_successful to 0).
A port that cannot be bound is one log line (http_listen_failed) and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from megawatch.common.configfile import ConfigError, ConfigProblem
from megawatch.common.httplimits import ACCEPT_BACKLOG, KEEPALIVE_S, TLS_HANDSHAKE_S, ConnectionCap
from megawatch.common.logs import FORMATS, LEVELS, configure_logging, get_logger
from megawatch.common.strictjson import json_response
from megawatch.common.webconfig import WebConfig, load_web_config, protect

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class Settings:
    """What every daemon's config says about where it listens, its TLS and auth, and its logging."""

    path: str  # the config file, read again on SIGHUP
    host: str
    port: int
    web: WebConfig | None
    log_format: str
    log_level: str


@dataclass(frozen=True, slots=True)
class Overrides:
    """The command line's say over `Settings`; None leaves the config's value."""

    host: str | None = None
    port: int | None = None
    web: WebConfig | None = None
    log_format: str | None = None
    log_level: str | None = None

    def apply(self, s: Settings) -> Settings:
        return Settings(s.path, self.host or s.host, s.port if self.port is None else self.port,
                        self.web or s.web, self.log_format or s.log_format, self.log_level or s.log_level)


@dataclass
class ReloadStatus:
    """Outcome of the latest SIGHUP reload, read at scrape time."""

    successful: bool = True  # the config in force loaded cleanly at start
    at_s: float | None = None  # Unix time of the latest attempt


def reload_families(daemon: str, status: ReloadStatus) -> list[GaugeMetricFamily]:
    """megawatch_<daemon>_config_last_reload_successful and _timestamp_seconds (blackbox's convention)."""
    ok = GaugeMetricFamily(f"megawatch_{daemon}_config_last_reload_successful",
                           "1 if the last config reload (SIGHUP) succeeded, 0 if it failed and the old config runs.")
    ok.add_metric([], 1.0 if status.successful else 0.0)
    at = GaugeMetricFamily(f"megawatch_{daemon}_config_last_reload_timestamp_seconds",
                           "Unix time of the last config reload attempt, in seconds.")
    if status.at_s is not None:
        at.add_metric([], status.at_s)
    return [ok, at]


class ReloadCollector(Collector):
    """The two reload families for a registry of their own daemon."""

    def __init__(self, daemon: str, status: ReloadStatus) -> None:
        self._daemon, self._status = daemon, status

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(reload_families(self._daemon, self._status))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(reload_families(self._daemon, self._status))


def health(problem: str | None, **facts: object) -> web.Response:
    """/healthz for every daemon: 200 {"status": "ok", ...} or 503 {"status": "failing", ..., "problem": why}."""
    body = {"status": "ok" if problem is None else "failing", **facts, "problem": problem}
    return json_response(body, status=200 if problem is None else 503)


class Daemon(Generic[C]):
    """One running daemon as the shared lifecycle drives it: its app, `apply`, and hooks that default to nothing."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def apply(self, config: C) -> None:
        """Take a reloaded config (already checked, restart-only settings kept), at the next cycle."""
        raise NotImplementedError

    def started(self, url: str) -> None:
        """The server is bound: `url` is where it answers (port 0 resolved)."""

    async def run(self) -> None:
        """Work beside the HTTP server; if it ends (or fails) the daemon stops."""
        await asyncio.Event().wait()

    def stopping(self) -> dict[str, object]:
        """Facts for the <daemon>_stopping log line."""
        return {}

    async def drain(self) -> None:
        """Last work after a stop was asked for, before the server closes (bounded by the daemon)."""


class Program(Protocol[C]):
    """What a daemon tells the shared shape about itself."""

    name: str  # "agent": the `megawatch agent` command, the agent_* events, megawatch_agent_* metrics
    config_help: str  # what --config names, for --help
    listen_keys: tuple[str, str]  # the config keys of the address and port, e.g. ("listen.address", "listen.port")

    def load(self, path: str) -> C: ...
    def summary(self, config: C) -> str: ...  # after "ok: " for --check-config
    def facts(self, config: C) -> dict[str, object]: ...  # for the started and config_reloaded log lines
    def settings(self, config: C) -> Settings: ...
    def with_settings(self, config: C, settings: Settings) -> C: ...
    def restart_only(self, current: C, new: C) -> tuple[C, list[str]]: ...  # `new` keeping what cannot change
    def prepare(self) -> None: ...  # process-wide tuning before the loop starts
    def open(self, config: C, reload_status: ReloadStatus) -> AbstractAsyncContextManager[Daemon[C]]: ...


# ---- Command line ----------------------------------------------------------------------------------------

def parse_listen(text: str) -> tuple[str | None, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (keep the config's address); port 0 means any free port."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address without brackets: where it ends is ambiguous
        sep = ""
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT such as 127.0.0.1:9300, or :PORT to keep the config's address, got {text!r}")
    return host or None, int(port)


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", metavar="FILE", help=f"{config_help} to run with")
    what.add_argument("--check-config", metavar="FILE",
                      help="only validate FILE: print 'ok: ...' and exit 0, or every problem as "
                           "file:line: key: problem on stderr and exit 2")


def add_log_arguments(parser: argparse.ArgumentParser, in_config: bool = True) -> None:
    """--log-format and --log-level: over the config's log: section, or (in_config False) over auto and info."""
    auto = "auto: console on a terminal, else JSON lines"
    fmt, level = ((f"instead of log.format in the config ({auto})", "instead of log.level in the config")
                  if in_config else (f"default {auto}", "default info"))
    parser.add_argument("--log-format", choices=FORMATS, help=fmt)
    parser.add_argument("--log-level", choices=LEVELS, help=level)


def add_arguments(parser: argparse.ArgumentParser, program: Program[Any]) -> None:
    """The flags every daemon takes, the same way."""
    add_config_arguments(parser, program.config_help)
    parser.add_argument("--listen", metavar="HOST:PORT", type=parse_listen,
                        help=f"override {'/'.join(program.listen_keys)} in the config (:PORT keeps the "
                             "address; port 0: any free port)")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                        help="TLS and basic auth for every endpoint, in Prometheus's exporter web-config format "
                             "(overrides web_config_file in the config)")
    add_log_arguments(parser)


def unexpected(path: str, exc: BaseException) -> str:
    """A loader's own fault as one problem line: the exception's kind and short text, never its traceback
    (whose frames could hold the file's contents)."""
    return f"{path}: cannot load the file: {type(exc).__name__}: {str(exc)[:200] or 'no detail'}"


def load_or_report(*loads: tuple[Callable[[str], Any], str | None]) -> list[Any] | None:
    """Each (loader, path) loaded (a None path gives None); every problem of every file printed, then None."""
    loaded: list[Any] = []
    problems: list[ConfigProblem | str] = []
    for load, path in loads:
        try:
            loaded.append(None if path is None else load(path))
        except ConfigError as exc:
            problems.extend(exc.problems)
        except Exception as exc:  # a fault of ours: still one line and exit 2, never a traceback
            problems.append(unexpected(str(path), exc))
    for problem in problems:
        print(problem, file=sys.stderr)
    return None if problems else loaded


def run(program: Program[C], args: argparse.Namespace) -> int:
    """`megawatch <daemon> ...`: check or load the config, set up logging, serve until stopped."""
    path = args.check_config or args.config
    loaded = load_or_report((program.load, path), (load_web_config, args.web_config_file))
    if loaded is None:
        return EXIT_CONFIG
    config, web_config = loaded
    if args.check_config:
        print(f"ok: {program.summary(config)}")
        return EXIT_OK
    host, port = args.listen if args.listen is not None else (None, None)
    overrides = Overrides(host, port, web_config, args.log_format, args.log_level)
    config = program.with_settings(config, overrides.apply(program.settings(config)))
    settings = program.settings(config)
    configure_logging(settings.log_format, settings.log_level)
    program.prepare()
    return run_loop(serve(program, config, overrides))


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` on uvloop where installed (polling is CPU-bound in the loop; ~1.6x faster measured)."""
    try:
        import uvloop
    except ImportError:  # optional: the default loop works, slower
        return asyncio.run(main)
    return uvloop.run(main)


# ---- Serving ---------------------------------------------------------------------------------------------

@contextmanager
def stop_signals(on_stop: Callable[[], None], on_hup: Callable[[], None] | None = None) -> Iterator[None]:
    """SIGTERM and SIGINT call `on_stop`, SIGHUP `on_hup` (when given), until the block ends."""
    loop = asyncio.get_running_loop()
    handlers = {signal.SIGTERM: on_stop, signal.SIGINT: on_stop}
    if on_hup is not None:
        handlers[signal.SIGHUP] = on_hup
    for sig, handler in handlers.items():
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig in handlers:
            loop.remove_signal_handler(sig)


class Reloader(Generic[C]):
    """SIGHUP: re-read the config in a thread, hand a good one to the daemon, keep the running one otherwise."""

    def __init__(self, program: Program[C], config: C, overrides: Overrides, status: ReloadStatus,
                 daemon: Daemon[C], clock: Callable[[], float] = time.time) -> None:
        self.program, self.current, self.overrides = program, config, overrides
        self.status, self.daemon, self.clock = status, daemon, clock
        self._lock = asyncio.Lock()  # two quick SIGHUPs: the second compares with what the first applied
        self._log = get_logger()

    async def reload(self) -> bool:
        async with self._lock:
            return await self._reload()

    async def _reload(self) -> bool:
        program, running = self.program, self.program.settings(self.current)
        self.status.at_s = self.clock()
        try:
            # In a thread: expanding a large fleet's address blocks must not stall the event loop.
            new = await asyncio.to_thread(program.load, running.path)
            # The command line still overrides the file; what differs from the running settings needs a restart.
            wanted = self.overrides.apply(program.settings(new))
            keys = dict(zip(("host", "port"), program.listen_keys, strict=True)) | {
                "web": "web_config_file", "log_format": "log.format", "log_level": "log.level"}
            needs_restart = [key for field, key in keys.items() if getattr(running, field) != getattr(wanted, field)]
            applied, own = program.restart_only(self.current, program.with_settings(new, running))
            self.daemon.apply(applied)
        except ConfigError as exc:
            self.status.successful = False
            self._log.error("config_reload_failed", path=running.path, problems=[str(p) for p in exc.problems])
            return False
        except Exception as exc:  # a fault of ours (RecursionError, MemoryError...) fails the reload, not the daemon
            self.status.successful = False
            self._log.error("config_reload_failed", path=running.path, problems=[unexpected(running.path, exc)])
            return False
        self.current = applied
        self.status.successful = True
        self._log.info("config_reloaded", path=running.path, needs_restart=[*needs_restart, *own] or None,
                       **program.facts(applied))
        return True


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one); OSError when it cannot be had."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does: TIME_WAIT is no obstacle
        sock.bind(address)
        sock.listen(ACCEPT_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(program: Program[C], config: C, overrides: Overrides | None = None) -> int:
    """Serve until SIGTERM/SIGINT (exit 0), a failed listen or a failed daemon (exit 1).

    `config` is the one to run with, the command line's overrides already applied; `overrides` are kept to
    apply them to every reloaded config too. The port is bound first: a daemon that cannot listen starts
    nothing (no poll of any miner) and says so in one line.
    """
    log, name, settings = get_logger(), program.name, program.settings(config)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        log.error("http_listen_failed", daemon=name, listen=settings.host, port=settings.port,
                  error=exc.strerror or str(exc))
        return EXIT_FAILED
    stop = asyncio.Event()
    status = ReloadStatus()
    with sock:
        async with program.open(config, status) as daemon:
            reloader = Reloader(program, config, overrides or Overrides(), status, daemon)
            reloads: set[asyncio.Task[bool]] = set()

            def on_hup() -> None:
                task = asyncio.get_running_loop().create_task(reloader.reload())
                reloads.add(task)
                task.add_done_callback(reloads.discard)

            with stop_signals(stop.set, on_hup):
                protect(daemon.app, settings.web)
                cap = ConnectionCap()
                daemon.app.middlewares.insert(0, cap.track)
                runner = web.AppRunner(daemon.app, access_log=None, handle_signals=False, keepalive_timeout=KEEPALIVE_S)
                await runner.setup()
                listening: asyncio.Server | None = None
                try:
                    # Our own listener rather than a SockSite: connections are capped where they are accepted.
                    cap.server = runner.server
                    ssl_context = settings.web.ssl_context if settings.web is not None else None
                    listening = await asyncio.get_running_loop().create_server(
                        cap, sock=sock, ssl=ssl_context, backlog=ACCEPT_BACKLOG,
                        ssl_handshake_timeout=TLS_HANDSHAKE_S if ssl_context is not None else None)
                    code = await _run(program, config, settings, daemon, sock, stop)
                finally:
                    await _cancel(*reloads)
                    if listening is not None:
                        listening.close()
                    await runner.cleanup()
    log.info(f"{name}_stopped")
    return code


async def _run(program: Program[C], config: C, settings: Settings, daemon: Daemon[C], sock: socket.socket,
               stop: asyncio.Event) -> int:
    """Announce where the daemon answers, then wait for a stop or for the daemon's work to end."""
    log, name = get_logger(), program.name
    bound = [list(sock.getsockname()[:2])]
    host, port = bound[0]
    scheme = settings.web.scheme if settings.web is not None else "http"
    url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    daemon.started(url)
    log.info(f"{name}_started", url=url, listen=bound, scheme=scheme,
             basic_auth=bool(settings.web is not None and settings.web.users), **program.facts(config))
    work = asyncio.create_task(daemon.run(), name=f"{name}_run")
    stopper = asyncio.create_task(stop.wait())
    try:
        # Work that ends must stop the process (and be seen), not leave a server that looks alive.
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        await _cancel(stopper)
        failed = work.done()
        if failed:
            error = None if work.cancelled() else work.exception()
            log.error(f"{name}_failed", error=repr(error), exc_info=error)
        else:
            await _cancel(work)
        log.info(f"{name}_stopping", **daemon.stopping())
        await daemon.drain()
    finally:
        await _cancel(work, stopper)
    return EXIT_FAILED if failed else EXIT_OK


async def _cancel(*tasks: asyncio.Task[Any]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

