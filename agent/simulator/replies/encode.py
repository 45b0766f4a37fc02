"""Serialise reply trees the way each firmware prints them: key order, spacing and number format.

json.dumps cannot do this: cgminer prints floats with printf (`%.2f`, `%.8f`), so 14359.20 keeps its
trailing zero, and Python's float repr would drop it. Braiins and LuxOS print full-precision floats
(repr is right there). Strings escape only `"` and `\\`, like cgminer's escape_string().
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class Fixed:
    """A float printed with a fixed number of decimals, like printf("%.Nf")."""

    __slots__ = ("value", "digits")

    def __init__(self, value: float, digits: int = 2) -> None:
        self.value = value
        self.digits = digits

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Fixed({self.value!r}, {self.digits})"


class Raw:
    """Text copied into the body verbatim (used to reproduce broken output on purpose)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


@dataclass(frozen=True, slots=True)
class Style:
    item_sep: str = ","
    key_sep: str = ":"
    sort_keys: bool = False


COMPACT = Style()
SPACED = Style(", ", ": ")  # stock S19/S21 bmminer 1.0 prints Python-style spacing
SORTED = Style(sort_keys=True)  # Braiins OS and LuxOS sort every object's keys


def _string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode(value: Any, style: Style = COMPACT) -> str:
    """Render one reply tree (dicts keep insertion order unless the style sorts them)."""
    parts: list[str] = []
    _emit(value, style, parts)
    return "".join(parts)


def _emit(value: Any, style: Style, out: list[str]) -> None:
    # Order matters: bool is an int subclass.
    if isinstance(value, str):
        out.append(_string(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(repr(value))
    elif isinstance(value, Fixed):
        out.append(f"{value.value:.{value.digits}f}")
    elif isinstance(value, dict):
        out.append("{")
        items = sorted(value.items()) if style.sort_keys else value.items()
        first = True
        for key, item in items:
            if not first:
                out.append(style.item_sep)
            first = False
            out.append(_string(key))
            out.append(style.key_sep)
            _emit(item, style, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(style.item_sep)
            _emit(item, style, out)
        out.append("]")
    elif isinstance(value, Raw):
        out.append(value.text)
    elif value is None:
        out.append("null")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def text_value(value: Any) -> str:
    """One value in cgminer's legacy text form (`name=value`), escaped as api.c does."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Fixed):
        text = f"{value.value:.{value.digits}f}"
    elif isinstance(value, Raw):
        text = value.text
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
