"""Shared by the dialect tests: golden replies through the real framing code, and JSON-like junk.

Golden files are tests/golden/replies/<dialect>/<firmware-version>/<command>.bin; a file named after a
joined request (`pools+summary+stats.bin`) holds one multicommand reply and is split with `split_joined`,
as the poller does. Provenance of every file: tests/golden/replies/SOURCES.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from megawatch.agent.protocol.framing import decode_reply, split_joined

_CHARS = st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs"))
GOLDEN_REPLIES = Path(__file__).resolve().parent.parent / "golden" / "replies"


def golden_cases(dialect: str) -> list[Path]:
    """Every firmware-version directory recorded for a dialect."""
    return sorted(path for path in (GOLDEN_REPLIES / dialect).iterdir() if path.is_dir())


def load_case(case: Path) -> dict[str, dict[str, Any]]:
    """{command: decoded reply} for one firmware-version directory, raw bytes through framing."""
    replies: dict[str, dict[str, Any]] = {}
    for path in sorted(case.glob("*.bin")):
        reply = decode_reply(path.read_bytes())
        commands = path.stem.split("+")
        if len(commands) == 1:
            replies[path.stem] = reply
            continue
        sections, rejected = split_joined(reply, commands)
        assert not rejected, f"{path}: sections rejected: {rejected}"
        replies.update(sections)
    return replies


def json_like(keys: list[str]) -> st.SearchStrategy[Any]:
    """Any value `json` can decode (framing maps bare NaN/Infinity to None; huge ints still get through),
    with object keys drawn mostly from `keys` so the parser's real paths are reached."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**30), max_value=10**400)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(_CHARS, max_size=12)
        | st.sampled_from(["", "-", "nan", "0", "-1", "-273", "0-0-0-0", "12.5K", "  5.0000"])
    )
    key = st.sampled_from(keys) | st.text(_CHARS, max_size=8)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=5),
        max_leaves=8,
    )


def replies_like(commands: tuple[str, ...], keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A `replies` mapping shaped like real ones: some of the dialect's commands, each answered by an object
    whose sections are lists of objects with known keys - holding arbitrary values."""
    key = st.sampled_from(keys)
    value = json_like(keys)
    item = st.dictionaries(key, value, max_size=8)
    reply = st.dictionaries(key | st.text(_CHARS, max_size=4), st.lists(item, max_size=3) | value, max_size=4)
    return st.dictionaries(st.sampled_from(commands), reply, max_size=len(commands))
