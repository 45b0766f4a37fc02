"""common/logs: JSON lines off a terminal, level filtering, context variables merged into every event."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from megawatch.common.logs import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def test_json_lines_with_level_timestamp_and_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    structlog.contextvars.bind_contextvars(site="karachi-1")
    log = get_logger()
    log.info("miner_down", miner="127.1.0.1:4028", error="timeout")
    log.debug("poll_done", miner="127.1.0.1:4028")  # below the level: dropped
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["event"] == "miner_down" and doc["level"] == "info" and doc["site"] == "karachi-1"
    assert doc["miner"] == "127.1.0.1:4028" and doc["timestamp"].endswith("Z")


def test_auto_is_json_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("auto", "debug")
    get_logger().debug("cycle_finished", cycle=3)
    assert json.loads(capsys.readouterr().err)["cycle"] == 3


def test_console_format_is_one_readable_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "warning")
    get_logger().info("dropped")
    get_logger().warning("cycle_overrun", duration_s=16.2)
    err = capsys.readouterr().err
    assert "dropped" not in err
    assert len(err.splitlines()) == 1 and "cycle_overrun" in err and "duration_s=16.2" in err
