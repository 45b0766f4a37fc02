"""One peer in its own process: `python -m bench.peer --kind K --loop L ...`, driven by the harness.

Line protocol: the peer prints one JSON object per line on its original stdout ({"ready": ...} once set
up, or {"error": ...}), then answers each command read from stdin: `cycle` (poll the fleet once),
`render` (megawatch only: /metrics render of its latest snapshot), `stats` (peak RSS, CPU), `quit`.
Everything else the process prints (logs, warnings) goes to stderr, which the harness keeps in a file.
One event loop lives for the whole process, as in a long-running agent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

KINDS = ("megawatch", "raw", "pyasic")
LOOPS = ("default", "uvloop")


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM), in KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _reply(out: TextIO, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer")
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--loop", choices=LOOPS, required=True)
    parser.add_argument("--agent-config", type=Path, required=True)
    parser.add_argument("--plan", type=Path, required=True, help="written by megawatch, read by the others")
    args = parser.parse_args(argv)

    # Keep the protocol channel to ourselves: anything printed to stdout from now on lands in stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        try:
            peer, setup = _make_peer(args, runner)
        except ImportError as exc:
            _reply(out, {"error": f"cannot import {exc.name or 'a module'}: {exc}"})
            return 0
        _reply(out, {"ready": True, "setup": setup})
        for line in sys.stdin:
            command = line.strip()
            if command == "cycle":
                _reply(out, runner.run(peer.cycle()).as_json())
            elif command == "render" and hasattr(peer, "render"):
                _reply(out, peer.render())
            elif command == "stats":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                _reply(out, {"peak_rss_kb": peak_rss_kb(), "cpu_s": usage.ru_utime + usage.ru_stime})
            elif command == "quit":
                break
            else:
                _reply(out, {"error": f"unknown command {command!r}"})
    return 0


def _make_peer(args: argparse.Namespace, runner: asyncio.Runner) -> tuple[Any, dict[str, Any]]:
    from megawatch.agent.config import load_agent_config
    from megawatch.common.logs import configure_logging

    # As the agent runs: JSON logs at info (nothing is logged per poll in a steady cycle), to stderr.
    configure_logging("json", "info")
    if args.kind == "megawatch":
        from bench.poller_peer import MegawatchPoller
        from megawatch.agent.runtime import tune_gc

        tune_gc()  # as `megawatch agent` does at start; the other peers run as their users run them
        peer = MegawatchPoller(args.agent_config)
        return peer, runner.run(peer.record_plan(args.plan))
    from bench.plan import load_plan

    poll = load_agent_config(args.agent_config).poll
    plan = load_plan(args.plan)
    setup: dict[str, Any] = {"concurrency": poll.concurrency, "requests_per_cycle": sum(len(m.requests) for m in plan)}
    if args.kind == "raw":
        from bench.raw_loop import RawLoop

        return RawLoop(plan, poll.concurrency, poll.request_timeout_s), setup
    from bench.pyasic_peer import PyasicRPC, pyasic_version

    setup["pyasic_version"] = pyasic_version()
    return PyasicRPC(plan, poll.concurrency, poll.request_timeout_s), setup


if __name__ == "__main__":
    sys.exit(main())
