"""YAML config loading shared by agent, collector and simulator.

Every error names the file, the line, the dotted key and what is wrong, e.g.
``configs/sites.yaml:14: sites[2].allocation_mw: expected a number > 0, got '12MW'``.
Errors are collected (not raised one at a time) so an operator sees them all at once.
"""

from __future__ import annotations

import difflib
import enum
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, overload

from megawatch.common import yamlfile
from megawatch.common.yamlfile import Map as _Map
from megawatch.common.yamlfile import YamlFileError

T = TypeVar("T")
D = TypeVar("D")


class _Missing(enum.Enum):
    """No default given: the key is required."""

    MISSING = "missing"


_MISSING: Final = _Missing.MISSING
_SHOWN: Final = 60  # the longest value an error line shows
_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")  # what a key of ours could be a typo of


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """One or more problems in a config file; str() is one line per problem."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in problems))


def parse_yaml(text: str, path: str) -> Any:
    """Parse YAML text into dicts/lists that keep line numbers; raise ConfigError on bad syntax or a bomb."""
    try:
        return yamlfile.load(text)
    except YamlFileError as exc:
        raise ConfigError([ConfigProblem(path, exc.line, "", exc.message)]) from None


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file within the limits of common/yamlfile; any problem is a ConfigError, not a traceback."""
    try:
        text = yamlfile.decode(yamlfile.read_bytes(path))
    except YamlFileError as exc:
        raise ConfigError([ConfigProblem(str(path), exc.line, "", exc.message)]) from None
    return parse_yaml(text, str(path))


