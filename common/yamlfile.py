"""Reading a YAML config file within fixed bounds, keeping the line of every value.

A config file is operator input, and a hostile or mistaken one must cost little: it is read only if it is a
regular file (a FIFO would block, /dev/zero never ends), only up to MAX_FILE_BYTES, and parsed into at most
MAX_VALUES values nested at most MAX_DEPTH deep, counted after aliases are expanded - PyYAML shares an aliased
node, but turning it into dicts and lists copies it, so nine nested aliases of nine items ("billion laughs")
would become 10^9 objects. The expanded size is worked out on the node graph (each node once) before anything
is built, so such a file is refused in milliseconds; an alias to its own container is refused by name.

Errors are `YamlFileError(message, line)`; they never quote the file: a key pointing at the wrong file (a
password file, a private key) must not copy it into a terminal or a log.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Final, Protocol

import yaml

MAX_FILE_BYTES: Final = 4 * 1024 * 1024
# A 100,000-miner list, one address per entry, is ~300,000 values; a bomb passes this within a few lines.
MAX_VALUES: Final = 500_000
# Our configs nest 7 deep at most; this leaves room and keeps every walk far from Python's recursion limit.
MAX_DEPTH: Final = 64

# libyaml parses ~8x faster than pure Python: a large fleet file loads in a second, not ten.
_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlFileError(Exception):
    """A file that cannot be read or parsed; `message` says why without quoting it, `line` where (if known)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


class _Loader(_Base):  # type: ignore[misc]  # a base chosen at run time
    """The safe loader (no Python objects); keys and values are built by `_Builder`, not by this class."""


class Map(dict[Any, Any]):
    """A YAML mapping that remembers where each value stood."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[Any, int] = {}


class Seq(list[Any]):
    line: int = 0
    lines: list[int]


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((f"cannot read file: it is {what}, not a regular file" for test, what in _KINDS if test(mode)),
                "cannot read file: not a regular file")


def _too_large(size: int, limit: int) -> YamlFileError:
    return YamlFileError(f"cannot read file: it is {size:,} bytes or more; a config file may be at most "
                         f"{limit:,} bytes ({limit / 2**20:g} MiB)")


def read_bytes(path: str | Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is a YamlFileError, at once."""
    try:
        before = os.stat(path)  # a FIFO is refused before open(), which would block until a writer came
        problem = _not_regular(before.st_mode)
        if problem is not None:
            raise YamlFileError(problem)
        if before.st_size > limit:
            raise _too_large(before.st_size, limit)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            problem = _not_regular(os.fstat(fd).st_mode)  # swapped for something else since the stat
            if problem is not None:
                raise YamlFileError(problem)
            chunks: list[bytes] = []
            total = 0
            while total <= limit:  # a file growing as we read is still cut off at the limit
                chunk = os.read(fd, min(1 << 20, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise YamlFileError(f"cannot read file: {exc.strerror or type(exc).__name__}") from None
    if total > limit:
        raise _too_large(total, limit)
    return b"".join(chunks)


def decode(data: bytes) -> str:
    """UTF-8 text; a bad byte is named by its value and line, never shown with the text around it."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlFileError(f"not UTF-8 text (byte 0x{data[exc.start]:02x})", line) from None


def load(text: str) -> Any:
    """Parse one YAML document into Map/Seq/scalars within the bounds; YamlFileError on any problem."""
    try:
        _count_events(text)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _measure(node)
            return _Builder(loader).build(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "not YAML"
        if problem.startswith("but ") and exc.context:  # libyaml: "expected a single document", "but found ..."
            problem = f"{exc.context}, {problem}"
        raise YamlFileError(f"invalid YAML: {problem}",
                            mark.line + 1 if mark is not None else None) from None
    except yaml.reader.ReaderError as exc:  # a control character: said by its code, with the line
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        raise YamlFileError(f"invalid YAML: character #x{exc.character:04x} is not allowed", line) from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"invalid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None


class _Mark(Protocol):  # PyYAML's and libyaml's marks alike
    line: int


def _line(mark: _Mark | None) -> int | None:
    return mark.line + 1 if mark is not None else None


def _count_events(text: str) -> None:
    """Refuse too many values or too deep a nesting from the event stream, before any node is composed
    (composing is what costs memory, and PyYAML's composer recurses once per level)."""
    events = _Loader(text)
    values = depth = 0
    try:
        while events.check_event():
            event = events.get_event()
            if isinstance(event, yaml.NodeEvent):
                values += 1
                if values > MAX_VALUES:
                    raise YamlFileError(f"more than {MAX_VALUES:,} values (keys, items and scalars); a config "
                                        f"file may hold at most {MAX_VALUES:,}", _line(event.start_mark))
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise YamlFileError(f"nested more than {MAX_DEPTH} levels deep", _line(event.start_mark))
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        events.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _measure(root: yaml.Node) -> None:
    """Size and depth of the document once aliases are expanded, each node visited once (no recursion)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            line = node.start_mark.line + 1
            if size[key] > MAX_VALUES:
                raise YamlFileError(f"aliases expand to more than {MAX_VALUES:,} values; a config file may "
                                    f"hold at most {MAX_VALUES:,}", line)
            if depth[key] > MAX_DEPTH:
                raise YamlFileError(f"aliases nest values more than {MAX_DEPTH} levels deep", line)
            continue
        if key in size:
            continue
        if key in on_path:
            raise YamlFileError("an alias refers to the list or mapping that contains it (a recursive alias)",
                                node.start_mark.line + 1)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in _children(node) if id(kid) not in size)


class _Builder:
    """Node graph -> Map/Seq/scalars, refusing duplicate keys (PyYAML keeps the last one silently) and keys
    that are not plain values; a scalar that cannot be converted is a YamlFileError at its line."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def build(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            out = Map(line=node.start_mark.line + 1)
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise YamlFileError("a key must be a plain value, not a list or a mapping", line)
                key = self.scalar(key_node)
                if key in seen:
                    raise YamlFileError(f"invalid YAML: duplicate key {_short(key)} (first at line {seen[key]})", line)
                seen[key] = line
                out[key] = self.build(value_node)
                out.lines[key] = value_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            seq = Seq(self.build(n) for n in node.value)
            seq.line = node.start_mark.line + 1
            seq.lines = [n.start_mark.line + 1 for n in node.value]
            return seq
        return self.scalar(node)

    def scalar(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            # A date such as 2023-02-30, an integer of 5,000 digits: the constructor's own error, no traceback.
            kind = node.tag.rsplit(":", 1)[-1]
            reason = "too many digits" if "digits" in str(exc) else str(exc).splitlines()[0][:80]
            raise YamlFileError(f"not a valid {kind} ({reason})", node.start_mark.line + 1) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def file_problem(path: str | Path) -> str | None:
    """Why `path` cannot be read as a file (missing, a directory, a FIFO, a name too long...), or None."""
    try:
        found = os.stat(path)
    except OSError as exc:
        return "no such file" if isinstance(exc, FileNotFoundError) else (exc.strerror or type(exc).__name__)
    kind = _not_regular(found.st_mode)
    return kind.removeprefix("cannot read file: ").removeprefix("it is ") if kind is not None else None
