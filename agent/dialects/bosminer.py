"""Placeholder until the bosminer parser lands (issue 2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.model import MinerReading

NAME = "bosminer"
COMMANDS: tuple[str, ...] = ("version", "summary", "pools", "fans", "temps", "tunerstatus", "devdetails")
JOINABLE = True


def parse(replies: Mapping[str, Mapping[str, Any]]) -> MinerReading:
    raise NotImplementedError
