"""Hostile and broken config files against every loader: a clean ConfigError naming the file, at once.

Every loader (agent, collector sites file, simulator fleet, web config, model table) reads through
common/yamlfile, so each hostile file is tried on each of them: alias bombs, recursive aliases, deep nesting,
oversized files, FIFOs, devices, directories, sockets, bad UTF-8, values PyYAML cannot convert. Then odd
YAML types are put in place of every value of each shipped config: only ConfigError may come out. Finally the
process-level numbers: `--check-config` on the billion-laughs file in a child, its time and peak memory.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from megawatch.agent.config import load_agent_config
from megawatch.agent.modeltable import DEFAULT_MODELS_PATH, load_model_table
from megawatch.collector.config import load_collector_config
from megawatch.common.configfile import ConfigError
from megawatch.common.webconfig import load_web_config
from megawatch.common.yamlfile import MAX_DEPTH, MAX_FILE_BYTES, MAX_VALUES
from megawatch.simulator.config import load_fleet_config

ROOT = Path(__file__).resolve().parents[2]
LOADERS: dict[str, Callable[[Path], Any]] = {
    "agent": load_agent_config, "collector": load_collector_config, "simulator": load_fleet_config,
    "web_config": load_web_config, "model_table": load_model_table,
}

# "Billion laughs": nine levels of nine aliases, 9^9 (387 million) strings once expanded, in 342 bytes.
BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        out.truncate(size)  # a 50 MB file without writing 50 MB (the size cap refuses it unread)
    return path


def _socket(path: Path) -> Iterator[Path]:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        yield path


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# name: (make the file in tmp_path, the problem expected after "{path}" - a line number or none, then text)
HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "billion_laughs": (lambda d: _write(d / "c.yaml", BILLION_LAUGHS),
                       f":6: aliases expand to more than {MAX_VALUES:,} values; a config file may hold at most "
                       f"{MAX_VALUES:,}"),
    "recursive_alias": (lambda d: _write(d / "c.yaml", "x: &x [*x]\n"),
                        ":1: an alias refers to the list or mapping that contains it (a recursive alias)"),
    "recursive_map": (lambda d: _write(d / "c.yaml", "a: 1\nx: &x\n  y: *x\n"),
                      ":2: an alias refers to the list or mapping that contains it (a recursive alias)"),
    "deep_nesting": (lambda d: _write(d / "c.yaml", "x: " + "[" * 200 + "]" * 200 + "\n"),
                     f":1: nested more than {MAX_DEPTH} levels deep"),
    "deep_by_aliases": (lambda d: _write(d / "c.yaml", "a0: &a0 [1]\n" + "".join(
        f"a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]\n" for i in range(1, 8))),
                        f":8: aliases nest values more than {MAX_DEPTH} levels deep"),
    "too_many_values": (lambda d: _write(d / "c.yaml", "x: [" + ",".join(["1"] * (MAX_VALUES + 10)) + "]\n"),
                        f":1: more than {MAX_VALUES:,} values (keys, items and scalars); a config file may "
                        f"hold at most {MAX_VALUES:,}"),
    "fifty_megabytes": (lambda d: _sparse(d / "c.yaml", 50 * 2**20),
                        f": cannot read file: it is 52,428,800 bytes or more; a config file may be at most "
                        f"{MAX_FILE_BYTES:,} bytes (4 MiB)"),
    "fifo": (lambda d: _fifo(d / "c.yaml"), ": cannot read file: it is a named pipe (FIFO), not a regular file"),
    "directory": (lambda d: d, ": cannot read file: it is a directory, not a regular file"),
    "dev_zero": (lambda d: Path("/dev/zero"), ": cannot read file: it is a character device, not a regular file"),
    "missing": (lambda d: d / "nope.yaml", ": cannot read file: No such file or directory"),
    "bad_utf8": (lambda d: _write(d / "c.yaml", b"a: 1\nb: \xc3\x28\n"), ":2: not UTF-8 text (byte 0xc3)"),
    "control_char": (lambda d: _write(d / "c.yaml", "a: 1\n\nb: \x07\n"),
                     ":3: invalid YAML: character #x0007 is not allowed"),
    "int_of_5000_digits": (lambda d: _write(d / "c.yaml", "a: 1\nb: " + "9" * 5000 + "\n"),
                           ":2: not a valid int (too many digits)"),
    "impossible_date": (lambda d: _write(d / "c.yaml", "a: 2023-02-30\n"),
                        ":1: not a valid timestamp (day is out of range for month)"),
    "list_as_key": (lambda d: _write(d / "c.yaml", "? [a, b]\n: 1\n"),
                    ":1: a key must be a plain value, not a list or a mapping"),
    "two_documents": (lambda d: _write(d / "c.yaml", "a: 1\n---\nb: 2\n"),
                      ":2: invalid YAML: expected a single document in the stream, but found another document"),
}


def _load_in_thread(load: Callable[[Path], Any], path: Path) -> tuple[BaseException | None, float]:
    """Run the loader where a block (a FIFO opened for reading) cannot hang the test run."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            load(path)
            outcome.append(None)
        except BaseException as exc:  # the test asserts which kind it is
            outcome.append(exc)

    started = time.perf_counter()
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), f"loading {path} blocked"
    return outcome[0], time.perf_counter() - started


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_file_is_one_clean_line(case: str, loader: str, tmp_path: Path) -> None:
    make, problem = HOSTILE[case]
    path = make(tmp_path)
    error, took_s = _load_in_thread(LOADERS[loader], path)
    assert isinstance(error, ConfigError), repr(error)
    assert str(error) == f"{path}{problem}"
    print(f"{case} via {loader}: refused in {took_s * 1000:.0f} ms")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "site: s\n")
    path.chmod(0)
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert str(info.value) == f"{path}: cannot read file: Permission denied"


