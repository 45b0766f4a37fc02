"""The agent's control API: stop or restart one miner's hashing, for the collector's curtailment (docs/curtailment.md).

POST /api/v1/control/{miner}/{action} with action `curtail` or `restore`. Refused (403) unless the agent
config has `control_enabled: true` AND basic auth is configured (web_config_file with basic_auth_users):
a write to a miner is never reachable anonymously. Only this route sends write commands; the poller
stays read-only whatever the config says.

Each dialect's own commands (the firmware's API on 4028):
- cgminer `ascdisable|N` / `ascenable|N` and BFGMiner `pgadisable|N` / `pgaenable|N` for every device `devs`
  lists (the miner must grant our address the API write group);
- Braiins OS `pause` / `resume`;
- LuxOS `logon`, `curtail <session>,sleep|wakeup`, `logoff <session>`;
- Avalon `ascset|0,softoff,1:<now>` / `ascset|0,softon,1:<now>`.
Stock Antminer firmware (bmminer) has no stop command on 4028 and Whatsminer's writes are encrypted with the
admin password (not implemented): both answer 409 `not curtailable over this API`, and the planner skips them.
Whether the miner really stopped is not taken from its reply: the collector checks the next poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from megawatch.agent.config import AgentConfig
from megawatch.agent.protocol.client import Deadlines, query
from megawatch.agent.protocol.errors import CommandRejected, MinerError
from megawatch.agent.state import FleetSnapshot
from megawatch.common.logs import get_logger
from megawatch.common.strictjson import json_response
from megawatch.common.webconfig import BasicAuth

ACTIONS = ("curtail", "restore")
CURTAILABLE = ("cgminer", "bfgminer", "bosminer", "luxos", "avalon")
NOT_CURTAILABLE = "not curtailable over this API"
_DEVICE = {"cgminer": ("ASC", "ascdisable", "ascenable"), "bfgminer": ("PGA", "pgadisable", "pgaenable")}


class ControlFailed(Exception):
    """The miner refused or could not be reached; the message says which command and why."""

    def __init__(self, message: str, commands: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.commands = commands  # what had been sent, the failed one last


@dataclass(frozen=True, slots=True)
class Outcome:
    commands: tuple[str, ...]  # what was sent, in order
    replies: tuple[str, ...]  # each reply's STATUS message


async def _send(host: str, port: int, command: str, parameter: str | None, deadlines: Deadlines,
                sent: list[str], said: list[str]) -> dict[str, Any]:
    sent.append(command if parameter is None else f"{command}|{parameter}")
    try:
        result = await query(host, [command], port=port, parameter=parameter, deadlines=deadlines,
                             allow_control=True)
    except CommandRejected as exc:
        raise ControlFailed(f"{command} refused: {exc.message} (code {exc.code})") from None
    except MinerError as exc:
        raise ControlFailed(f"{command} failed: {exc}") from None
    reply = result.replies[command]
    status = reply.get("STATUS")
    said.append(str(status[0].get("Msg", "")) if isinstance(status, list) and status else "")
    return reply


async def act(host: str, port: int, dialect: str, action: str, deadlines: Deadlines,
              clock: Callable[[], float] = time.time) -> Outcome:
    """Send `dialect`'s commands for `action` to one miner; raise ControlFailed when it refuses."""
    sent: list[str] = []
    said: list[str] = []
    try:
        await _act(host, port, dialect, action == "curtail", deadlines, clock, sent, said)
    except ControlFailed as exc:
        raise ControlFailed(str(exc), tuple(sent)) from None
    return Outcome(tuple(sent), tuple(said))


