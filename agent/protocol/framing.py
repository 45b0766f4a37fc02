"""Bytes from a miner -> one JSON object; the ONLY place replies are repaired.

Contract: `decode_reply` raises nothing but `EmptyReply` and `BadReply`; `check_status` and `split_joined`
raise/return `CommandRejected`. Strict JSON costs one `orjson.loads` (the fast path, ~3x quicker than the
stdlib on a 5 KB stats reply - a fifth of a poll's CPU, measured); whatever orjson refuses goes to the
tolerant path: the stdlib decoder (control characters in strings, trailing garbage, invalid UTF-8,
integers past 64 bits) and, only when that fails too, the named repairs below, each on tokens outside
JSON strings (a value such as the S9k's `"chain_xtime3":"{X6=1}"` is never touched), except
`_repair_invalid_escapes`, whose target lives inside strings by nature. Bare `NaN`/`Infinity`, which
Python's json would turn into floats, decode as None: unknown is never a number (see docs/protocol.md).

Duplicate keys: JSON decoders keep the last of `"Power":3300,"Power":9000000000` silently, which would let
a lying or broken reply pick the figure. The rule here: a key repeated with one value (the Whatsminer M3's
`stats` repeats some `chip_ok_cores_N`) is harmless and kept; a key repeated with values that disagree
decodes as None (unknown: neither figure can be trusted) and the reply carries a note saying so. Finding
them costs little: orjson's object is written back out with `orjson.dumps` and its quotes counted against
the reply's (every key and string adds two quotes and a `"` inside a string is escaped as `\\"`, so the
counts match exactly when nothing was dropped); only a mismatch - or a `\\u0022` escape, which the count
cannot see - decodes again with a hook that sees every key.

Notes: what the decoder read as unknown (a disagreeing duplicate key, a bare NaN/Infinity) is listed under
`NOTES` in the returned object, as (kind, text) pairs; `split_joined` passes them to every section and
`reply_notes` collects them, so the poller can name them on the miner (agent/plausibility.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from megawatch.agent.protocol.errors import BadReply, CommandRejected, EmptyReply

# strict=False: cgminer escapes only `"` and `\`, so raw newlines/control characters reach us inside
# strings (Whatsminer `version`, bmminer `pools`). One decoder built once: json.loads(..., strict=False) would
# build a new JSONDecoder (and scanner) on every call.
_DECODER = json.JSONDecoder(strict=False, parse_constant=lambda _name: None)

# Strip set: cgminer ends every reply with NUL; some firmware adds a newline; a BOM would stop the parser.
_STRIP = " \t\r\n\x00\ufeff"

# A JSON string, or an unterminated one running to the end of a truncated reply (so the repairs never
# treat the text of a cut-off string as structure). Unrolled-loop form: fast on 67 KB replies.
_STRING = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z))', re.DOTALL)

# The slow path masks every string as _MARK, so the structural repairs run as one C-level regex pass each
# over the skeleton and can never see string contents. \x1f cannot be valid JSON outside a string.
_MARK = "\x1f"

# Literal replacements with lookaheads: a template with group references costs ~3 µs per call in Python.
_OBJECTS_WITHOUT_COMMA = re.compile(r"\}(?=\s*\{)")
_ARRAY_LEADING_COMMA = re.compile(r"\[\s*,")
_TRAILING_COMMA = re.compile(r",(?=\s*[}\]])")
_ADJACENT_STRINGS = re.compile(_MARK + r"(?=\s*" + _MARK + ")")
# Group 1 keeps valid escape pairs (so `\\'` stays an escaped backslash before a quote); group 2 is the
# character of an escape JSON lacks, kept without its backslash.
_ESCAPE_PAIR = re.compile(r'(\\["\\/bfnrtu])|\\(.)', re.DOTALL)
_BARE_NON_NUMBER = re.compile(r"(?<![\w.+-])[-+]?(?:nan|inf(?:inity)?)(?![\w.])", re.IGNORECASE)

_FAILURE_LETTERS = frozenset({"E", "F"})

# Key of the decoder's notes in a reply object; the dot keeps it apart from every firmware key seen.
NOTES = "megawatch.notes"
DUPLICATE_KEY = "duplicate_key"  # note kinds, also labels of megawatch_agent_implausible_values_total
NON_NUMBER = "non_number"
Note = tuple[str, str]  # (kind, text)
_dumps = orjson.dumps


@dataclass(frozen=True, slots=True)
class Masked:
    """A reply split for repair: `skeleton` has each JSON string replaced by _MARK, `strings` holds them."""

    skeleton: str
    strings: tuple[str, ...]

    @classmethod
    def of(cls, text: str) -> Masked | None:
        """Mask `text`; None when a _MARK outside strings would make the split ambiguous (never valid JSON)."""
        parts = _STRING.split(text)
        skeleton = _MARK.join(parts[0::2])
        strings = tuple(parts[1::2])
        return cls(skeleton, strings) if skeleton.count(_MARK) == len(strings) else None

    def text(self) -> str:
        parts: list[str] = [""] * (2 * len(self.strings) + 1)
        parts[0::2] = self.skeleton.split(_MARK)
        parts[1::2] = self.strings
        return "".join(parts)


def decode_reply(raw: bytes) -> dict[str, Any]:
    """Decode one reply body into its top-level JSON object, repairing known firmware defects.

    Trailing NULs/whitespace are stripped and bytes decoded as UTF-8 with replacement; trailing garbage
    after the first JSON value is ignored. Raises EmptyReply when nothing but NULs/whitespace came, and
    BadReply (carrying the raw bytes) when no repair yields a JSON object - including plain-text replies
    (`Socket connect failed...`, legacy `STATUS=S,...|`).
    """
    try:
        # orjson accepts a strict subset of what the tolerant path below does and decodes it to the same
        # values (the one difference, integers past 64 bits, become floats: every reader converts through
        # float anyway). Anything it refuses - NaN, control characters, `}{`, a NUL - takes the long way.
        obj = _strict_loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if type(obj) is dict and _every_key_kept(raw, obj):
            return obj
    text = raw.decode("utf-8", "replace").strip(_STRIP)
    if not text:
        raise EmptyReply(f"empty reply ({len(raw)} bytes of NUL/whitespace)")
    notes: dict[str, Note] = {}
    try:
        obj = _decode_first(text)
    except (ValueError, RecursionError):
        text, obj = _decode_repaired(text, raw, notes)
    if type(obj) is not dict:
        raise BadReply(f"reply is JSON {type(obj).__name__}, not an object", raw)
    if "NaN" in text or "Infinity" in text or not _every_key_kept(text.encode(), obj):
        # Rare: decode once more, seeing every key and constant (the text decoded before, so it does again).
        obj = _checking_decoder(notes).raw_decode(text)[0]
    assert type(obj) is dict  # the same text decoded to an object just before
    if notes:
        obj[NOTES] = tuple(notes.values())
    return obj


_strict_loads = orjson.loads


def _every_key_kept(raw: bytes, obj: dict[str, Any]) -> bool:
    """True when decoding dropped no duplicate key (the module docstring says why counting quotes works)."""
    if raw.find(b"\\") >= 0 and b"\\u0022" in raw:  # find is memchr: ~15x quicker than the substring test
        return False
    try:
        return raw.count(b'"') == _dumps(obj).count(b'"')
    except TypeError:  # an integer orjson cannot write (past 64 bits): let the checking decoder look
        return False


def _checking_decoder(notes: dict[str, Note]) -> json.JSONDecoder:
    """A tolerant decoder that notes bare NaN/Infinity and resolves duplicate keys (module docstring)."""

    def constant(name: str) -> None:
        text = f"reply: bare {name} read as unknown"
        notes.setdefault(text, (NON_NUMBER, text))

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items):
            _resolve_duplicates(obj, items, notes)
        return obj

    return json.JSONDecoder(strict=False, parse_constant=constant, object_pairs_hook=pairs)


def _resolve_duplicates(obj: dict[str, Any], items: list[tuple[str, Any]], notes: dict[str, Note]) -> None:
    values: dict[str, list[Any]] = {}
    for key, value in items:
        values.setdefault(key, []).append(value)
    for key, given in values.items():
        first = given[0]
        if len(given) == 1 or all(type(v) is type(first) and v == first for v in given[1:]):
            continue  # repeated with one value: nothing to choose between
        obj[key] = None
        shown = ", ".join(f"{v!r:.24}" for v in given[:4])
        text = f"reply: key {key!r:.40} given {len(given)} times with different values ({shown}): read as unknown"
        notes.setdefault(text, (DUPLICATE_KEY, text))


def _decode_first(text: str) -> Any:
    return _DECODER.raw_decode(text)[0]


def _decode_repaired(text: str, raw: bytes, notes: dict[str, Note]) -> tuple[str, Any]:
    """(the repaired text, its JSON value); a bare nan/inf the repairs turned into null is noted."""
    masked = Masked.of(text)
    if masked is None:
        raise BadReply(f"control character 0x1f outside a string; starts {text[:40]!r}", raw)
    for repair in REPAIRS:
        repaired = repair(masked)
        if repair is repair_bare_non_numbers and repaired is not masked:
            note = "reply: bare nan/inf read as unknown"
            notes.setdefault(note, (NON_NUMBER, note))
        masked = repaired
    text = masked.text().strip(_STRIP)
    try:
        return text, _decode_first(text)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested garbage ([[[[...) exhausts the C scanner's recursion guard.
        raise BadReply(f"not JSON even after repairs ({_describe(exc)}); starts {text[:40]!r}", raw) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at char {exc.pos}"
    return "nested too deeply"


def _in_skeleton(masked: Masked, pattern: re.Pattern[str], replacement: str) -> Masked:
    skeleton = pattern.sub(replacement, masked.skeleton)
    return masked if skeleton == masked.skeleton else Masked(skeleton, masked.strings)


def repair_objects_without_comma(masked: Masked) -> Masked:
    """`}{` -> `},{`: bmminer's minerstats() prints STATS[0] then STATS[1] with no comma.

    Seen raw: Antminer D3 Blissz (tests/golden/replies/bmminer/antminer-d3-blissz-2.06-cgminer-4.10.0), L3+.
    """
    return _in_skeleton(masked, _OBJECTS_WITHOUT_COMMA, "},")


def repair_array_leading_comma(masked: Masked) -> Masked:
    """`[,{` -> `[{`: the same bmminer family sometimes prints the comma before the first item."""
    return _in_skeleton(masked, _ARRAY_LEADING_COMMA, "[")


def repair_trailing_comma(masked: Masked) -> Masked:
    """`,}` / `,]` -> `}` / `]`: Whatsminer and bmminer leave a comma after the last member."""
    return _in_skeleton(masked, _TRAILING_COMMA, "")


def repair_invalid_escapes(masked: Masked) -> Masked:
    """`\\'` (and any other escape JSON lacks) -> the bare character; the one repair inside strings.

    Seen: Whatsminer M20S `"Firmware Version":"\\'20200917.22.REL\\'"`
    (tests/golden/replies/btminer/whatsminer-m20s-20200917.22).
    """
    if not any("\\" in string for string in masked.strings):
        return masked
    strings = tuple(_ESCAPE_PAIR.sub(r"\1\2", string) if "\\" in string else string for string in masked.strings)
    return Masked(masked.skeleton, strings)


def repair_adjacent_strings(masked: Masked) -> Masked:
    """`"value""temp0"` -> `"value","temp0"`: a comma missing between two strings.

    btminer 2023-01-06 drops the comma before `"temp0"` (noted in pyasic's reply loader). Two string
    tokens with only whitespace between them are never valid JSON, so a comma is the only reading.
    """
    return _in_skeleton(masked, _ADJACENT_STRINGS, _MARK + ",")


def repair_bare_non_numbers(masked: Masked) -> Masked:
    """Bare `nan`, `-nan`, `inf`, `-inf` (printf of a float: cgminer summary/lcd, Avalon) -> `null`.

    Only whole tokens outside strings: a pool named "binance" keeps its letters (a global replace
    of `nan` once made it "bi0ce" in another client).
    """
    # The case-insensitive regex costs ~300 ms per MiB of skeleton; a substring test ~1 ms.
    lowered = masked.skeleton.lower()
    if "nan" not in lowered and "inf" not in lowered:
        return masked
    return _in_skeleton(masked, _BARE_NON_NUMBER, "null")


def repair_leading_comma(masked: Masked) -> Masked:
    """A reply that starts with `,` (Avalon: `,"id":1}`) gets its opening brace back."""
    head = masked.skeleton.lstrip(_STRIP)
    if not head.startswith(","):
        return masked
    return Masked("{" + head[1:], masked.strings)


# Applied in this order on the slow path only; each is tested on its own.
REPAIRS: tuple[Callable[[Masked], Masked], ...] = (
    repair_objects_without_comma,
    repair_array_leading_comma,
    repair_trailing_comma,
    repair_invalid_escapes,
    repair_adjacent_strings,
    repair_bare_non_numbers,
    repair_leading_comma,
)


def check_status(obj: dict[str, Any]) -> None:
    """Raise CommandRejected when the reply's STATUS letter is E (error) or F (fatal).

    STATUS is a list of one object (cgminer), an object, or a plain string (Whatsminer native commands,
    `"BYE"`/`"RESTART"`). S and I are success. W (warning) is treated as success and NOT raised: on read
    commands cgminer forks use it for "nothing here" answers (old "No pools"), which still leave a usable
    reply; the caller sees the letter, Code and Msg in `obj["STATUS"]` like any other field. A reply
    without STATUS is not rejected here (there is nothing to reject on).
    """
    status = obj.get("STATUS")
    if type(status) is list and status:
        status = status[0]
    if type(status) is dict:
        letter = status.get("STATUS")
        if type(letter) is str and letter.upper() in _FAILURE_LETTERS:
            raise _rejection(letter.upper(), status.get("Code"), status.get("Msg"))
    elif type(status) is str and status.upper() in _FAILURE_LETTERS:
        # Whatsminer native replies: {"STATUS":"E","Code":132,"Msg":"..."} - Code/Msg beside STATUS.
        raise _rejection(status.upper(), obj.get("Code"), obj.get("Msg"))


def _rejection(letter: str, code: Any, msg: Any) -> CommandRejected:
    if type(code) is not int:
        try:
            code = int(code)
        except (TypeError, ValueError, OverflowError):
            code = None
    text = msg if type(msg) is str else json.dumps(msg, default=str) if msg is not None else "no message"
    return CommandRejected(text[:300], code, letter)


def split_joined(
    obj: dict[str, Any], commands: Iterable[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, CommandRejected]]:
    """Split a multicommand reply `{"a":[{...}],"b":[{...}],"id":1}` into one reply object per command.

    Each section is a one-element list in real replies (cgminer api.c head_join) and is unwrapped; a bare
    object is accepted too. A section with STATUS E/F, a missing section, or one that is not an object
    goes to the rejected dict (missing/malformed ones with code None), so a caller can retry it alone.
    A top-level E/F (firmware that cannot join: Code 14/23/45) raises CommandRejected.
    """
    check_status(obj)
    replies: dict[str, dict[str, Any]] = {}
    rejected: dict[str, CommandRejected] = {}
    for command in dict.fromkeys(commands):
        section = obj.get(command)
        if type(section) is list and len(section) == 1:
            section = section[0]
        if type(section) is not dict:
            what = "missing" if section is None else f"a {type(section).__name__}, not an object"
            rejected[command] = CommandRejected(f"section {command!r} of the joined reply is {what}", None)
            continue
        try:
            check_status(section)
        except CommandRejected as exc:
            rejected[command] = exc
            continue
        if NOTES in obj:  # which section held the duplicate is not known: every section carries the notes
            section = {**section, NOTES: obj[NOTES]}
        replies[command] = section
    return replies, rejected


def reply_notes(replies: Iterable[Mapping[str, Any]]) -> tuple[Note, ...]:
    """The decoder's notes over one poll's replies, each once (a joined reply's are in every section)."""
    found: dict[Note, None] = {}
    for reply in replies:
        notes = reply.get(NOTES)
        if notes:
            found.update(dict.fromkeys(notes))
    return tuple(found)