def test_socket_is_refused(tmp_path: Path) -> None:
    for path in _socket(tmp_path / "s.yaml"):
        with pytest.raises(ConfigError) as info:
            load_collector_config(path)
        assert str(info.value) == f"{path}: cannot read file: it is a socket, not a regular file"


def test_aliases_within_the_budget_still_work(tmp_path: Path) -> None:
    """The budget counts expanded values; ordinary reuse of a block (a shared schedule) is fine."""
    text = (ROOT / "configs" / "sites.yaml").read_text().replace(
        "    schedule:", "    schedule: &evening").replace(
        "      - http://127.0.0.1:9541   # configs/agent-site-b.yaml's http.port",
        "      - http://127.0.0.1:9541\n    schedule: *evening")
    config = load_collector_config(_write(tmp_path / "sites.yaml", text))
    assert config.sites[0].schedule == config.sites[1].schedule != ()


# ---- Odd YAML types in place of every value: only ConfigError may come out ------------------------------

ODD: dict[str, Any] = {
    "list": [1, [2]], "mapping": {"a": {"b": 1}}, "huge_int": 10**400, "huge_negative": -(10**400),
    "nan": float("nan"), "inf": float("inf"), "empty": "", "null": None, "true": True,
    "long_text": "x" * 100_000, "nested": [1], "ipv6_block": "fd00::/64",
}
for _ in range(30):  # deeper than any config, within the nesting limit
    ODD["nested"] = [ODD["nested"]]
SAMPLES = {
    "agent": ROOT / "configs" / "agent.yaml", "collector": ROOT / "configs" / "sites.yaml",
    "simulator": ROOT / "configs" / "sim" / "small.yaml", "model_table": DEFAULT_MODELS_PATH,
}


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place a value stands (the first two items of a list are enough)."""
    if prefix:
        yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc[:2]):
            yield from _paths(value, (*prefix, i))


def _replaced(doc: Any, where: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    target = out
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    return out


@pytest.mark.parametrize("loader", SAMPLES)
def test_odd_types_anywhere_give_only_config_errors(loader: str, tmp_path: Path) -> None:
    doc = yaml.safe_load(SAMPLES[loader].read_text())
    path = tmp_path / "c.yaml"
    if loader == "agent":  # the model table beside the config, as shipped
        doc["models_file"] = str(DEFAULT_MODELS_PATH)
    escaped: list[str] = []
    tried = 0
    variants = [(("(document)",), v) for v in ODD.values()] + [
        (where, v) for where in _paths(doc) for v in ODD.values()]
    for where, value in variants:
        changed = value if where == ("(document)",) else _replaced(doc, where, value)
        path.write_text(yaml.safe_dump(changed, width=10_000))
        tried += 1
        try:
            LOADERS[loader](path)
        except ConfigError as exc:
            assert "Traceback" not in str(exc)
        except Exception as exc:  # exactly what this test hunts
            escaped.append(f"{'.'.join(map(str, where))} = {str(value)[:30]}: {type(exc).__name__}: {exc}")
    print(f"{loader}: {tried} variants, {len(escaped)} escaped")
    assert escaped == []


# ---- The process: time and peak memory of --check-config on a bomb --------------------------------------

_LAUNCHER = """
import json, os, subprocess, sys, threading, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
deadline = threading.Timer(60, child.kill)  # a hang fails the test, it does not stall the run
deadline.start()
out, err = child.stdout.read(), child.stderr.read()
_, status, usage = os.wait4(child.pid, 0)
deadline.cancel()
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "took_s": time.perf_counter() - started,
                  "peak_mb": usage.ru_maxrss / 1024, "out": out.decode(), "err": err.decode()}))
"""


def _launched(stdout: bytes) -> tuple[int, float, float, str, str]:
    import json

    got = json.loads(stdout)
    return got["code"], got["took_s"], got["peak_mb"], got["out"], got["err"]


@pytest.mark.parametrize("case", ["billion_laughs", "recursive_alias", "fifty_megabytes", "fifo"])
def test_check_config_refuses_a_bomb_fast_and_small(case: str, tmp_path: Path) -> None:
    path = HOSTILE[case][0](tmp_path)
    argv = [sys.executable, "-m", "megawatch.cli", "collector", "--check-config", str(path)]
    # Linux carries a process's peak RSS across fork + exec, so a child forked straight from a pytest that has
    # grown during a long run reports pytest's peak, not its own. A small launcher in between measures the
    # --check-config process alone.
    launcher = subprocess.run([sys.executable, "-c", _LAUNCHER, *argv], capture_output=True, timeout=90,
                              cwd=ROOT, check=False)
    assert launcher.returncode == 0, launcher.stderr.decode()
    code, took_s, peak_mb, out, err = _launched(launcher.stdout)
    print(f"--check-config {case}: exit {code}, {took_s:.2f} s, peak RSS {peak_mb:.0f} MB")
    assert code == 2 and out == ""
    assert err.splitlines() == [f"{path}{HOSTILE[case][1]}"]
    assert peak_mb < 150  # the interpreter and its imports take ~60 MB; the bomb used to take gigabytes
