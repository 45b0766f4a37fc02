"""Serialise reply trees the way each firmware prints them: key order, spacing and number format.

cgminer prints floats with printf (`%.2f`, `%.8f`), so 14359.20 keeps its trailing zero where Python's
float repr would drop it. `Fixed(value, 2)` therefore makes a marked string holding the printf text, the
C JSON encoder does the rest (fast: one process serves 10,000 miners), and one regex pass unquotes the
marked numbers. Braiins and LuxOS print full-precision floats, which plain floats (repr) already are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_MARK = "\x01"
# json.dumps always escapes control characters, so a marked number comes out as "\u0001<digits>\u0001".
_MARKED = re.compile(r'"\\u0001([^"\\]*)\\u0001"')


_FORMATS = {digits: f"{_MARK}%.{digits}f{_MARK}" for digits in range(10)}


def Fixed(value: float, digits: int = 2) -> str:
    """A float printed with a fixed number of decimals, like printf("%.Nf")."""
    return _FORMATS[digits] % value


def is_fixed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_MARK)


def fixed_value(value: str) -> float:
    return float(value[1:-1])


@dataclass(frozen=True, slots=True)
class Style:
    item_sep: str = ","
    key_sep: str = ":"
    sort_keys: bool = False
    plain_floats: bool = False  # print Fixed values as shortest floats (firmware built on a JSON library)


COMPACT = Style()
# Stock S19/S21 bmminer 1.0 prints like Python's json: `": "` spacing and shortest floats ("GHS 5s": 0.0).
SPACED_FLOATS = Style(", ", ": ", plain_floats=True)
# LuxOS sorts every object's keys and prints shortest floats.
SORTED_FLOATS = Style(sort_keys=True, plain_floats=True)
# Braiins OS sorts its data records (the dialect does that) and prints full-precision floats.
COMPACT_FLOATS = Style(plain_floats=True)


def _as_float(match: re.Match[str]) -> str:
    return repr(float(match.group(1)))


def encode(value: Any, style: Style = COMPACT) -> str:
    """Render one reply tree (dicts keep insertion order unless the style sorts them)."""
    text = json.dumps(value, separators=(style.item_sep, style.key_sep), sort_keys=style.sort_keys,
                      ensure_ascii=False, allow_nan=True)
    if "\\u0001" not in text:
        return text
    if style.plain_floats:
        return _MARKED.sub(_as_float, text)
    # The markers only ever wrap printf numbers, so dropping them with two C-level replaces is exact.
    return text.replace('"\\u0001', "").replace('\\u0001"', "")


def text_value(value: Any) -> str:
    """One value in cgminer's legacy text form (`name=value`), escaped as api.c does."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    text: str
    if is_fixed(value):
        text = value[1:-1]
    elif isinstance(value, (dict, list, tuple)):
        text = encode(value)
    else:
        text = str(value)
    for char in "\\|,=":
        text = text.replace(char, "\\" + char)
    return text


def text_record(record: dict[str, Any], header: str | None = None) -> str:
    """`HEADER,name=value,...|` (cgminer prints a header word only for single-record sections)."""
    fields = ",".join(f"{key}={text_value(val)}" for key, val in record.items())
    if header is None:
        return fields + "|"
    return f"{header},{fields}|" if fields else f"{header}|"
