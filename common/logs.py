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


def get_logger(**initial: object) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(**initial)  # type: ignore[no-any-return]
