"""Placeholder until the luxos parser lands (issue 2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.model import MinerReading

NAME = "luxos"
COMMANDS: tuple[str, ...] = ("version", "summary", "pools", "stats", "power")
JOINABLE = True


def parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading:
    raise NotImplementedError