async def _act(host: str, port: int, dialect: str, stop: bool, deadlines: Deadlines, clock: Callable[[], float],
               sent: list[str], said: list[str]) -> None:
    if dialect in _DEVICE:
        kind, disable, enable = _DEVICE[dialect]
        devs = await _send(host, port, "devs", None, deadlines, sent, said)
        ids = [d[kind] for d in devs.get("DEVS", []) if isinstance(d, dict) and isinstance(d.get(kind), int)]
        if not ids:
            raise ControlFailed(f"devs lists no {kind} device to {'disable' if stop else 'enable'}")
        for device in ids:
            await _send(host, port, disable if stop else enable, str(device), deadlines, sent, said)
    elif dialect == "bosminer":
        await _send(host, port, "pause" if stop else "resume", None, deadlines, sent, said)
    elif dialect == "luxos":
        logon = await _send(host, port, "logon", None, deadlines, sent, said)
        session = (logon.get("SESSION") or [{}])[0].get("SessionID")
        if not isinstance(session, str) or not session:
            raise ControlFailed("logon gave no session id")
        try:
            await _send(host, port, "curtail", f"{session},{'sleep' if stop else 'wakeup'}", deadlines, sent, said)
        finally:  # one session at a time on LuxOS: leave none behind for the operator's tools
            try:
                await _send(host, port, "logoff", session, deadlines, sent, said)
            except ControlFailed:
                pass  # it expires by itself after a minute idle
    elif dialect == "avalon":
        # Acts at the given time; now, so the next poll can see it.
        await _send(host, port, "ascset", f"0,{'softoff' if stop else 'softon'},1:{int(clock())}", deadlines,
                    sent, said)
    else:
        raise ValueError(dialect)


def control_refusal(config: AgentConfig) -> str | None:
    """Why this agent refuses every control request, or None when it may act."""
    if not config.control_enabled:
        return "control is disabled in the agent config (control_enabled: false)"
    if config.web is None or not config.web.users:
        return "control needs basic auth: a web_config_file with basic_auth_users"
    return None


def add_control_routes(app: web.Application, config: AgentConfig, snapshot: Callable[[], FleetSnapshot]) -> None:
    log = get_logger(site=config.site)
    # Checked here as well as by the server-wide middleware: this route must never work without it.
    auth = BasicAuth(config.web.users) if config.web is not None and config.web.users else None
    locks: dict[str, asyncio.Lock] = {}  # per miner named in the snapshot: bounded by the agent's miners
    auth_turn = asyncio.Lock()

    async def control(request: web.Request) -> web.Response:
        name, action = request.match_info["miner"], request.match_info["action"]
        refusal = control_refusal(config)
        if refusal is not None or auth is None:
            return json_response({"error": refusal}, status=403)
        async with auth_turn:  # one check at a time: the first success is cached, a burst then waits for it
            allowed = await auth.allows(request.headers.get("Authorization"), request.remote or "")
        if not allowed:
            return json_response({"error": "basic auth required"}, status=401)
        if action not in ACTIONS:
            return json_response({"error": f"action: expected one of {', '.join(ACTIONS)}, got {action!r}"},
                                 status=400)
        miner = next((m for m in snapshot().miners if m.name == name), None)
        if miner is None:
            return json_response({"error": f"no miner {name!r} on this agent"}, status=404)
        body: dict[str, Any] = {"miner": name, "action": action, "dialect": miner.dialect}
        if miner.dialect not in CURTAILABLE:
            return json_response({**body, "ok": False, "error": NOT_CURTAILABLE}, status=409)
        deadlines = Deadlines(config.poll.connect_timeout_s, config.poll.request_timeout_s)
        # One command at a time per miner: LuxOS allows one session, and a stop racing a restart is no order.
        lock = locks.setdefault(name, asyncio.Lock())
        try:
            async with lock:
                outcome = await act(miner.target.address, miner.target.port, miner.dialect or "", action, deadlines)
        except ControlFailed as exc:
            log.warning("miner_control_failed", miner=name, action=action, dialect=miner.dialect, error=str(exc))
            return json_response({**body, "ok": False, "error": str(exc), "commands": list(exc.commands)},
                                 status=502)
        log.info("miner_control_sent", miner=name, action=action, dialect=miner.dialect,
                 commands=list(outcome.commands))
        # `at`, by this agent's clock: the collector compares this agent's poll times with it, never its own.
        return json_response({**body, "ok": True, "commands": list(outcome.commands),
                              "replies": list(outcome.replies), "at": time.time()})

    app.router.add_post("/api/v1/control/{miner}/{action}", control)
