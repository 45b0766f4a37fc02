"""Processes the bench starts: pinned to a core, logged to a file, bounded in every wait, always stopped.

Waits on other processes are bounded polls of what they expose (a line on a pipe, an HTTP endpoint):
there is no event to wait on across processes, and every loop gives up at its deadline with the log
file's tail in the error.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


class BenchError(Exception):
    """A phase could not run (a process died or did not become ready in time); the message says why."""


@dataclass(frozen=True, slots=True)
class Cores:
    """Which core runs the fleet (simulator, Prometheus, this harness) and which runs the client under test."""

    fleet: int | None
    client: int | None

    @classmethod
    def pick(cls) -> Cores:
        available = _STARTING_CORES
        if len(available) < 2:
            return cls(None, None)  # nothing to pin apart; reported in the results
        return cls(available[0], available[1])

    def describe(self) -> str:
        if self.fleet is None:
            return "not pinned (fewer than 2 cores available)"
        return f"simulator on core {self.fleet}, client under test on core {self.client}"


# The cores this process could run on when the bench started: the harness pins itself to the fleet core
# during a run, so asking again for a second fleet size would find one core and pin nothing apart.
_STARTING_CORES = sorted(os.sched_getaffinity(0))


def pin(pid: int, core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(pid, {core})


def children(pid: int) -> list[int]:
    """Direct children of `pid` (the simulator's worker processes past 10,000 miners)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its direct children that are still running."""
    total = 0.0
    for p in (pid, *children(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return total


def peak_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def megawatch_command() -> list[str]:
    """`megawatch` as its users start it: the console script beside this Python, else the module."""
    script = Path(sys.executable).with_name("megawatch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "megawatch.cli"]


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, proc: Proc | None = None,
             every_s: float = 0.25) -> T:
    """Call `check` until it returns non-None; BenchError after `timeout_s` or when `proc` exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None:
            return value
        if proc is not None and proc.popen.poll() is not None:
            raise BenchError(f"{proc.name} exited with {proc.popen.returncode} while waiting for {what}: "
                             f"{proc.log_tail()}")
        if time.monotonic() >= deadline:
            raise BenchError(f"{what}: not within {timeout_s:.0f} s" + (f"; {proc.log_tail()}" if proc else ""))
        time.sleep(every_s)


def http_get(url: str, timeout_s: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
    """(status, body, seconds); status 0 when nothing answered."""
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout_s) as r:
            return r.status, r.read(), time.perf_counter() - t0
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), time.perf_counter() - t0
    except (OSError, ValueError):
        return 0, b"", time.perf_counter() - t0


def http_json(url: str, timeout_s: float = 10.0) -> Any | None:
    status, body, _ = http_get(url, timeout_s)
    return json.loads(body) if status == 200 else None


class Proc:
    """A child process with its stderr (and stdout unless piped) in `log`; stop() ends it by its pid."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, core: int | None, *, pipe_stdin: bool = False,
                 pipe_stdout: bool = False) -> None:
        self.name = name
        self.log = log
        self._log_file: IO[bytes] = log.open("wb")
        self.popen = subprocess.Popen(
            list(argv), cwd=REPO, stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else self._log_file, stderr=self._log_file,
        )
        pin(self.popen.pid, core)
        self._selector: selectors.BaseSelector | None = None
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def read_line(self, timeout_s: float) -> str:
        """The next line of the piped stdout; BenchError on EOF or after `timeout_s`."""
        assert self.popen.stdout is not None
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
            self._selector.register(self.popen.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        fd = self.popen.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                raise BenchError(f"{self.name}: no answer within {timeout_s:.0f} s; {self.log_tail()}")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise BenchError(f"{self.name} closed its output (exit {self.popen.wait(5)}); {self.log_tail()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def ask(self, command: str, timeout_s: float) -> dict[str, Any]:
        """Send one protocol command (bench/peer.py) and return its JSON answer."""
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write(command.encode() + b"\n")
            self.popen.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"{self.name} is gone (exit {self.popen.poll()}); {self.log_tail()}") from None
        answer: dict[str, Any] = json.loads(self.read_line(timeout_s))
        return answer

    def log_tail(self, lines: int = 5) -> str:
        self._log_file.flush()
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"(no log at {self.log})"
        return f"last lines of {self.log}: " + " | ".join(text[-lines:]) if text else f"{self.log} is empty"

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code."""
        if self.popen.poll() is None:
            if self.popen.stdin is not None:
                try:
                    self.popen.stdin.close()  # a peer ends its command loop on EOF
                except OSError:
                    pass
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self._selector is not None:
            self._selector.close()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log_file.close()
        return self.popen.returncode
