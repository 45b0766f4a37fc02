"""Turn one request's bytes into one reply's bytes, the way cgminer's api() does (docs/protocol.md).

JSON if the first byte is `{` (`command` required and a string; `parameter` optional), else legacy text
`cmd|param`, untrimmed, answered in text. `a+b` joins answer each section on its own (Code 14 unknown,
Code 45 privileged or not joinable). Privileged commands are counted, then refused with Code 45 unless
the miner allows control. Every reply ends with one NUL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from megawatch.simulator import replies, writes
from megawatch.simulator.replies.common import Bare, Section
from megawatch.simulator.replies.encode import Style

if TYPE_CHECKING:
    from megawatch.simulator.miner import Miner

# cgminer api.c cmds[] with iswritemode set.
PRIVILEGED = frozenset({
    "pgaenable", "pgadisable", "pgaidentify", "switchpool", "addpool", "poolpriority", "poolquota",
    "enablepool", "disablepool", "removepool", "save", "quit", "privileged", "restart", "failover-only",
    "debug", "setconfig", "pgaset", "zero", "hotplug", "ascenable", "ascdisable", "ascidentify", "ascset",
    "lockstats",
})
# Read commands cgminer refuses inside a join (cmds[] joinable column is false).
NOT_JOINABLE = frozenset({"check", "asc", "pga", "gpu", "proc", "procs", "devscan", "pgacount"}) | PRIVILEGED
# Every command stock cgminer knows: an allow-listed firmware answers these with Code 45, others Code 14.
KNOWN = frozenset({
    "version", "config", "devs", "edevs", "pools", "summary", "stats", "estats", "devdetails", "coin",
    "lcd", "check", "notify", "usbstats", "dbgstats", "asccount", "pgacount", "asc", "pga",
}) | PRIVILEGED
_json_str: Callable[[str], str] = json.encoder.encode_basestring
# What agents send (`{"command":"a+b"}`, compact, printable ASCII without escapes): it decodes to exactly
# the command between the quotes, so json.loads can be skipped; anything else takes the full parse.
_PLAIN_REQUEST = re.compile(rb'\{"command":"([\x20\x21\x23-\x5b\x5d-\x7e]*)"\}')
_WRITE_OK: dict[str, tuple[int, str]] = {
    "switchpool": (27, "Switching to pool {p}"),
    "enablepool": (47, "Enabling pool {p}"),
    "disablepool": (48, "Disabling pool {p}"),
    "addpool": (55, "Added pool '{p}'"),
    "removepool": (68, "Removed pool {p}"),
    "save": (44, "Configuration saved to file '{p}'"),
    "ascset": (119, "ASC {p} set OK"),
    "privileged": (46, "Privileged access OK"),
    "zero": (96, "Zeroed {p} stats"),
}


def reply_to(miner: Miner, raw: bytes, now: int) -> bytes:
    """The whole reply (body + NUL) that `miner` sends for request bytes `raw`."""
    fw = miner.firmware
    when = miner.when(now)
    plain = _PLAIN_REQUEST.fullmatch(raw)
    if plain is not None:
        return _answer_json(miner, plain.group(1).decode("ascii"), "", now, when).encode() + b"\0"
    text = raw.decode("utf-8", "replace")
    if text.startswith("{"):
        try:
            request: Any = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            body = replies.encode_json(fw, replies.error(fw, 23, "Invalid JSON", when))
        elif "command" not in request:
            body = replies.encode_json(fw, replies.error(fw, 24, "Missing JSON 'command'", when))
        elif not isinstance(request["command"], str):
            body = replies.encode_json(fw, replies.error(fw, 14, "Invalid command", when))
        else:
            body = _answer_json(miner, request["command"], _param(request.get("parameter")), now, when)
    else:
        command, _, param = text.partition("|")
        body = _answer_text(miner, command, param, now, when)
    return body.encode() + b"\0"


def _param(value: Any) -> str:
    # cgminer accepts a string, an integer (%d) or a real (%f); anything else is ignored.
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:f}"
    return value if isinstance(value, str) else ""


def _join_names(command: str) -> list[str]:
    seen: list[str] = []
    for name in command.split("+"):
        if name and name not in seen:
            seen.append(name)
    return seen


def _answer_json(miner: Miner, command: str, param: str, now: int, when: int) -> str:
    fw = miner.firmware
    if "+" not in command:
        render = fw.fast.get(command)
        if render is not None:
            return render(miner.identity, miner.snapshot(), now, when, fw)
        return replies.encode_json(fw, replies.as_object(fw, _one(miner, command, param, now, when), when))
    if not fw.joinable or not miner.identity.joins:
        # A firmware without joins takes "summary+pools" for one unknown command name.
        return replies.encode_json(fw, replies.error(fw, 14, "Invalid command", when))
    names = _join_names(command)
    style = replies.STYLES[fw.style_name]
    if fw.fast and "id" not in names:
        return _joined_text(miner, names, now, when, style)
    joined: dict[str, Any] = {}
    for name in names:
        result = _joined(miner, name, now, when)
        joined[name] = [replies.as_object(fw, result, when)]
    joined["id"] = 1
    return replies.encode_json(fw, joined)


def _joined_text(miner: Miner, names: list[str], now: int, when: int, style: Style) -> str:
    """The joined reply assembled from section texts: what json.dumps gives for the joined tree.

    Sections are answered in request order (privileged ones counted as before), then laid out in the
    order json.dumps would (sorted for sorting firmware); sections without a text renderer are encoded
    together, one json.dumps per run of them (its braces dropped), so a join costs no extra encoder calls.
    """
    fw = miner.firmware
    sections: dict[str, Any] = {}
    for name in names:
        render = fw.fast.get(name)
        if render is None:
            sections[name] = [replies.as_object(fw, _joined(miner, name, now, when), when)]
        else:
            sections[name] = render(miner.identity, miner.snapshot(), now, when, fw)
    sections["id"] = 1
    parts: list[str] = []
    pending: dict[str, Any] = {}
    for name in sorted(sections) if style.sort_keys else sections:
        section = sections[name]
        if type(section) is not str:
            pending[name] = section
            continue
        if pending:
            parts.append(replies.encode_json(fw, pending)[1:-1])
            pending = {}
        parts.append(f"{_json_str(name)}{style.key_sep}[{section}]")
    if pending:
        parts.append(replies.encode_json(fw, pending)[1:-1])
    return "{" + style.item_sep.join(parts) + "}"


def _answer_text(miner: Miner, command: str, param: str, now: int, when: int) -> str:
    fw = miner.firmware
    if "+" not in command:
        return replies.as_text(fw, _one(miner, command, param, now, when), when)
    if not fw.joinable or not miner.identity.joins:
        return replies.as_text(fw, replies.error(fw, 14, "Invalid command", when), when)
    parts = []
    for name in _join_names(command):
        parts.append(f"CMD={name}|" + replies.as_text(fw, _joined(miner, name, now, when), when))
    return "".join(parts)


def _denied(miner: Miner, name: str, when: int) -> dict[str, Any]:
    return replies.error(miner.firmware, 45, f"Access denied to '{name}' command", when)


def _joined(miner: Miner, name: str, now: int, when: int) -> Section | Bare | dict[str, Any]:
    if name in PRIVILEGED or writes.handles(miner, name):
        miner.count_privileged(name)
    if name in NOT_JOINABLE or writes.handles(miner, name):
        # Even from a privileged client: restart, quit, check, privileged are refused in a join (seen on 4.11.1).
        return _denied(miner, name, when)
    return _one(miner, name, "", now, when, counted=True)


def _one(miner: Miner, name: str, param: str, now: int, when: int,
         counted: bool = False) -> Section | Bare | dict[str, Any]:
    fw = miner.firmware
    if writes.handles(miner, name):  # this firmware's own write rules (simulator/writes.py)
        if not counted:
            miner.count_privileged(name)
        return writes.write(miner, name, param, when)
    if name in PRIVILEGED:
        if not counted:
            miner.count_privileged(name)
        if not miner.identity.allow_control:
            return _denied(miner, name, when)
        return _write(miner, name, param, when)
    if fw.allowed is not None and name not in fw.allowed and name in KNOWN:
        return _denied(miner, name, when)
    handler = fw.handlers.get(name)
    if handler is None:
        return replies.error(fw, 14, "Invalid command", when)
    return handler(miner.identity, miner.snapshot(), now)


def _write(miner: Miner, name: str, param: str, when: int) -> Section | Bare | dict[str, Any]:
    if name == "restart":
        miner.request_restart()
        return Bare("RESTART")
    if name == "quit":
        return Bare("BYE")
    code, msg = _WRITE_OK.get(name, (46, "Privileged access OK"))
    return Section(code, msg.format(p=param), "", [])
