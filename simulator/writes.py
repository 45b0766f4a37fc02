"""The write commands a simulated miner obeys to stop and resume hashing, with each firmware's replies and rules.

- cgminer `ascdisable|N` / `ascenable|N`, BFGMiner `pgadisable|N` / `pgaenable|N`: one hash board each; they
  need the API's write group (the group's `allow_control`, what `--api-allow W:` grants on a real miner),
  else Code 45 "Access denied". Codes: ASC 111 disable / 109 already disabled / 110 enable / 108 already
  enabled; PGA 64 / 62 / 63 / 61; 107 (ASC) or 47 (PGA) for a device id out of range; 15 without an id.
- Braiins OS `pause` / `resume` on 4028: no access check there.
- LuxOS `logon` -> a session id (one at a time: another logon while one is live gets Code 402), which
  `curtail <sid>,sleep|wakeup` and `logoff <sid>` need; a session left idle for a minute expires.
- Avalon `ascset|0,softoff,1:<ts>` / `ascset|0,softon,1:<ts>`: no access check in practice.

Each write is counted (the ground truth's `privileged_commands`), whether obeyed or refused, so a test can
assert that monitoring alone never sends one. A miner with every board stopped draws its idle power: control
board, fans at their slowest, PSU losses (behaviour.snapshot with `stopped` = 1).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from megawatch.simulator import replies
from megawatch.simulator.behaviour import BOARDS
from megawatch.simulator.replies.common import Section

if TYPE_CHECKING:
    from megawatch.simulator.miner import Miner

LUXOS_SESSION_IDLE_S = 60.0
_DEVICE_WRITES = {
    "cgminer": ("ascdisable", "ascenable", "ASC", {"dis": 111, "already_dis": 109, "ena": 110, "already_ena": 108,
                                                  "range": 107}),
    "bfgminer": ("pgadisable", "pgaenable", "PGA", {"dis": 64, "already_dis": 62, "ena": 63, "already_ena": 61,
                                                   "range": 47}),
}
# Every write command a dialect's simulated API knows (others fall through to the generic handling).
WRITES: dict[str, frozenset[str]] = {
    "cgminer": frozenset({"ascdisable", "ascenable"}),
    "bfgminer": frozenset({"pgadisable", "pgaenable"}),
    "bosminer": frozenset({"pause", "resume"}),
    "luxos": frozenset({"logon", "logoff", "curtail"}),
    "avalon": frozenset({"ascset"}),
}
_session_ids = itertools.count(0x3A7C1)


@dataclass(slots=True)
class ControlState:
    """What write commands changed on one miner: boards stopped, a LuxOS session."""

    disabled: set[int] = field(default_factory=set)  # boards stopped (all of them for pause/sleep/softoff)
    session: str | None = None
    session_used: float = 0.0  # monotonic time the session was last used

    @property
    def stopped(self) -> float:
        """Share of the hash boards stopped, 0..1."""
        return len(self.disabled) / BOARDS


def reboot_control(miner: Miner) -> ControlState:
    """What a reboot leaves: cgminer's and BFGMiner's disable flags live in memory and are gone; Braiins' pause,
    LuxOS's sleep and Avalon's soft off are taken to persist (the firmware's documents disagree or are silent)."""
    if miner.identity.dialect in _DEVICE_WRITES:
        return ControlState()
    return ControlState(disabled=set(miner.control.disabled))


def handles(miner: Miner, name: str) -> bool:
    return name in WRITES.get(miner.identity.dialect, ())


def write(miner: Miner, name: str, param: str, when: int) -> Section | dict[str, Any]:
    """Obey (or refuse) one write command; the caller has already counted it."""
    dialect = miner.identity.dialect
    before = set(miner.control.disabled)
    if dialect in _DEVICE_WRITES:
        result = _device(miner, name, param, when)
    elif dialect == "bosminer":
        result = _bos(miner, name)
    elif dialect == "luxos":
        result = _luxos(miner, name, param, when)
    else:
        result = _avalon(miner, param, when)
    if miner.control.disabled != before:
        miner.fleet.control_changed(miner)
    return result


def _err(miner: Miner, code: int, msg: str, when: int) -> dict[str, Any]:
    return replies.error(miner.firmware, code, msg, when)


def _device(miner: Miner, name: str, param: str, when: int) -> Section | dict[str, Any]:
    disable_cmd, _, kind, codes = _DEVICE_WRITES[miner.identity.dialect]
    if not miner.identity.allow_control:
        return _err(miner, 45, f"Access denied to '{name}' command", when)
    if param == "":
        return _err(miner, 15, "Missing device id parameter", when)
    try:
        device = int(param)
    except ValueError:
        device = -1
    if not 0 <= device < BOARDS:
        return _err(miner, codes["range"], f"Invalid {kind} id {param} - range is 0 - {BOARDS - 1}", when)
    disabled = miner.control.disabled
    if name == disable_cmd:
        if device in disabled:
            return Section(codes["already_dis"], f"{kind} {device} already disabled", "", [], status="I")
        disabled.add(device)
        return Section(codes["dis"], f"{kind} {device} set disable flag", "", [], status="I")
    if device not in disabled:
        return Section(codes["already_ena"], f"{kind} {device} already enabled", "", [], status="I")
    disabled.discard(device)
    return Section(codes["ena"], f"{kind} {device} sent enable message", "", [], status="I")


def _bos(miner: Miner, name: str) -> Section:
    if name == "pause":
        miner.control.disabled = set(range(BOARDS))
        return Section(0, "Pause", "PAUSE", [{"PAUSE": True}])
    miner.control.disabled = set()
    return Section(0, "Resume", "RESUME", [{"RESUME": True}])


def _luxos(miner: Miner, name: str, param: str, when: int) -> Section | dict[str, Any]:
    state = miner.control
    now = time.monotonic()
    if state.session is not None and now - state.session_used > LUXOS_SESSION_IDLE_S:
        state.session = None
    if name == "logon":
        if state.session is not None:
            return _err(miner, 402, "Another session is active", when)
        state.session, state.session_used = f"{next(_session_ids):08x}", now
        return Section(316, "Session created", "SESSION", [{"SessionID": state.session}])
    sid, _, args = param.partition(",")
    if state.session is None or sid != state.session:
        return _err(miner, 401, "Invalid session id", when)
    state.session_used = now
    if name == "logoff":
        state.session = None
        return Section(317, "Session ended", "SESSION", [{"SessionID": sid}])
    if args not in ("sleep", "wakeup"):
        return _err(miner, 333, f"Invalid curtail action '{args}'", when)
    state.disabled = set(range(BOARDS)) if args == "sleep" else set()
    action = "sleep mode" if args == "sleep" else "wake up"
    return Section(335, "Curtailment command sent", "CURTAIL", [{"Action": action}])


def _avalon(miner: Miner, param: str, when: int) -> Section | dict[str, Any]:
    fields = param.split(",")
    if len(fields) != 3 or fields[0] != "0" or fields[1] not in ("softoff", "softon"):
        # Other ascset settings (worklevel, fan, ...) are not simulated: refused like a bad setting.
        return _err(miner, 120, f"ASC 0 set failed: {param}", when)
    miner.control.disabled = set(range(BOARDS)) if fields[1] == "softoff" else set()
    return Section(119, "ASC 0 set OK", "", [])