class Problems:
    """Collects problems while a document is being validated."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.items: list[ConfigProblem] = []

    def add(self, line: int | None, key: str, message: str) -> None:
        self.items.append(ConfigProblem(self.path, line, key, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)


def describe(value: Any) -> str:
    """A value for an error line: its repr, cut short (a config line, never a screenful), or what it is."""
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN - 3]}..."


def _kind(value: Any) -> str:
    """What a value is, without showing it: for a file that may be the wrong one (a key file, a password file)."""
    if isinstance(value, (dict, list)):
        return describe(value)
    return {str: "text", bool: "true or false", int: "a number", float: "a number"}.get(type(value), "a value")


class Section:
    """A validating view onto one YAML mapping.

    Read keys with the typed getters; call `done()` at the end to report unknown keys. A bad value is
    recorded in `problems` and the getter returns the default, so validation carries on and every
    problem is reported in one go.
    """

    def __init__(self, problems: Problems, data: Any, key_path: str = "", line: int | None = None) -> None:
        self.problems = problems
        self.key_path = key_path
        self.line = getattr(data, "line", line)
        self.valid = isinstance(data, dict)
        if data is None:
            data, self.valid = _Map(line=line or 0), True
        elif not self.valid:
            problems.add(self.line, key_path or "(top level)", f"expected a mapping, got {describe(data)}")
            data = _Map(line=line or 0)
        self.data: dict[Any, Any] = data
        self._used: set[Any] = set()
        self.what = ""  # a whole file's top level: what it should be ("agent config"), for "not a valid ..."

    @classmethod
    def of_file(cls, path: str | Path, what: str = "config file") -> Section:
        """Read a file and return its top-level section (raises ConfigError on syntax errors).

        A file that is not a mapping is most likely the wrong file (a key naming /etc/passwd, a certificate):
        it is called "not a valid `what`" and nothing of it is shown.
        """
        data = read_yaml(path)
        problems = Problems(str(path))
        if data is not None and not isinstance(data, dict):
            problems.add(getattr(data, "line", None), "",
                         f"not a valid {what} (expected a YAML mapping of settings, got {_kind(data)})")
            sec = cls(problems, None, "", 1)
            sec.valid = False
            return sec
        sec = cls(problems, data, "", 1)
        sec.what = what
        return sec

    def key(self, name: str | int) -> str:
        if isinstance(name, int):
            return f"{self.key_path}[{name}]"
        return f"{self.key_path}.{name}" if self.key_path else str(name)

    def line_of(self, name: Any) -> int | None:
        lines = getattr(self.data, "lines", {})
        return lines.get(name, self.line)

    def error(self, name: str, message: str) -> None:
        self.problems.add(self.line_of(name), self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self._used.add(name)
        if name not in self.data:
            # A section that is not a mapping was reported once already; a missing key in it is no news.
            if default is _MISSING:
                if self.valid:
                    self.problems.add(self.line, self.key(name), "required key is missing")
                return None
            return default
        return self.data[name]

    @overload
    def get(self, name: str, kind: Callable[[Any], T], default: _Missing = ..., *, expected: str,
            check: Callable[[T], bool] | None = None, secret: bool = ...) -> T | None: ...
    @overload
    def get(self, name: str, kind: Callable[[Any], T], default: D, *, expected: str,
            check: Callable[[T], bool] | None = None, secret: bool = ...) -> T | D: ...
    def get(
        self,
        name: str,
        kind: Callable[[Any], T],
        default: Any = _MISSING,
        *,
        expected: str,
        check: Callable[[T], bool] | None = None,
        secret: bool = False,
    ) -> Any:
        """Read `name`, convert with `kind` (raising ValueError/TypeError on bad input), then `check`.

        A missing or bad value comes back as `default`, or None for a required key (the problem recorded),
        so every getter without a default is typed `... | None` and a loader checks before building.
        """
        value = self.raw(name, default)
        if name not in self.data:
            return value
        try:
            converted = kind(value)
            ok = check is None or check(converted)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer of 400 digits as a float
            ok, converted = False, None
        if not ok:
            got = f"{_kind(value)} (not shown: it may be a password)" if secret else describe(value)
            self.error(name, f"expected {expected}, got {got}")
            return default if default is not _MISSING else None
        return converted

    @overload
    def string(self, name: str, *, check: Callable[[str], bool] | None = None, expected: str = ...,
               secret: bool = ...) -> str | None: ...
    @overload
    def string(self, name: str, default: D, *, check: Callable[[str], bool] | None = None,
               expected: str = ..., secret: bool = ...) -> str | D: ...
    def string(self, name: str, default: Any = _MISSING, *, check: Callable[[str], bool] | None = None,
               expected: str = "a non-empty string", secret: bool = False) -> Any:
        """`secret`: a bad value is described, never shown (a password where its hash belongs)."""
        return self.get(name, as_str, default, expected=expected, check=check, secret=secret)

    @overload
    def number(self, name: str, *, minimum: float | None = None, exclusive_minimum: float | None = None,
               maximum: float | None = None) -> float | None: ...
    @overload
    def number(self, name: str, default: D, *, minimum: float | None = None, exclusive_minimum: float | None = None,
               maximum: float | None = None) -> float | D: ...
    def number(self, name: str, default: Any = _MISSING, *, minimum: float | None = None,
               exclusive_minimum: float | None = None, maximum: float | None = None) -> Any:
        parts = ["a number"]
        if exclusive_minimum is not None:
            parts.append(f"> {exclusive_minimum:g}")
        if minimum is not None:
            parts.append(f">= {minimum:g}")
        if maximum is not None:
            parts.append(f"<= {maximum:g}")

        def check(v: float) -> bool:
            return ((minimum is None or v >= minimum)
                    and (exclusive_minimum is None or v > exclusive_minimum)
                    and (maximum is None or v <= maximum))

        return self.get(name, as_number, default, expected=" ".join(parts), check=check)

    @overload
    def integer(self, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int | None: ...
    @overload
    def integer(self, name: str, default: D, *, minimum: int | None = None, maximum: int | None = None) -> int | D: ...
    def integer(self, name: str, default: Any = _MISSING, *, minimum: int | None = None,
                maximum: int | None = None) -> Any:
        parts = ["an integer"]
        if minimum is not None:
            parts.append(f">= {minimum}")
        if maximum is not None:
            parts.append(f"<= {maximum}")
        return self.get(
            name, as_int, default, expected=" ".join(parts),
            check=lambda v: (minimum is None or v >= minimum) and (maximum is None or v <= maximum),
        )

    @overload
    def boolean(self, name: str) -> bool | None: ...
    @overload
    def boolean(self, name: str, default: D) -> bool | D: ...
    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        return self.get(name, as_bool, default, expected="true or false")

    @overload
    def choice(self, name: str, choices: tuple[str, ...]) -> str | None: ...
    @overload
    def choice(self, name: str, choices: tuple[str, ...], default: D) -> str | D: ...
    def choice(self, name: str, choices: tuple[str, ...], default: Any = _MISSING) -> Any:
        return self.get(name, as_str, default, expected=f"one of {', '.join(choices)}",
                        check=lambda v: v in choices)

    def section(self, name: str, required: bool = False) -> Section:
        value = self.raw(name, _MISSING if required else None)
        return Section(self.problems, value, self.key(name), self.line_of(name))

    def sections(self, name: str, required: bool = False) -> Iterator[Section]:
        """Yield one Section per item of a list of mappings."""
        value = self.raw(name, _MISSING if required else None)
        if value is None:
            return
        if not isinstance(value, list):
            self.error(name, f"expected a list, got {describe(value)}")
            return
        lines = getattr(value, "lines", [self.line_of(name)] * len(value))
        for i, item in enumerate(value):
            yield Section(self.problems, item, f"{self.key(name)}[{i}]", lines[i])

    @overload
    def strings(self, name: str) -> tuple[str, ...] | None: ...
    @overload
    def strings(self, name: str, default: D) -> tuple[str, ...] | D: ...
    def strings(self, name: str, default: Any = _MISSING) -> Any:
        value = self.raw(name, default)
        if name not in self.data:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(name, f"expected a list of strings, got {describe(value)}")
            return ()
        return tuple(value)

    def done(self) -> None:
        """Report keys that no getter asked for, suggesting the closest known key.

        A key that is not a name (a line of /etc/shadow parses as one) is not shown, nor is any key of a file
        none of whose keys is known: that is the wrong file, and its contents stay out of the error.
        """
        if not self.valid:
            return
        used = [str(k) for k in self._used]
        if self.what and self.data and not any(
                key in self._used or difflib.get_close_matches(str(key)[:_SHOWN], used, n=1) for key in self.data):
            known = ", ".join(sorted(used))
            self.problems.add(self.line, "", f"not a valid {self.what} (none of its keys is one of: {known})")
            return
        for key in self.data:
            if key in self._used:
                continue
            if not isinstance(key, str) or not _NAME.match(key):
                self.problems.add(self.line_of(key), self.key_path or "(top level)",
                                  "an unknown key that is not a name (not shown)")
                continue
            hint = difflib.get_close_matches(str(key), [str(k) for k in self._used], n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            known = ", ".join(sorted(str(k) for k in self._used))
            allowed = f"; known keys: {known}" if known and not hint else ""
            self.problems.add(self.line_of(key), self.key(key), f"unknown key{suggestion}{allowed}")


def as_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError
    return value


def as_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError
    return float(value)


def as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError
    return value


def as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value
