"""Logging set-up shared by every megawatch process."""

from __future__ import annotations

import logging
import sys

import structlog

from megawatch.common.configfile import Section

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "json", "console")


def load_log_settings(sec: Section) -> tuple[str, str]:
    """The `log:` section every daemon's config has: (format, level), defaults auto and info."""
    fmt = sec.choice("format", FORMATS, "auto")
    level = sec.choice("level", LEVELS, "info")
    sec.done()
    return fmt, level


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog once, from __main__: format auto is console on a terminal, JSON lines otherwise."""
    if fmt not in FORMATS or level not in LEVELS:
        raise ValueError(f"log format {fmt!r} / level {level!r}: expected one of {FORMATS} / {LEVELS}")
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (aiohttp's server, asyncio) log through the standard library; unconfigured, that printed
    # multi-line tracebacks to stderr, one per malformed request. Their records become our events instead.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _LibraryHandler)]:
        root.removeHandler(handler)
    root.addHandler(_LibraryHandler())
    # Warnings and errors only, as before, unless debugging: libraries' info lines are their own chatter.
    root.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


class _LibraryHandler(logging.Handler):
    """A standard-library record as one structlog event (one JSON line in the JSON format)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc = record.exc_info[1] if record.exc_info else None
            log = get_logger(source=record.name)
            if exc is not None and _is_bad_request(exc):
                # A client sent something that is not HTTP: answered 400 already; worth a line only at debug.
                log.debug("http_bad_request", status=getattr(exc, "code", 400),
                          error=" ".join(str(getattr(exc, "message", exc)).split())[:200])
                return
            fields: dict[str, object] = {"message": record.getMessage()}
            if exc is not None:
                fields["error"] = f"{type(exc).__name__}: {exc}"
                if record.levelno >= logging.ERROR:
                    fields["exc_info"] = record.exc_info  # rendered into one field of the event, not lines
            log.log(record.levelno, "library_message", **fields)
        except Exception:  # logging must never raise into the code that logged
            self.handleError(record)


def _is_bad_request(exc: BaseException) -> bool:
    # By name: importing aiohttp here would load it into every process that only logs.
    return any(cls.__name__ == "HttpProcessingError" for cls in type(exc).__mro__)


def get_logger(**initial: object) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(**initial)  # the wrapper configured above
    return logger
